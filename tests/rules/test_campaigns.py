"""Campaign files: loading, schedules (holiday or cron), and file:line:col errors."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest

from caretouch.render.templates import TemplateStore
from caretouch.rules.campaigns import CAMPAIGN_FILE_SCHEMA, CronDays, holiday_days
from caretouch.rules.loader import RuleSet, load_rules
from conftest import RULES_DIR, TEMPLATES_DIR

D = dt.date

GOOD = """\
version: 1
description: A test campaign.
start: 2027-01-15
end: 2027-02-28
schedule: spring_festival
send_time: "10:00"
tiers: [A, B]
audience:
  customer.status: active
channels: [sms, email]
template: spring_festival_vip
category: care
priority: 40
"""


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    d = tmp_path / "rules"
    (d / "campaigns").mkdir(parents=True)
    shutil.copy(RULES_DIR / "policy.yaml", d / "policy.yaml")
    return d


def load(rules_dir: Path, text: str, name: str = "c.yaml") -> RuleSet:
    (rules_dir / "campaigns" / name).write_text(text, encoding="utf-8")
    return load_rules(rules_dir, TemplateStore(TEMPLATES_DIR))


def test_shipped_campaigns_load_as_rules(shipped_rules: RuleSet) -> None:
    campaigns = {c.id: c for c in shipped_rules.campaigns}
    assert sorted(campaigns) == ["spring-festival-vip", "year-end-service-notice"]
    spring = campaigns["spring-festival-vip"]
    assert spring.days == (D(2027, 2, 6),)  # Spring Festival 2027
    assert spring.dag_id == "care_campaign_spring-festival-vip"
    assert spring.run_times() == [dt.datetime(2027, 2, 5, 12, tzinfo=dt.timezone.utc)]
    assert shipped_rules.by_id("spring-festival-vip") is spring.rule
    assert spring.rule.tiers == ("A", "B")
    notice = campaigns["year-end-service-notice"]
    assert notice.days == (D(2026, 12, 15),)
    assert notice.rule.send_time == dt.time(9, 30)  # from the cron expression
    assert notice.rule.trigger.calendar_match(D(2026, 12, 15))[0]
    assert not notice.rule.trigger.calendar_match(D(2027, 12, 15))[0]  # bounded


def test_published_campaign_schema_is_current() -> None:
    published = json.loads((RULES_DIR / "campaign.schema.json").read_text(encoding="utf-8"))
    assert published == CAMPAIGN_FILE_SCHEMA, (
        "run `care schema --campaign > care_rules/campaign.schema.json`"
    )


@pytest.mark.parametrize(
    ("cron", "first", "last", "expected"),
    [
        ("0 10 * * 1", D(2026, 12, 1), D(2026, 12, 31), [D(2026, 12, d) for d in (7, 14, 21, 28)]),
        ("30 9 15 12 *", D(2026, 1, 1), D(2026, 12, 31), [D(2026, 12, 15)]),
        (
            "0 9 1,15 * *",
            D(2027, 1, 1),
            D(2027, 2, 28),
            [D(2027, 1, 1), D(2027, 1, 15), D(2027, 2, 1), D(2027, 2, 15)],
        ),
        (
            "0 9 */10 jan *",
            D(2027, 1, 1),
            D(2027, 2, 28),
            [D(2027, 1, 1), D(2027, 1, 11), D(2027, 1, 21), D(2027, 1, 31)],
        ),
        # Both day fields restricted: either matches (cron's rule). 2027-01-01 is a Friday.
        (
            "0 9 1 * sun",
            D(2027, 1, 1),
            D(2027, 1, 10),
            [D(2027, 1, 1), D(2027, 1, 3), D(2027, 1, 10)],
        ),
        ("0 9 * * 0-7/7", D(2027, 1, 1), D(2027, 1, 10), [D(2027, 1, 3), D(2027, 1, 10)]),
        ("0 9 29 2 *", D(2027, 1, 1), D(2028, 3, 1), [D(2028, 2, 29)]),
    ],
)
def test_cron_days(cron: str, first: dt.date, last: dt.date, expected: list[dt.date]) -> None:
    parsed = CronDays.parse(cron)
    days = [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
    assert [d for d in days if parsed.matches(d)] == expected


def test_holiday_days_span_years() -> None:
    assert holiday_days("mid_autumn", D(2026, 1, 1), D(2027, 12, 31)) == [
        D(2026, 9, 25),
        D(2027, 9, 15),
    ]


def test_good_campaign_loads(rules_dir: Path) -> None:
    ruleset = load(rules_dir, GOOD, "vip.yaml")
    assert [str(e) for e in ruleset.errors] == []
    assert [c.id for c in ruleset.campaigns] == ["vip"]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("channels:", "chanels:", "{f}:10:1: unknown field 'chanels' (did you mean 'channels'?)"),
        (
            "schedule: spring_festival",
            "schedule: sprng_festival",
            "{f}:5:11: schedule 'sprng_festival' is neither a holiday",
        ),
        (
            "schedule: spring_festival",
            "schedule: mid_autumn",
            "{f}:5:11: schedule 'mid_autumn' has no day between 2027-01-15 and 2027-02-28",
        ),
        (
            "end: 2027-02-28",
            "end: 2027-01-01",
            "{f}:4:6: end 2027-01-01 is before start 2027-01-15",
        ),
        ("end: 2027-02-28", "end: 2027-02-30", "{f}:4:6: '2027-02-30' is not a real date"),
        ("end: 2027-02-28", "end: 2029-02-28", "{f}:4:6: a campaign lasts at most 366 days"),
        (
            "schedule: spring_festival",
            'schedule: "0 10 * * 1"',
            "{f}:6:1: send_time comes from the cron schedule",
        ),
        (
            'schedule: spring_festival\nsend_time: "10:00"',
            'schedule: "0 22 * * 1"',
            "{f}:5:11: the schedule's time 22:00 is inside the quiet hours",
        ),
        ("schedule: spring_festival", 'schedule: "0 10 * *"', "{f}:5:11: schedule '0 10 * *'"),
        (
            "customer.status: active",
            "customer.statsu: active",
            "{f}:9:3: unknown field 'customer.statsu' (did you mean 'customer.status'?)",
        ),
        (
            "template: spring_festival_vip",
            "template: spring_vip",
            "{f}:11:11: unknown template 'spring_vip'",
        ),
        (
            "category: care",
            "category: cares",
            "{f}:12:11: 'cares' is not one of service, care, marketing",
        ),
    ],
)
def test_errors_name_file_line_col(rules_dir: Path, old: str, new: str, expected: str) -> None:
    assert old in GOOD
    ruleset = load(rules_dir, GOOD.replace(old, new))
    f = rules_dir / "campaigns" / "c.yaml"
    messages = [str(e) for e in ruleset.errors]
    assert any(m.startswith(expected.format(f=f)) for m in messages), messages
    assert ruleset.campaigns == []  # a broken campaign is left out ...
    assert ruleset.policy_errors == []


def test_a_broken_campaign_leaves_the_others(rules_dir: Path) -> None:
    (rules_dir / "campaigns" / "good.yaml").write_text(GOOD, encoding="utf-8")
    ruleset = load(rules_dir, GOOD.replace("priority: 40", "priority: high"), "broken.yaml")
    assert [c.id for c in ruleset.campaigns] == ["good"]  # ... and the others load
    assert [e.rule_id for e in ruleset.errors] == ["broken"]


def test_campaign_id_is_the_file_name(rules_dir: Path) -> None:
    ruleset = load(rules_dir, GOOD, "Spring_VIP.yaml")
    assert [str(e) for e in ruleset.errors] == [
        f"{rules_dir / 'campaigns' / 'Spring_VIP.yaml'}:1:1: a campaign's id is its file name: "
        "'Spring_VIP' must match [a-z][a-z0-9-]* (e.g. spring-festival-2027.yaml)"
    ]


def test_campaign_may_not_reuse_a_rule_id(rules_dir: Path) -> None:
    shutil.copy(RULES_DIR / "birthday.yaml", rules_dir / "birthday.yaml")
    ruleset = load(rules_dir, GOOD, "birthday.yaml")
    assert [c.id for c in ruleset.campaigns] == []
    assert [r.id for r in ruleset.rules] == ["birthday"]
    assert "campaign id 'birthday' is already a rule" in str(ruleset.errors[0])
