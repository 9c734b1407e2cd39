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
from click.testing import CliRunner

from caretouch.cli import main
from caretouch.config import CareConfig
from caretouch.consent import Purpose, record_consent
from caretouch.ledger import Ledger
from caretouch.report import Period, build_report, compute
from caretouch.runner import Engine, run_day
from caretouch.store.db import Store
from caretouch.vocab import TouchStatus
from conftest import RULES_DIR, TEMPLATES_DIR, customer_row, event_row, in_ci, load_rows, utc

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
    events = [
        # Resolved at 15:00 Shanghai: the follow-up goes 3 local days later at 11:00 (run time).
        event_row("X1", "K1", type="complaint_resolved", occurred_at="2026-11-16T15:00:00+08:00"),
        # Resolved at 08:00: the follow-up, three local days later at 11:00, is 3 h late.
        event_row("X2", "K2", type="complaint_resolved", occurred_at="2026-11-16T08:00:00+08:00"),
        # No consent: never followed up.
        event_row("X3", "K3", type="complaint_resolved", occurred_at="2026-11-17T09:00:00+08:00"),
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
    engine = Engine.open(config)
    assert engine.ruleset.errors == []
    engine.store.dispose()
    engine.store = store
    for n in range(14):
        day = FIRST_RUN + dt.timedelta(days=n)
        run_day(engine, day, run_id=f"run-{day}", now=utc(day.year, day.month, day.day, 3))
    # Delivery reports and a failure, appended through the ledger as the webhooks would.
    ledger = Ledger(store)
    sent = [s for d in WEEK.days for s in ledger.states_for_day(d) if s.status is TouchStatus.SENT]
    for state in sent[:3]:
        ledger.append(state.id, TouchStatus.DELIVERED, run_id="webhook", now=utc(2026, 11, 23))
    ledger.append(
        sent[3].id, TouchStatus.UNDELIVERED, reason="30003", run_id="webhook", now=utc(2026, 11, 23)
    )
    ledger.append(
        sent[4].id,
        TouchStatus.FAILED,
        reason="provider_error",
        run_id="webhook",
        now=utc(2026, 11, 23),
    )
    return store


def straight_from_ledger(store: Store, period: Period) -> Counter[tuple[str, str | None, str, str]]:
    ledger = Ledger(store)
    return Counter(
        (s.row.rule_id, s.channel, s.row.tier, s.status.value)
        for day in period.days
        for s in ledger.states_for_day(day)
    )


def test_report_numbers_equal_the_ledger(history: Store) -> None:
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
    # Complaints: X1 within 3 days, X2 three hours too late, X3 never (no consent).
    assert (figures.complaints, figures.followed_within, figures.followed_later) == (3, 1, 1)
    ledger = Ledger(history)
    followed = {
        s.row.event_id: min(e.at for e in ledger.history(s.id) if e.status == "sent")
        for d in WEEK.days
        for s in ledger.states_for_day(d)
        if s.row.rule_id == "complaint-follow-up"
        and any(e.status == "sent" for e in ledger.history(s.id))
    }
    resolved = {"X1": utc(2026, 11, 16, 7), "X2": utc(2026, 11, 16, 0)}
    assert {
        x: at.replace(tzinfo=at.tzinfo or dt.timezone.utc) - resolved[x] <= dt.timedelta(days=3)
        for x, at in followed.items()
    } == {"X1": True, "X2": False}
    before = compute(history, WEEK.previous())
    assert before.complaints == 1 and dict(before.opt_outs) == {("email", "cli"): 1}


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


def test_care_report_cli_writes_the_page(sqlite_history: Store, tmp_path: Path) -> None:
    history = sqlite_history
    out = tmp_path / "r.html"
    result = CliRunner().invoke(
        main,
        ["--store", history.url, "report", "--week", "2026-W47", "--output", str(out)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    figures = compute(history, WEEK)
    assert f"{figures.sent:,} sent" in result.output and "1/3 complaint(s)" in result.output
    assert out.read_text(encoding="utf-8").count("data:image/png;base64,") == 4
    usage = CliRunner().invoke(main, ["--store", history.url, "report"])
    assert usage.exit_code == 2


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

    report = build_report(history, WEEK)
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
            assert len(sizes) == 4 and all(ok and width > 200 for ok, width in sizes)
            assert re.search(r"complaints resolved\s+3", page.inner_text("#complaints"))
        finally:
            browser.close()


def test_care_report_is_emailed_through_sendgrid(sqlite_history: Store, tmp_path: Path) -> None:
    """--email-to sends the page as the HTML part through the email channel (SendGrid, here
    the simulator), with the key numbers in the text part; a bad address writes nothing."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from provider_sim import SENDGRID, SENDGRID_API_KEY, ProviderSim

    history = sqlite_history
    out = tmp_path / "r.html"
    args = ["--store", history.url, "report", "--week", "2026-W47", "--output", str(out)]
    bad = CliRunner().invoke(main, [*args, "--email-to", "not-an-address"])
    assert bad.exit_code == 2 and not out.exists()
    with ProviderSim() as sim:
        env = {
            "SENDGRID_API_KEY": SENDGRID_API_KEY,
            "CARE_EMAIL_FROM": "care@example.com",
            "CARE_SENDGRID_API_BASE": sim.url,
            "CARE_PUBLIC_URL": "https://care.example.com",
            "CARE_UNSUBSCRIBE_KEY": "an-unsubscribe-key-for-tests-only",
        }
        result = CliRunner(env=env).invoke(
            main,
            [*args, "--email-to", "ops.lead@example.com", "--email-to", "audit@example.com"],
            catch_exceptions=False,
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
