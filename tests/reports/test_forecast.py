"""``care forecast``: each day equals ``care plan`` of that day; nothing is written."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections import Counter
from pathlib import Path

import pytest

from caretouch.ledger import Ledger
from caretouch.schema.migrate import upgrade
from caretouch.store.db import open_store
from conftest import Care, customer_row, load_rows, policy_row

FIRST = "2026-12-13"


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    store = open_store(f"sqlite:///{tmp_path / 'care.db'}")
    upgrade(store)
    customers = [
        # Birthdays around 15 December, the day of the year-end notice campaign (priority 50
        # beats the birthday's 30 under the per-day cap).
        *(
            customer_row(f"B{i}", birth_date=f"1980-12-{13 + i % 4:02d}", tier="ABCD"[i % 4])
            for i in range(12)
        ),
        customer_row("N1", consent_sms="false", consent_email="false"),
        customer_row("N2", phone="12345", email=""),
        customer_row("D1", tier="D"),
    ]
    policies = [
        policy_row(
            f"P{i}",
            f"B{i}",
            start_date=f"2020-12-{14 + i % 3:02d}",
            renewal_date=f"2026-12-{20 + i % 3:02d}",
        )
        for i in range(6)
    ]
    load_rows(store, customers=customers, policies=policies)
    store.dispose()
    return tmp_path


def plan_counts(care: Care, day: str) -> Counter[tuple[str, str, str | None]]:
    result = care("plan", "--date", day, "--format", "json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.splitlines() if x.strip()]
    return Counter((x["rule_id"], x["decision"], x["reason"]) for x in lines)


def forecast_counts(rows: list[dict[str, str]], day: str) -> Counter[tuple[str, str, str | None]]:
    counts: Counter[tuple[str, str, str | None]] = Counter()
    reasons = (
        [
            k
            for k in rows[0]
            if k
            not in (
                "day",
                "rule_id",
                "kind",
                "candidates",
                "send",
                "suppressed",
                "sms",
                "sms_segments",
            )
        ]
        if rows
        else []
    )
    for row in rows:
        if row["day"] != day:
            continue
        assert int(row["candidates"]) == int(row["send"]) + int(row["suppressed"])
        if int(row["send"]):
            counts[(row["rule_id"], "send", None)] += int(row["send"])
        for reason in reasons:
            if int(row[reason]):
                counts[(row["rule_id"], "suppress", reason)] += int(row[reason])
    return counts


def test_each_forecast_day_equals_care_plan(care: Care, filled: Path) -> None:
    # History first: the 13 December is run, so the ledger holds sends and caps count them.
    ran = care("run", "--date", FIRST, "--now", "2026-12-13T03:00:00Z")
    assert ran.exit_code == 0, ran.output
    store = open_store(f"sqlite:///{filled / 'care.db'}")
    rows_before = {d: len(Ledger(store).states_for_day(d)) for d in _dates(FIRST, 5)}

    result = care("forecast", "--from", FIRST, "--days", "5", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    for day in (d.isoformat() for d in _dates(FIRST, 5)):
        expected = plan_counts(care, day)
        assert forecast_counts(rows, day) == expected, day
    # The campaign day has the campaign and its arbitration with the birthdays.
    notice = forecast_counts(rows, "2026-12-15")
    assert notice[("year-end-service-notice", "send", None)] >= 5
    assert notice[("year-end-service-notice", "suppress", "no_contact")] == 2
    assert notice[("birthday", "suppress", "frequency_cap")] >= 1
    assert {r["kind"] for r in rows if r["rule_id"] == "year-end-service-notice"} == {"campaign"}
    # The 13th is already handled: the forecast says so, as care plan does.
    assert forecast_counts(rows, FIRST)[("birthday", "suppress", "already_sent")] >= 1
    # Nothing was written.
    assert {d: len(Ledger(store).states_for_day(d)) for d in _dates(FIRST, 5)} == rows_before


def test_forecast_of_one_rule_and_charts(care: Care, filled: Path) -> None:
    result = care("forecast", "--from", FIRST, "--days", "5", "--rule", "birthday")
    assert result.exit_code == 0, result.output
    assert "year-end-service-notice" not in result.stdout
    assert "total" in result.stdout and "birthday" in result.stdout
    png = filled / "f.png"
    assert (
        care(
            "forecast",
            "--from",
            FIRST,
            "--days",
            "5",
            "--format",
            "png",
            "--output",
            str(png),
        ).exit_code
        == 0
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = filled / "f.html"
    assert (
        care(
            "forecast",
            "--from",
            FIRST,
            "--days",
            "5",
            "--format",
            "html",
            "--output",
            str(page),
        ).exit_code
        == 0
    )
    text = page.read_text(encoding="utf-8")
    assert "data:image/png;base64," in text and "year-end-service-notice" in text
    unknown = care("forecast", "--from", FIRST, "--days", "5", "--rule", "nope")
    assert unknown.exit_code == 2 and "unknown rule or campaign 'nope'" in unknown.output


def _dates(first: str, days: int) -> list[dt.date]:
    start = dt.date.fromisoformat(first)
    return [start + dt.timedelta(days=n) for n in range(days)]
