"""Run reporting: every `care run` ends with a summary (rule, channel, tier, status, reason)
that is printed and stored; progress while sending."""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from pathlib import Path

import pytest

from caretouch.ledger import Ledger
from caretouch.reports.run_summary import LogProgress, chunk_progress, stored_summaries
from caretouch.schema.migrate import upgrade
from caretouch.store.db import open_store
from conftest import Care, customer_row, load_rows

DAY = dt.date(2026, 11, 23)


def test_care_run_prints_and_stores_its_summary(care: Care, tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'care.db'}")
    upgrade(store)
    load_rows(
        store,
        customers=[
            *(customer_row(f"A{i}", tier="A") for i in range(3)),
            *(customer_row(f"C{i}", tier="C", phone="") for i in range(2)),
            customer_row("N1", tier="D", consent_sms="false", consent_email="false"),
        ],
    )
    reports = tmp_path / "reports"
    result = care(
        *("run", "--date", DAY.isoformat(), "--now", "2026-11-23T03:00:00Z"),
        env={"CARE_REPORTS_DIR": str(reports)},
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "tier  sent  suppressed  total" in out
    assert "this run (cli:" in out and "sent 5" in out
    [stored] = stored_summaries(reports, DAY)
    assert stored["kind"] == "care run" and stored["this_run"]["sent"] == 5
    assert stored["run_id"] in out
    # The stored numbers are the ledger's.
    states = Ledger(store).states_for_day(DAY)
    by_tier = Counter((s.row.tier, s.status.value) for s in states)
    assert {
        (r["tier"], r["status"]): r["count"] for r in stored["ledger"]["by_tier_status"]
    } == by_tier
    assert by_tier == {("A", "sent"): 3, ("C", "sent"): 2, ("D", "suppressed"): 1}
    assert {
        (r["channel"], r["status"]): r["count"] for r in stored["ledger"]["by_channel_status"]
    } == {
        ("sms", "sent"): 3,
        ("email", "sent"): 2,
        (None, "suppressed"): 1,
    }
    assert stored["ledger"]["by_reason"] == [{"reason": "no_contact", "count": 1}]


def test_care_dispatch_stores_a_summary_only_when_it_did_something(
    care: Care, tmp_path: Path
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'care.db'}")
    upgrade(store)
    load_rows(store, customers=[customer_row(f"A{i}", tier="A") for i in range(2)])
    reports = tmp_path / "reports"

    def dispatch(now: str) -> str:
        result = care("dispatch", "--now", now, env={"CARE_REPORTS_DIR": str(reports)})
        assert result.exit_code == 0, result.output
        return result.stdout

    # 01:15 UTC = 09:15 in Shanghai: both birthdays (09:00 local) go out.
    first = dispatch("2026-11-23T01:15:00Z")
    assert "sent 2" in first and "summary stored in" in first
    [stored] = stored_summaries(reports, DAY)
    assert stored["kind"] == "care dispatch" and stored["this_run"]["sent"] == 2
    # Fifteen minutes later nothing is left to do: nothing more is stored.
    second = dispatch("2026-11-23T01:30:00Z")
    assert "sent 0" in second and "summary stored in" not in second
    assert len(stored_summaries(reports, DAY)) == 1


def test_log_progress_logs_periodically_and_at_the_end(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = logging.getLogger("caretouch.test.progress")
    step = chunk_progress(log, "batch", 200, lambda: now[0], every=30)
    with caplog.at_level(logging.INFO, logger="caretouch.test.progress"):
        for _ in range(4):
            now[0] += 10
            step(50)
    lines = [r.getMessage() for r in caplog.records]
    # 10 s, 20 s: quiet; 30 s: a line; 40 s: the end.
    assert lines == [
        "batch: 150/200 touches (75%), 5/s, about 10 s left",
        "batch: 200/200 touches (100%), 5/s, about 0 s left",
    ]
    assert isinstance(LogProgress(log, "x", lambda: 0.0), LogProgress)
