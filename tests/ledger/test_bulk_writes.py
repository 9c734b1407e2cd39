"""Ledger rows inserted in bulk (``chain.insert_rows``: ``COPY`` on PostgreSQL) are hashed from
the values inserted, not read back (docs/ledger.md, "Concurrent writers"). These tests hold
that to what reading the rows back gives: ``care audit verify`` recomputes every row hash
from the stored row, so any value whose stored form differs from what was hashed (an instant
in another zone, JSON that does not survive the round trip as it was) fails it.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from caretouch.ledger import chain
from caretouch.ledger import reconcile as reconcile_module
from caretouch.ledger.audit import verify
from caretouch.ledger.models import ProviderEventRow, TouchCurrent, TouchEvent, TouchRow
from caretouch.ledger.reconcile import record_plan, touch_row
from caretouch.ledger.records import PlannedTouch
from caretouch.ledger.writer import write
from caretouch.store.db import Store
from caretouch.vocab import Channel, Decision, SuppressionReason
from conftest import utc

NOON = utc(2026, 11, 23, 12)
SHANGHAI = ZoneInfo("Asia/Shanghai")


def _touch(key: str, customer: str = "C1", **overrides: object) -> PlannedTouch:
    values: dict[str, object] = {
        "key": key,
        "rule_id": "birthday",
        "rule_hash": "0" * 64,
        "category": "care",
        "priority": 50,
        "subject_kind": "customer",
        "subject_id": customer,
        "customer_id": customer,
        "policy_id": None,
        "event_id": None,
        "occurrence": dt.date(2026, 11, 23),
        # An instant in another zone: stored in UTC, hashed in UTC.
        "send_at": dt.datetime(2026, 11, 23, 9, 30, tzinfo=SHANGHAI),
        "timezone": "Asia/Shanghai",
        "locale": "zh-CN",
        "tier": "A",
        "channel": Channel.SMS,
        "template_id": "birthday",
        "context": {
            "customer": {"name": "李雷", "tags": ("vip", "家庭")},
            "amount": 1234.5,
            "nested": [{"b": 1, "a": [1.0, 2, None, True]}],
            "at": dt.datetime(2026, 11, 23, 9, 30, tzinfo=SHANGHAI),
            "day": dt.date(2026, 11, 23),
            7: "an int key",
        },
        "explain": ["cap: per_day 1", '引号 " and \\ backslash'],
        "consent": {"sms": True, "email": False},
    }
    values.update(overrides)
    return PlannedTouch(**values)  # type: ignore[arg-type]


def test_bulk_inserted_rows_verify_as_stored(store: Store) -> None:
    touches = [_touch(f"k{i}", customer=f"C{i}") for i in range(30)] + [
        _touch("s1", decision=Decision.SUPPRESS, reason=SuppressionReason.NO_CONTACT, channel=None)
    ]
    recorded = record_plan(store, touches, run_id="bulk", now=NOON)
    assert recorded.new == 31 and recorded.planned == 30 and recorded.suppressed == 1
    report = verify(store)
    assert report.ok, report.problems
    with store.session() as session:
        entries = session.scalar(select(func.count()).select_from(chain.ChainEntry))
        current = session.scalar(select(func.count()).select_from(TouchCurrent))
        stored = session.scalars(select(TouchRow.send_at).where(TouchRow.touch_key == "k0")).one()
    assert entries == 62 and current == 31
    assert stored.replace(tzinfo=None) == dt.datetime(2026, 11, 23, 1, 30)  # 09:30 in Shanghai


def test_a_row_inserted_otherwise_in_the_same_transaction_is_chained_too(store: Store) -> None:
    with write(store, NOON) as session:
        chain.insert_rows(session, TouchRow, [_row("k1")])
        session.add(
            ProviderEventRow(
                provider="test",
                provider_event_id="e1",
                kind="event",
                payload={"x": 1},
                received_at=NOON,
            )
        )
    with store.session() as session:
        tables = sorted(session.scalars(select(chain.ChainEntry.table_name)))
    assert tables == ["provider_events", "touches"]
    assert verify(store).ok


def test_a_bulk_row_changed_afterwards_fails_verify(sqlite_store: Store) -> None:
    """(SQLite: on PostgreSQL the append-only triggers refuse the edit.)"""
    store = sqlite_store
    record_plan(store, [_touch("k1")], run_id="bulk", now=NOON)
    assert verify(store).ok
    with store.session() as session:
        session.execute(TouchRow.__table__.update().values(tier="D"))
        session.commit()
    report = verify(store)
    assert not report.ok


def test_a_key_another_writer_created_meanwhile_is_recorded_again(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer without the plan guard created the key after this plan looked for it: the
    bulk insert breaks the key's UNIQUE constraint, and the part is recorded again."""
    record_plan(store, [_touch("k1")], run_id="other", now=NOON)
    real = reconcile_module.known_keys
    calls: list[int] = []

    def blind_once(session: object, keys: list[str]) -> dict[str, int]:
        calls.append(1)
        return {} if len(calls) == 1 else real(session, keys)  # type: ignore[arg-type]

    monkeypatch.setattr(reconcile_module, "known_keys", blind_once)
    recorded = record_plan(store, [_touch("k1"), _touch("k2")], run_id="bulk", now=NOON)
    assert len(calls) == 2
    assert recorded.new == 1 and recorded.unchanged == 1
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(TouchRow)) == 2
        assert session.scalar(select(func.count()).select_from(TouchEvent)) == 2
    assert verify(store).ok


def _row(key: str) -> dict[str, object]:
    """A ``touches`` row as ``record_plan`` would insert it."""
    return touch_row(_touch(key), "r", NOON)


def test_rows_without_their_json_column_are_inserted_with_it_null(store: Store) -> None:
    """A status event with no ``detail`` (a claim's ``sending``): the column is left NULL."""
    with write(store, NOON) as session:
        (touch_id,) = chain.insert_rows(session, TouchRow, [_row("k1")])
        chain.insert_rows(
            session,
            TouchEvent,
            [{"touch_id": touch_id, "status": "planned", "at": NOON, "run_id": "r"}],
        )
    with store.session() as session:
        assert session.execute(select(TouchEvent.detail)).scalars().all() == [None]
    assert verify(store).ok


def test_stored_json_keeps_its_keys_in_the_order_given(store: Store) -> None:
    """Readers see a context's and a decision's keys in the order the planner gave them (the
    audit view lists consent as sms, email, marketing); only the hash sorts them."""
    consent = {"sms": True, "email": True, "marketing": False}
    record_plan(store, [_touch("k1", consent=consent)], run_id="bulk", now=NOON)
    with store.session() as session:
        context = session.scalars(select(TouchRow.context)).one()
        detail = session.scalars(select(TouchEvent.detail)).one()
    assert list(context) == ["customer", "amount", "nested", "at", "day", "7"]
    assert list(detail["consent"]) == ["sms", "email", "marketing"]
    assert verify(store).ok
