"""A festival-sized day sent by 1, 2 and 4 OS processes on one PostgreSQL ledger (issue 13).

Run: ``.venv/bin/python bench/scale_out.py [--touches 4000] [--processes 1,2,4]
[--latency-ms 40] [--mode run|send] [--concurrency 16] [--store-url URL] [--no-cli-starts]``.

For each process count the script builds, in a PostgreSQL schema of its own (dropped at the
end), a store of ``--touches`` customers all due a birthday on 2026-11-23 (half by SMS, half
by email), migrates it with ``schema.migrate.upgrade``, plans and records the day once (not
timed), then starts that many OS processes, each in a working directory of its own (as
separate hosts would be: own outbox, anchors, reports). Each process runs what ``care run``
runs (``--mode run``: ``run.day.run_day``: recover, plan again, walk the send queue,
anchor) or only the send (``--mode send``: ``run.send.send_due`` over the day's queue), all
processes on the same queue (``ledger.queue``: each takes the next chunk nobody holds). They send
through the real Twilio and SendGrid transports to the provider simulator in a child process
(``RemoteProviderSim``) with ``--latency-ms`` on every request and no rate limit. Every
configuration starts from the same freshly planned state (the schema is rebuilt).

Printed per configuration: msg/s (touches sent / wall time from the common start to the last
process's end), speed-up vs 1 process, duplicates at the simulator (SMS counted by recipient,
email by the ``care_touch`` custom arg; each customer has one touch that day) and touches with
more than one accepted attempt in the ledger, crashes (non-zero exit codes), CPU seconds per
touch (the processes' user+sys from ``resource.getrusage``, from the start signal to the end)
and the ledger's chain lock: hold time p50/p95 per write transaction and the share of wall
time it is held.

The lock is measured without touching the engine: in each sending process, ``chain.lock`` is
wrapped so that it first takes the same advisory transaction lock itself (PostgreSQL stacks
it; one extra round trip per write transaction) and notes when it got it, and the session's
``after_commit`` / ``after_rollback`` note when it is released. (An environment variable read
in ``ledger/writer.py`` was the other option, but only ``config.py`` may read ``CARE_*``
variables and the writer has no configuration in reach.)

Finally (unless ``--no-cli-starts``) 4 real ``care run`` processes are started at once on a
fresh planned store, each with its own working directory and the outbox channel, and their
exit codes printed (issue 13: 1-2 of 4 crashed with ``tuple concurrently updated``).

Figures only; nothing is asserted. ``main`` returns the results for the smoke test.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import queue
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import RULES_DIR, TEMPLATES_DIR, say, start_when_ready
from provider_sim import SENDGRID, TWILIO, RemoteProviderSim
from send_throughput import DAY, NOW, build_store
from sim_channels import UNSUBSCRIBE_SECRET, sendgrid_transport, twilio_transport
from sqlalchemy import create_engine, func, select, text

from caretouch.config import CareConfig
from caretouch.vocab import Channel, TouchStatus

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


# --- the store -------------------------------------------------------------------------------


def schema_url(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


@contextmanager
def planned_schema(url: str, touches: int) -> Iterator[tuple[str, list[int]]]:
    """A fresh schema holding ``touches`` customers due today, planned and recorded; yields
    the URL that opens it and the planned touch ids. Dropped afterwards."""
    from caretouch.run.day import plan_and_record
    from caretouch.run.engine import open_engine

    schema = f"bench_scale_out_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, hide_parameters=True)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        surl = schema_url(url, schema)
        store = build_store(surl, touches, [Channel.SMS, Channel.EMAIL])  # upgrade() inside
        with tempfile.TemporaryDirectory(prefix="care-scale-plan-") as tmp:
            config = CareConfig(surl, RULES_DIR, TEMPLATES_DIR, Path(tmp) / "outbox")
            engine = open_engine(config, transports={}, store=store)
            ids = plan_and_record(engine, DAY, run_id="bench-plan", now=NOW)
        store.dispose()
        yield surl, ids
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


# --- one sending process ---------------------------------------------------------------------


def _instrument_lock(holds: list[tuple[float, float]]) -> None:
    """Note (acquired_at, held_seconds) of every chain-lock hold in this process."""
    from sqlalchemy import event

    from caretouch.ledger import chain

    original = chain.lock

    def lock(session: Any) -> Any:
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": chain._PG_LOCK})
        wall, start = time.time(), time.perf_counter()

        done: list[bool] = []

        def released(_session: Any) -> None:
            if not done:  # commit or rollback, whichever comes first
                done.append(True)
                holds.append((wall, time.perf_counter() - start))

        event.listen(session, "after_commit", released, once=True)
        event.listen(session, "after_rollback", released, once=True)
        return original(session)

    chain.lock = lock  # writer.write calls chain.lock(...) through the module


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _worker(job: dict[str, Any], ready: Any, go: Any, results: Any) -> None:
    """One host: its own working directory, engine and transports; then ``care run``'s work."""
    from caretouch.ledger.queue import Due
    from caretouch.run.day import run_day
    from caretouch.run.engine import open_engine
    from caretouch.run.send import send_due
    from caretouch.store.db import open_store

    workdir = Path(job["workdir"])
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)
    holds: list[tuple[float, float]] = []
    _instrument_lock(holds)
    store = open_store(job["url"])
    config = CareConfig(
        job["url"], RULES_DIR, TEMPLATES_DIR, workdir / "outbox", workdir / "anchors.jsonl"
    )
    sim = SimpleNamespace(**job["sim"])
    kw = {"timeout": 20.0, "rate_per_sec": 1e6, "concurrency": job["concurrency"]}
    transports = {
        Channel.SMS: twilio_transport(sim, **kw),
        Channel.EMAIL: sendgrid_transport(sim, **kw),
    }
    engine = open_engine(
        config, transports=dict(transports), store=store, unsubscribe_key=UNSUBSCRIBE_SECRET
    )
    ready.put(os.getpid())
    go.wait()
    start, cpu = time.perf_counter(), _cpu()
    run_id = f"bench-{os.getpid()}"
    if job["mode"] == "run":
        report = run_day(engine, DAY, run_id=run_id, now=NOW)
    else:
        report = send_due(engine, Due(day=DAY), run_id=run_id, now=NOW)
    results.put(
        {
            "pid": os.getpid(),
            "sent": report.sent,
            "elapsed": time.perf_counter() - start,
            "end": time.time(),
            "cpu": _cpu() - cpu,
            "holds": holds,
        }
    )
    for t in transports.values():
        t.close()
    store.dispose()


# --- one configuration -----------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _held_share(holds: list[tuple[float, float]], start: float, end: float) -> float:
    """The share of [start, end] during which some process held the lock (union of holds)."""
    covered, reach = 0.0, start
    for at, held in sorted(holds):
        lo, hi = max(at, reach), min(at + held, end)
        if hi > lo:
            covered += hi - lo
            reach = hi
    return covered / (end - start) if end > start else 0.0


def _ledger_duplicates(url: str) -> tuple[int, int]:
    """(touches with more than one attempt, touches now ``sent``) in the ledger."""
    from caretouch.ledger.models import Attempt, TouchCurrent
    from caretouch.store.db import open_store

    store = open_store(url)
    try:
        with store.session() as session:
            per_touch = (
                select(Attempt.touch_id, func.count().label("n"))
                .group_by(Attempt.touch_id)
                .subquery()
            )
            dup = session.scalar(select(func.count()).where(per_touch.c.n > 1)) or 0
            sent = (
                session.scalar(
                    select(func.count())
                    .select_from(TouchCurrent)
                    .where(TouchCurrent.status == TouchStatus.SENT.value)
                )
                or 0
            )
    finally:
        store.dispose()
    return int(dup), int(sent)


def measure(args: argparse.Namespace, processes: int, workroot: Path) -> dict[str, Any]:
    with planned_schema(args.store_url, args.touches) as (url, ids):
        with RemoteProviderSim(seed=20261123, latency_ms=args.latency_ms) as sim:
            job = {
                "url": url,
                "mode": args.mode,
                "concurrency": args.concurrency,
                "sim": {
                    "url": sim.url,
                    "twilio_account_sid": sim.twilio_account_sid,
                    "twilio_auth_token": sim.twilio_auth_token,
                    "sendgrid_api_key": sim.sendgrid_api_key,
                },
            }
            ctx = mp.get_context("spawn")
            ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
            procs = [
                ctx.Process(
                    target=_worker,
                    args=(
                        {**job, "workdir": str(workroot / f"p{processes}-host{i}")},
                        ready,
                        go,
                        results,
                    ),
                )
                for i in range(processes)
            ]
            started = start_when_ready(procs, ready, 180)
            start_wall, start = time.time(), time.perf_counter()
            go.set()
            parts: list[dict[str, Any]] = []
            deadline = time.monotonic() + args.timeout
            while len(parts) < started and time.monotonic() < deadline:
                try:
                    parts.append(results.get(timeout=1))
                except queue.Empty:  # a crashed child never reports
                    if all(p.exitcode is not None for p in procs) and results.empty():
                        break
            for proc in procs:
                proc.join(timeout=30)
                if proc.exitcode is None:
                    proc.kill()
                    proc.join()
            elapsed = (
                max(p["end"] for p in parts) - start_wall if parts else time.perf_counter() - start
            )
            exit_codes = [p.exitcode for p in procs]
            sms = sim.count_by(TWILIO, ("to",))
            emails = Counter(
                m.custom_args.get("care_touch") or m.to for m in sim.accepted(SENDGRID)
            )
            at_provider = sum(sms.values()) + sum(emails.values())
        sim_dups = sum(n - 1 for n in sms.values() if n > 1) + sum(
            n - 1 for n in emails.values() if n > 1
        )
        ledger_dups, ledger_sent = _ledger_duplicates(url)
    holds = [h for p in parts for h in p["holds"]]
    held = [h for _, h in holds]
    sent = sum(p["sent"] for p in parts)
    cpu = sum(p["cpu"] for p in parts)
    return {
        "processes": processes,
        "planned": len(ids),
        "sent": sent,
        "ledger_sent": ledger_sent,
        "at_provider": at_provider,
        "elapsed": elapsed,
        "rate": ledger_sent / elapsed if elapsed else 0.0,
        "duplicates": sim_dups,
        "ledger_duplicates": ledger_dups,
        "exit_codes": exit_codes,
        "crashes": sum(1 for c in exit_codes if c != 0),
        "cpu": cpu,
        "cpu_per_touch": cpu / max(1, ledger_sent),
        "writes": len(held),
        "hold_p50": _percentile(held, 0.5),
        "hold_p95": _percentile(held, 0.95),
        "hold_max": max(held, default=0.0),
        "held_share": _held_share(holds, start_wall, start_wall + elapsed),
        "held_sum_share": sum(held) / elapsed if elapsed else 0.0,
    }


# --- 4 concurrent `care run` starts ----------------------------------------------------------


def cli_starts(args: argparse.Namespace, count: int, workroot: Path) -> list[dict[str, Any]]:
    """``count`` real ``care run`` processes started at once (outbox channel)."""
    care = Path(sys.executable).with_name("care")
    with planned_schema(args.store_url, args.touches) as (url, _ids):
        procs = []
        for i in range(count):
            workdir = workroot / f"cli-host{i}"
            workdir.mkdir(parents=True, exist_ok=True)
            env = {
                **os.environ,
                "CARE_STORE_URL": url,
                "CARE_RULES_DIR": str(RULES_DIR),
                "CARE_TEMPLATES_DIR": str(TEMPLATES_DIR),
                "CARE_UNSUBSCRIBE_KEY": UNSUBSCRIBE_SECRET.decode(),
            }
            procs.append(
                subprocess.Popen(
                    [str(care), "run", "--date", DAY.isoformat(), "--now", NOW.isoformat()],
                    cwd=workdir,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        out = []
        for proc in procs:
            _, err = proc.communicate(timeout=args.timeout)
            tail = [line for line in err.splitlines() if line.strip()][-1:] if err else []
            out.append({"exit": proc.returncode, "error": tail[0] if tail else ""})
        dups, sent = _ledger_duplicates(url)
    outbox = sum(
        1
        for i in range(count)
        for f in (workroot / f"cli-host{i}" / "outbox").rglob("*")
        if f.is_file()
    )
    say(
        f"{count} concurrent `care run` starts: exit codes {[o['exit'] for o in out]}; "
        f"{sent} touches sent in the ledger, {dups} with more than one attempt; "
        f"{outbox} files in the {count} outboxes"
    )
    for o in out:
        if o["exit"] != 0:
            say(f"  exit {o['exit']}: {o['error']}")
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--touches", type=int, default=4000)
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--latency-ms", type=float, default=40.0)
    parser.add_argument("--mode", choices=["run", "send"], default="run")
    parser.add_argument(
        "--concurrency", type=int, default=16, help="requests in flight per channel per process"
    )
    parser.add_argument("--store-url", default=PG_URL)
    parser.add_argument("--timeout", type=float, default=900.0, help="per process, seconds")
    parser.add_argument("--no-cli-starts", action="store_true")
    args = parser.parse_args(argv)
    counts = [int(x) for x in args.processes.split(",")]
    load = os.getloadavg()
    say(
        f"scale out: {args.touches} touches (SMS/email), {args.latency_ms:g} ms provider "
        f"latency, mode {args.mode}, {os.cpu_count()} CPUs, load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="care-scale-out-") as tmp:
        for n in counts:
            r = measure(args, n, Path(tmp))
            rows.append(r)
            say(
                f"{n} process(es): {r['ledger_sent']}/{r['planned']} sent "
                f"({r['at_provider']} at the provider) in {r['elapsed']:.2f} s = "
                f"{r['rate']:.1f} msg/s; duplicates {r['duplicates']} at the simulator, "
                f"{r['ledger_duplicates']} in the ledger; exit codes {r['exit_codes']}; "
                f"CPU {r['cpu']:.1f} s ({1000 * r['cpu_per_touch']:.2f} ms/touch); "
                f"lock: {r['writes']} write transactions, hold p50 "
                f"{1000 * r['hold_p50']:.1f} ms, p95 {1000 * r['hold_p95']:.1f} ms, max "
                f"{1000 * r['hold_max']:.0f} ms, held {100 * r['held_share']:.0f} % of the time"
            )
        cli = [] if args.no_cli_starts else cli_starts(args, 4, Path(tmp))
    base = rows[0]["rate"] if rows and rows[0]["processes"] == 1 else 0.0
    say("")
    say(
        f"{'procs':>5} {'msg/s':>8} {'speed-up':>8} {'dups':>5} {'crashes':>7} "
        f"{'CPU ms/touch':>12} {'hold p50 ms':>11} {'hold p95 ms':>11} {'lock held':>9}"
    )
    for r in rows:
        speed = f"{r['rate'] / base:.2f}x" if base else "-"
        say(
            f"{r['processes']:>5} {r['rate']:>8.1f} {speed:>8} "
            f"{r['duplicates'] + r['ledger_duplicates']:>5} {r['crashes']:>7} "
            f"{1000 * r['cpu_per_touch']:>12.2f} {1000 * r['hold_p50']:>11.1f} "
            f"{1000 * r['hold_p95']:>11.1f} {100 * r['held_share']:>8.0f}%"
        )
    say(
        "targets (issue 13): 4 processes >= 2x one, >= 1,000 msg/s, 0 duplicates, 0 crashes, "
        "lock held <= 5 ms per chunk"
    )
    return {"rows": rows, "cli_starts": cli}


if __name__ == "__main__":
    main()
