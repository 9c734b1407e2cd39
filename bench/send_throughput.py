"""Messages per second through the runner's send path, against a rate-limited provider.

Run: ``.venv/bin/python bench/send_throughput.py [--limits 50,200] [--latency-ms 50]
[--seconds 8] [--channel sms|email|both] [--concurrency N] [--chunk N] [--store-url URL]``.

For each server-side rate limit (``--limits``, messages per second, enforced by the
simulator's token bucket with a 429 and ``Retry-After`` beyond it), the script starts the
provider simulator in a child process (``RemoteProviderSim``) with ``--latency-ms`` on every
request, builds a store of customers all due a birthday (enough for about ``--seconds`` of
sending at the limit), plans the day (not timed) and then times ``run.send.send_touches``: claim
a chunk in the ledger, ``send_many`` through the real Twilio (or SendGrid) transport and SDK,
record the answers. The transport is configured at the limit (``rate_per_sec``) with enough
concurrency to keep the pipe full (``--concurrency``, default: rate x (latency + 0.15 s), at
least 4: the limiter's burst equals the concurrency and carries the sending across the
runner's claim transaction between chunks). It prints the achieved messages per second, their
share of the limit (aim: >= 90 %), the 429s the provider answered, how long the sending
thread sat idle outside ``send_many`` (waiting for the ledger: claims, and the first and last
chunk's ledger work) and the process's CPU time per message (the SDK and the ledger share one
interpreter). Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import multiprocessing as mp
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import RULES_DIR, TEMPLATES_DIR, say
from provider_sim import SENDGRID, TWILIO, RemoteProviderSim
from sim_channels import UNSUBSCRIBE_SECRET, sendgrid_transport, twilio_transport

from caretouch.channels.base import Transport
from caretouch.config import CareConfig
from caretouch.run.day import plan_and_record
from caretouch.run.engine import open_engine
from caretouch.run.send import CHUNK, send_touches
from caretouch.schema.migrate import upgrade
from caretouch.store.db import Store, open_store
from caretouch.store.importer import ID_COLUMN, MODELS, PARSERS
from caretouch.store.write import upsert
from caretouch.vocab import Channel

DAY = dt.date(2026, 11, 23)
NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.timezone.utc)  # 12:00 in London


def customers(n: int, channels: list[Channel]) -> list[dict[str, str]]:
    """``n`` customers due a birthday, reachable on the given channels in turn."""
    return [
        {
            "customer_id": f"C{i:06d}",
            "name": "王芳",
            "birth_date": "1990-11-23",
            "birthday_calendar": "gregorian",
            "phone": f"+86138{i:08d}",
            "email": f"c{i:06d}@example.com",
            "locale": "zh-CN",
            "timezone": "Europe/London",
            "tier": "B",
            "status": "active",
            "consent_sms": "true" if channels[i % len(channels)] is Channel.SMS else "false",
            "consent_email": "true",
            "consent_marketing": "false",
        }
        for i in range(n)
    ]


def build_store(url: str, n: int, channels: list[Channel]) -> Store:
    store = open_store(url)
    upgrade(store)
    rows = [PARSERS["customer"](r)[0] for r in customers(n, channels)]
    with store.session() as session:
        for start in range(0, len(rows), 5000):
            upsert(session, MODELS["customer"], ID_COLUMN["customer"], rows[start : start + 5000])
    return store


class TimedTransport:
    """Wraps a transport's ``send_many`` to time it (the rest of a chunk is ledger work)."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.unsubscribe_base = inner.unsubscribe_base  # the runner puts the links in
        self.seconds = 0.0
        self.calls = 0

    def send_many(self, messages: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.inner.send_many(messages)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _send(job: dict[str, Any], ready: Any = None, go: Any = None) -> dict[str, Any]:
    """One sender: ``send_touches`` over its share of the touches at its share of the rate
    (what a mapped Airflow send task does in the ``care_send`` pool)."""
    store = open_store(job["url"])
    config = CareConfig(job["url"], RULES_DIR, TEMPLATES_DIR, Path(job["outbox"]))
    timed: dict[Channel, TimedTransport] = {}
    for name in job["channels"]:
        channel = Channel(name)
        make = twilio_transport if channel is Channel.SMS else sendgrid_transport
        transport = make(
            SimpleNamespace(**job["sim"]),
            timeout=20.0,
            rate_per_sec=job["limit"],
            concurrency=job["concurrency"],
        )
        transport.share(job["senders"])
        timed[channel] = TimedTransport(transport)
    engine = open_engine(  # type: ignore[arg-type]
        config, transports=dict(timed), store=store, unsubscribe_key=UNSUBSCRIBE_SECRET
    )
    if ready is not None:
        ready.put(True)
        go.wait()
    start, cpu = time.perf_counter(), time.process_time()
    report = send_touches(engine, job["ids"], run_id="bench", now=NOW, chunk_size=job["chunk"])
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    store.dispose()
    for t in timed.values():
        t.inner.close()
    return {
        "sent": report.sent,
        "elapsed": elapsed,
        "cpu": cpu,
        # channels are sent side by side: the longer of their send_many times
        "send_many": max(t.seconds for t in timed.values()),
        "chunks": max(t.calls for t in timed.values()),
        "other": report.failed + report.retry + report.unknown + report.skipped,
    }


def _send_in_child(job: dict[str, Any], ready: Any, go: Any, results: Any) -> None:
    results.put(_send(job, ready, go))


def measure(args: argparse.Namespace, limit: float, workdir: Path) -> dict[str, Any]:
    channels = [Channel.SMS, Channel.EMAIL] if args.channel == "both" else [Channel(args.channel)]
    providers = [TWILIO if c is Channel.SMS else SENDGRID for c in channels]
    n = args.messages or max(200, int(limit * len(channels) * args.seconds))
    # Enough requests in flight for the latency, and a limiter burst (= concurrency) that
    # carries the sending across the runner's claim transaction between chunks (~0.1 s).
    concurrency = args.concurrency or max(4, math.ceil(limit * (args.latency_ms / 1000 + 0.15)))
    url = args.store_url or f"sqlite:///{workdir / f'send_{int(limit)}.db'}"
    store = build_store(url, n, channels)
    config = CareConfig(url, RULES_DIR, TEMPLATES_DIR, workdir / "outbox")
    engine = open_engine(config, transports={}, store=store)
    ids = plan_and_record(engine, DAY, run_id="bench-plan", now=NOW)
    store.dispose()
    senders = max(1, args.senders)
    with RemoteProviderSim(
        seed=20261123, latency_ms=args.latency_ms, rate_limit_per_sec=limit
    ) as sim:
        job = {
            "channels": [c.value for c in channels],
            "url": url,
            "outbox": str(workdir / "outbox"),
            "limit": limit,
            "concurrency": math.ceil(concurrency / senders),
            "senders": senders,
            "chunk": args.chunk,
            "sim": {
                "url": sim.url,
                "twilio_account_sid": sim.twilio_account_sid,
                "twilio_auth_token": sim.twilio_auth_token,
                "sendgrid_api_key": sim.sendgrid_api_key,
            },
        }
        time.sleep(1.1)  # let the server's bucket fill, as it would between runs
        if senders == 1:
            parts = [_send({**job, "ids": ids})]
            start = time.perf_counter() - parts[0]["elapsed"]  # the sending only, not the setup
        else:
            ctx = mp.get_context("spawn")
            ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
            procs = [
                ctx.Process(
                    target=_send_in_child,
                    args=({**job, "ids": ids[i::senders]}, ready, go, results),
                )
                for i in range(senders)
            ]
            for proc in procs:
                proc.start()
            for _ in procs:
                ready.get(timeout=120)
            start = time.perf_counter()
            go.set()
            parts = [results.get(timeout=600) for _ in procs]
            for proc in procs:
                proc.join()
        elapsed = time.perf_counter() - start
        counts = sum((sim.request_counts(p) for p in providers), Counter())
        accepted = sum(len(sim.accepted(p)) for p in providers)
    sent = sum(p["sent"] for p in parts)
    rate = sent / elapsed if elapsed else 0.0
    allowed = limit * len(channels)  # each provider has its own limit
    return {
        "limit": allowed,
        "messages": n,
        "senders": senders,
        "concurrency": job["concurrency"],
        "sent": sent,
        "at_provider": accepted,
        "elapsed": elapsed,
        "cpu": sum(p["cpu"] for p in parts),
        "rate": rate,
        "share": rate / allowed,
        "requests": counts["sends"],
        "rate_limited": counts["rate_limited"],
        # per sender, averaged: time in send_many, and idle outside it
        "send_many": sum(p["send_many"] for p in parts) / senders,
        "idle": sum(p["elapsed"] - p["send_many"] for p in parts) / senders,
        "chunks": sum(p["chunks"] for p in parts),
        "other": sum(p["other"] for p in parts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limits", default="50,200", help="server rate limits, msg/s")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=8.0, help="sending time at the limit")
    parser.add_argument("--messages", type=int, default=0, help="overrides --seconds")
    parser.add_argument(
        "--channel",
        choices=["sms", "email", "both"],
        default="sms",
        help="both: half the customers by SMS, half by email, each provider at the limit",
    )
    parser.add_argument("--concurrency", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=CHUNK, help="send chunk size")
    parser.add_argument("--store-url", default=None, help="default: a temporary SQLite file")
    parser.add_argument(
        "--senders",
        type=int,
        default=1,
        help="processes sending side by side, each at 1/senders of the rate (mapped tasks)",
    )
    args = parser.parse_args()
    limits = [float(x) for x in args.limits.split(",")]
    say(
        f"send path (claim -> send_many -> record) through {args.channel}, "
        f"{args.latency_ms:g} ms latency, chunk {args.chunk}"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="care-send-bench-") as tmp:
        for limit in limits:
            result = measure(args, limit, Path(tmp))
            rows.append(result)
            say(
                f"limit {result['limit']:g}/s: {result['sent']} sent ({result['at_provider']} at the "
                f"provider) in {result['elapsed']:.2f} s = {result['rate']:.1f} msg/s, "
                f"{100 * result['share']:.1f} % of the limit; "
                f"{result['rate_limited']} x 429 in {result['requests']} requests; "
                f"{result['senders']} sender(s) x {result['concurrency']} at once; "
                f"{result['chunks']} chunks; per sender: send_many {result['send_many']:.2f} s, "
                f"idle {result['idle']:.2f} s; CPU {result['cpu']:.2f} s "
                f"({1000 * result['cpu'] / max(1, result['sent']):.1f} ms per message); "
                f"not sent: {result['other']}"
            )
    say("")
    say(f"{'limit/s':>8} {'msg/s':>8} {'share':>7} {'429s':>6} {'idle s':>7} {'CPU ms/msg':>11}")
    for r in rows:
        say(
            f"{r['limit']:>8g} {r['rate']:>8.1f} {100 * r['share']:>6.1f}% "
            f"{r['rate_limited']:>6} {r['idle']:>7.2f} "
            f"{1000 * r['cpu'] / max(1, r['sent']):>11.1f}"
        )


if __name__ == "__main__":
    main()
