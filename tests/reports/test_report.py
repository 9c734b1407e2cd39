"""``care report``: the numbers equal counts computed straight from the ledger, and the HTML
shows them in a real browser (headless Chromium via Playwright)."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from caretouch.config import CareConfig
from caretouch.ledger import Ledger
from caretouch.ledger.consent import record_consent
from caretouch.render.templates import TemplateStore
from caretouch.reports.figures import Period, compute
from caretouch.reports.service_report import build_report
from caretouch.rules.loader import RuleSet, load_rules
from caretouch.run.day import run_day
from caretouch.run.engine import CareEngine, open_engine
from caretouch.store.consent import Purpose
from caretouch.store.db import Store
from caretouch.vocab import TouchStatus
from conftest import (
    RULES_DIR,
    TEMPLATES_DIR,
    Care,
    customer_row,
    event_row,
    in_ci,
    load_rows,
    policy_row,
    utc,
)

WEEK = Period.week("2026-W47")  # 2026-11-16 .. 2026-11-22
FIRST_RUN = dt.date(2026, 11, 9)  # the previous week too, for the comparison


@pytest.fixture
def history(store: Store, tmp_path: Path) -> Store:
    return fill_history(store, tmp_path)


@pytest.fixture
def sqlite_history(sqlite_store: Store, tmp_path: Path) -> Store:
    """For the CLI, which opens the store by its URL."""
    return fill_history(sqlite_store, tmp_path)


def fill_history(store: Store, tmp_path: Path) -> Store:
    """Two weeks of daily runs with the shipped rules, a few opt-outs and complaints."""
    rules = tmp_path / "rules"
    rules.mkdir()
    for name in ("policy.yaml", "events.yaml", "birthday.yaml", "complaint-follow-up.yaml"):
        shutil.copy(RULES_DIR / name, rules / name)
    customers = [
        customer_row(
            f"B{i:02d}",
            birth_date=f"1980-11-{9 + i:02d}",
            tier="ABCD"[i % 4],
            phone="" if i % 3 == 0 else f"+86138000000{i:02d}",
        )
        for i in range(14)
    ]
    customers += [
        customer_row(
            "N1", birth_date="1980-11-18", consent_sms="false", consent_email="false", tier="A"
        ),
        customer_row("K1", birth_date="1980-01-01", tier="A"),
        customer_row("K2", birth_date="1980-01-01", tier="B"),
        customer_row("K3", birth_date="1980-01-01", consent_sms="false", consent_email="false"),
    ]
    customers.append(customer_row("K4", birth_date="1980-01-01", status="inactive"))
    events = [
        # Resolved at 15:00 Shanghai: the follow-up goes 3 local days later at 11:00 (run time).
        event_row("X1", "K1", type="complaint_resolved", occurred_at="2026-11-16T15:00:00+08:00"),
        # Resolved at 08:00: the follow-up, three local days later at 11:00, is on time (the
        # rule's due date; 75 hours after the resolution).
        event_row("X2", "K2", type="complaint_resolved", occurred_at="2026-11-16T08:00:00+08:00"),
        # No consent: never followed up.
        event_row("X3", "K3", type="complaint_resolved", occurred_at="2026-11-17T09:00:00+08:00"),
        # An inactive customer: the rule does not apply, the report does not count it.
        event_row("X4", "K4", type="complaint_resolved", occurred_at="2026-11-17T09:00:00+08:00"),
        # The week before.
        event_row("X0", "K1", type="complaint_resolved", occurred_at="2026-11-09T12:00:00+08:00"),
    ]
    load_rows(store, customers=customers, events=events)
    record_consent(
        store, "B05", {Purpose.SMS: False}, source="webhook:twilio", at=utc(2026, 11, 17, 1)
    )
    record_consent(store, "B07", {Purpose.EMAIL: False}, source="cli", at=utc(2026, 11, 20, 1))
    record_consent(store, "B08", {Purpose.EMAIL: False}, source="cli", at=utc(2026, 11, 12, 1))
    config = CareConfig(
        store.url, rules, TEMPLATES_DIR, tmp_path / "outbox", anchor_file=tmp_path / "a.jsonl"
    )
    engine = open_engine(config, store=store)
    assert engine.ruleset.errors == []
    for n in range(14):
        day = FIRST_RUN + dt.timedelta(days=n)
        run_day(engine, day, run_id=f"run-{day}", now=utc(day.year, day.month, day.day, 3))
    # Delivery reports and a failure, appended through the ledger as the webhooks would.
    ledger = Ledger(store)
    sent = [s for d in WEEK.days for s in ledger.states_for_day(d) if s.status is TouchStatus.SENT]
    for state in sent[:3]:
        ledger.append(
            state.id,
            TouchStatus.DELIVERED,
            expected=TouchStatus.SENT,
            run_id="webhook",
            now=utc(2026, 11, 23),
        )
    ledger.append(
        sent[3].id,
        TouchStatus.UNDELIVERED,
        expected=TouchStatus.SENT,
        reason="30003",
        run_id="webhook",
        now=utc(2026, 11, 23),
    )
    ledger.append(
        sent[4].id,
        TouchStatus.FAILED,
        expected=TouchStatus.SENT,
        reason="provider_error",
        run_id="webhook",
        now=utc(2026, 11, 23),
    )
    return store


def rules_of(store: Store, tmp_path: Path) -> RuleSet:
    """The rules ``fill_history`` ran with."""
    ruleset = load_rules(tmp_path / "rules", TemplateStore(TEMPLATES_DIR))
    assert ruleset.errors == []
    return ruleset


def straight_from_ledger(store: Store, period: Period) -> Counter[tuple[str, str | None, str, str]]:
    ledger = Ledger(store)
    return Counter(
        (s.row.rule_id, s.channel, s.row.tier, s.status.value)
        for day in period.days
        for s in ledger.states_for_day(day)
    )


def test_report_numbers_equal_the_ledger(history: Store, tmp_path: Path) -> None:
    for period in (WEEK, WEEK.previous(), Period.month("2026-11")):
        figures = compute(history, period)
        expected = straight_from_ledger(history, period)
        got = Counter()
        for (rule_id, channel, tier, status, _reason), n in figures.touches.items():
            got[(rule_id, channel, tier, status)] += n
        assert got == expected, period
    figures = compute(history, WEEK)
    expected = straight_from_ledger(history, WEEK)
    assert figures.sent == sum(
        n for k, n in expected.items() if k[3] in ("sent", "delivered", "undelivered", "bounced")
    )
    assert (figures.delivered, figures.failed) == (3, 1)
    assert figures.delivery_rate == pytest.approx(3 / 4)
    assert figures.suppressed == sum(n for k, n in expected.items() if k[3] == "suppressed") > 0
    # Opt-outs in the week: B05 (sms, webhook) and B07 (email, cli); B08's was the week before.
    assert dict(figures.opt_outs) == {("sms", "webhook"): 1, ("email", "cli"): 1}
    # Complaint follow-ups, as the rule defines them: X1 and X2 sent on their due date (the
    # local date of the resolution + 3, at 10:00; here at 11:00): on time, but the provider
    # then reported one of them failed (above); X3 has no channel; X4's customer is inactive,
    # so the rule does not apply to it and it is not counted.
    failed = {
        s.row.event_id
        for s in Ledger(history).states_for_day(dt.date(2026, 11, 19))
        if s.status is TouchStatus.FAILED
    }
    assert len(failed) == 1
    figures = compute(history, WEEK, rules_of(history, tmp_path))
    assert dict(figures.follow_ups) == {"on_time": 1, "failed": 1, "unreachable": 1}
    assert (figures.follow_ups_on_time, figures.follow_ups_settled) == (1, 3)
    ledger = Ledger(history)
    followed = {
        s.row.event_id: min(e.at for e in ledger.history(s.id) if e.status == "sent")
        for d in WEEK.days
        for s in ledger.states_for_day(d)
        if s.row.rule_id == "complaint-follow-up"
        and any(e.status == "sent" for e in ledger.history(s.id))
    }
    resolved = {"X1": utc(2026, 11, 16, 7), "X2": utc(2026, 11, 16, 0)}
    # X2 went out 75 hours after the resolution: on time all the same.
    assert {
        x: at.replace(tzinfo=at.tzinfo or dt.timezone.utc) - resolved[x] > dt.timedelta(days=3)
        for x, at in followed.items()
    } == {"X1": False, "X2": True}
    before = compute(history, WEEK.previous(), rules_of(history, tmp_path))
    assert dict(before.follow_ups) == {"on_time": 1} and dict(before.opt_outs) == {
        ("email", "cli"): 1
    }


def test_periods() -> None:
    assert (WEEK.first, WEEK.last) == (dt.date(2026, 11, 16), dt.date(2026, 11, 22))
    assert WEEK.previous().label == "2026-W46"
    assert Period.week("2027-W01").first == dt.date(2027, 1, 4)
    assert Period.month("2026-12").previous().label == "2026-11"
    assert Period.month("2026-01").previous() == Period.month("2025-12")
    assert Period.month("2024-02").last == dt.date(2024, 2, 29)
    for bad in ("2026-13", "2026-1", "26-01"):
        with pytest.raises(ValueError):
            Period.month(bad)
    with pytest.raises(ValueError):
        Period.week("2026-W54")


def test_care_report_cli_writes_the_page(care: Care, sqlite_history: Store, tmp_path: Path) -> None:
    history = sqlite_history
    out = tmp_path / "r.html"
    care.store_url = history.url
    result = care("report", "--week", "2026-W47", "--output", str(out))
    assert result.exit_code == 0, result.output
    figures = compute(history, WEEK)
    assert f"{figures.sent:,} sent" in result.output
    # The CLI reads the rules of --rules (the shipped ones here): the same definition.
    assert "1/3 complaint follow-up(s) on time" in result.output
    # Four charts of the touches, two of the closed loops (complaints, tasks per agent).
    assert out.read_text(encoding="utf-8").count("data:image/png;base64,") == 6
    usage = care("report")
    assert usage.exit_code == 2


def test_the_page_shows_no_personal_data(sqlite_history: Store, tmp_path: Path) -> None:
    """Customers appear only by id (in the keys of missed touches), never by name, phone
    number or address: the page is made of figures, and escaped as a whole."""
    history = sqlite_history
    page = build_report(history, WEEK, rules_of(history, tmp_path)).html(
        generated_at=utc(2026, 11, 23, 6)
    )
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    assert "王芳" not in text and "wang.fang@example.com" not in text
    assert not re.search(r"\+86\d{6,}", text)
    assert "<script" not in text


@pytest.fixture
def chromium() -> str:
    found = os.environ.get("CARE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    reason = None
    if not Path(found).exists():
        reason = "Chromium not found (make browser, or set CARE_CHROMIUM)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "Playwright for Python is not installed (pip install -e '.[dev]')"
    if reason is not None:
        if in_ci():
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    return found


@pytest.mark.slow
def test_report_renders_in_chromium(sqlite_history: Store, tmp_path: Path, chromium: str) -> None:
    history = sqlite_history
    from playwright.sync_api import sync_playwright

    report = build_report(history, WEEK, rules_of(history, tmp_path))
    page_file = tmp_path / "report.html"
    page_file.write_text(report.html(generated_at=utc(2026, 11, 23, 6)), encoding="utf-8")
    now, before = report.now, report.before
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(page_file.as_uri())
            assert page.title() == "Care report, week 2026-W47 (2026-11-16 to 2026-11-22)"
            kpi = {
                key: page.inner_text(f"#kpi-{key} .value")
                for key in (
                    "touches",
                    "sent",
                    "delivery-rate",
                    "failure-rate",
                    "opt-outs",
                    "follow-ups",
                )
            }
            assert kpi == {
                "touches": f"{now.total:,}",
                "sent": f"{now.sent:,}",
                "delivery-rate": "75.0%",
                "failure-rate": f"{100 * now.failed / (now.sent + now.failed):.1f}%",
                "opt-outs": "2",
                "follow-ups": "1 of 3",
            }
            change = page.inner_text("#kpi-sent .change")
            assert (
                change.startswith(f"{now.sent - before.sent:+,}") and "vs previous week" in change
            )
            birthday = page.locator('#by-rule_id tr[data-key="birthday"] td').all_inner_texts()
            assert birthday[:2] == ["birthday", str(now.count(rule_id="birthday"))]
            # Every chart decoded and laid out.
            sizes = page.eval_on_selector_all(
                "img", "imgs => imgs.map(i => [i.complete, i.naturalWidth])"
            )
            assert len(sizes) == 6 and all(ok and width > 200 for ok, width in sizes)
            assert re.search(r"follow-ups due .*\s+3", page.inner_text("#complaints"))
        finally:
            browser.close()


def test_care_report_is_emailed_through_sendgrid(
    care: Care, sqlite_history: Store, tmp_path: Path
) -> None:
    """--email-to sends the page as the HTML part through the email channel (SendGrid, here
    the simulator), with the key numbers in the text part; a bad address writes nothing."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from provider_sim import SENDGRID, SENDGRID_API_KEY, ProviderSim

    history = sqlite_history
    out = tmp_path / "r.html"
    care.store_url = history.url
    args = ["report", "--week", "2026-W47", "--output", str(out)]
    bad = care(*args, "--email-to", "not-an-address")
    assert bad.exit_code == 2 and not out.exists()
    with ProviderSim() as sim:
        env = {
            "SENDGRID_API_KEY": SENDGRID_API_KEY,
            "CARE_EMAIL_FROM": "care@example.com",
            "CARE_SENDGRID_API_BASE": sim.url,
            "CARE_PUBLIC_URL": "https://care.example.com",
            "CARE_UNSUBSCRIBE_KEY": "an-unsubscribe-key-for-tests-only",
        }
        result = care(
            *args, "--email-to", "ops.lead@example.com", "--email-to", "audit@example.com", env=env
        )
        accepted = sim.accepted(SENDGRID)
    assert result.exit_code == 0, result.output
    assert result.output.count("via sendgrid: sent") == 2
    assert "ops.lead@example.com" not in result.output  # addresses are masked
    assert sorted(m.to for m in accepted) == ["audit@example.com", "ops.lead@example.com"]
    figures = compute(history, WEEK)
    for message in accepted:
        assert message.subject == "Caretouch week report 2026-W47"
        assert message.html == out.read_text(encoding="utf-8")
        assert f"{figures.sent:,} sent" in (message.text or "")
        assert "List-Unsubscribe" not in message.headers


# --- the complaint follow-up figure is the rule's own definition (issue 11, item 21) ---------


def follow_up_engine(store: Store, tmp_path: Path, *names: str) -> CareEngine:
    rules = tmp_path / "kpi-rules"
    rules.mkdir()
    for name in ("policy.yaml", "events.yaml", "complaint-follow-up.yaml", *names):
        shutil.copy(RULES_DIR / name, rules / name)
    config = CareConfig(
        store.url, rules, TEMPLATES_DIR, tmp_path / "outbox", anchor_file=tmp_path / "a.jsonl"
    )
    engine = open_engine(config, store=store)
    assert engine.ruleset.errors == []
    return engine


def run_week(engine: CareEngine) -> None:
    """care run of each day of WEEK at 11:00 in Shanghai (after the 10:00 send time)."""
    for day in WEEK.days:
        run_day(engine, day, run_id=f"run-{day}", now=utc(day.year, day.month, day.day, 3))


def test_a_follow_up_sent_by_the_rule_is_on_time(store: Store, tmp_path: Path) -> None:
    """Planned and sent by the engine at the rule's time, the follow-up is 100 % on time,
    although it goes out more than 72 hours after the resolution; an inactive customer's
    complaint, which the rule does not apply to, is not counted."""
    load_rows(
        store,
        customers=[
            customer_row("F1", birth_date="1980-01-01"),
            customer_row("F2", birth_date="1980-01-01", status="inactive"),
        ],
        events=[
            event_row(
                "E1", "F1", type="complaint_resolved", occurred_at="2026-11-16T08:00:00+08:00"
            ),
            event_row(
                "E2", "F2", type="complaint_resolved", occurred_at="2026-11-16T08:00:00+08:00"
            ),
        ],
    )
    engine = follow_up_engine(store, tmp_path)
    run_week(engine)
    (state,) = [s for s in Ledger(store).states_for_day(dt.date(2026, 11, 19))]
    assert (state.row.event_id, state.status) == ("E1", TouchStatus.SENT)
    report = build_report(store, WEEK, engine.ruleset)
    assert dict(report.now.follow_ups) == {"on_time": 1}
    assert report.now.follow_up_rate == 1.0
    page = report.html(generated_at=utc(2026, 11, 23, 6))
    card = re.search(r'id="kpi-follow-ups".*?class="value">([^<]*)<', page, re.S)
    assert card is not None and card.group(1) == "1 of 1"


def test_late_and_missed_follow_ups_and_obligations(store: Store, tmp_path: Path) -> None:
    """A follow-up deferred by a renewal reminder goes a day late; one whose complaint was
    recorded after its day had been planned is missed (the rule made it due, the ledger never
    got it); of two reminders of the day before one renewal date, one is a missed
    obligation. The report says so, by rule, and lists the missed ones."""
    load_rows(
        store,
        customers=[
            customer_row("F1", birth_date="1980-01-01"),
            customer_row("F3", birth_date="1980-01-01"),
            customer_row("F4", birth_date="1980-01-01"),
            customer_row("F5", birth_date="1980-01-01"),
        ],
        policies=[
            policy_row("P3", "F3", renewal_date="2026-11-27"),  # reminder on the 20th
            policy_row("P5", "F5", renewal_date="2026-11-21"),  # both on the 20th, the day
            policy_row("P6", "F5", renewal_date="2026-11-21"),  #   before the renewal
        ],
        events=[
            event_row(
                "E1", "F1", type="complaint_resolved", occurred_at="2026-11-16T15:00:00+08:00"
            ),
            event_row(
                "E3", "F3", type="complaint_resolved", occurred_at="2026-11-17T12:00:00+08:00"
            ),
        ],
    )
    engine = follow_up_engine(store, tmp_path, "renewal-reminder.yaml")
    run_week(engine)
    # Recorded late: due on the 20th, a day that was planned (and sent) before it arrived.
    load_rows(
        store,
        events=[
            event_row(
                "E4", "F4", type="complaint_resolved", occurred_at="2026-11-17T09:00:00+08:00"
            )
        ],
    )
    figures = compute(store, WEEK, engine.ruleset)
    assert dict(figures.follow_ups) == {"on_time": 1, "late": 1, "missed": 1}
    assert (figures.follow_ups_on_time, figures.follow_ups_settled) == (1, 3)
    by_rule = {o.rule_id: o for o in figures.obligations}
    assert by_rule["complaint-follow-up"].missed == [
        ("complaint-follow-up|event:E4|2026-11-20", "2026-11-20", "never planned")
    ]
    renewals = by_rule["renewal-reminder"]
    assert dict(renewals.outcomes) == {"on_time": 2, "missed": 1}
    (missed,) = renewals.missed
    assert missed[1:] == ("2026-11-20", "obligation_missed")
    page = build_report(store, WEEK, engine.ruleset).html(generated_at=utc(2026, 11, 23, 6))
    assert "complaint-follow-up|event:E4|2026-11-20" in page and missed[0] in page
    card = re.search(r'id="kpi-obligations-missed".*?class="value">([^<]*)<', page, re.S)
    assert card is not None and card.group(1) == "2"
