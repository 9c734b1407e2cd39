"""Webhooks: how fast signed provider events are verified and recorded, and what a replay costs.

Run: ``.venv/bin/python bench/webhook_throughput.py [--batches 100,1000] [--callbacks 500]
[--store-url URL]``.

1. SendGrid: one signed batch of N ``delivered`` events (each naming an attempt by
   ``care_attempt``), posted through the app as SendGrid posts it (ECDSA signature checked,
   events matched, recorded, chained), then the same batch again (a replay: nothing new).
2. Twilio: ``--callbacks`` status callbacks, one event each (matched by ``?attempt=``,
   recorded with their ``delivered`` touch events, chained): half as signed requests through
   the app (HMAC-SHA1 checked; accepted into the intake and recorded by the request itself,
   since one request at a time makes batches of one), half by calling
   ``webhooks.twilio.twilio_status`` directly, which separates the test client's own cost
   from the engine's. Concurrent callbacks, recorded in batches: ``callback_throughput.py``.

The ledger holds one sent SMS and one sent email touch per event, built by the real runner
(outbox transport) first. Requests go through FastAPI's TestClient (no network). Printed in
events/s. Figures only; nothing is asserted. The store is a fresh SQLite file under
bench/.data/ unless ``--store-url`` is given (a PostgreSQL URL gets a schema of its own,
dropped afterwards).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "webhooks"), str(ROOT / "plugins")]

from sqlalchemy import create_engine, text  # noqa: E402
from webhook_helpers import (  # noqa: E402
    DAY,
    NOON,
    client,
    customer_row,
    engine_for,
    new_keys,
    sendgrid_post,
    twilio_post,
)

from caretouch.ledger import Ledger  # noqa: E402
from caretouch.run.day import run_day  # noqa: E402
from caretouch.schema.migrate import upgrade  # noqa: E402
from caretouch.store.db import Store, open_store  # noqa: E402
from caretouch.webhooks import twilio as twilio_webhook  # noqa: E402
from conftest import load_rows  # noqa: E402


def _store(url: str | None, data: Path) -> tuple[Store, str | None]:
    if url is None:
        data.mkdir(parents=True, exist_ok=True)
        path = data / "webhook_throughput.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        store = open_store(f"sqlite:///{path}")
        upgrade(store)
        return store, None
    schema = f"bench_webhooks_{uuid.uuid4().hex[:8]}"
    with create_engine(url, hide_parameters=True).begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    store = open_store(url, connect_args={"options": f"-csearch_path={schema}"})
    upgrade(store)
    return store, schema


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", default="100,1000", help="SendGrid batch sizes")
    parser.add_argument("--callbacks", type=int, default=500, help="Twilio status callbacks")
    parser.add_argument("--store-url", default=None, help="PostgreSQL URL (default: SQLite)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.batches.split(",") if s]
    data = ROOT / "bench" / ".data"
    store, schema = _store(args.store_url, data)
    outbox = data / "webhook_outbox"
    try:
        n_email = sum(sizes)
        n_sms = args.callbacks
        customers = [
            customer_row(f"E{i:06d}", phone="", consent_sms="false", email=f"e{i}@example.com")
            for i in range(n_email)
        ] + [
            customer_row(f"S{i:06d}", email="", consent_email="false", phone=f"+86139{i:08d}")
            for i in range(n_sms)
        ]
        load_rows(store, customers=customers)
        started = time.perf_counter()
        report = run_day(engine_for(store, outbox), DAY, run_id="bench", now=NOON)
        print(
            f"ledger: {report.sent} touches sent through the outbox in "
            f"{time.perf_counter() - started:.1f} s ({store.engine.dialect.name})"
        )
        attempts = {"email": [], "sms": []}  # type: dict[str, list[int]]
        ledger = Ledger(store)
        for state in ledger.states_for_day(DAY):
            attempt = ledger.attempts(state.id)[-1]
            attempts[attempt.channel].append(attempt.id)
        keys = new_keys()
        http = client(store, keys)
        http.__enter__()  # one event loop for all requests, as a server has
        # Warm-up: the first request opens the store and loads the verification key.
        sendgrid_post(http, [{"event": "processed", "sg_event_id": "warm-up"}], keys)

        offset = 0
        for size in sizes:
            ids = attempts["email"][offset : offset + size]
            offset += size
            batch = [
                {
                    "email": "x@example.com",
                    "event": "delivered",
                    "sg_event_id": f"bench-{size}-{i}",
                    "sg_message_id": f"m{i}.filter0001.1.0",
                    "care_attempt": str(attempt_id),
                    "timestamp": 1795435200,
                }
                for i, attempt_id in enumerate(ids)
            ]
            t0 = time.perf_counter()
            first = sendgrid_post(http, batch, keys)
            t1 = time.perf_counter()
            again = sendgrid_post(http, batch, keys)
            t2 = time.perf_counter()
            assert first.status_code == 200 and again.status_code == 200
            print(
                f"sendgrid batch of {len(batch):>5}: {t1 - t0:6.3f} s "
                f"({len(batch) / (t1 - t0):7.0f} events/s, {first.json()['new']} new); "
                f"replayed: {t2 - t1:6.3f} s ({again.json()['new']} new)"
            )

        half = len(attempts["sms"]) // 2
        t0 = time.perf_counter()
        for i, attempt_id in enumerate(attempts["sms"][:half]):
            params = {"MessageSid": f"SM{i:032d}", "MessageStatus": "delivered"}
            answer = twilio_post(http, "status", params, query={"attempt": str(attempt_id)})
            assert answer.status_code == 204
        elapsed = time.perf_counter() - t0
        print(
            f"twilio status callbacks through the app: {half} in {elapsed:.2f} s "
            f"({half / elapsed:.0f} requests/s, one event each, TestClient included)"
        )
        rest = attempts["sms"][half:]
        t0 = time.perf_counter()
        for i, attempt_id in enumerate(rest):
            params = {"MessageSid": f"SN{i:032d}", "MessageStatus": "delivered"}
            twilio_webhook.twilio_status(store, params, attempt=str(attempt_id), now=NOON)
        elapsed = time.perf_counter() - t0
        print(
            f"twilio status callbacks, engine only (webhooks.twilio.twilio_status): {len(rest)} in "
            f"{elapsed:.2f} s ({len(rest) / elapsed:.0f} events/s: one write transaction, "
            "chained, each)"
        )
        started = dt.datetime.now(dt.timezone.utc)  # clock: benchmark
        from caretouch.ledger.audit import verify

        print(f"verify: ok={verify(store).ok} ({dt.datetime.now(dt.timezone.utc) - started})")
    finally:
        store.dispose()
        shutil.rmtree(outbox, ignore_errors=True)
        if schema is not None:
            with create_engine(args.store_url, hide_parameters=True).begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


if __name__ == "__main__":
    main()
