"""Event intake: how fast events are ingested, and how soon an added event has its touch.

Run: ``.venv/bin/python bench/event_latency.py [--events 10000] [--latency-events 300]
[--rate 50] [--store-url URL] [--redis-url URL]``. Needs the Redis on 127.0.0.1:6379.

1. Ingestion: ``--events`` events are added to a Redis Stream at once (one pipeline); one
   consumer drains them into the inbox (commit, then ack), timed; then their touches are
   planned, timed. Printed in events per second.
2. Latency: a producer adds ``--latency-events`` events at ``--rate`` per second while a
   worker does what ``care_events`` does, without Airflow's scheduling: it waits on the stream
   as the doorbell trigger does (``XREAD BLOCK``), drains it into the inbox and plans the new
   events. For each event: the time from ``XADD`` to its touch's ledger row (``created_at``,
   stamped by the real clock). Printed as median, p95 and max. Under Airflow add the time from
   the trigger's event to the task running (AIRFLOW-NOTES.md measured about 1 s to a queued run,
   3-4.5 s to a finished one).

Figures only; nothing is asserted. The store is a fresh SQLite file under bench/.data/ unless
``--store-url`` is given (then tables must be empty of these bench ids).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from _common import ROOT, RULES_DIR, TEMPLATES_DIR, note, say
from sqlalchemy import func, select

from caretouch.config import CareConfig
from caretouch.events.planning import plan_new_events
from caretouch.events.stream import StreamConsumer, add, connect
from caretouch.ledger.models import TouchRow
from caretouch.run.engine import CareEngine, open_engine
from caretouch.schema.migrate import upgrade
from caretouch.store.db import open_store
from caretouch.store.importer import PARSERS
from caretouch.store.models import Customer, EventReceipt
from caretouch.store.write import upsert

ZONES = ["Asia/Shanghai", "Asia/Taipei", "Europe/London", "America/Los_Angeles", "Asia/Tokyo"]


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)  # clock: a benchmark measures real time


def customers(store: Any, count: int) -> None:
    rows = []
    for i in range(count):
        raw = {
            "customer_id": f"B{i:07d}",
            "name": f"Bench {i}",
            "phone": f"+86138{i % 100000000:08d}",
            "email": f"bench{i}@example.com",
            "locale": "zh-CN" if i % 3 else "en",
            "timezone": ZONES[i % len(ZONES)],
            "tier": "ABCD"[i % 4],
            "consent_sms": "true",
            "consent_email": "true",
        }
        rows.append(PARSERS["customer"](raw)[0])
    with store.session() as session:
        upsert(session, Customer, "customer_id", rows)


def event(prefix: str, i: int, at: dt.datetime) -> dict[str, Any]:
    return {
        "event_id": f"{prefix}-{i:07d}",
        "type": "policy_purchased",
        "customer_id": f"B{i:07d}",
        "occurred_at": at.isoformat(),
        "payload": {"bench": True},
    }


def ingestion(engine: CareEngine, client: Any, count: int) -> None:
    stream = f"bench:events:{uuid.uuid4().hex[:8]}"
    occurred = now() - dt.timedelta(hours=1)
    try:
        started = time.perf_counter()
        for first in range(0, count, 1000):
            pipe = client.pipeline(transaction=False)
            for i in range(first, min(count, first + 1000)):
                add(pipe, stream, event("ING", i, occurred))
            pipe.execute()
        added = time.perf_counter() - started
        consumer = StreamConsumer(client, engine.store, stream=stream, consumer="bench")
        started = time.perf_counter()
        report = consumer.drain(now)
        drained = time.perf_counter() - started
        started = time.perf_counter()
        planned = plan_new_events(engine, run_id="bench:ingest", now=now())
        planning = time.perf_counter() - started
    finally:
        client.delete(stream)
    say(f"ingestion of {count:,} events (one consumer, batches of {consumer.batch}):")
    say(f"  XADD (pipelined)            {added:7.2f} s  {count / added:9,.0f} events/s")
    say(
        f"  stream -> inbox (commit+ack) {drained:7.2f} s  {count / drained:9,.0f} events/s  "
        f"{report.as_dict()}"
    )
    say(
        f"  plan their touches          {planning:7.2f} s  {count / planning:9,.0f} events/s  "
        f"{planned.as_dict()}"
    )
    say(
        f"  stream -> planned touch     {drained + planning:7.2f} s  "
        f"{count / (drained + planning):9,.0f} events/s"
    )


def latency(engine: CareEngine, client: Any, url: str, count: int, rate: float) -> None:
    stream = f"bench:events:{uuid.uuid4().hex[:8]}"
    stop = threading.Event()
    cycles = [0]
    worker_client = connect(url)

    def worker() -> None:
        consumer = StreamConsumer(worker_client, engine.store, stream=stream, consumer="w")
        consumer.ensure_group()
        last = "0-0"
        while not stop.is_set():
            answer = worker_client.xread({stream: last}, count=1000, block=200)
            if not answer:
                continue
            last = answer[0][1][-1][0]
            consumer.drain(now)
            plan_new_events(engine, run_id="bench:latency", now=now())
            cycles[0] += 1

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    added_at: dict[str, dt.datetime] = {}
    occurred = now() - dt.timedelta(hours=1)
    try:
        for i in range(count):
            ev = event("LAT", i, occurred)
            added_at[ev["event_id"]] = now()
            add(client, stream, ev)
            time.sleep(1 / rate)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with engine.store.read_session() as session:
                done = session.scalar(
                    select(func.count())
                    .select_from(EventReceipt)
                    .where(EventReceipt.event_id.like("LAT-%"))
                    .where(EventReceipt.planned_at.is_not(None))
                )
            if done == count:
                break
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=10)
        client.delete(stream)
    with engine.store.read_session() as session:
        rows = session.execute(
            select(TouchRow.event_id, TouchRow.created_at).where(TouchRow.event_id.like("LAT-%"))
        ).all()
    waits = []
    for event_id, created in rows:
        created = created if created.tzinfo else created.replace(tzinfo=dt.timezone.utc)
        waits.append((created - added_at[event_id]).total_seconds())
    waits.sort()
    if not waits:
        say("latency: no touch was planned (see the log)")
        return
    p95 = waits[min(len(waits) - 1, round(0.95 * len(waits)) - 1)]
    say(
        f"latency from XADD to planned touch, {len(waits)} events at {rate:g}/s "
        f"({cycles[0]} worker cycles):"
    )
    say(
        f"  median {statistics.median(waits) * 1000:7.1f} ms   p95 {p95 * 1000:7.1f} ms   "
        f"max {waits[-1] * 1000:7.1f} ms"
    )
    if len(waits) != count:
        say(f"  WARNING: {count - len(waits)} event(s) got no touch")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--latency-events", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0, help="events/s in the latency run")
    parser.add_argument("--store-url")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    data = ROOT / "bench" / ".data"
    data.mkdir(parents=True, exist_ok=True)
    store_url = args.store_url
    if store_url is None:
        path = data / "event_latency.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        store_url = f"sqlite:///{path}"
    store = open_store(store_url)
    upgrade(store)
    note(f"store {store.masked_url()}: {max(args.events, args.latency_events):,} customers")
    customers(store, max(args.events, args.latency_events))
    engine = open_engine(
        CareConfig(store_url, RULES_DIR, TEMPLATES_DIR, data / "outbox"), clock=now
    )
    client = connect(args.redis_url)
    client.ping()
    say(f"store: {engine.store.masked_url()}; redis: {args.redis_url}")
    ingestion(engine, client, args.events)
    latency(engine, client, args.redis_url, args.latency_events, args.rate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
