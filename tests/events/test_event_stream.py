"""The Redis Stream intake against the real Redis: nothing lost, whatever dies when."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis_env
from sqlalchemy import func, select

from caretouch.events.inbox import Incoming, submit
from caretouch.events.stream import StreamConsumer, add, connect
from caretouch.schema.migrate import upgrade
from caretouch.store.db import Store, open_store
from caretouch.store.models import Event, EventDeadLetter
from conftest import customer_row, load_rows, utc

ROOT = Path(__file__).resolve().parents[2]
NOW = utc(2026, 11, 23, 3)
GROUP = "caretouch"


def clock() -> dt.datetime:
    return NOW


def event(i: int, customer: str = "C1") -> dict[str, Any]:
    return {
        "event_id": f"E{i:05d}",
        "type": "policy_purchased",
        "customer_id": customer,
        "occurred_at": "2026-11-22T10:00:00+08:00",
        "payload": {"n": i},
    }


def add_many(client: Any, key: str, first: int, last: int) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(first, last):
        pipe.xadd(key, {"event": json.dumps(event(i))})
    pipe.execute()


def inbox_count(store: Store) -> int:
    with store.read_session() as session:
        return int(session.scalar(select(func.count()).select_from(Event)) or 0)


def pending(client: Any, key: str) -> int:
    return int(client.xpending(key, GROUP)["pending"])


@pytest.fixture(name="redis_client")
def _redis_client() -> Iterator[Any]:
    yield from redis_env.open_client()


@pytest.fixture(name="stream_key")
def _stream_key(redis_client: Any) -> Iterator[str]:
    yield from redis_env.own_stream_key(redis_client)


@pytest.fixture
def customers(store: Store) -> Store:
    load_rows(store, customers=[customer_row("C1")])
    return store


@pytest.fixture
def sqlite_customers(sqlite_store: Store) -> Store:
    load_rows(sqlite_store, customers=[customer_row("C1")])
    return sqlite_store


def test_a_burst_of_1000_events_all_become_inbox_rows(
    customers: Store, redis_client: Any, stream_key: str
) -> None:
    add_many(redis_client, stream_key, 0, 1000)
    consumer = StreamConsumer(redis_client, customers, stream=stream_key, consumer="c1")
    report = consumer.drain(clock)
    assert (report.new, report.acked, len(report.intake.accepted)) == (1000, 1000, 1000)
    assert inbox_count(customers) == 1000
    assert pending(redis_client, stream_key) == 0
    [group] = redis_client.xinfo_groups(stream_key)
    assert group["lag"] == 0
    # Draining again finds nothing.
    assert consumer.drain(clock).as_dict()["new"] == 0


_DOOMED = """
import datetime as dt, os, signal, sys
from caretouch.events.stream import StreamConsumer, connect
from caretouch.store.db import open_store

store_url, redis_url, key, name, stage = sys.argv[1:]

def checkpoint(at, ids):
    if at == stage:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no ack: a real crash

StreamConsumer(
    connect(redis_url), open_store(store_url), stream=key, consumer=name, batch=100,
    checkpoint=checkpoint,
).drain(lambda: dt.datetime(2026, 11, 23, 3, tzinfo=dt.timezone.utc))
"""


def run_doomed(store: Store, key: str, name: str, stage: str) -> int:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugins")}
    proc = subprocess.run(
        [sys.executable, "-c", _DOOMED, store.url, redis_env.REDIS_URL, key, name, stage],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return proc.returncode


def test_a_consumer_killed_after_reading_before_commit_loses_nothing(
    sqlite_customers: Store, redis_client: Any, stream_key: str
) -> None:
    add_many(redis_client, stream_key, 0, 250)
    assert run_doomed(sqlite_customers, stream_key, "doomed", "read") == -signal.SIGKILL
    # It read a batch of 100 and died: nothing committed, 100 entries pending for it.
    assert inbox_count(sqlite_customers) == 0
    assert pending(redis_client, stream_key) == 100
    # Another consumer claims the dead one's entries (idle long enough: here at once).
    survivor = StreamConsumer(
        redis_client,
        sqlite_customers,
        stream=stream_key,
        consumer="survivor",
        claim_idle=dt.timedelta(0),
    )
    report = survivor.drain(clock)
    assert (report.claimed, report.new, len(report.intake.accepted)) == (100, 150, 250)
    assert inbox_count(sqlite_customers) == 250
    assert pending(redis_client, stream_key) == 0


def test_a_consumer_killed_after_commit_before_ack_is_redelivered_harmlessly(
    sqlite_customers: Store, redis_client: Any, stream_key: str
) -> None:
    add_many(redis_client, stream_key, 0, 250)
    assert run_doomed(sqlite_customers, stream_key, "worker-1", "committed") == -signal.SIGKILL
    # Committed but never acknowledged: in the inbox and still pending.
    assert inbox_count(sqlite_customers) == 100
    assert pending(redis_client, stream_key) == 100
    # The same consumer comes back: it reads its own pending list first.
    back = StreamConsumer(redis_client, sqlite_customers, stream=stream_key, consumer="worker-1")
    report = back.drain(clock)
    assert (report.own_pending, report.new) == (100, 150)
    assert (len(report.intake.duplicates), len(report.intake.accepted)) == (100, 150)
    assert inbox_count(sqlite_customers) == 250
    assert pending(redis_client, stream_key) == 0


def test_a_live_consumers_pending_entries_are_not_claimed_before_they_are_idle(
    sqlite_customers: Store, redis_client: Any, stream_key: str
) -> None:
    add_many(redis_client, stream_key, 0, 10)
    assert run_doomed(sqlite_customers, stream_key, "slow", "read") == -signal.SIGKILL
    other = StreamConsumer(
        redis_client,
        sqlite_customers,
        stream=stream_key,
        consumer="other",
        claim_idle=dt.timedelta(minutes=2),
    )
    assert other.drain(clock).claimed == 0
    assert pending(redis_client, stream_key) == 10


def test_events_added_while_no_consumer_runs_are_processed_when_it_comes_back(
    customers: Store, redis_client: Any, stream_key: str
) -> None:
    # Before any consumer group exists...
    add_many(redis_client, stream_key, 0, 30)
    first = StreamConsumer(redis_client, customers, stream=stream_key, consumer="c")
    assert first.drain(clock).new == 30
    # ... and while the consumer is down.
    add_many(redis_client, stream_key, 30, 50)
    again = StreamConsumer(redis_client, customers, stream=stream_key, consumer="c")
    assert again.drain(clock).new == 20
    assert inbox_count(customers) == 50


def test_malformed_entries_are_dead_lettered_and_acknowledged(
    customers: Store, redis_client: Any, stream_key: str
) -> None:
    redis_client.xadd(stream_key, {"event": "{not json"})
    bad = redis_client.xadd(stream_key, {"event_id": "F1", "customer_id": "C1"})
    # The flat form is accepted too (payload as JSON text).
    redis_client.xadd(
        stream_key,
        {
            "event_id": "F2",
            "type": "claim_settled",
            "customer_id": "C1",
            "occurred_at": "2026-11-23T09:30:00+08:00",
            "payload": '{"claim_no": "CL-1"}',
        },
    )
    report = StreamConsumer(redis_client, customers, stream=stream_key, consumer="c").drain(clock)
    assert report.acked == 3
    assert report.intake.accepted == ["F2"]
    reasons = dict(report.intake.dead)
    assert reasons[f"{stream_key}/{bad}"] == "type is required"
    assert pending(redis_client, stream_key) == 0
    with customers.read_session() as session:
        assert session.scalar(select(func.count()).select_from(EventDeadLetter)) == 2


def test_the_same_event_by_stream_cli_and_csv_is_one_inbox_row(
    customers: Store, redis_client: Any, stream_key: str
) -> None:
    add(redis_client, stream_key, event(7))
    add(redis_client, stream_key, event(7))  # the producer retried
    StreamConsumer(redis_client, customers, stream=stream_key, consumer="c").drain(clock)
    cli = submit(customers, [Incoming(event(7), "cli")], source="cli", now=NOW)
    csv_row = {k: (json.dumps(v) if k == "payload" else v) for k, v in event(7).items()}
    csv = submit(customers, [Incoming(csv_row, "f.csv:2")], source="csv", now=NOW)
    assert (cli.duplicates, csv.duplicates) == (["E00007"], ["E00007"])
    assert inbox_count(customers) == 1


def test_a_store_without_the_customer_dead_letters_not_loses(
    tmp_path: Path, redis_client: Any, stream_key: str
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'empty.db'}")
    upgrade(store)
    add(redis_client, stream_key, event(1, customer="C-NEW"))
    report = StreamConsumer(redis_client, store, stream=stream_key, consumer="c").drain(clock)
    assert report.intake.dead == [
        (f"{stream_key}/{report_id(redis_client, stream_key)}", "unknown customer_id 'C-NEW'")
    ]
    assert pending(redis_client, stream_key) == 0


def report_id(client: Any, key: str) -> str:
    return str(client.xrange(key)[0][0])


def test_nul_in_a_stream_entry_is_dead_lettered_and_acknowledged(
    customers: Store, redis_client: Any, stream_key: str
) -> None:
    flat = {k: (json.dumps(v) if k == "payload" else v) for k, v in event(1).items()}
    redis_client.xadd(stream_key, {**flat, "customer_id": "C1\x00"})
    redis_client.xadd(
        stream_key, {"event": json.dumps(event(2)).replace("}}", ', "x": "\\u0000"}}')}
    )
    add(redis_client, stream_key, event(3))
    report = StreamConsumer(redis_client, customers, stream=stream_key, consumer="c").drain(clock)
    assert report.acked == 3 and report.intake.accepted == ["E00003"]
    reasons = sorted(reason for _, reason in report.intake.dead)
    assert reasons == [
        "customer_id contains a NUL character (\\x00), which the store cannot hold",
        "payload.x contains a NUL character (\\x00), which the store cannot hold",
    ]


# -- poison entries: one entry never stalls the stream -------------------------------------


def test_deep_and_undecodable_entries_are_dead_lettered_and_the_stream_goes_on(
    customers: Store, redis_client: Any, stream_key: str
) -> None:
    flat = {k: str(v) for k, v in event(90).items() if k != "payload"}
    undecodable = json.dumps(event(91)).encode().replace(b"E00091", b"E\xff0091")
    add_many(redis_client, stream_key, 0, 2)
    poison = {
        # The field test's: 60,000 levels (120 KB, more than an event may be).
        redis_client.xadd(
            stream_key, {"event": '{"a":' * 60_000 + "1" + "}" * 60_000}
        ): "too_large",
        # 30,000 levels within 64 KB: refused on depth before json.loads could recurse.
        redis_client.xadd(stream_key, {"event": "[" * 30_000 + "]" * 30_000}): "too_deep",
        # A deep payload in the flat form.
        redis_client.xadd(stream_key, {**flat, "payload": "[" * 900 + "]" * 900}): "too_deep",
        # Bytes that are not UTF-8 (read strictly, they failed every read for good).
        redis_client.xadd(stream_key, {"event": undecodable}): "not UTF-8 text",
    }
    add_many(redis_client, stream_key, 2, 4)
    # The client the CLI and the DAG use.
    consumer = StreamConsumer(
        connect(redis_env.REDIS_URL), customers, stream=stream_key, consumer="c"
    )
    report = consumer.drain(clock)
    assert (report.new, report.acked, report.left_pending) == (8, 8, 0)
    assert sorted(report.intake.accepted) == ["E00000", "E00001", "E00002", "E00003"]
    dead = dict(report.intake.dead)
    assert {
        ref.split("/")[-1]: reason.split(":")[0].split(" (")[0] for ref, reason in dead.items()
    } == poison
    assert pending(redis_client, stream_key) == 0
    # What comes next is read as usual.
    add_many(redis_client, stream_key, 4, 5)
    assert consumer.drain(clock).intake.accepted == ["E00004"]


def test_an_entry_failing_every_delivery_is_dead_lettered_after_the_limit(
    customers: Store, redis_client: Any, stream_key: str
) -> None:
    from caretouch.events.stream import MAX_DELIVERIES

    add_many(redis_client, stream_key, 0, 3)
    bad = redis_client.xadd(stream_key, {"event": json.dumps(event(99))})
    add_many(redis_client, stream_key, 3, 5)

    def crashes_on_bad(stage: str, ids: list[str]) -> None:
        # Stands for an entry that makes the inbox raise (a bug, a value the store refuses).
        if stage == "read" and bad in ids:
            raise RuntimeError("boom on this entry")

    consumer = StreamConsumer(
        redis_client, customers, stream=stream_key, consumer="c", checkpoint=crashes_on_bad
    )
    first = consumer.drain(clock)
    # The batch failed; its entries went in one by one; only the bad one is left pending.
    assert (first.new, first.acked, first.left_pending) == (6, 5, 1)
    assert len(first.intake.accepted) == 5
    for delivery in range(2, MAX_DELIVERIES):
        add_many(redis_client, stream_key, 100 + delivery, 101 + delivery)
        report = consumer.drain(clock)
        # Delivered again (once per drain), and the new entry goes through meanwhile.
        assert (report.own_pending, report.left_pending) == (1, 1), delivery
        assert report.intake.accepted == [f"E{100 + delivery:05d}"]
        [entry] = redis_client.xpending_range(stream_key, GROUP, "-", "+", 10)
        assert entry["times_delivered"] == delivery
    last = consumer.drain(clock)
    assert (last.own_pending, last.acked, last.left_pending) == (1, 1, 0)
    [(ref, reason)] = last.intake.dead
    assert ref == f"{stream_key}/{bad}"
    assert reason == (
        f"delivery_limit: failed {MAX_DELIVERIES} deliveries; last: RuntimeError: boom on this entry"
    )
    assert pending(redis_client, stream_key) == 0
    with customers.read_session() as session:
        letter = session.scalars(select(EventDeadLetter)).one()
    assert (letter.event_id, letter.source) == ("E00099", "stream")
    assert json.loads(letter.raw) == event(99)
    assert consumer.drain(clock).as_dict()["own_pending"] == 0


def test_a_store_outage_dead_letters_nothing_however_often_entries_are_delivered(
    customers: Store, redis_client: Any, stream_key: str
) -> None:
    from sqlalchemy.exc import OperationalError

    from caretouch.events.stream import MAX_DELIVERIES
    from caretouch.store.db import open_store

    add_many(redis_client, stream_key, 0, 2)
    down = open_store("postgresql+psycopg://postgres@127.0.0.1:1/test")  # nothing listens
    try:
        for _ in range(MAX_DELIVERIES + 1):
            with pytest.raises(OperationalError):
                StreamConsumer(redis_client, down, stream=stream_key, consumer="c").drain(clock)
    finally:
        down.dispose()
    assert pending(redis_client, stream_key) == 2
    [first, _] = redis_client.xpending_range(stream_key, GROUP, "-", "+", 10)
    assert first["times_delivered"] > MAX_DELIVERIES
    # The store is back: the entries go into the inbox, not to the dead letters.
    report = StreamConsumer(redis_client, customers, stream=stream_key, consumer="c").drain(clock)
    assert (sorted(report.intake.accepted), report.intake.dead) == (["E00000", "E00001"], [])
    assert pending(redis_client, stream_key) == 0
