"""Twilio status callbacks through the app on PostgreSQL, many at once: callbacks/s, latency,
and none lost (issue 13, "bulk paths"; docs/webhooks.md "How callbacks are recorded").

Run: ``.venv/bin/python bench/callback_throughput.py [--sms 2000] [--statuses sent,delivered]
[--servers 1] [--clients 2] [--threads 32] [--mode intake|per-request] [--store-url URL]``.

A schema of its own on PostgreSQL (dropped at the end) gets ``--sms`` SMS touches sent through
the real runner (outbox). Then ``--servers`` uvicorn processes serve the app (the
``care serve`` app: ``create_standalone_app``), each on a port of its own, and ``--clients``
OS processes of ``--threads`` threads each post, for every attempt, one signed status
callback per status in ``--statuses`` (keep-alive ``http.client``; HMAC-SHA1 signature
checked by the app), spread over the servers. ``--mode per-request`` makes the servers record
each callback in a ledger transaction of its own, as before the intake
(``webhooks.twilio.twilio_status``), for comparison; ``--mode accept-only`` makes them only
accept (the answer once the callback is durable, no drain), then drains the intake in this
process and times that: the two halves of the path apart.

Printed: callbacks/s (answered over the wall time from the start signal to the last answer),
latency p50/p95/max, the answers by status code, the CPU of the servers and clients, and the
check that none was lost: ``provider_events`` rows = callbacks sent, none left in
``callback_intake``, one ``delivered`` event per touch, ``care audit verify`` ok. Figures only;
nothing is asserted (the exit code is 1 if a callback is missing or doubled).
"""

from __future__ import annotations

import argparse
import functools
import http.client
import multiprocessing as mp
import os
import resource
import shutil
import socket
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "webhooks"), str(ROOT / "plugins")]

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
WAIT = 600


def _open(url: str, schema: str) -> Any:
    from caretouch.store.db import open_store

    return open_store(url, connect_args={"options": f"-csearch_path={schema}"})


def _serve(
    url: str, schema: str, port: int, mode: str, ready: Any, cpu: Any, profile: str | None
) -> None:
    """One server process: the app under uvicorn until terminated (SIGTERM)."""
    import datetime as dt
    import signal

    import uvicorn
    from anyio import to_thread
    from webhook_helpers import new_keys, sources

    from caretouch.web.app import create_standalone_app
    from caretouch.webhooks import intake, twilio

    if mode == "per-request":
        # As before the intake: one ledger transaction per callback, in the request.
        async def record_status(self: Any, params: Any, *, attempt: str | None) -> int | None:
            call = functools.partial(
                twilio.twilio_status, self.store, params, attempt=attempt, now=self.clock()
            )
            await to_thread.run_sync(call)
            return None

        intake.GroupCommit.record_status = record_status  # type: ignore[method-assign]
    elif mode == "accept-only":
        # Accepted (durable) in batches and answered, recorded by nobody: the bench drains
        # afterwards.
        async def accept_round(self: Any, rounds: Any) -> bool:
            batch, rounds.queued = rounds.queued, []
            if batch:
                ids = await to_thread.run_sync(
                    intake.accept_many, self.store, [t.callback for t in batch]
                )
                for ticket, intake_id in zip(batch, ids, strict=True):
                    ticket.answer.set_result(intake_id)
            return bool(batch)

        intake.GroupCommit._round = accept_round  # type: ignore[method-assign]

    store = _open(url, schema)
    app = create_standalone_app(
        secrets=sources(new_keys(), sendgrid=False),
        webhook_store=store,
        clock=lambda: dt.datetime.now(dt.timezone.utc),  # clock: benchmark server
    )
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )

    profiler: Any = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()

    def stop(*_: Any) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu.put(usage.ru_utime + usage.ru_stime - base.ru_utime - base.ru_stime)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(f"{profile}.{port}")
        server.should_exit = True

    signal.signal(signal.SIGTERM, stop)
    if profiler is not None:
        profiler.enable()
    base = resource.getrusage(resource.RUSAGE_SELF)
    ready.set()
    server.run()


def _requests(jobs: list[tuple[int, str, str]]) -> list[bytes]:
    """Each job as the bytes of a signed HTTP/1.1 request, made before the clock starts (a
    load generator's own cost is not what is measured)."""
    from twilio.request_validator import RequestValidator
    from webhook_helpers import AUTH_TOKEN, PUBLIC

    validator = RequestValidator(AUTH_TOKEN)
    out = []
    for attempt, sid, status in jobs:
        params = {
            "MessageSid": sid,
            "SmsSid": sid,
            "MessageStatus": status,
            "SmsStatus": status,
            "AccountSid": "AC" + "0" * 32,
            "To": "+8613900000000",
            "From": "+15005550006",
            "ApiVersion": "2010-04-01",
        }
        path = "/care/hooks/twilio/status?" + urlencode({"attempt": str(attempt)})
        signature = validator.compute_signature(PUBLIC + path, params)
        body = urlencode(params).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"X-Twilio-Signature: {signature}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


def _client(
    ports: list[int], jobs: list[tuple[int, str, str]], threads: int, start: Any, out: Any
) -> None:
    """One client process: ``threads`` keep-alive connections post their share of ``jobs``
    (attempt, message sid, status) as pre-signed requests; reports latencies and answers."""
    requests = _requests(jobs)
    latencies: list[float] = []
    answers: dict[int, int] = {}
    lock = threading.Lock()

    def run(share: list[bytes], port: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.connect()
        mine: list[float] = []
        codes: dict[int, int] = {}
        for raw in share:
            t0 = time.perf_counter()
            conn.sock.sendall(raw)
            answer = http.client.HTTPResponse(conn.sock)
            answer.begin()
            answer.read()
            mine.append(time.perf_counter() - t0)
            codes[answer.status] = codes.get(answer.status, 0) + 1
        conn.close()
        with lock:
            latencies.extend(mine)
            for code, n in codes.items():
                answers[code] = answers.get(code, 0) + n

    workers = [
        threading.Thread(target=run, args=(requests[i::threads], ports[i % len(ports)]))
        for i in range(threads)
    ]
    start.wait(WAIT)
    t0 = resource.getrusage(resource.RUSAGE_SELF)
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - t0.ru_utime - t0.ru_stime
    out.put((time.time(), latencies, answers, cpu))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not start")


def _load() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sms", type=int, default=2000, help="SMS touches sent (attempts)")
    parser.add_argument("--statuses", default="sent,delivered", help="callbacks per attempt")
    parser.add_argument("--servers", type=int, default=1)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--threads", type=int, default=32, help="connections per client")
    parser.add_argument(
        "--mode", choices=["intake", "per-request", "accept-only"], default="intake"
    )
    parser.add_argument("--store-url", default=DEFAULT_URL)
    parser.add_argument("--profile", default=None, help="cProfile the servers into FILE.<port>")
    args = parser.parse_args()

    from sqlalchemy import create_engine, func, select, text
    from webhook_helpers import DAY, NOON, customer_row, engine_for

    from caretouch.ledger import Ledger
    from caretouch.ledger.audit import verify
    from caretouch.ledger.models import ProviderEventRow, TouchEvent
    from caretouch.run.day import run_day
    from caretouch.schema.migrate import upgrade
    from caretouch.store.models import CallbackIntake
    from conftest import load_rows

    schema = f"bench_callbacks_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.store_url, hide_parameters=True)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    store = _open(args.store_url, schema)
    outbox = ROOT / "bench" / ".data" / f"callback_outbox_{schema}"
    outbox.mkdir(parents=True)
    os.chdir(outbox)  # the run's anchor file lands here
    ctx = mp.get_context("spawn")
    servers: list[Any] = []
    failed = False
    try:
        upgrade(store)
        load_rows(
            store,
            customers=[
                customer_row(f"S{i:06d}", email="", consent_email="false", phone=f"+86139{i:08d}")
                for i in range(args.sms)
            ],
        )
        t0 = time.perf_counter()
        engine = engine_for(store, outbox)
        report = run_day(engine, DAY, run_id="bench", now=NOON)
        print(
            f"ledger: {report.sent} SMS sent through the outbox in {time.perf_counter() - t0:.1f} s"
        )
        ledger = Ledger(store)
        attempts = sorted(ledger.attempts(s.id)[-1].id for s in ledger.states_for_day(DAY))
        statuses = [s for s in args.statuses.split(",") if s]
        # Every attempt's callbacks in the order Twilio sends them, attempts interleaved.
        jobs = [(a, f"SM{a:032d}", status) for status in statuses for a in attempts]
        total = len(jobs)

        ports = [_free_port() for _ in range(args.servers)]
        cpu_q = ctx.Queue()
        for port in ports:
            ready = ctx.Event()
            p = ctx.Process(
                target=_serve,
                args=(args.store_url, schema, port, args.mode, ready, cpu_q, args.profile),
            )
            p.start()
            servers.append(p)
            ready.wait(60)
            _wait_listening(port)
        start, out = ctx.Event(), ctx.Queue()
        clients = [
            ctx.Process(
                target=_client,
                args=(ports, jobs[i :: args.clients], args.threads, start, out),
            )
            for i in range(args.clients)
        ]
        for c in clients:
            c.start()
        time.sleep(3 + len(jobs) / 2000)  # the clients are importing and signing
        load_before = _load()
        began = time.time()
        start.set()
        results = [out.get(timeout=WAIT) for _ in clients]
        for c in clients:
            c.join(WAIT)
        ended = max(r[0] for r in results)
        load_after = _load()
        for p in servers:
            p.terminate()
        server_cpu = sum(cpu_q.get(timeout=30) for _ in servers)
        for p in servers:
            p.join(30)
        latencies = sorted(x for r in results for x in r[1])
        answers: dict[int, int] = {}
        for r in results:
            for code, n in r[2].items():
                answers[code] = answers.get(code, 0) + n
        client_cpu = sum(r[3] for r in results)
        wall = ended - began

        drained = ""
        if args.mode == "accept-only":
            from caretouch.webhooks.intake import drain_all

            t0 = time.perf_counter()
            done = drain_all(store, now=NOON)
            took = time.perf_counter() - t0
            drained = (
                f"  then drained the intake: {len(done.settled)} callbacks recorded in "
                f"{took:.2f} s ({len(done.settled) / took:,.0f} callbacks/s, one process, "
                "batches of 2,000)"
            )
        with store.read_session() as session:
            recorded = session.scalar(select(func.count()).select_from(ProviderEventRow)) or 0
            pending = session.scalar(select(func.count()).select_from(CallbackIntake)) or 0
            delivered = session.execute(
                select(TouchEvent.touch_id, func.count())
                .where(TouchEvent.status == "delivered")
                .group_by(TouchEvent.touch_id)
            ).all()
        ok = verify(store).ok
        doubled = sum(1 for _, n in delivered if n > 1)
        print(
            f"mode {args.mode}: {total} callbacks ({len(attempts)} attempts x {statuses}) "
            f"from {args.clients} client processes x {args.threads} connections "
            f"to {args.servers} server process(es) (PostgreSQL)"
        )
        print(f"  {total / wall:,.0f} callbacks/s ({total} in {wall:.2f} s)")
        print(
            f"  latency p50 {statistics.median(latencies) * 1000:.0f} ms, "
            f"p95 {latencies[int(len(latencies) * 0.95) - 1] * 1000:.0f} ms, "
            f"max {latencies[-1] * 1000:.0f} ms"
        )
        print(f"  answers {dict(sorted(answers.items()))}")
        print(
            f"  CPU per callback: servers {server_cpu / total * 1000:.2f} ms, "
            f"clients {client_cpu / total * 1000:.2f} ms (PostgreSQL's own not counted)"
        )
        print(f"  load average before {load_before}, after {load_after}")
        if drained:
            print(drained)
        print(
            f"  lost: provider_events {recorded} of {total}, left in the intake {pending}, "
            f"touches delivered {len(delivered)} of {len(attempts)} "
            f"({doubled} twice), verify ok={ok}"
        )
        failed = recorded != total or pending != 0 or doubled != 0 or not ok
    finally:
        for p in servers:
            if p.is_alive():
                p.kill()
        store.dispose()
        shutil.rmtree(outbox, ignore_errors=True)
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
