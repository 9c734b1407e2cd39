"""A festival day on a large PostgreSQL store, planned and recorded by 1 and 2 planner processes.

Issue 13's target: "A 1,000,000-customer festival day planned and recorded on PostgreSQL in
<= 2 minutes". On Spring Festival (2027-02-06) the shipped rule ``holiday-greeting`` (calendar
trigger, every active customer) makes every active customer a candidate, and the campaign
``spring-festival-vip`` competes for tiers A and B.

The store: a PostgreSQL schema of its own (``bench_festival_<hex>``, dropped at the end unless
``--keep``) made by ``schema.migrate.upgrade``, holding ``--customers`` customers from the
store's population generator (``caretouch.store.population``, the CSV that
``bench/import_scale.py`` writes and reuses), imported as ``care store import --customers``
does (``store.importer.import_csv``, COPY on PostgreSQL; then
``ledger.consent.record_consent_changes``). ``--reuse-schema NAME`` takes a schema kept by an
earlier run (``--keep``) and skips the build.

For each K in ``--planners`` (default ``1,2``): the ledger is emptied (its tables truncated,
identities restarted, the append-only triggers passed by ``session_replication_role =
replica`` for that one transaction; then analysed), and K spawned OS processes, each with its
own engine on the schema (``search_path``), run ``run.day.plan_and_record(engine, day,
run_id=..., now=..., shard=(k, K))``, all started by one signal. ``now`` is fixed, the day
before at 12:00 UTC, as ``care_daily`` would plan it. Autovacuum is off on the shared test
server, so while the planners run the script ANALYZEs the ledger's tables every
``--analyze-every`` seconds (default 60, autovacuum's naptime; 0: never), as autovacuum would
where it is on: without it the planners' prepared statements keep the plans made when the
ledger was empty.

Printed per K: the wall time from the start signal to the last planner's end, and whether
it is within 120 s; the candidates (touches ``plan_day`` returned, summed over the shards);
the touches in the ledger afterwards by current status and reason (``touch_current``); the
touches recorded per second; per process its CPU seconds (``resource.getrusage``), the
seconds in ``plan_day`` and in ``Ledger.record_plan`` (each wrapped in the child, exclusive
of the other when nested: the record's guard may plan again), the rest of
``plan_and_record`` and the peak RSS; the CPU seconds the local PostgreSQL server's processes
used meanwhile (from /proc, sampled every second; every session's, so read it on a quiet
server); the growth of the ledger's tables
(``pg_total_relation_size``, the chain and ``touch_current`` included) and its bytes per
touch; then ``ledger.audit.verify`` over the whole ledger, its result and time.

``--profile FILE`` runs planner 0 of each K under cProfile (``FILE`` for the first K,
``FILE.K<n>`` for the others) and prints its top functions. Figures only; nothing is
asserted about time.

    python bench/festival_day.py [--customers 1000000] [--planners 1,2] [--store-url URL]
        [--day 2027-02-06] [--now 2027-02-05T12:00:00+00:00] [--reuse-schema NAME] [--keep]
        [--profile FILE] [--analyze-every 60] [--dir bench/.data]
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import functools
import io
import multiprocessing as mp
import os
import pstats
import queue
import resource
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import RULES_DIR, SEED, TEMPLATES_DIR, note, say, start_when_ready
from import_scale import customers_csv
from sqlalchemy import text

from caretouch.store.db import LEDGER_TABLES, Store, open_store

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SCHEMA_PREFIX = "bench_festival_"
DAY = dt.date(2027, 2, 6)  # Spring Festival 2027
NOW = dt.datetime(2027, 2, 5, 12, 0, tzinfo=dt.timezone.utc)
TARGET_SECONDS = 120.0
# What the truncation empties: the ledger's tables and the projection of their statuses.
RESET_TABLES = (*LEDGER_TABLES, "touch_current")


def open_schema(url: str, schema: str) -> Store:
    """The store in ``schema`` (as ``tests/ledger_processes.open_store_at`` opens it)."""
    return open_store(url, connect_args={"options": f"-csearch_path={schema}"})


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- the store -------------------------------------------------------------------------------


def build(url: str, schema: str, customers: int, directory: Path, seed: int) -> dict[str, Any]:
    """Create ``schema`` and import ``customers`` generated customers into it."""
    from caretouch.ledger import consent as ledger_consent
    from caretouch.schema.migrate import upgrade
    from caretouch.store import importer

    source = customers_csv(directory, customers, seed)
    admin = open_store(url)
    with admin.engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    admin.dispose()
    store = open_schema(url, schema)
    try:
        started = time.perf_counter()
        upgrade(store)
        report = importer.import_csv(store, {"customer": source})
        if report.written:
            ledger_consent.record_consent_changes(store, report.consent_changes, at=NOW)
        with store.engine.begin() as conn:
            # What autovacuum would do within a minute; done now so every run plans against
            # the same statistics.
            conn.exec_driver_sql("ANALYZE")
        seconds = time.perf_counter() - started
    finally:
        store.dispose()
    return {
        "seconds": seconds,
        "inserted": report.inserted.get("customer", 0),
        "rejected": len(report.rejected) + len(report.file_errors),
        "warnings": len(report.warnings),
        "source": source.name,
    }


def store_counts(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT status, tier, count(*) FROM customers GROUP BY status, tier")
        ).all()
    counts: Counter[str] = Counter()
    for status, tier, n in rows:
        counts["customers"] += n
        counts[f"status {status}"] += n
        if status == "active":
            counts[f"active tier {tier}"] += n
    return dict(counts)


def reset_ledger(store: Store) -> None:
    """Empty the ledger: what an empty ledger is before a festival day's first plan.

    The append-only triggers refuse TRUNCATE (``schema.protection``); as the schema's owner
    the benchmark passes them for this transaction only (``session_replication_role``).
    """
    with store.engine.begin() as conn:
        consents = conn.execute(text("SELECT count(*) FROM consent_events")).scalar()
        if consents:
            # Their chain entries would go with the chain: verify would then fail.
            raise SystemExit(
                f"the store holds {consents} consent events: the ledger cannot be emptied "
                "without breaking their chain; build a fresh schema"
            )
        conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
        conn.exec_driver_sql(f"TRUNCATE {', '.join(RESET_TABLES)} RESTART IDENTITY CASCADE")
    analyze_ledger(store)


def analyze_ledger(store: Store) -> None:
    """ANALYZE the ledger's tables: what autovacuum does (off on the test server) once a
    table has changed by 10 %; it also makes the planners' sessions plan their prepared
    statements again."""
    with store.engine.begin() as conn:
        conn.exec_driver_sql(f"ANALYZE {', '.join(RESET_TABLES)}")


def ledger_bytes(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {
            t: int(conn.execute(text("SELECT pg_total_relation_size(:t)"), {"t": t}).scalar())
            for t in RESET_TABLES
        }


def ledger_figures(store: Store) -> dict[str, Any]:
    """What the ledger holds after a run: touches by current status and reason, rows."""
    with store.engine.connect() as conn:
        by_status = Counter(
            {
                f"{status}{'/' + reason if reason else ''}": n
                for status, reason, n in conn.execute(
                    text(
                        "SELECT status, reason, count(*) FROM touch_current GROUP BY status, reason"
                    )
                )
            }
        )
        by_rule = Counter(
            {
                f"{rule}: {status}": n
                for rule, status, n in conn.execute(
                    text(
                        "SELECT t.rule_id, c.status, count(*) FROM touches t "
                        "JOIN touch_current c ON c.touch_id = t.id GROUP BY t.rule_id, c.status"
                    )
                )
            }
        )
        rows = {
            t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar())
            for t in ("touches", "touch_events", "ledger_chain", "touch_current")
        }
    return {"by_status": by_status, "by_rule": by_rule, "rows": rows}


# --- one planner process ---------------------------------------------------------------------


class Clock:
    """Exclusive seconds in the wrapped functions (a nested wrapped call counts for its own
    name only), and the result of each one's outermost call (``keep`` of it: holding a
    plan's touches would keep them alive after ``plan_and_record`` lets them go)."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.first: dict[str, Any] = {}
        self._stack: list[list[float]] = []  # [start, nested seconds]

    def wrap(
        self, name: str, fn: Callable[..., Any], keep: Callable[[Any], Any] = lambda r: r
    ) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            frame = [time.perf_counter(), 0.0]
            self._stack.append(frame)
            try:
                result = fn(*args, **kwargs)
                if name not in self.first:
                    self.first[name] = keep(result)
                return result
            finally:
                self._stack.pop()
                total = time.perf_counter() - frame[0]
                self.seconds[name] += total - frame[1]
                self.calls[name] += 1
                if self._stack:
                    self._stack[-1][1] += total

        return timed

    def within(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` timed as a part of the wrapped call it runs in (that call's time stays whole)."""

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start
                self.calls[name] += 1

        return timed


def _cpu() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def _planner(job: dict[str, Any], ready: Any, go: Any, results: Any) -> None:
    """One planner: its own engine on the schema, then ``plan_and_record`` of its shard."""
    from caretouch.config import CareConfig
    from caretouch.ledger import reconcile
    from caretouch.ledger.ledger import Ledger
    from caretouch.run import day as run_day_module
    from caretouch.run.engine import open_engine

    workdir = Path(job["workdir"])
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)
    clock = Clock()
    # Timed without changing the engine: plan_and_record calls both through these names.
    run_day_module.plan_day = clock.wrap("plan_day", run_day_module.plan_day, keep=len)
    Ledger.record_plan = clock.wrap("record_plan", Ledger.record_plan)  # type: ignore[method-assign]
    # The plan guard's two steps, inside record_plan (``reconcile._guarded`` calls them
    # through the module): its advisory locks, and its look for other planners' writes.
    for name in ("lock_customers", "customers_written_since"):
        setattr(reconcile, name, clock.within(name, getattr(reconcile, name)))
    store = open_schema(job["url"], job["schema"])
    config = CareConfig(job["url"], RULES_DIR, TEMPLATES_DIR, workdir / "outbox")
    engine = open_engine(config, transports={}, store=store)
    shard = (job["k"], job["n"])
    ready.put(os.getpid())
    go.wait()
    start, (user, system) = time.time(), _cpu()
    profiler = cProfile.Profile() if job["profile"] else None
    if profiler is not None:
        profiler.enable()
    ids = run_day_module.plan_and_record(
        engine, job["day"], run_id=f"festival-{job['n']}-{job['k']}", now=job["now"], shard=shard
    )
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(job["profile"])
    end, (user2, system2) = time.time(), _cpu()
    record = clock.first.get("record_plan")
    results.put(
        {
            "k": job["k"],
            "pid": os.getpid(),
            "start": start,
            "end": end,
            "candidates": clock.first.get("plan_day", 0),
            "planned_ids": len(ids),
            "user": user2 - user,
            "system": system2 - system,
            "plan_day": clock.seconds["plan_day"],
            "plan_day_calls": clock.calls["plan_day"],
            "record_plan": clock.seconds["record_plan"],
            "guard_lock": clock.seconds["lock_customers"],
            "guard_look": clock.seconds["customers_written_since"],
            "transactions": clock.calls["lock_customers"],
            "record": {
                "new": record.new,
                "replanned": record.replanned,
                "suppressed": record.suppressed,
                "unchanged": record.unchanged,
                "planned": record.planned,
            }
            if record is not None
            else {},
            "peak_rss_mb": peak_rss_mb(),
        }
    )
    store.dispose()


# --- one K -----------------------------------------------------------------------------------


def postgres_cpu() -> dict[int, float]:
    """CPU seconds (user + system) used so far by each process of the local PostgreSQL
    server, by pid (from /proc; empty where there is none). Sampled every second while the
    planners run (``PgCpu``): a backend's CPU is read before it exits."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        if name != "postgres" and not name.startswith("postgres:"):
            continue
        fields = text[text.rindex(")") + 2 :].split()
        found[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / tick
    return found


class PgCpu:
    """PostgreSQL's CPU seconds from ``start`` to the last ``sample``, every session's (the
    ANALYZEs and other work on the server included: read it on a quiet server); a backend
    that exits between two samples loses at most a second of its work."""

    def __init__(self) -> None:
        self.first = postgres_cpu()
        self.last = dict(self.first)

    def sample(self) -> None:
        self.last.update(postgres_cpu())

    def used(self) -> float | None:
        if not self.last:
            return None
        return sum(cpu - self.first.get(pid, 0.0) for pid, cpu in self.last.items())


def run_planners(
    args: argparse.Namespace,
    store: Store,
    schema: str,
    n: int,
    workroot: Path,
    profile: Path | None,
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    jobs = [
        {
            "url": args.store_url,
            "schema": schema,
            "k": k,
            "n": n,
            "day": args.day,
            "now": args.now,
            "workdir": str(workroot / f"K{n}-planner{k}"),
            "profile": str(profile) if profile is not None and k == 0 else None,
        }
        for k in range(n)
    ]
    procs = [ctx.Process(target=_planner, args=(job, ready, go, results)) for job in jobs]
    started = start_when_ready(procs, ready, 300)
    load = os.getloadavg()
    pg = PgCpu()
    go_at = time.time()
    go.set()
    parts: list[dict[str, Any]] = []
    deadline = time.monotonic() + args.timeout
    analyses, next_analyze = 0, time.monotonic() + args.analyze_every
    while len(parts) < started and time.monotonic() < deadline:
        if args.analyze_every and time.monotonic() >= next_analyze:
            analyze_ledger(store)
            analyses += 1
            next_analyze = time.monotonic() + args.analyze_every
        pg.sample()
        try:
            parts.append(results.get(timeout=1))
        except queue.Empty:
            if all(p.exitcode is not None for p in procs) and results.empty():
                break
    for proc in procs:
        proc.join(timeout=60)
        if proc.exitcode is None:
            proc.kill()
            proc.join()
    wall = (max(p["end"] for p in parts) if parts else time.time()) - go_at
    pg.sample()
    return {
        "postgres_cpu": pg.used(),
        "n": n,
        "wall": wall,
        "load_before": load,
        "load_after": os.getloadavg(),
        "parts": sorted(parts, key=lambda p: p["k"]),
        "exit_codes": [p.exitcode for p in procs],
        "analyses": analyses,
    }


def verify_ledger(store: Store) -> tuple[bool, str, int, float]:
    from caretouch.ledger.audit import verify

    start = time.perf_counter()
    report = verify(store)
    return report.ok, report.problem or "ok", report.entries, time.perf_counter() - start


def print_profile(path: Path, top: int = 20) -> None:
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    say(f"cProfile of planner 0 ({path}), top {top} by own time, then by cumulative time:")
    for line in out.getvalue().splitlines():
        if line.strip() and not line.startswith(("   Ordered by", "   List reduced")):
            say(f"  {line}")


def measure(args: argparse.Namespace, store: Store, schema: str, n: int, workroot: Path) -> dict:
    reset_ledger(store)
    before = ledger_bytes(store)
    profile = None
    if args.profile is not None:
        profile = args.profile if n == args.planners[0] else Path(f"{args.profile}.K{n}")
    note(f"K={n}: {n} planner process(es) ...")
    run = run_planners(args, store, schema, n, workroot, profile)
    after = ledger_bytes(store)
    run.update(
        {
            "ledger_before": sum(before.values()),
            "ledger_after": sum(after.values()),
            "ledger_tables": {t: after[t] - before[t] for t in RESET_TABLES},
            "figures": ledger_figures(store),
            "profile": profile,
        }
    )
    print_run(run)  # before verify, which takes a while on a large ledger
    run["verify"] = verify_ledger(store)
    ok, problem, entries, seconds = run["verify"]
    say(
        f"verify: {'ok' if ok else 'FAILED: ' + problem} ({entries:,} chain entries in "
        f"{seconds:.1f} s)"
    )
    if profile is not None and profile.exists():
        print_profile(profile)
    return run


def print_run(r: dict[str, Any]) -> None:
    parts = r["parts"]
    touches = r["figures"]["rows"]["touches"]
    candidates = sum(p["candidates"] for p in parts)
    met = "yes" if r["wall"] <= TARGET_SECONDS and len(parts) == r["n"] else "NO"
    say("")
    say(
        f"== K={r['n']} planner process(es): wall {r['wall']:.1f} s from the start signal to the "
        f"last planner's end (<= {TARGET_SECONDS:.0f} s: {met}); load average "
        f"{r['load_before'][0]:.2f} before, {r['load_after'][0]:.2f} after; exit codes "
        f"{r['exit_codes']}; {r['analyses']} ANALYZE(s) of the ledger meanwhile; "
        + (
            f"PostgreSQL's processes used {r['postgres_cpu']:.1f} s of CPU meanwhile "
            "(every session's, the ANALYZEs included)"
            if r["postgres_cpu"] is not None
            else "PostgreSQL's CPU not measured (no local server processes in /proc)"
        )
    )
    say(
        f"candidates {candidates:,}; touches in the ledger {touches:,} = "
        f"{touches / r['wall']:,.0f} touches/s; rows: "
        + ", ".join(f"{t} {c:,}" for t, c in r["figures"]["rows"].items())
    )
    say("touches by current status/reason:")
    for key, count in sorted(r["figures"]["by_status"].items()):
        say(f"  {count:>9,}  {key}")
    say("touches by rule and current status:")
    for key, count in sorted(r["figures"]["by_rule"].items()):
        say(f"  {count:>9,}  {key}")
    for p in parts:
        rest = (p["end"] - p["start"]) - p["plan_day"] - p["record_plan"]
        say(
            f"  planner {p['k']} of {r['n']} (pid {p['pid']}): {p['end'] - p['start']:.1f} s, "
            f"CPU {p['user'] + p['system']:.1f} s (user {p['user']:.1f}, sys {p['system']:.1f}); "
            f"plan_day {p['plan_day']:.1f} s ({p['plan_day_calls']} call(s)), record_plan "
            f"{p['record_plan']:.1f} s (of which the plan guard's locks {p['guard_lock']:.1f} s "
            f"and its look for other planners' writes {p['guard_look']:.1f} s, over "
            f"{p['transactions']} transactions), rest {rest:.1f} s; {p['candidates']:,} candidates, "
            f"record {p['record']}; peak RSS {p['peak_rss_mb']:,.0f} MB"
        )
    grown = r["ledger_after"] - r["ledger_before"]
    say(
        f"ledger tables {r['ledger_before'] / 1e6:,.1f} MB -> {r['ledger_after'] / 1e6:,.1f} MB "
        f"(+{grown / 1e6:,.1f} MB, {grown / max(1, touches):,.0f} bytes per touch): "
        + ", ".join(f"{t} +{b / 1e6:,.1f}" for t, b in r["ledger_tables"].items() if b)
    )


def print_summary(rows: list[dict[str, Any]], customers: int) -> None:
    say("")
    say(
        "| customers | planners | wall s | <= 120 s | candidates | touches | touches/s | "
        "CPU s per planner | PostgreSQL CPU s | plan_day s | record_plan s | guard lock / look s | "
        "peak RSS MB | ledger MB | bytes/touch | verify |"
    )
    say("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        parts = r["parts"]
        touches = r["figures"]["rows"]["touches"]
        grown = r["ledger_after"] - r["ledger_before"]
        ok, _, _, vs = r["verify"]

        def each(key: str, fmt: str = "{:.1f}", parts: list = parts) -> str:
            return " / ".join(fmt.format(p[key]) for p in parts)

        say(
            f"| {customers:,} | {r['n']} | {r['wall']:.1f} | "
            f"{'yes' if r['wall'] <= TARGET_SECONDS else 'no'} | "
            f"{sum(p['candidates'] for p in parts):,} | {touches:,} | "
            f"{touches / r['wall']:,.0f} | "
            + " / ".join(f"{p['user'] + p['system']:.1f}" for p in parts)
            + f" | {'—' if r['postgres_cpu'] is None else format(r['postgres_cpu'], '.1f')}"
            + f" | {each('plan_day')} | {each('record_plan')} | "
            + " / ".join(f"{p['guard_lock']:.1f}+{p['guard_look']:.1f}" for p in parts)
            + f" | {each('peak_rss_mb', '{:,.0f}')} | "
            f"{grown / 1e6:,.0f} | {grown / max(1, touches):,.0f} | "
            f"{'ok' if ok else 'FAILED'} ({vs:.0f} s) |"
        )


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--customers", type=lambda s: int(s.replace("_", "")), default=1_000_000)
    p.add_argument("--planners", default="1,2", help="planner process counts, comma-separated")
    p.add_argument("--store-url", default=PG_URL, help="a PostgreSQL URL")
    p.add_argument("--day", type=dt.date.fromisoformat, default=DAY)
    p.add_argument("--now", type=dt.datetime.fromisoformat, default=NOW)
    p.add_argument("--reuse-schema", metavar="NAME", help="a schema kept by an earlier run")
    p.add_argument("--keep", action="store_true", help="keep the schema at the end")
    p.add_argument("--profile", type=Path, help="cProfile planner 0 into this file")
    p.add_argument(
        "--dir",
        type=Path,
        default=Path(__file__).parent / ".data",
        help="directory of the customers CSV files (default: bench/.data)",
    )
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--timeout", type=float, default=3600.0, help="per K, seconds")
    p.add_argument(
        "--analyze-every",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="ANALYZE the ledger tables this often while the planners run, as autovacuum "
        "(naptime 1 min) would where it is on; 0: never",
    )
    args = p.parse_args(argv)
    args.planners = [int(x) for x in args.planners.split(",") if x.strip()]
    if not args.store_url.startswith("postgresql"):
        p.error("--store-url must be a PostgreSQL URL")
    if args.now.tzinfo is None:
        p.error("--now must carry a UTC offset")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    say(
        f"festival day {args.day} planned at {args.now.isoformat()}; {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {args.store_url}"
    )
    if args.reuse_schema:
        schema = args.reuse_schema
        from caretouch.schema.migrate import upgrade

        store = open_schema(args.store_url, schema)
        upgrade(store)  # a no-op unless the engine's schema moved on since
        say(f"schema {schema}: reused (no build)")
    else:
        schema = f"{SCHEMA_PREFIX}{uuid.uuid4().hex[:10]}"
        note(f"building {args.customers:,} customers in schema {schema} ...")
        info = build(args.store_url, schema, args.customers, args.dir, args.seed)
        store = open_schema(args.store_url, schema)
        say(
            f"schema {schema}: built in {info['seconds']:.1f} s (migrate, import of "
            f"{info['source']}: {info['inserted']:,} inserted, {info['rejected']} rejected, "
            f"{info['warnings']:,} warnings; ANALYZE)"
        )
    counts = store_counts(store)
    customers = counts.get("customers", 0)
    say("store: " + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())))
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="care-festival-") as tmp:
            for n in args.planners:
                rows.append(measure(args, store, schema, n, Path(tmp)))
    finally:
        store.dispose()
        if not args.keep and not args.reuse_schema:
            admin = open_store(args.store_url)
            with admin.engine.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            admin.dispose()
        elif args.keep:
            say(f"kept schema {schema} (--reuse-schema {schema})")
    print_summary(rows, customers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
