"""Consent history is tamper-evident: consent events are chained like ledger rows, rows added
by plain SQL are never chained by a later write, and a customer's consent flag must be what the
last recorded change set (docs/audit.md)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy.exc import DBAPIError

from caretouch.config import CareConfig
from caretouch.ledger.audit import verify
from caretouch.ledger.consent import record_consent, record_consent_changes
from caretouch.run.day import run_day
from caretouch.run.engine import open_engine
from caretouch.schema.migrate import upgrade
from caretouch.store.consent import Purpose, imported_consent_changes
from caretouch.store.db import Store
from conftest import RULES_DIR, TEMPLATES_DIR, customer_row, load_rows, utc

DAY = dt.date(2026, 11, 23)
KEY = b"consent-audit-key"


@pytest.fixture(autouse=True)
def keyed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARE_ANCHOR_KEY", KEY.decode())


def opted_out(store: Store, tmp_path: Path) -> None:
    """C1 replies STOP (SMS withdrawn), C2 withdraws email; then a day is run and anchored."""
    load_rows(store, customers=[customer_row(f"C{i}", phone=f"+86138{i:08d}") for i in range(4)])
    record_consent(store, "C1", {Purpose.SMS: False}, source="twilio-inbound", at=utc(2026, 11, 22))
    record_consent(store, "C2", {Purpose.EMAIL: False}, source="cli", at=utc(2026, 11, 22, 1))
    config = CareConfig(
        store.url, RULES_DIR, TEMPLATES_DIR, tmp_path / "outbox", tmp_path / "anchors.jsonl"
    )
    engine = open_engine(config, store=store)
    run_day(engine, DAY, run_id="consent-test", now=utc(2026, 11, 23, 12))


def check(store: Store, tmp_path: Path):  # type: ignore[no-untyped-def]
    return verify(store, anchor_file=tmp_path / "anchors.jsonl", key=KEY)


def tamper(store: Store, sql: str) -> None:
    with store.engine.begin() as conn:
        conn.exec_driver_sql(sql)


def test_consent_events_are_chained(store: Store, tmp_path: Path) -> None:
    opted_out(store, tmp_path)
    with store.engine.connect() as conn:
        chained = conn.exec_driver_sql(
            "SELECT count(*) FROM ledger_chain WHERE table_name = 'consent_events'"
        ).scalar()
    assert chained == 2
    result = check(store, tmp_path)
    assert result.ok, result.problem


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # The opt-out flipped back to granted, in the history...
        (
            "UPDATE consent_events SET granted = 1 WHERE customer_id = 'C1'",
            "consent_events row 1 (chain entry 1) was changed after it was written",
        ),
        ("DELETE FROM consent_events WHERE customer_id = 'C1'", "consent_events row 1 (chain"),
        # ... or on the customer, where the planner reads it.
        (
            "UPDATE customers SET consent_sms = 1 WHERE customer_id = 'C1'",
            "customer C1: consent_sms is on in customers, but its last recorded change "
            "(consent_events row 1",
        ),
        # ... or by a forged consent event granting it again.
        (
            "INSERT INTO consent_events (customer_id, purpose, granted, source, at) "
            "VALUES ('C1', 'sms', 1, 'cli', '2026-11-23 13:00:00')",
            "consent_events row 3 is not in the chain",
        ),
    ],
    ids=["event-flipped", "event-deleted", "flag-flipped", "event-inserted"],
)
def test_consent_tampering_fails_verify(
    sqlite_store: Store, tmp_path: Path, sql: str, expected: str
) -> None:
    opted_out(sqlite_store, tmp_path)
    tamper(sqlite_store, sql)
    result = check(sqlite_store, tmp_path)
    assert not result.ok and expected in (result.problem or ""), result.problem


def test_a_row_inserted_by_sql_is_not_chained_by_the_next_write(
    sqlite_store: Store, tmp_path: Path
) -> None:
    opted_out(sqlite_store, tmp_path)
    tamper(
        sqlite_store,
        "INSERT INTO consent_events (customer_id, purpose, granted, source, at) "
        "VALUES ('C1', 'sms', 1, 'cli', '2026-11-23 13:00:00')",
    )
    tamper(sqlite_store, "UPDATE customers SET consent_sms = 1 WHERE customer_id = 'C1'")
    # Later writes of the engine (a consent change, a touch event) chain only their own rows.
    record_consent(sqlite_store, "C3", {Purpose.SMS: False}, source="cli", at=utc(2026, 11, 24))
    tamper(
        sqlite_store,
        "INSERT INTO touch_events (touch_id, status, at, run_id) "
        "VALUES (1, 'sent', '2026-11-24 12:00:00', 'x')",
    )
    record_consent(sqlite_store, "C3", {Purpose.SMS: True}, source="cli", at=utc(2026, 11, 25))
    result = check(sqlite_store, tmp_path)
    assert not result.ok
    assert "touch_events row 13 is not in the chain" in (result.problem or "")
    with sqlite_store.engine.connect() as conn:
        unchained = {
            table: [
                row[0]
                for row in conn.exec_driver_sql(
                    f"SELECT id FROM {table} WHERE id NOT IN "
                    f"(SELECT row_id FROM ledger_chain WHERE table_name = '{table}')"
                )
            ]
            for table in ("consent_events", "touch_events")
        }
    assert unchained == {"consent_events": [3], "touch_events": [13]}


def test_imported_consent_changes_are_chained(sqlite_store: Store, tmp_path: Path) -> None:
    opted_out(sqlite_store, tmp_path)
    before = {"C3": {"consent_sms": True, "consent_email": True, "consent_marketing": False}}
    tamper(sqlite_store, "UPDATE customers SET consent_sms = 0 WHERE customer_id = 'C3'")
    changes = imported_consent_changes(
        before,
        [{"customer_id": "C3", "consent_sms": False, "consent_email": True}],
        source="import:customers.csv",
    )
    written = record_consent_changes(sqlite_store, changes, at=utc(2026, 11, 24))
    assert written == 1
    result = verify(sqlite_store)  # the chain and the consent flags; anchors not asked for
    assert result.ok, result.problem


def test_postgres_refuses_consent_edits(pg_store: Store, tmp_path: Path) -> None:
    opted_out(pg_store, tmp_path)
    for sql in (
        "UPDATE consent_events SET granted = true",
        "DELETE FROM consent_events",
        "DELETE FROM ledger_anchors",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            tamper(pg_store, sql)
    assert check(pg_store, tmp_path).ok


def test_consent_of_an_older_store_is_adopted_once_by_init(
    sqlite_store: Store, tmp_path: Path
) -> None:
    load_rows(sqlite_store, customers=[customer_row("C1")])
    # As an older Caretouch wrote them: consent events without chain entries.
    tamper(
        sqlite_store,
        "INSERT INTO consent_events (customer_id, purpose, granted, source, at) "
        "VALUES ('C1', 'sms', 0, 'cli', '2026-11-20 10:00:00')",
    )
    tamper(sqlite_store, "UPDATE customers SET consent_sms = 0 WHERE customer_id = 'C1'")
    problem = verify(sqlite_store).problem or ""
    assert "consent_events row 1 is not in the chain" in problem and "care store init" in problem
    upgrade(sqlite_store)
    assert verify(sqlite_store).ok
    # Once adopted, never again: a row inserted by SQL now stays unchained.
    tamper(
        sqlite_store,
        "INSERT INTO consent_events (customer_id, purpose, granted, source, at) "
        "VALUES ('C1', 'sms', 1, 'cli', '2026-11-21 10:00:00')",
    )
    upgrade(sqlite_store)
    assert "consent_events row 2 is not in the chain" in (verify(sqlite_store).problem or "")
