"""CPU per touch of the send path through the outbox channel (issue 13: <= 0.2 ms).

Run: ``.venv/bin/python bench/send_profile.py [--touches 3000] [--store sqlite|postgresql|both]
[--store-url URL] [--repeat 2] [--chunk N] [--profile FILE] [--top 25]``.

For each store (a SQLite file in a temporary directory; PostgreSQL at ``--store-url``, default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``, in a schema of its own dropped at the
end) the script builds ``--touches`` customers all due a birthday on 2026-11-23, half by SMS
and half by email (``send_throughput.build_store``), plans and records the day (not timed),
and then runs ``run.send.send_due`` over the day's send queue (in chunks of ``--chunk``
touches; default ``run.send.chunk_for``: 200 for the outbox) through the outbox channel
(``channels.outbox``, a JSON file per attempt) for both channels, in this process. It prints
the CPU time of this process per touch sent (user + sys of all its threads, from
``getrusage``; the sys part is mostly the outbox's file system work; the database server's
own CPU, for PostgreSQL, is not counted), the wall time, and the load average. Each of ``--repeat`` runs
starts from a freshly built and planned store. With ``--profile FILE`` the last run of each
store runs again under cProfile, on the main thread's CPU clock (not counted in the figures
above; the sending thread, which writes the outbox files, is not profiled) and its ``--top``
functions by cumulative and by own time are printed (the stats are written to
``FILE.<store>``). Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import RULES_DIR, TEMPLATES_DIR, say
from send_throughput import DAY, NOW, build_store
from sqlalchemy import create_engine, text

from caretouch.channels.outbox import OutboxTransport
from caretouch.config import CareConfig
from caretouch.ledger.queue import Due
from caretouch.run.day import plan_and_record
from caretouch.run.engine import CareEngine, open_engine
from caretouch.run.send import CHUNK, send_due

try:
    from caretouch.run.send import chunk_for
except ImportError:  # the engine before chunks followed the rate: measures the "before"

    def chunk_for(engine: CareEngine) -> int:
        return CHUNK


from caretouch.vocab import Channel

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


@contextmanager
def store_url(kind: str, pg_url: str) -> Iterator[str]:
    """A fresh, empty store of ``kind``: a SQLite file, or a PostgreSQL schema (dropped)."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="care-send-profile-") as tmp:
            yield f"sqlite:///{tmp}/store.db"
        return
    schema = f"bench_send_profile_{uuid.uuid4().hex[:10]}"
    admin = create_engine(pg_url, hide_parameters=True)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        sep = "&" if "?" in pg_url else "?"
        yield f"{pg_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def planned_engine(kind: str, touches: int, pg_url: str) -> Iterator[CareEngine]:
    """An engine on a fresh store of ``kind`` with the day planned and recorded, sending
    both channels to an outbox folder of its own."""
    with store_url(kind, pg_url) as url, tempfile.TemporaryDirectory(prefix="care-ob-") as tmp:
        store = build_store(url, touches, [Channel.SMS, Channel.EMAIL])
        outbox = Path(tmp) / "outbox"
        config = CareConfig(url, RULES_DIR, TEMPLATES_DIR, outbox)
        transports = {ch: OutboxTransport(ch, outbox) for ch in Channel}
        engine = open_engine(config, transports=dict(transports), store=store)
        plan_and_record(engine, DAY, run_id="bench-plan", now=NOW)
        try:
            yield engine
        finally:
            store.dispose()


def one_run(
    kind: str,
    touches: int,
    pg_url: str,
    profile: cProfile.Profile | None = None,
    chunk: int | None = None,
) -> dict[str, float]:
    with planned_engine(kind, touches, pg_url) as engine:
        load_before = _load()
        chunk = chunk or chunk_for(engine)
        start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        if profile is not None:
            profile.enable()
        report = send_due(engine, Due(day=DAY), run_id="bench-send", now=NOW, chunk_size=chunk)
        if profile is not None:
            profile.disable()
        elapsed, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
        user = after.ru_utime - before.ru_utime
        sys_ = after.ru_stime - before.ru_stime
        files = sum(1 for _ in Path(engine.config.outbox_dir).rglob("*.json"))
    return {
        "sent": report.sent,
        "files": files,
        "chunk": chunk,
        "wall": elapsed,
        "cpu": user + sys_,
        "user": user,
        "sys": sys_,
        "load_before": load_before,  # type: ignore[dict-item]
        "load_after": _load(),  # type: ignore[dict-item]
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--touches", type=int, default=3000)
    parser.add_argument("--store", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--store-url", default=PG_URL)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--chunk", type=int, default=None, help="touches per send chunk (default: the engine's)"
    )
    parser.add_argument("--profile", default=None)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    kinds = ["sqlite", "postgresql"] if args.store == "both" else [args.store]
    rows = []
    for kind in kinds:
        for i in range(args.repeat):
            r = one_run(kind, args.touches, args.store_url, chunk=args.chunk)
            ms = 1000 * r["cpu"] / max(1, r["sent"])
            say(
                f"{kind} run {i + 1} (chunks of {r['chunk']}): {r['sent']} sent, {r['files']} outbox files, "
                f"wall {r['wall']:.2f} s, CPU {r['cpu']:.2f} s (user {r['user']:.2f}, sys "
                f"{r['sys']:.2f}) = {ms:.3f} ms/touch "
                f"({r['sent'] / r['wall']:.0f} touches/s); load {r['load_before']} -> "
                f"{r['load_after']}"
            )
            rows.append((kind, ms, r))
        if args.profile:
            # The main thread's CPU time, not the wall clock: waits for the database server
            # and the sending thread would otherwise fill the profile.
            prof = cProfile.Profile(time.thread_time)
            one_run(kind, args.touches, args.store_url, prof, chunk=args.chunk)
            path = f"{args.profile}.{kind}"
            prof.dump_stats(path)
            stats = pstats.Stats(path)
            say(f"\n--- {kind}: cProfile of send_due (top {args.top} cumulative) ---")
            stats.sort_stats("cumulative").print_stats(args.top)
            say(f"--- {kind}: top {args.top} by own time ---")
            stats.sort_stats("tottime").print_stats(args.top)
    say("\nstore       touches  CPU ms/touch (each run)")
    for kind in kinds:
        mine = [f"{ms:.3f}" for k, ms, _ in rows if k == kind]
        say(f"{kind:<11} {args.touches:>7}  {' / '.join(mine)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
