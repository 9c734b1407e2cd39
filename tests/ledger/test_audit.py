"""The auditor's ledger: the hash chain detects every edit, and PostgreSQL refuses them."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from caretouch.config import CareConfig
from caretouch.ledger.anchors import anchor_hash, anchor_mac
from caretouch.ledger.audit import Filters, erase_content, touch_detail, touches, verify
from caretouch.run.day import run_day
from caretouch.run.engine import CareEngine, open_engine
from caretouch.store.db import Store
from conftest import RULES_DIR, TEMPLATES_DIR, customer_row, load_rows, utc

DAY = dt.date(2026, 11, 23)
NOON = utc(2026, 11, 23, 12)
KEY = b"test-anchor-key-not-a-secret"


@pytest.fixture(autouse=True)
def anchor_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every run signs its anchor with this key (CARE_ANCHOR_KEY, kept outside the database).
    monkeypatch.setenv("CARE_ANCHOR_KEY", KEY.decode())


def filled(store: Store, tmp_path: Path, n: int = 6) -> CareEngine:
    customers = [customer_row(f"C{i}", phone=f"+86138{i:08d}") for i in range(n)]
    customers.append(customer_row("NOPE", consent_sms="false", consent_email="false"))
    load_rows(store, customers=customers)
    config = CareConfig(
        store.url, RULES_DIR, TEMPLATES_DIR, tmp_path / "outbox", tmp_path / "anchors.jsonl"
    )
    engine = open_engine(config, store=store)
    run_day(engine, DAY, run_id="audit-test", now=NOON)  # writes an anchor at its end
    return engine


def report(store: Store, tmp_path: Path):  # type: ignore[no-untyped-def]
    return verify(store, anchor_file=tmp_path / "anchors.jsonl", key=KEY)


def tamper(store: Store, sql: str) -> None:
    with store.engine.begin() as conn:
        for statement in sql.split(";"):
            conn.exec_driver_sql(statement)


def test_untouched_ledger_verifies(store: Store, tmp_path: Path) -> None:
    filled(store, tmp_path)
    result = report(store, tmp_path)
    assert result.ok, result.problem
    # 7 touches, 6 attempts, their events (planned/suppressed, sending, sent), the anchor.
    assert result.entries == 7 + 6 + (7 + 6 + 6) + 1
    assert result.anchors == 1 and result.unanchored == 0


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "UPDATE touch_events SET reason = 'edited' WHERE id = 3",
            "touch_events row 3 (chain entry",
        ),
        ("UPDATE touches SET customer_id = 'X' WHERE id = 2", "touches row 2 (chain entry"),
        (
            "UPDATE touch_attempts SET body = 'forged' WHERE id = 1",
            "no longer matches its content_hash",
        ),
        ("DELETE FROM touch_events WHERE id = 5", "touch_events row 5 (chain entry"),
        (
            "INSERT INTO touch_events (touch_id, status, at, run_id) VALUES (1, 'sent', '2026-11-23 12:00:00', 'x')",
            "is not in the chain",
        ),
        ("DELETE FROM ledger_chain WHERE seq = 4", "the chain breaks at entry 5"),
        # Reordering: entries 2 and 3 swap places.
        (
            "UPDATE ledger_chain SET seq = -1 WHERE seq = 2;"
            "UPDATE ledger_chain SET seq = 2 WHERE seq = 3;"
            "UPDATE ledger_chain SET seq = 3 WHERE seq = -1",
            "the chain breaks at entry 2",
        ),
    ],
)
def test_tampering_is_detected_and_located(
    sqlite_store: Store, tmp_path: Path, sql: str, expected: str
) -> None:
    filled(sqlite_store, tmp_path)
    tamper(sqlite_store, sql)
    result = report(sqlite_store, tmp_path)
    assert not result.ok
    assert expected in (result.problem or ""), result.problem


def test_cutting_the_newest_rows_is_caught_by_the_anchor(
    sqlite_store: Store, tmp_path: Path
) -> None:
    filled(sqlite_store, tmp_path)
    # Remove the newest rows (the anchor's own record and the last two events) and their
    # chain entries consistently: the chain alone still links.
    tamper(sqlite_store, "DELETE FROM ledger_anchors")
    tamper(
        sqlite_store, "DELETE FROM touch_events WHERE id > (SELECT max(id) - 2 FROM touch_events)"
    )
    tamper(
        sqlite_store, "DELETE FROM ledger_chain WHERE seq > (SELECT max(seq) - 3 FROM ledger_chain)"
    )
    assert verify(sqlite_store).ok, "without anchors the cut is invisible"
    result = report(sqlite_store, tmp_path)
    assert not result.ok and "the ledger was cut back" in (result.problem or "")


def test_forged_anchor_is_detected(sqlite_store: Store, tmp_path: Path) -> None:
    filled(sqlite_store, tmp_path)
    path = tmp_path / "anchors.jsonl"
    last = json.loads(path.read_text(encoding="utf-8").splitlines()[-1])
    # A well-formed next anchor, linked and hashed right, signed with another key.
    record = {**last, "n": 2, "prev": last["hash"], "run_id": "forger"}
    record["hash"] = anchor_hash(record)
    record["hmac"] = anchor_mac(b"not-the-key", record)
    path.write_text(path.read_text(encoding="utf-8") + json.dumps(record) + "\n", encoding="utf-8")
    result = report(sqlite_store, tmp_path)
    assert not result.ok and "signature does not match" in (result.problem or "")


def test_retention_erases_content_and_the_chain_still_verifies(
    store: Store, tmp_path: Path
) -> None:
    filled(store, tmp_path)
    assert erase_content(store, NOON + dt.timedelta(seconds=1)) == 6
    assert report(store, tmp_path).ok
    first = next(touches(store, Filters(status="sent")))
    detail = touch_detail(store, first["touch_id"])
    assert detail is not None and detail["attempts"][0]["body"] is None
    assert detail["attempts"][0]["content_hash"]


def test_postgres_refuses_update_delete_and_truncate(pg_store: Store, tmp_path: Path) -> None:
    filled(pg_store, tmp_path)
    for sql in (
        "UPDATE touches SET customer_id = 'X' WHERE id = 1",
        "DELETE FROM touch_events WHERE id = 1",
        "UPDATE touch_attempts SET recipient = '+10000000000' WHERE id = 1",
        "DELETE FROM ledger_chain WHERE seq = 1",
        "TRUNCATE touch_events CASCADE",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            tamper(pg_store, sql)
    with pg_store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM touch_events")).scalar() == 19
    assert report(pg_store, tmp_path).ok


def test_list_and_export_mask_recipients(store: Store, tmp_path: Path) -> None:
    filled(store, tmp_path)
    rows = list(touches(store, Filters(first=DAY, last=DAY)))
    assert len(rows) == 7
    sent = [r for r in rows if r["status"] == "sent"]
    assert len(sent) == 6 and all(r["recipient"].startswith("+86 138") for r in sent)
    assert all("*" in r["recipient"] for r in sent)
    assert not any("13800000001" in json.dumps(r) for r in rows)
    only = list(touches(store, Filters(customer_id="NOPE")))
    assert [(r["status"], r["reason"]) for r in only] == [("suppressed", "no_contact")]
    page = list(touches(store, Filters(), after=rows[2]["touch_id"], limit=2))
    assert [r["touch_id"] for r in page] == [rows[3]["touch_id"], rows[4]["touch_id"]]


def test_current_status_table_matches_the_events_and_can_be_rebuilt(
    store: Store, tmp_path: Path
) -> None:
    from caretouch.ledger import Ledger

    filled(store, tmp_path)
    latest_sql = (
        "SELECT e.touch_id, e.status FROM touch_events e WHERE e.id = "
        "(SELECT max(id) FROM touch_events x WHERE x.touch_id = e.touch_id) ORDER BY 1"
    )
    current_sql = "SELECT touch_id, status FROM touch_current ORDER BY 1"
    with store.engine.connect() as conn:
        from_events = conn.exec_driver_sql(latest_sql).all()
        assert conn.exec_driver_sql(current_sql).all() == from_events
    tamper(store, "DELETE FROM touch_current")  # derived data: not guarded, rebuilt on demand
    with store.session() as session:
        assert Ledger.refresh_current(session) == 7
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql(current_sql).all() == from_events
    assert report(store, tmp_path).ok


def test_a_column_added_later_keeps_old_hashes() -> None:
    from caretouch.ledger.chain import row_hash

    before = {"id": 1, "touch_id": 2, "status": "sent", "at": dt.datetime(2026, 11, 23, 12)}
    assert row_hash("touch_events", before) == row_hash("touch_events", {**before, "channel": None})
    assert row_hash("touch_events", before) != row_hash(
        "touch_events", {**before, "channel": "sms"}
    )
    assert row_hash("touch_events", before) != row_hash("touches", before)
