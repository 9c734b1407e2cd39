"""The contact policy (SPEC section 6, issue 4): one table test per suppression reason word.

Every test writes its own rules directory (a copy of ``care_rules`` with its own
``policy.yaml`` and, where useful, its own rule files; templates from the real ``templates/``),
plans through ``plan_day`` with the ledger as history and/or runs days through ``run_day``,
and asserts the decision, the reason word and the ``policy.yaml`` clause the explanation
names, at ``file:line:col`` computed here from the policy text itself. Each test runs on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from caretouch.config import CareConfig
from caretouch.ledger import Ledger, TouchState
from caretouch.ledger.consent import record_consent
from caretouch.plan import plan_day
from caretouch.plan.touch import Touch
from caretouch.render.templates import TemplateStore
from caretouch.rules.loader import RuleSet, load_rules
from caretouch.run.day import pending_ids, run_day
from caretouch.run.engine import CareEngine, open_engine
from caretouch.run.send import send_touches
from caretouch.store.consent import Purpose
from caretouch.store.db import Store
from caretouch.vocab import Decision, SuppressionReason, TouchStatus
from conftest import (
    RULES_DIR,
    TEMPLATES_DIR,
    customer_row,
    event_row,
    insert_agents_and_relations,
    load_rows,
    policy_row,
    utc,
)

D = dt.date
DAY = D(2026, 11, 23)  # C1's birthday (customer_row: born 1990-11-23, Asia/Shanghai)
NOT_A_BIRTHDAY = "1990-06-15"
SHIPPED = tuple(sorted(p.stem for p in RULES_DIR.glob("*.yaml") if p.name != "policy.yaml"))


# --- building a rules directory ------------------------------------------------------------


def make_rules(
    tmp_path: Path,
    policy: str | None = None,
    rules: dict[str, str] | None = None,
    shipped: Iterable[str] = SHIPPED,
    name: str = "rules",
) -> Path:
    """A rules directory: the shipped rules named in ``shipped``, ``policy`` as policy.yaml
    (the shipped one when None) and extra rule files ``rules`` ({file name: text})."""
    d = tmp_path / name
    d.mkdir()
    for schema in RULES_DIR.glob("*.json"):
        shutil.copy(schema, d / schema.name)
    shutil.copy(RULES_DIR / "events.yaml", d / "events.yaml")  # the declared event types
    for stem in shipped:
        shutil.copy(RULES_DIR / f"{stem}.yaml", d / f"{stem}.yaml")
    text = policy if policy is not None else (RULES_DIR / "policy.yaml").read_text("utf-8")
    (d / "policy.yaml").write_text(text, encoding="utf-8")
    for file_name, body in (rules or {}).items():
        (d / file_name).write_text(body, encoding="utf-8")
    return d


def rule_yaml(
    rule_id: str,
    *,
    dates: Iterable[str] = (),
    holidays: Iterable[str] = (),
    category: str = "care",
    priority: int = 50,
    channels: str = "[sms, email]",
    send_time: str = "10:00",
    defer_days: int = 0,
    tiers: Iterable[str] = (),
    header: bool = True,
) -> str:
    """One calendar rule using the holiday_greeting template (it has a generic wording)."""
    trigger = ["      kind: calendar"]
    if dates:
        trigger.append(f"      dates: [{', '.join(dates)}]")
    if holidays:
        trigger.append(f"      holidays: [{', '.join(holidays)}]")
    lines = [
        f"  - id: {rule_id}",
        f"    description: test rule {rule_id}",
        "    trigger:",
        *trigger,
        "    audience:",
        "      customer.status: active",
        f"    channels: {channels}",
        "    template: holiday_greeting",
        f"    category: {category}",
        f"    priority: {priority}",
        f'    send_time: "{send_time}"',
    ]
    if defer_days:
        lines.append(f"    defer_days: {defer_days}")
    if tiers:
        lines.append(f"    tiers: [{', '.join(tiers)}]")
    body = "\n".join(lines) + "\n"
    return ("version: 1\nrules:\n" + body) if header else body


def clause_at(rules_dir: Path, dotted: str) -> str:
    """``<dir>/policy.yaml:LINE:COL`` of a key path such as ``caps.channels.sms.per_day``,
    found by reading the policy text (independently of the engine's YAML positions)."""
    path = rules_dir / "policy.yaml"
    lines = path.read_text("utf-8").splitlines()
    start, indent = 0, -1
    found = None
    for key in dotted.split("."):
        for i in range(start, len(lines)):
            stripped = lines[i].lstrip(" ")
            col = len(lines[i]) - len(stripped)
            if stripped.startswith("#") or not stripped:
                continue
            if col <= indent:
                raise AssertionError(f"{dotted}: {key!r} not found under its parent")
            if stripped.startswith(f"{key}:"):
                found, start, indent = (i + 1, col + 1), i + 1, col
                break
        else:
            raise AssertionError(f"{dotted}: {key!r} not found")
    assert found is not None
    return f"{path}:{found[0]}:{found[1]}"


# --- running ---------------------------------------------------------------------------------


def ruleset_of(rules_dir: Path) -> RuleSet:
    ruleset = load_rules(rules_dir, TemplateStore(TEMPLATES_DIR))
    assert [str(e) for e in ruleset.errors] == []
    return ruleset


def plan(store: Store, rules_dir: Path, day: dt.date) -> list[Touch]:
    return plan_day(store, ruleset_of(rules_dir), day, history=Ledger(store))


def engine_for(store: Store, rules_dir: Path, tmp_path: Path) -> CareEngine:
    config = CareConfig(
        store.url,
        rules_dir,
        TEMPLATES_DIR,
        tmp_path / "outbox",
        anchor_file=tmp_path / "ledger-anchors.jsonl",
    )
    engine = open_engine(config, store=store)
    assert [str(e) for e in engine.ruleset.errors] == []
    return engine


def at_11_shanghai(day: dt.date) -> dt.datetime:
    """11:00 in Shanghai on ``day``: after the 09:00 and 10:00 send times, outside quiet hours."""
    return utc(day.year, day.month, day.day, 3, 0)


def the(touches: list[Touch], rule_id: str, customer_id: str = "C1") -> Touch:
    found = [t for t in touches if t.rule.id == rule_id and t.customer_id == customer_id]
    assert len(found) == 1, [(t.rule.id, t.customer_id) for t in touches]
    return found[0]


def explain(touch: Touch) -> str:
    return "\n".join(touch.explain)


def state_of(store: Store, key: str, occurrence: dt.date) -> TouchState:
    found = [s for s in Ledger(store).states_for_day(occurrence) if s.row.touch_key == key]
    assert len(found) == 1, key
    return found[0]


def ledger_explain(store: Store, state: TouchState) -> str:
    return "\n".join(
        line
        for event in Ledger(store).history(state.id)
        for line in (event.detail or {}).get("explain", [])
    )


@dataclass(frozen=True)
class Clause:
    """A policy clause as an explanation names it: ``caps.per_day=1 (<file>:15:3)``; the
    older spelling ``caps.per_day (<file>:15:3)=1`` is accepted too."""

    rules: Path
    name: str
    value: object = None

    def forms(self) -> list[str]:
        where = clause_at(self.rules, self.name)
        if self.value is None:
            return [f"{self.name} ({where})"]
        return [f"{self.name}={self.value} ({where})", f"{self.name} ({where})={self.value}"]


def assert_mentions(text: str, *fragments: str | Clause) -> None:
    for fragment in fragments:
        forms = fragment.forms() if isinstance(fragment, Clause) else [fragment]
        assert any(f in text for f in forms), f"{forms[0]!r} not in:\n{text}"


def assert_suppressed(touch: Touch, reason: SuppressionReason, *fragments: str | Clause) -> None:
    text = explain(touch)
    assert (touch.decision, touch.reason) == (Decision.SUPPRESS, reason), text
    assert_mentions(text, *fragments)


def assert_sent(touch: Touch) -> None:
    assert (touch.decision, touch.reason) == (Decision.SEND, None), explain(touch)


# --- no_contact and opted_out -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("customer", "fragments"),
    [
        (
            {"phone": "+86123", "email": ""},
            ["sms: phone not valid E.164", "email: address missing"],
        ),
        ({"phone": "", "email": "not-an-address"}, ["sms: phone missing", "email: address not"]),
        (
            {"consent_sms": "false", "consent_email": "false"},
            ["sms: no consent", "email: no consent"],
        ),
    ],
    ids=["bad-phone-no-email", "no-phone-bad-email", "never-consented"],
)
def test_no_contact(
    store: Store, tmp_path: Path, customer: dict[str, str], fragments: list[str]
) -> None:
    load_rows(store, customers=[customer_row("C1", **customer)])
    rules = make_rules(tmp_path)
    touch = the(plan(store, rules, DAY), "birthday")
    assert_suppressed(touch, SuppressionReason.NO_CONTACT, *fragments)
    assert touch.channel is None
    engine = engine_for(store, rules, tmp_path)
    report = run_day(engine, DAY, run_id="r1", now=at_11_shanghai(DAY))
    assert (report.sent, report.failed) == (0, 0)
    state = state_of(store, touch.key, DAY)
    assert (state.status, state.reason, state.attempts) == (TouchStatus.SUPPRESSED, "no_contact", 0)


def test_opted_out_sms_only_customer(store: Store, tmp_path: Path) -> None:
    load_rows(store, customers=[customer_row("C1", email="", consent_email="false")])
    rules = make_rules(tmp_path)
    assert_sent(the(plan(store, rules, DAY), "birthday"))
    record_consent(store, "C1", {Purpose.SMS: False}, source="cli", at=utc(2026, 11, 22, 8))
    touch = the(plan(store, rules, DAY), "birthday")
    assert_suppressed(touch, SuppressionReason.OPTED_OUT, "sms: consent withdrawn")
    engine = engine_for(store, rules, tmp_path)
    assert run_day(engine, DAY, run_id="r1", now=at_11_shanghai(DAY)).sent == 0
    state = state_of(store, touch.key, DAY)
    assert (state.status, state.reason, state.attempts) == (TouchStatus.SUPPRESSED, "opted_out", 0)
    # Consent given again: the next plan sends (SPEC: "until consent is given again").
    record_consent(store, "C1", {Purpose.SMS: True}, source="cli", at=utc(2026, 11, 23, 2))
    assert run_day(engine, DAY, run_id="r2", now=at_11_shanghai(DAY)).sent == 1
    assert [a.channel for a in Ledger(store).attempts(state.id)] == ["sms"]


MID_AUTUMN = D(2026, 9, 25)


def test_marketing_needs_marketing_consent(store: Store, tmp_path: Path) -> None:
    load_rows(
        store,
        customers=[
            customer_row("C1", birth_date=NOT_A_BIRTHDAY, consent_marketing="false"),
            customer_row("C2", birth_date=NOT_A_BIRTHDAY, consent_marketing="true"),
        ],
    )
    rules = make_rules(tmp_path)
    touches = plan(store, rules, MID_AUTUMN)
    consent = clause_at(rules, "consent")
    assert_suppressed(
        the(touches, "holiday-greeting", "C1"),
        SuppressionReason.NO_CONTACT,
        f"marketing needs marketing consent (consent ({consent})): not given",
        "sms: usable",  # the channel itself is fine: only the marketing consent is missing
    )
    assert_sent(the(touches, "holiday-greeting", "C2"))


def test_marketing_withdrawn_is_opted_out(store: Store, tmp_path: Path) -> None:
    load_rows(store, customers=[customer_row("C1", birth_date=NOT_A_BIRTHDAY, consent_marketing=1)])
    rules = make_rules(tmp_path)
    record_consent(store, "C1", {Purpose.MARKETING: False}, source="cli", at=utc(2026, 9, 1))
    touch = the(plan(store, rules, MID_AUTUMN), "holiday-greeting")
    consent = clause_at(rules, "consent")
    assert_suppressed(
        touch,
        SuppressionReason.OPTED_OUT,
        f"marketing needs marketing consent (consent ({consent})): withdrawn",
    )
    engine = engine_for(store, rules, tmp_path)
    assert run_day(engine, MID_AUTUMN, run_id="r1", now=at_11_shanghai(MID_AUTUMN)).sent == 0
    assert state_of(store, touch.key, MID_AUTUMN).reason == "opted_out"


# --- blackout --------------------------------------------------------------------------------

BLACKOUT_DATES = """\
version: 1
caps:
  per_day: 5
blackout:
  categories: [marketing]
  dates: [2026-12-24]
"""

BLACKOUT_CN = """\
version: 1
caps:
  per_day: 5
blackout:
  categories: [marketing]
  public_holidays: cn
"""


def test_blackout_explicit_date(store: Store, tmp_path: Path) -> None:
    load_rows(
        store, customers=[customer_row("C1", birth_date="1990-12-24", consent_marketing="true")]
    )
    promo = rule_yaml("promo", dates=["12-24", "12-28"], category="marketing")
    rules = make_rules(tmp_path, BLACKOUT_DATES, {"promo.yaml": promo})
    touches = plan(store, rules, D(2026, 12, 24))
    assert_suppressed(
        the(touches, "promo"),
        SuppressionReason.BLACKOUT,
        "2026-12-24 is listed in blackout.dates",
        f"blackout ({clause_at(rules, 'blackout')}) holds back marketing",
    )
    assert_sent(the(touches, "birthday"))  # care is not a blacked-out category
    assert_sent(the(plan(store, rules, D(2026, 12, 28)), "promo"))  # an ordinary day


def test_blackout_public_holidays_cn(store: Store, tmp_path: Path) -> None:
    load_rows(store, customers=[customer_row("C1", birth_date=NOT_A_BIRTHDAY, consent_marketing=1)])
    promo = rule_yaml("promo", dates=["10-01", "10-12"], category="marketing")
    rules = make_rules(tmp_path, BLACKOUT_CN, {"promo.yaml": promo})
    day = D(2026, 10, 1)
    assert_suppressed(
        the(plan(store, rules, day), "promo"),
        SuppressionReason.BLACKOUT,
        "2026-10-01 is a public holiday in China (National Day)",
        f"blackout ({clause_at(rules, 'blackout')}) holds back marketing",
    )
    engine = engine_for(store, rules, tmp_path)
    assert run_day(engine, day, run_id="r1", now=at_11_shanghai(day)).sent == 0
    state = state_of(store, "promo|customer:C1|2026-10-01", day)
    assert (state.status, state.reason, state.attempts) == (TouchStatus.SUPPRESSED, "blackout", 0)
    # 12 October 2026 is a working day: the same rule goes out.
    assert_sent(the(plan(store, rules, D(2026, 10, 12)), "promo"))


def test_blackout_public_holidays_cn_defers_within_the_window(store: Store, tmp_path: Path) -> None:
    """The shipped holiday greeting (defer_days: 2) on Mid-Autumn 2026, when public holidays
    are blacked out: the holiday lasts 25-27 September, the greeting's window ends on the 27th,
    so it waits twice and is then suppressed for the blackout, never sent."""
    load_rows(store, customers=[customer_row("C1", birth_date=NOT_A_BIRTHDAY, consent_marketing=1)])
    rules = make_rules(tmp_path, BLACKOUT_CN)
    engine = engine_for(store, rules, tmp_path)
    key = "holiday-greeting|customer:C1|2026-09-25"
    blackout = f"blackout ({clause_at(rules, 'blackout')}) holds back marketing"
    for offset, reason in enumerate(
        [SuppressionReason.DEFERRED, SuppressionReason.DEFERRED, SuppressionReason.BLACKOUT]
    ):
        day = MID_AUTUMN + dt.timedelta(days=offset)
        touch = the(plan(store, rules, day), "holiday-greeting")
        assert touch.key == key
        assert_suppressed(
            touch, reason, f"{day} is a public holiday in China (Mid-autumn Festival)", blackout
        )
        assert run_day(engine, day, run_id=f"r{offset}", now=at_11_shanghai(day)).sent == 0
        assert state_of(store, key, MID_AUTUMN).reason == reason.value
    assert "not deferred: its window (defer_days=2) ended 2026-09-27" in explain(touch)
    day = D(2026, 9, 28)  # a working day, but past the window
    assert plan(store, rules, day) == []
    run_day(engine, day, run_id="r3", now=at_11_shanghai(day))
    assert state_of(store, key, MID_AUTUMN).attempts == 0


# --- frequency caps ----------------------------------------------------------------------------


def test_cap_per_day(store: Store, tmp_path: Path) -> None:
    load_rows(
        store,
        customers=[customer_row("C1")],
        policies=[policy_row("P1", "C1", renewal_date="2026-11-30")],  # 7 days before: DAY
    )
    rules = make_rules(tmp_path, "version: 1\ncaps:\n  per_day: 1\n")
    touches = plan(store, rules, DAY)
    assert_sent(the(touches, "renewal-reminder"))
    assert_suppressed(
        the(touches, "birthday"),
        SuppressionReason.FREQUENCY_CAP,
        Clause(rules, "caps.per_day", 1),
        "renewal-reminder (2026-11-23) on 2026-11-23",
        "(priority decides)",
    )
    engine = engine_for(store, rules, tmp_path)
    assert run_day(engine, DAY, run_id="r1", now=at_11_shanghai(DAY)).sent == 1


@pytest.mark.parametrize(
    ("cap", "clause", "when"),
    [
        ("per_day", "caps.per_day", "on 2026-11-23"),
        ("per_7_days", "caps.per_7_days", "in 2026-11-17..2026-11-23"),
    ],
)
def test_a_cap_of_zero_holds_back_the_first_touch(
    store: Store, tmp_path: Path, cap: str, clause: str, when: str
) -> None:
    """Nothing taken yet, and still no room: the planner's shortcut for a customer with no
    contacts must not skip a cap of 0."""
    load_rows(store, customers=[customer_row("C1")])
    rules = make_rules(tmp_path, f"version: 1\ncaps:\n  {cap}: 0\n")
    assert_suppressed(
        the(plan(store, rules, DAY), "birthday"),
        SuppressionReason.FREQUENCY_CAP,
        Clause(rules, clause, 0),
        f"0 touch(es) already:  {when}",
    )


def test_cap_per_7_days_counts_earlier_days(store: Store, tmp_path: Path) -> None:
    load_rows(
        store,
        customers=[customer_row("C1", birth_date="1990-11-25")],
        # Reminders on 11-23 (7 days before) and 11-29 (1 day before); birthday on 11-25.
        policies=[policy_row("P1", "C1", renewal_date="2026-11-30")],
    )
    rules = make_rules(tmp_path, "version: 1\ncaps:\n  per_day: 5\n  per_7_days: 2\n")
    engine = engine_for(store, rules, tmp_path)
    for day in (D(2026, 11, 23), D(2026, 11, 25)):
        assert run_day(engine, day, run_id=f"r-{day}", now=at_11_shanghai(day)).sent == 1
    last = D(2026, 11, 29)
    touch = the(plan(store, rules, last), "renewal-reminder")
    # Touches already sent keep their places, whatever their priority; the reminder of the
    # day before the renewal cannot wait (a service obligation on the last day of its window),
    # so it is not dropped as a mere frequency_cap but flagged.
    assert_suppressed(
        touch,
        SuppressionReason.OBLIGATION_MISSED,
        Clause(rules, "caps.per_7_days", 2),
        "renewal-reminder (2026-11-23)",
        "birthday (2026-11-25)",
        "in 2026-11-23..2026-11-29",
        "obligation missed: a service obligation held back (frequency_cap) on the last day "
        "of its window (defer_days=3, window ends 2026-11-29)",
    )
    assert run_day(engine, last, run_id="r-last", now=at_11_shanghai(last)).sent == 0
    # One day later the 11-23 touch has left every window that contains 11-30.
    load_rows(store, policies=[policy_row("P2", "C1", renewal_date="2026-12-01")])
    assert_sent(the(plan(store, rules, D(2026, 11, 30)), "renewal-reminder"))


def test_cap_per_category_per_7_days(store: Store, tmp_path: Path) -> None:
    load_rows(
        store,
        customers=[customer_row("C1", birth_date="1990-11-25")],
        policies=[policy_row("P1", "C1", renewal_date="2026-12-02")],  # reminder on 11-25
        events=[
            event_row("E1", "C1", occurred_at="2026-11-22T12:00:00+08:00"),  # thank-you 11-23
            event_row("E2", "C1", occurred_at="2026-11-28T12:00:00+08:00"),  # thank-you 11-29
            event_row("E3", "C1", occurred_at="2026-11-29T12:00:00+08:00"),  # thank-you 11-30
        ],
    )
    policy = "version: 1\ncaps:\n  per_day: 5\n  categories:\n    care:\n      per_7_days: 1\n"
    rules = make_rules(tmp_path, policy)
    engine = engine_for(store, rules, tmp_path)
    first = D(2026, 11, 23)
    assert run_day(engine, first, run_id="r1", now=at_11_shanghai(first)).sent == 1
    second = D(2026, 11, 25)
    touches = plan(store, rules, second)
    assert_suppressed(
        the(touches, "birthday"),
        SuppressionReason.FREQUENCY_CAP,
        Clause(rules, "caps.categories.care.per_7_days", 1),
        "thank-you (2026-11-23)",
    )
    assert_sent(the(touches, "renewal-reminder"))  # service is not capped by the care cap
    assert run_day(engine, second, run_id="r2", now=at_11_shanghai(second)).sent == 1
    # The window boundary: 11-29 still shares a window with 11-23, 11-30 does not.
    day = D(2026, 11, 29)
    assert_suppressed(the(plan(store, rules, day), "thank-you"), SuppressionReason.FREQUENCY_CAP)
    run_day(engine, day, run_id="r3", now=at_11_shanghai(day))
    assert_sent(the(plan(store, rules, D(2026, 11, 30)), "thank-you"))


def test_cap_per_channel_per_day(store: Store, tmp_path: Path) -> None:
    load_rows(
        store,
        customers=[customer_row("C1")],
        policies=[policy_row("P1", "C1", renewal_date="2026-11-30")],
        events=[event_row("E1", "C1", occurred_at="2026-11-22T12:00:00+08:00")],
    )
    policy = "version: 1\ncaps:\n  per_day: 5\n  channels:\n    sms:\n      per_day: 1\n"
    rules = make_rules(tmp_path, policy)
    touches = plan(store, rules, DAY)
    assert_sent(the(touches, "renewal-reminder"))
    assert the(touches, "renewal-reminder").channel.value == "sms"  # type: ignore[union-attr]
    assert_suppressed(
        the(touches, "birthday"),
        SuppressionReason.FREQUENCY_CAP,
        Clause(rules, "caps.channels.sms.per_day", 1),
    )
    thanks = the(touches, "thank-you")  # email first: the sms cap does not hold it back
    assert_sent(thanks)
    assert thanks.channel is not None and thanks.channel.value == "email"
    engine = engine_for(store, rules, tmp_path)
    assert run_day(engine, DAY, run_id="r1", now=at_11_shanghai(DAY)).sent == 2


# --- capacity --------------------------------------------------------------------------------


def test_capacity_serves_higher_tiers_first(store: Store, tmp_path: Path) -> None:
    tiers = ["D", "A", "C", "B"]
    load_rows(
        store,
        customers=[
            customer_row(f"C{tier}", tier=tier, phone=f"+861381234800{i}")
            for i, tier in enumerate(tiers)
        ],
    )
    policy = "version: 1\ncaps:\n  per_day: 5\ncapacity:\n  sms:\n    per_day: 2\n"
    rules = make_rules(tmp_path, policy)
    touches = plan(store, rules, DAY)
    for tier in "AB":
        assert_sent(the(touches, "birthday", f"C{tier}"))
    for tier in "CD":
        assert_suppressed(
            the(touches, "birthday", f"C{tier}"),
            SuppressionReason.CAPACITY,
            Clause(rules, "capacity.sms.per_day", 2),
            "spent on tiers A>B>C>D first",
            f"(this customer is tier {tier})",
        )
    engine = engine_for(store, rules, tmp_path)
    assert run_day(engine, DAY, run_id="r1", now=at_11_shanghai(DAY)).sent == 2
    by_customer = {s.row.customer_id: s for s in Ledger(store).states_for_day(DAY)}
    assert {c: (s.status.value, s.reason) for c, s in by_customer.items()} == {
        "CA": ("sent", None),
        "CB": ("sent", None),
        "CC": ("suppressed", "capacity"),
        "CD": ("suppressed", "capacity"),
    }
    # A rerun of the day does not spend the capacity again.
    assert run_day(engine, DAY, run_id="r2", now=at_11_shanghai(DAY)).sent == 0


CAPACITY_1 = "version: 1\ncaps:\n  per_day: 5\ncapacity:\n  sms:\n    per_day: 1\n"


def sms_sent(store: Store, day: dt.date) -> list[str]:
    ledger = Ledger(store)
    return sorted(
        s.row.customer_id
        for s in ledger.states_for_day(day)
        for a in ledger.attempts(s.id)
        if a.channel == "sms"
    )


def test_channel_switched_at_send_time_respects_sms_capacity(store: Store, tmp_path: Path) -> None:
    load_rows(
        store,
        customers=[
            customer_row("CA", tier="A", birth_date=NOT_A_BIRTHDAY),
            customer_row(
                "CB",
                tier="B",
                phone="+8613812348001",
                email="",
                consent_email="false",
                birth_date=NOT_A_BIRTHDAY,
            ),
        ],
    )
    note = rule_yaml("note", dates=[DAY.isoformat()], channels="[email, sms]")
    rules = make_rules(tmp_path, CAPACITY_1, {"note.yaml": note}, shipped=())
    engine = engine_for(store, rules, tmp_path)
    run_day(engine, DAY, run_id="r1", now=utc(2026, 11, 23, 0))  # 08:00 in Shanghai: waiting
    planned = {s.row.customer_id: s.row.channel for s in Ledger(store).states_for_day(DAY)}
    assert planned == {"CA": "email", "CB": "sms"}  # one SMS: within capacity.sms.per_day=1
    record_consent(store, "CA", {Purpose.EMAIL: False}, source="cli", at=utc(2026, 11, 23, 1))
    send_touches(engine, pending_ids(engine), run_id="r2", now=at_11_shanghai(DAY))
    assert sms_sent(store, DAY) in (["CA"], ["CB"])  # actually ["CA", "CB"]


def test_capacity_counts_a_touch_planned_again_after_consent(store: Store, tmp_path: Path) -> None:
    load_rows(
        store,
        customers=[
            customer_row("CA", tier="A", consent_sms="false", birth_date=NOT_A_BIRTHDAY),
            customer_row("CB", tier="B", phone="+8613812348001", birth_date=NOT_A_BIRTHDAY),
        ],
    )
    note = rule_yaml("note", dates=[DAY.isoformat()], channels="[sms]")
    rules = make_rules(tmp_path, CAPACITY_1, {"note.yaml": note}, shipped=())
    engine = engine_for(store, rules, tmp_path)
    run_day(engine, DAY, run_id="r1", now=utc(2026, 11, 23, 0))  # CA no_contact, CB planned
    record_consent(store, "CA", {Purpose.SMS: True}, source="cli", at=utc(2026, 11, 23, 0, 30))
    run_day(engine, DAY, run_id="r2", now=utc(2026, 11, 23, 1))  # tier A first: CB capacity
    states = {s.row.customer_id: s for s in Ledger(store).states_for_day(DAY)}
    assert (states["CA"].status, states["CB"].reason) == (TouchStatus.PLANNED, "capacity")
    send_touches(engine, pending_ids(engine), run_id="r3", now=utc(2026, 11, 23, 2, 30))
    assert sms_sent(store, DAY) == ["CA"]
    run_day(engine, DAY, run_id="r4", now=at_11_shanghai(DAY))  # the dispatcher plans again
    assert sms_sent(store, DAY) == ["CA"]  # actually ["CA", "CB"]: the capacity is spent twice


# --- deferral --------------------------------------------------------------------------------


def deferral_rules(tmp_path: Path, competitor_days: list[dt.date]) -> Path:
    competitor = rule_yaml(
        "competitor", dates=[d.isoformat() for d in competitor_days], priority=80
    )
    waiter = rule_yaml("waiter", dates=[DAY.isoformat()], priority=20, defer_days=2)
    return make_rules(
        tmp_path,
        "version: 1\ncaps:\n  per_day: 1\n",
        {"competitor.yaml": competitor, "waiter.yaml": waiter},
        shipped=(),
    )


def test_deferred_then_sent_next_day(store: Store, tmp_path: Path) -> None:
    load_rows(store, customers=[customer_row("C1")])
    rules = deferral_rules(tmp_path, [DAY])
    touches = plan(store, rules, DAY)
    assert_sent(the(touches, "competitor"))
    waiter = the(touches, "waiter")
    assert_suppressed(
        waiter,
        SuppressionReason.DEFERRED,
        Clause(rules, "caps.per_day", 1),
        "deferred: competes again on 2026-11-24 (defer_days=2, window ends 2026-11-25)",
    )
    key = waiter.key
    assert key == "waiter|customer:C1|2026-11-23"
    engine = engine_for(store, rules, tmp_path)
    assert run_day(engine, DAY, run_id="r1", now=at_11_shanghai(DAY)).sent == 1
    assert state_of(store, key, DAY).reason == "deferred"
    nxt = DAY + dt.timedelta(days=1)
    again = the(plan(store, rules, nxt), "waiter")
    assert_sent(again)
    assert (again.key, again.occurrence) == (key, DAY)
    assert again.send_at == utc(2026, 11, 24, 2)  # 10:00 in Shanghai on the new day
    # `care run` of D+1 sends it: the day's own touches and those deferred to it.
    report = run_day(engine, nxt, run_id="r2", now=at_11_shanghai(nxt))
    assert report.sent == 1
    state = state_of(store, key, DAY)
    assert (state.status, state.row.occurrence) == (TouchStatus.SENT, DAY)
    (attempt,) = Ledger(store).attempts(state.id)
    created = attempt.created_at.replace(tzinfo=attempt.created_at.tzinfo or dt.timezone.utc)
    assert created == at_11_shanghai(nxt)
    assert Ledger(store).states_for_day(nxt) == []  # no second touch under another key


def test_run_day_sends_a_touch_deferred_from_the_day_before(store: Store, tmp_path: Path) -> None:
    load_rows(store, customers=[customer_row("C1")])
    rules = deferral_rules(tmp_path, [DAY])
    engine = engine_for(store, rules, tmp_path)
    assert run_day(engine, DAY, run_id="r1", now=at_11_shanghai(DAY)).sent == 1
    nxt = DAY + dt.timedelta(days=1)
    assert run_day(engine, nxt, run_id="r2", now=at_11_shanghai(nxt)).sent == 1
    assert state_of(store, "waiter|customer:C1|2026-11-23", DAY).status is TouchStatus.SENT


def test_deferred_never_leaves_its_window(store: Store, tmp_path: Path) -> None:
    load_rows(store, customers=[customer_row("C1")])
    days = [DAY + dt.timedelta(days=i) for i in range(4)]
    rules = deferral_rules(tmp_path, days)
    engine = engine_for(store, rules, tmp_path)
    key = "waiter|customer:C1|2026-11-23"
    expected = ["deferred", "deferred", "frequency_cap"]
    for day, reason in zip(days, expected, strict=False):
        waiter = the(plan(store, rules, day), "waiter")
        assert waiter.key == key
        assert waiter.reason is SuppressionReason(reason), explain(waiter)
        assert run_day(engine, day, run_id=f"r-{day}", now=at_11_shanghai(day)).sent == 1
        assert state_of(store, key, DAY).reason == reason
    assert "not deferred: its window (defer_days=2) ended 2026-11-25" in explain(waiter)
    # Past the window the waiter is no longer a candidate, and it was never sent.
    assert [t.rule.id for t in plan(store, rules, days[3])] == ["competitor"]
    run_day(engine, days[3], run_id="r-last", now=at_11_shanghai(days[3]))
    state = state_of(store, key, DAY)
    assert (state.status, state.reason, state.attempts) == (
        TouchStatus.SUPPRESSED,
        "frequency_cap",
        0,
    )


# --- already_sent ------------------------------------------------------------------------------


def test_already_sent(store: Store, tmp_path: Path) -> None:
    load_rows(store, customers=[customer_row("C1")])
    rules = make_rules(tmp_path)
    engine = engine_for(store, rules, tmp_path)
    assert run_day(engine, DAY, run_id="r1", now=at_11_shanghai(DAY)).sent == 1
    touch = the(plan(store, rules, DAY), "birthday")
    assert_suppressed(
        touch, SuppressionReason.ALREADY_SENT, "the ledger holds this touch as handled"
    )
    assert run_day(engine, DAY, run_id="r2", now=at_11_shanghai(DAY)).sent == 0
    state = state_of(store, touch.key, DAY)
    assert (state.status, state.attempts) == (TouchStatus.SENT, 1)


# --- at send time: quiet_hours and too_late ----------------------------------------------------

WINDOW_2H = "version: 1\ncaps:\n  per_day: 5\nsending_window_hours: 2\n"


def test_too_late(store: Store, tmp_path: Path) -> None:
    load_rows(store, customers=[customer_row("C1")])
    rules = make_rules(tmp_path, WINDOW_2H)
    engine = engine_for(store, rules, tmp_path)
    # 08:00 in Shanghai: planned, waiting for 09:00.
    early = run_day(engine, DAY, run_id="r1", now=utc(2026, 11, 23, 0, 0))
    assert (early.sent, early.waiting) == (0, 1)
    # 12:00 in Shanghai: three hours after the send time, the two-hour window has passed.
    late = send_touches(engine, pending_ids(engine, DAY), run_id="r2", now=utc(2026, 11, 23, 4))
    assert (late.sent, late.suppressed) == (0, 1)
    (state,) = Ledger(store).states_for_day(DAY)
    assert (state.status, state.reason, state.attempts) == (TouchStatus.SUPPRESSED, "too_late", 0)
    text = ledger_explain(store, state)
    assert "planned for 2026-11-23 01:00Z" in text
    assert_mentions(text, Clause(rules, "sending_window_hours", 2))


EVENING = {"evening.yaml": rule_yaml("evening", dates=[DAY.isoformat()], send_time="20:00")}


def test_quiet_hours_outlast_the_window(store: Store, tmp_path: Path) -> None:
    load_rows(store, customers=[customer_row("C1", birth_date=NOT_A_BIRTHDAY)])
    rules = make_rules(tmp_path, WINDOW_2H, EVENING, shipped=())
    engine = engine_for(store, rules, tmp_path)
    # 19:00 in Shanghai: planned for 20:00.
    assert run_day(engine, DAY, run_id="r1", now=utc(2026, 11, 23, 11)).waiting == 1
    # 21:30 in Shanghai: quiet until 08:00, beyond the window that ends at 22:00.
    quiet = send_touches(
        engine, pending_ids(engine, DAY), run_id="r2", now=utc(2026, 11, 23, 13, 30)
    )
    assert (quiet.sent, quiet.suppressed) == (0, 1)
    (state,) = Ledger(store).states_for_day(DAY)
    assert (state.status, state.reason, state.attempts) == (
        TouchStatus.SUPPRESSED,
        "quiet_hours",
        0,
    )
    text = ledger_explain(store, state)
    assert_mentions(text, Clause(rules, "sending_window_hours", 2))


def test_quiet_hours_within_the_window_only_wait(store: Store, tmp_path: Path) -> None:
    load_rows(store, customers=[customer_row("C1", birth_date=NOT_A_BIRTHDAY)])
    rules = make_rules(tmp_path, "version: 1\n", EVENING, shipped=())  # 24-hour window
    engine = engine_for(store, rules, tmp_path)
    run_day(engine, DAY, run_id="r1", now=utc(2026, 11, 23, 11))
    quiet = send_touches(
        engine, pending_ids(engine, DAY), run_id="r2", now=utc(2026, 11, 23, 13, 30)
    )
    assert (quiet.sent, quiet.waiting, quiet.suppressed) == (0, 1, 0)
    # 08:30 in Shanghai the next morning: quiet hours are over, the window still open.
    morning = send_touches(
        engine, pending_ids(engine, DAY), run_id="r3", now=utc(2026, 11, 24, 0, 30)
    )
    assert morning.sent == 1


def test_quiet_hours_explain_names_the_quiet_hours_clause(store: Store, tmp_path: Path) -> None:
    load_rows(store, customers=[customer_row("C1", birth_date=NOT_A_BIRTHDAY)])
    policy = WINDOW_2H + 'quiet_hours:\n  start: "21:00"\n  end: "08:00"\n'
    rules = make_rules(tmp_path, policy, EVENING, shipped=())
    engine = engine_for(store, rules, tmp_path)
    run_day(engine, DAY, run_id="r1", now=utc(2026, 11, 23, 11))
    send_touches(engine, pending_ids(engine, DAY), run_id="r2", now=utc(2026, 11, 23, 13, 30))
    (state,) = Ledger(store).states_for_day(DAY)
    assert state.reason == "quiet_hours"
    assert_mentions(ledger_explain(store, state), Clause(rules, "quiet_hours", "21:00-08:00"))


# --- priority ties -----------------------------------------------------------------------------

ALPHA = rule_yaml("alpha", dates=[DAY.isoformat()], priority=50, header=False)
BETA = rule_yaml("beta", dates=[DAY.isoformat()], priority=50, header=False)
HEADER = "version: 1\nrules:\n"


@pytest.mark.parametrize(
    "files",
    [
        {"a.yaml": HEADER + ALPHA, "b.yaml": HEADER + BETA},
        {"a.yaml": HEADER + BETA, "b.yaml": HEADER + ALPHA},
        {"both.yaml": HEADER + ALPHA + BETA},
        {"both.yaml": HEADER + BETA + ALPHA},
    ],
    ids=["alpha-file-first", "beta-file-first", "one-file-alpha-first", "one-file-beta-first"],
)
def test_priority_tie_broken_by_rule_id(
    store: Store, tmp_path: Path, files: dict[str, str]
) -> None:
    load_rows(store, customers=[customer_row("C1", birth_date=NOT_A_BIRTHDAY)])
    rules = make_rules(tmp_path, "version: 1\ncaps:\n  per_day: 1\n", files, shipped=())
    touches = plan(store, rules, DAY)
    assert_sent(the(touches, "alpha"))
    assert_suppressed(
        the(touches, "beta"),
        SuppressionReason.FREQUENCY_CAP,
        Clause(rules, "caps.per_day", 1),
        "alpha (2026-11-23)",
        "(priority decides)",
    )
    engine = engine_for(store, rules, tmp_path)
    assert run_day(engine, DAY, run_id="r1", now=at_11_shanghai(DAY)).sent == 1
    sent = [s.row.rule_id for s in Ledger(store).states_for_day(DAY) if s.status.value == "sent"]
    assert sent == ["alpha"]


# --- the shipped holiday greeting --------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "holiday"),
    [(D(2027, 2, 6), "spring_festival"), (MID_AUTUMN, "mid_autumn")],
    ids=["spring-festival-2027", "mid-autumn-2026"],
)
def test_holiday_greeting_only_with_marketing_consent(
    store: Store, tmp_path: Path, day: dt.date, holiday: str
) -> None:
    load_rows(
        store,
        customers=[
            customer_row("C1", birth_date=NOT_A_BIRTHDAY, consent_marketing="true"),
            customer_row("C2", birth_date=NOT_A_BIRTHDAY, consent_marketing="false"),
        ],
    )
    rules = make_rules(tmp_path)
    touches = plan(store, rules, day)
    assert {t.rule.id for t in touches} == {"holiday-greeting"}
    greeting = the(touches, "holiday-greeting", "C1")
    assert_sent(greeting)
    assert greeting.holiday == holiday
    assert_suppressed(the(touches, "holiday-greeting", "C2"), SuppressionReason.NO_CONTACT)
    engine = engine_for(store, rules, tmp_path)
    assert run_day(engine, day, run_id="r1", now=at_11_shanghai(day)).sent == 1
    sent = [s for s in Ledger(store).states_for_day(day) if s.status is TouchStatus.SENT]
    assert [s.row.customer_id for s in sent] == ["C1"]
    (attempt,) = Ledger(store).attempts(sent[0].id)
    assert attempt.channel == "sms" and attempt.body
    # Not on an ordinary day.
    ordinary = day - dt.timedelta(days=3)
    assert [t for t in plan(store, rules, ordinary) if t.rule.id == "holiday-greeting"] == []


# --- tiers shorthand ---------------------------------------------------------------------------


@pytest.mark.parametrize(("tiers", "expected"), [(["A"], {"CA"}), (["A", "B"], {"CA", "CB"})])
def test_tiers_shorthand(
    store: Store, tmp_path: Path, tiers: list[str], expected: set[str]
) -> None:
    load_rows(
        store,
        customers=[
            customer_row(f"C{t}", tier=t, birth_date=NOT_A_BIRTHDAY, phone=f"+86138123480{i}0")
            for i, t in enumerate("ABCD")
        ],
    )
    vip = rule_yaml("vip", dates=[DAY.isoformat()], tiers=tiers)
    rules = make_rules(tmp_path, "version: 1\n", {"vip.yaml": vip}, shipped=())
    touches = plan(store, rules, DAY)
    assert {t.customer_id for t in touches} == expected
    assert all(t.decision is Decision.SEND for t in touches)
    engine = engine_for(store, rules, tmp_path)
    assert run_day(engine, DAY, run_id="r1", now=at_11_shanghai(DAY)).sent == len(expected)


# --- case_closed: a touch owed only while its case is open (trigger.until) -------------------

RECEIVED_K1 = {
    "event_id": "K1",
    "type": "complaint_received",
    "occurred_at": "2026-11-18T10:00:00+08:00",  # the escalation is due 5 days later: DAY
    "payload": '{"case_id": "CS-1"}',
}


@pytest.mark.parametrize(
    ("later", "closed_by"),
    [
        ([], None),
        ([("R1", "complaint_resolved", "C1", "2026-11-20T10:00:00+08:00", "CS-1")], "R1"),
        ([("R1", "complaint_closed", "C1", "2026-11-23T08:59:00+08:00", "CS-1")], "R1"),
        # Not this case, not since the receipt, not before the send time, not this customer,
        # not a type the rule waits for:
        ([("R1", "complaint_resolved", "C1", "2026-11-20T10:00:00+08:00", "CS-2")], None),
        ([("R1", "complaint_closed", "C1", "2026-11-10T10:00:00+08:00", "CS-1")], None),
        ([("R1", "complaint_resolved", "C1", "2026-11-23T09:30:00+08:00", "CS-1")], None),
        ([("R1", "complaint_resolved", "C2", "2026-11-20T10:00:00+08:00", "CS-1")], None),
        ([("R1", "complaint_reopened", "C1", "2026-11-20T10:00:00+08:00", "CS-1")], None),
        (
            [
                ("R1", "complaint_resolved", "C1", "2026-11-19T10:00:00+08:00", "CS-2"),
                ("R2", "complaint_closed", "C1", "2026-11-21T10:00:00+08:00", "CS-1"),
            ],
            "R2",
        ),
    ],
)
def test_case_closed(
    store: Store,
    tmp_path: Path,
    later: list[tuple[str, str, str, str, str]],
    closed_by: str | None,
) -> None:
    insert_agents_and_relations(
        store,
        agents=[
            {"agent_id": "A1", "name": "李娜", "manager_id": "M1"},
            {"agent_id": "M1", "name": "张伟"},
        ],
    )
    load_rows(
        store,
        customers=[
            customer_row("C1", agent_id="A1", birth_date=NOT_A_BIRTHDAY),
            customer_row("C2", agent_id="A1", birth_date=NOT_A_BIRTHDAY, phone="+8613812348002"),
        ],
        events=[
            event_row(**RECEIVED_K1),
            *(
                event_row(
                    event_id,
                    customer,
                    type=kind,
                    occurred_at=at,
                    payload=f'{{"case_id": "{case}"}}',
                )
                for event_id, kind, customer, at, case in later
            ),
        ],
    )
    rules = make_rules(tmp_path, shipped=("complaint-escalation",))
    touch = the(plan(store, rules, DAY), "complaint-escalation")
    if closed_by is None:
        assert_sent(touch)
        assert "task for M1, the manager of agent A1" in explain(touch)
        return
    [(_, kind, _, _, _)] = [row for row in later if row[0] == closed_by]
    assert_suppressed(
        touch, SuppressionReason.CASE_CLOSED, f"case CS-1 is no longer open: {kind} {closed_by}"
    )
    engine = engine_for(store, rules, tmp_path)
    assert run_day(engine, DAY, run_id="r1", now=at_11_shanghai(DAY)).assigned == 0
    state = state_of(store, touch.key, DAY)
    assert (state.status, state.reason) == (TouchStatus.SUPPRESSED, "case_closed")


# --- the reason words are all covered ------------------------------------------------------------


def test_every_reason_word_has_a_table_test() -> None:
    # Service obligations and occasions have their own multi-day table (test_obligations.py).
    from test_obligations import ROWS, test_decisions_over_consecutive_days

    in_rows = {outcome for row in ROWS for day in row.days.values() for outcome in day.values()}
    assert {"occasion_taken", "obligation_missed"} <= in_rows
    covered = {
        "occasion_taken": test_decisions_over_consecutive_days,
        "obligation_missed": test_decisions_over_consecutive_days,
        "no_contact": test_no_contact,
        "opted_out": test_opted_out_sms_only_customer,
        "blackout": test_blackout_explicit_date,
        "frequency_cap": test_cap_per_day,
        "capacity": test_capacity_serves_higher_tiers_first,
        "deferred": test_deferred_then_sent_next_day,
        "already_sent": test_already_sent,
        "case_closed": test_case_closed,
        "quiet_hours": test_quiet_hours_outlast_the_window,
        "too_late": test_too_late,
        # Decided at send time, for premium reminders planned before the payment.
        "paid": _test_in("run/test_premium_reminders.py", "test_the_paid_stop_table"),
    }
    assert set(covered) == {r.value for r in SuppressionReason}


def _test_in(path: str, name: str) -> object:
    """A test function of another directory of tests/ (not on sys.path here)."""
    import importlib.util

    file = Path(__file__).resolve().parents[1] / path
    spec = importlib.util.spec_from_file_location(f"_covered_{file.stem}", file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)
