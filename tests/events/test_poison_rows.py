"""Poison rows already in the inbox (written by an older version, or directly in SQL): the one
event is taken out to the dead letters with the reason, and everyone else's touches of the day
are planned and sent, by ``care run``, ``care dispatch``, event planning and the CLI."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import redis_env
from sqlalchemy import func, select, text

from caretouch.events.inbox import dead_letters
from caretouch.events.planning import plan_new_events
from caretouch.ledger import Ledger
from caretouch.run.day import dispatch, run_day
from caretouch.run.engine import CareEngine, open_engine
from caretouch.store.db import Store
from caretouch.store.models import Event, EventReceipt
from caretouch.vocab import TouchStatus
from conftest import (
    RULES_DIR,
    TEMPLATES_DIR,
    Care,
    cli_url,
    customer_row,
    event_row,
    load_rows,
    utc,
)

DAY = dt.date(2026, 11, 23)
# Everyone's touches of the day: a birthday (C2), a thank-you for a purchase (C3, event E2).
# C1's purchase (event E1) is the poison row.
EXPECTED = {"birthday|customer:C2|2026-11-23", "thank-you|event:E2|2026-11-23"}


def engine_for(store: Store, tmp_path: Path) -> CareEngine:
    from caretouch.config import CareConfig

    config = CareConfig(
        store.url, RULES_DIR, TEMPLATES_DIR, tmp_path / "outbox", tmp_path / "anchors.jsonl"
    )
    engine = open_engine(config, store=store)
    return engine


def deep(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def insert_poison(
    store: Store, payload: str, *, event_id: str = "E1", receipt: bool = True
) -> None:
    """The poison row as an older version or an operator's SQL would have written it."""
    cast = "CAST(:p AS json)" if store.engine.dialect.name == "postgresql" else ":p"
    with store.session() as session:
        session.execute(
            text(
                "INSERT INTO events (event_id, type, customer_id, occurred_at, payload) VALUES "
                f"(:id, 'policy_purchased', 'C1', :at, {cast})"
            ),
            {"id": event_id, "at": dt.datetime(2026, 11, 22, 2), "p": payload},
        )
        if receipt:
            session.execute(
                text(
                    "INSERT INTO event_receipts (event_id, source, received_at) "
                    "VALUES (:id, 'stream', :at)"
                ),
                {"id": event_id, "at": dt.datetime(2026, 11, 22, 2, 1)},
            )


@pytest.fixture
def day_store(store: Store) -> Store:
    load_rows(
        store,
        customers=[
            customer_row("C1", birth_date=""),
            customer_row("C2", birth_date="1990-11-23", phone="+8613812348002"),
            customer_row("C3", birth_date="", phone="+8613812348003"),
        ],
        events=[event_row("E2", "C3")],
    )
    return store


def ledger_keys(store: Store) -> dict[str, TouchStatus]:
    ledger = Ledger(store)
    states = ledger.states(ledger.touch_ids_in_status(set(TouchStatus)))
    return {s.row.touch_key: s.status for s in states}


def events_left(store: Store) -> set[str]:
    with store.read_session() as session:
        return set(session.scalars(select(Event.event_id)))


def assert_taken_out(store: Store, reason_start: str) -> None:
    assert events_left(store) == {"E2"}
    with store.read_session() as session:
        assert session.scalar(select(func.count()).select_from(EventReceipt)) == 0
    [letter] = dead_letters(store)
    assert (letter.event_id, letter.source) == ("E1", "inbox")
    assert letter.reason.startswith(reason_start), letter.reason
    # The stored text is kept (bounded), without being parsed.
    assert letter.raw.startswith('{"customer_id": "C1", "event_id": "E1"')
    assert '"payload": {"a":{"a":' in letter.raw
    assert len(letter.raw) < 70 * 1024


def test_care_run_takes_the_poison_event_out_and_sends_everyone_else(
    day_store: Store, tmp_path: Path
) -> None:
    insert_poison(day_store, deep(900))
    engine = engine_for(day_store, tmp_path)
    report = run_day(engine, DAY, run_id="t-run", now=utc(2026, 11, 23, 3))
    assert report.sent == 2
    assert ledger_keys(day_store) == dict.fromkeys(EXPECTED, TouchStatus.SENT)
    assert_taken_out(day_store, "unreadable: stored JSON nested 900 levels deep")
    # The next run has nothing left to trip over, and sends nothing twice.
    again = run_day(engine, DAY, run_id="t-run-2", now=utc(2026, 11, 23, 4))
    assert again.sent == 0
    assert len(dead_letters(day_store)) == 1


def test_care_dispatch_takes_the_poison_event_out_and_sends_everyone_else(
    day_store: Store, tmp_path: Path
) -> None:
    insert_poison(day_store, deep(900))
    engine = engine_for(day_store, tmp_path)
    # 02:00 UTC is 10:00 in Shanghai: the birthday (09:00) and the thank-you (10:00) are due.
    report = dispatch(engine, run_id="t-dispatch", now=utc(2026, 11, 23, 2, 5))
    assert report.sent == 2
    assert ledger_keys(day_store) == dict.fromkeys(EXPECTED, TouchStatus.SENT)
    assert_taken_out(day_store, "unreadable: ")


def test_event_planning_takes_the_poison_event_out_and_plans_the_others(
    day_store: Store, tmp_path: Path
) -> None:
    insert_poison(day_store, deep(900))
    with day_store.session() as session:  # E2 arrived through the inbox too: not planned yet
        session.execute(
            text(
                "INSERT INTO event_receipts (event_id, source, received_at) "
                "VALUES ('E2', 'stream', :at)"
            ),
            {"at": dt.datetime(2026, 11, 22, 2, 1)},
        )
    report = plan_new_events(
        engine_for(day_store, tmp_path), run_id="t-events", now=utc(2026, 11, 22, 3)
    )
    assert (report.events, report.planned, report.dead_lettered) == (2, 1, 1)
    assert ledger_keys(day_store) == {"thank-you|event:E2|2026-11-23": TouchStatus.PLANNED}
    assert events_left(day_store) == {"E2"}
    [letter] = dead_letters(day_store)
    assert letter.reason.startswith("unreadable: ")
    with day_store.read_session() as session:
        planned = session.scalars(select(EventReceipt.planned_at)).all()
    assert len(planned) == 1 and planned[0] is not None


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (deep(60_000), "unreadable: stored JSON nested 60,000 levels deep"),
        ('{"case_no": CS-88}', "unreadable: stored JSON does not parse"),
    ],
    ids=["60000-deep", "not-json"],
)
def test_rows_postgresql_would_refuse_are_handled_on_sqlite(
    sqlite_store: Store, tmp_path: Path, payload: str, reason: str
) -> None:
    # PostgreSQL's json type refuses both ("stack depth limit exceeded", invalid input);
    # SQLite stores any text.
    load_rows(
        sqlite_store,
        customers=[
            customer_row("C1", birth_date=""),
            customer_row("C2", birth_date="1990-11-23", phone="+8613812348002"),
            customer_row("C3", birth_date="", phone="+8613812348003"),
        ],
        events=[event_row("E2", "C3")],
    )
    insert_poison(sqlite_store, payload)
    report = run_day(
        engine_for(sqlite_store, tmp_path), DAY, run_id="t-run", now=utc(2026, 11, 23, 3)
    )
    assert report.sent == 2
    assert ledger_keys(sqlite_store) == dict.fromkeys(EXPECTED, TouchStatus.SENT)
    [letter] = dead_letters(sqlite_store)
    assert letter.reason.startswith(reason), letter.reason
    assert events_left(sqlite_store) == {"E2"}


def test_an_event_whose_planning_fails_alone_is_taken_out_the_others_planned(
    day_store: Store, tmp_path: Path
) -> None:
    from caretouch.events.inbox import Incoming, submit

    # Accepted at the door (a past time is allowed), but no local day can be worked out for
    # it in Los Angeles (year 0): planning it raises OverflowError. Another one, written in
    # SQL with a time the door would refuse, is due on 9999-12-31, a day no plan can span.
    load_rows(day_store, customers=[customer_row("LA", timezone="America/Los_Angeles")])
    now = utc(2026, 11, 22, 3)
    intake = submit(
        day_store,
        [
            Incoming(event_raw("OLD", "LA", "0001-01-01T00:00:00Z")),
            Incoming(event_raw("E3", "C1", "2026-11-22T10:00:00+08:00")),
        ],
        source="stream",
        now=now,
    )
    assert intake.accepted == ["OLD", "E3"]
    with day_store.session() as session:
        session.execute(
            text(
                "INSERT INTO events (event_id, type, customer_id, occurred_at) VALUES "
                "('FAR', 'policy_purchased', 'C3', :at)"
            ),
            {"at": dt.datetime(9999, 12, 30, 4)},
        )
        session.execute(
            text(
                "INSERT INTO event_receipts (event_id, source, received_at) "
                "VALUES ('FAR', 'sql', :at)"
            ),
            {"at": now},
        )
    report = plan_new_events(engine_for(day_store, tmp_path), run_id="t-events", now=now)
    assert (report.events, report.planned, report.dead_lettered) == (3, 1, 2)
    assert ledger_keys(day_store) == {"thank-you|event:E3|2026-11-23": TouchStatus.PLANNED}
    letters = {letter.event_id: letter.reason for letter in dead_letters(day_store)}
    assert letters == {
        "OLD": "unplannable: working out its due days failed: OverflowError: "
        "date value out of range",
        "FAR": letters["FAR"],
    }
    assert letters["FAR"].startswith(
        "unplannable: planning its touches of 9999-12-31 failed: OverflowError"
    )
    assert events_left(day_store) == {"E2", "E3"}
    # The next event run is not stuck on them.
    assert plan_new_events(engine_for(day_store, tmp_path), run_id="t2", now=now).events == 0


def event_raw(event_id: str, customer: str, at: str) -> dict[str, Any]:
    return {"event_id": event_id, "type": "policy_purchased", "customer_id": customer,
            "occurred_at": at}  # fmt: skip


@pytest.fixture(name="stream_key")
def _stream_key() -> Any:
    client = redis_env.require_redis()
    yield from redis_env.own_stream_key(client)
    client.close()


def test_the_cli_drain_run_and_dispatch_go_on_past_a_poison_row(
    care: Care, sqlite_store: Store, stream_key: str
) -> None:
    load_rows(
        sqlite_store,
        customers=[
            customer_row("C1", birth_date=""),
            customer_row("C2", birth_date="1990-11-23", phone="+8613812348002"),
            customer_row("C3", birth_date="", phone="+8613812348003"),
        ],
        events=[event_row("E2", "C3")],
    )
    insert_poison(sqlite_store, deep(900))
    care.store_url = sqlite_store.url
    care.env = {"CARE_REDIS_URL": redis_env.REDIS_URL, "CARE_EVENT_STREAM": stream_key}

    # care event drain: the stream, then the events not planned yet (the poison row first).
    drained = care("event", "drain", "--consumer", "t", "--now", "2026-11-22T03:00:00Z")
    assert drained.exit_code == 0, drained.output
    assert "dead_lettered 1" in drained.output
    assert [d.event_id for d in dead_letters(sqlite_store)] == ["E1"]
    run = care("run", "--date", "2026-11-23", "--now", "2026-11-23T03:00:00Z")
    assert run.exit_code == 0, run.output
    assert ledger_keys(sqlite_store) == dict.fromkeys(EXPECTED, TouchStatus.SENT)
    dispatched = care("dispatch", "--now", "2026-11-23T03:10:00Z")
    assert dispatched.exit_code == 0, dispatched.output


def test_the_cli_run_and_dispatch_take_a_poison_row_out(care: Care, sqlite_store: Store) -> None:
    load_rows(
        sqlite_store,
        customers=[
            customer_row("C1", birth_date=""),
            customer_row("C2", birth_date="1990-11-23", phone="+8613812348002"),
            customer_row("C3", birth_date="", phone="+8613812348003"),
        ],
        events=[event_row("E2", "C3")],
    )
    insert_poison(sqlite_store, deep(900), receipt=False)
    care.store_url = sqlite_store.url
    dispatched = care("dispatch", "--now", "2026-11-23T02:05:00Z")
    assert dispatched.exit_code == 0, dispatched.output
    assert ledger_keys(sqlite_store) == dict.fromkeys(EXPECTED, TouchStatus.SENT)
    assert [d.event_id for d in dead_letters(sqlite_store)] == ["E1"]


def test_plans_that_write_nothing_leave_the_poison_event_out_and_keep_it(
    care: Care, day_store: Store, tmp_path: Path
) -> None:
    from caretouch.plan import plan_day

    insert_poison(day_store, deep(900))
    engine = engine_for(day_store, tmp_path)
    # care plan, care forecast and care preview plan without a callback: nothing is written.
    touches = plan_day(day_store, engine.ruleset, DAY)
    assert {t.key for t in touches} == EXPECTED
    assert events_left(day_store) == {"E1", "E2"}
    assert dead_letters(day_store) == []
    care.store_url = cli_url(day_store)
    shown = care("plan", "--date", "2026-11-23", "--format", "json")
    assert shown.exit_code == 0, shown.output
    assert len(shown.output.splitlines()) == 2
    assert events_left(day_store) == {"E1", "E2"}
