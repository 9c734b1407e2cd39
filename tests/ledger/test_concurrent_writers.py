"""Ledger writers in several OS processes at once (docs/ledger.md, "Concurrent writers").

A writer works without the chain lock and takes it only at the end, to link its rows to the
head; each transaction chains and projects its own rows only. These tests run spawned
processes (not threads) on PostgreSQL and on SQLite.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import queue
from pathlib import Path
from typing import Any

from ledger_processes import open_at, open_store_at, planned_sms_day, run_processes, where
from sqlalchemy import func, select, text

from caretouch.ledger import chain
from caretouch.ledger.audit import verify
from caretouch.ledger.models import ProviderEventRow, TouchCurrent, TouchEvent
from caretouch.ledger.projection import refresh_current
from caretouch.ledger.queue import Due
from caretouch.ledger.writer import write
from caretouch.run.day import pending_ids
from caretouch.run.send import send_due, send_touches
from caretouch.store.db import Store
from conftest import utc

DAY = dt.date(2026, 11, 23)
NOON = utc(2026, 11, 23, 12)
WAIT = 120  # seconds any process waits for another before giving up
SENDERS = 4
CUSTOMERS = 120


def _provider_event(name: str) -> ProviderEventRow:
    return ProviderEventRow(
        provider="test",
        provider_event_id=name,
        kind="event",
        payload={"name": name},
        received_at=NOON,
    )


def _slow_writer(url: str, schema: str | None, inside: Any, other_done: Any, out: Any) -> None:
    """Writer A: insert a row, then stay inside the write until B has committed."""
    store = open_store_at(url, schema)
    with write(store, NOON) as session:
        session.add(_provider_event("A"))
        session.flush()
        inside.set()
        out.put(("B committed while A was writing", other_done.wait(WAIT)))
    out.put(("A committed", True))


def _quick_writer(url: str, schema: str | None, inside: Any, done: Any, out: Any) -> None:
    """Writer B: once A is inside its write, write and commit."""
    store = open_store_at(url, schema)
    if not inside.wait(WAIT):
        out.put(("error", "A never started"))
        return
    with write(store, NOON) as session:
        session.add(_provider_event("B"))
    done.set()


def _collect(out: Any, wanted: int) -> dict[str, Any]:
    messages: dict[str, Any] = {}
    try:
        while len(messages) < wanted and "error" not in messages:
            kind, value = out.get(timeout=WAIT)
            messages[kind] = value
    except queue.Empty:
        pass
    return messages


def test_a_writer_does_not_wait_for_another_that_is_still_writing(pg_store: Store) -> None:
    """On PostgreSQL, B writes and commits while A's write transaction is open (before, B
    waited for A's chain lock until A committed); the chain is in commit order: B, then A."""
    url, schema = where(pg_store)
    ctx = mp.get_context("spawn")
    inside, done, out = ctx.Event(), ctx.Event(), ctx.Queue()
    a = ctx.Process(target=_slow_writer, args=(url, schema, inside, done, out))
    b = ctx.Process(target=_quick_writer, args=(url, schema, inside, done, out))
    a.start()
    b.start()
    messages = _collect(out, 2)
    a.join(WAIT)
    b.join(WAIT)
    assert "error" not in messages, messages
    assert (a.exitcode, b.exitcode) == (0, 0)
    assert messages == {"B committed while A was writing": True, "A committed": True}
    with pg_store.read_session() as session:
        order = [
            session.get(ProviderEventRow, e.row_id).provider_event_id  # type: ignore[union-attr]
            for e in chain.entries(session)
            if e.table_name == ProviderEventRow.__tablename__
        ]
    assert order == ["B", "A"]
    assert verify(pg_store).ok


def _shard_sender(
    url: str, schema: str | None, workdir: str, shard: int, go: Any, out: Any
) -> None:
    engine = open_at(url, schema, workdir)
    ids = pending_ids(engine, DAY, shard=(shard, SENDERS))
    if not go.wait(WAIT):
        out.put((shard, "no start signal"))
        return
    # Chunks of 5: many small write transactions, interleaved with the other senders'.
    report = send_touches(engine, ids, run_id=f"sender-{shard}", now=NOON, chunk_size=5)
    out.put((shard, report.as_dict()["sent"]))


def test_senders_in_several_processes_keep_one_intact_chain(store: Store, tmp_path: Path) -> None:
    """Four processes send their shards of a day at once, in small chunks, so their write
    transactions interleave: every touch is sent once, every row is chained once, the chain
    verifies, and ``touch_current`` equals a rebuild from the events."""
    planned_sms_day(store, DAY, NOON, CUSTOMERS, tmp_path / "planner")
    url, schema = where(store)
    sent, exits = run_processes(
        _shard_sender, [(url, schema, str(tmp_path / f"s{k}"), k) for k in range(SENDERS)]
    )
    assert exits == [0] * SENDERS
    assert sum(sent.values()) == CUSTOMERS, sent
    assert len(list((tmp_path).glob("s*/outbox/**/*.json"))) == CUSTOMERS
    report = verify(store)
    assert report.ok, report.problem
    with store.session() as session:
        current = dict(session.execute(select(TouchCurrent.touch_id, TouchCurrent.status)).all())
        assert sorted(set(current.values())) == ["sent"]
        events = session.scalar(select(func.count()).select_from(TouchEvent))
        assert events == CUSTOMERS * 3  # planned, sending, sent
        # Rebuilt from the events, touch_current holds what the writers projected.
        session.execute(TouchCurrent.__table__.delete())
        refresh_current(session)
        rebuilt = dict(session.execute(select(TouchCurrent.touch_id, TouchCurrent.status)).all())
        session.rollback()
    assert rebuilt == current


def test_a_writer_holds_no_lock_while_it_works(pg_store: Store) -> None:
    """Inside a write, after inserting a ledger row, the session holds no advisory lock
    (before, every writer held the chain lock from its first statement)."""
    with write(pg_store, NOON) as session:
        session.add(_provider_event("working"))
        session.flush()
        held = session.scalar(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                "AND pid = pg_backend_pid()"
            )
        )
    assert held == 0
    assert verify(pg_store).ok


def _queue_sender(url: str, schema: str | None, workdir: str, name: int, go: Any, out: Any) -> None:
    engine = open_at(url, schema, workdir)
    taken: list[int] = []
    if not go.wait(WAIT):
        out.put((name, "no start signal"))
        return
    report = send_due(
        engine, Due(day=DAY), run_id=f"q{name}", now=NOON, chunk_size=5, progress=taken.append
    )
    out.put((name, (sum(taken), report.as_dict()["sent"])))


def test_senders_walking_one_queue_never_take_the_same_touch(store: Store, tmp_path: Path) -> None:
    """Four processes walk the whole day's queue at once, unsharded: between them they take
    each touch once (the chunks they checked and rendered add up to the day, not four
    times it, as when every process walked the same pending ids), and send each once."""
    planned_sms_day(store, DAY, NOON, CUSTOMERS, tmp_path / "planner")
    url, schema = where(store)
    results, exits = run_processes(
        _queue_sender, [(url, schema, str(tmp_path / f"q{k}"), k) for k in range(SENDERS)]
    )
    assert exits == [0] * SENDERS, results
    assert sum(taken for taken, _ in results.values()) == CUSTOMERS, results
    assert sum(sent for _, sent in results.values()) == CUSTOMERS, results
    assert len(list(tmp_path.glob("q*/outbox/**/*.json"))) == CUSTOMERS
    assert verify(store).ok
