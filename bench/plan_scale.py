"""Does planning a day scale with the touches due, not with the size of the store?

Product spec: "planning a day on a 1,000,000-customer store takes seconds, and no more than
twice the time it takes on a 100,000-customer store with the same number of due touches".

For every size N this builds (or reuses) a store of N customers (about 1.3 policies and 0.3
events each) whose planning day has exactly the same due set whatever N is: the bulk
population never matches the day (birth and policy-start month-days avoid the day's anniversary
keys, renewal dates avoid the reminder dates, events are older than the event window, the few
lunar-calendar customers have other lunar birthdays), and ``--due`` fixed customers, identical
in every store, are made due (40 % birthdays, 30 % renewals, 15 % annual reviews, 15 % purchase
events on the local yesterday). It then times ``plan_day`` and shows, per candidate SELECT,
how the database executes it (``EXPLAIN QUERY PLAN`` / ``EXPLAIN``): the evidence that
filtering happens on indexed columns. It prints figures and asserts nothing about time.

    python bench/plan_scale.py [--sizes 100000,1000000] [--due 2000] [--day 2026-11-23]
        [--dir bench/.data] [--store-url URL] [--repeat 3] [--rebuild] [--keep]

SQLite stores are files ``DIR/plan_scale_N.db``, kept and reused while their build parameters
(recorded in a ``bench_plan_scale`` marker table) match. With ``--store-url`` pointing at
PostgreSQL each size lives in a schema ``bench_plan_scale_N``; those are dropped at the end
unless ``--keep`` (they are then reused by the next run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from _common import (
    RULES_DIR,
    SEED,
    TEMPLATES_DIR,
    Explain,
    bulk_pragmas,
    note,
    read_marker,
    say,
    schema_differences,
)
from sqlalchemy import Column, MetaData, Table, Text, event, insert

from caretouch.dates import (
    LeapDayPolicy,
    anniversary_keys,
    is_leap_year,
    lunar_anniversary_keys,
    month_day,
)
from caretouch.ledger import Ledger
from caretouch.plan.planner import plan_day
from caretouch.render.templates import TemplateStore
from caretouch.rules.loader import RuleSet, load_rules
from caretouch.rules.model import TriggerKind
from caretouch.rules.sql import candidate_selects
from caretouch.schema.migrate import upgrade
from caretouch.store.db import Store, open_store
from caretouch.store.models import Base, Customer, Event, InsurancePolicy
from caretouch.store.population import Mix, Population, add_years

GENERATOR_VERSION = 2  # bump when the generated data changes, to invalidate reused stores
CHUNK = 20_000  # customers per insert transaction (their policies and events go with them)
LUNAR_BULK = 500  # lunar-calendar customers in the bulk population, whatever N is
SCHEMA_PREFIX = "bench_plan_scale_"

MARKER = Table("bench_plan_scale", MetaData(), Column("params", Text, nullable=False))


# --- output ----------------------------------------------------------------------------------


class Progress:
    """Rows/s on stderr while a store is built (one line per update, or in place on a tty)."""

    def __init__(self, label: str, total: int) -> None:
        self.label = label
        self.total = total
        self.start = time.perf_counter()
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def update(self, customers: int, rows: int, *, final: bool = False) -> None:
        now = time.perf_counter()
        if not final and not self.tty and now - self.last < 5:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        line = (
            f"  {self.label}: {customers:,}/{self.total:,} customers, {rows:,} rows, "
            f"{rows / elapsed:,.0f} rows/s, {elapsed:.1f} s"
        )
        if self.tty:
            sys.stderr.write("\r" + line + ("\n" if final else ""))
            sys.stderr.flush()
        else:
            note(line)


# --- what must be avoided / made due on the planning day --------------------------------------


@dataclass(frozen=True)
class DaySpec:
    """The planning day and the keys the shipped rules look up on it."""

    day: dt.date
    renewal_offsets: tuple[int, ...]
    event_type: str
    event_delay: int
    birth_keys: frozenset[int]  # Gregorian month-days whose birthday is the day
    lunar_keys: tuple[int, ...]  # lunar month-days whose lunar birthday is the day
    start_keys: frozenset[int]  # policy-start month-days whose anniversary is the day

    @property
    def forbidden_md(self) -> frozenset[int]:
        # Avoid the day's keys under either leap-day policy, and 29 February altogether.
        keys = set(self.birth_keys) | set(self.start_keys) | {229}
        for policy in LeapDayPolicy:
            keys.update(anniversary_keys(self.day, policy))
        return frozenset(keys)

    @property
    def forbidden_renewals(self) -> frozenset[dt.date]:
        return frozenset(
            self.day + dt.timedelta(days=sign * o) for o in self.renewal_offsets for sign in (1, -1)
        )

    @property
    def event_cutoff(self) -> dt.datetime:
        """Bulk events happen before this instant, well clear of the SQL event window."""
        first = self.day - dt.timedelta(days=self.event_delay + 3)
        return dt.datetime.combine(first, dt.time(), dt.timezone.utc)


def day_spec(ruleset: RuleSet, day: dt.date) -> DaySpec:
    """Read the trigger parameters of the shipped rules (falling back to their known values)."""
    offsets: tuple[int, ...] = (30, 7, 1)
    event_type, delay = "policy_purchased", 1
    birth_leap = start_leap = LeapDayPolicy.FEB28
    for rule in ruleset.rules:
        trig = rule.trigger
        name = trig.field.name if trig.field is not None else None
        if trig.kind is TriggerKind.DAYS_BEFORE and name == "policy.renewal_date":
            offsets = trig.offsets
        elif trig.kind is TriggerKind.EVENT and trig.event_type:
            event_type, delay = trig.event_type, trig.delay_days
        elif trig.kind is TriggerKind.ANNIVERSARY and name == "customer.birth_date":
            birth_leap = trig.leap_day
        elif trig.kind is TriggerKind.ANNIVERSARY and name == "policy.start_date":
            start_leap = trig.leap_day
    return DaySpec(
        day=day,
        renewal_offsets=tuple(offsets),
        event_type=event_type,
        event_delay=delay,
        birth_keys=frozenset(anniversary_keys(day, birth_leap)),
        lunar_keys=tuple(lunar_anniversary_keys(day)),
        start_keys=frozenset(anniversary_keys(day, start_leap)),
    )


# --- population ------------------------------------------------------------------------------
# Customers, products, premiums and events come from the store's population generator
# (caretouch.store.population, shared with the demo); this script only chooses their dates:
# away from the planning day for the bulk population, on it for the due set.

BULK_MIX = Mix(lunar=0.0, policies_per_customer=(15, 50, 25, 10))
DUE_MIX = Mix(lunar=0.0)


@dataclass
class Pools:
    """Precomputed date pools, each already free of the planning day's keys."""

    births: list[dt.date]
    starts: list[dt.date]  # long-term policy starts
    renewals: list[dt.date]
    event_days: list[dt.date]


def _dates(first: dt.date, last: dt.date, keep: Callable[[dt.date], bool]) -> list[dt.date]:
    out, d, one = [], first, dt.timedelta(days=1)
    while d <= last:
        if keep(d):
            out.append(d)
        d += one
    return out


def make_pools(spec: DaySpec) -> Pools:
    day, bad_md, bad_renewal = spec.day, spec.forbidden_md, spec.forbidden_renewals

    def md_ok(d: dt.date) -> bool:
        return month_day(d) not in bad_md

    return Pools(
        births=_dates(dt.date(1940, 1, 1), dt.date(day.year - 18, 12, 31), md_ok),
        starts=_dates(dt.date(1995, 1, 1), day - dt.timedelta(days=400), md_ok),
        renewals=_dates(
            day - dt.timedelta(days=240),
            day + dt.timedelta(days=400),
            lambda d: md_ok(d) and d not in bad_renewal,
        ),
        event_days=_dates(
            day - dt.timedelta(days=3 * 365), spec.event_cutoff.date() - dt.timedelta(days=1), bool
        ),
    )


@dataclass
class Batch:
    customers: list[dict[str, Any]] = field(default_factory=list)
    policies: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.customers) + len(self.policies) + len(self.events)


def bulk_batches(n: int, spec: DaySpec, pools: Pools, seed: int) -> Iterator[tuple[int, Batch]]:
    """``n`` customers nobody is due on the planning day, in batches of ``CHUNK``."""
    pop = Population(spec.day, seed, BULK_MIX)
    rng = pop.rng
    r = rng.random
    births, starts, renewals, event_days = (
        pools.births,
        pools.starts,
        pools.renewals,
        pools.event_days,
    )
    lunar_every = max(1, n // LUNAR_BULK)
    pno = eno = 0
    batch = Batch()
    for i in range(1, n + 1):
        c = pop.customer(i, customer_id=f"C{i:08d}")
        c.birth_date = births[int(r() * len(births))]
        c.birthday_calendar = "lunar" if i % lunar_every == 0 else "gregorian"
        row = c.values()
        while row["birth_lunar_md"] in spec.lunar_keys:  # rare: pick another date
            c.birth_date = births[int(r() * len(births))]
            row = c.values()
        batch.customers.append(row)

        for _ in range(pop.policy_count()):
            pno += 1
            y = r()
            status = "active" if y < 0.85 else "lapsed" if y < 0.95 else "cancelled"
            if r() < 0.6:  # term policy: renews yearly on its start month-day
                renewal = renewals[int(r() * len(renewals))]
                start = add_years(renewal, -(1 + int(r() * 5)))
                long_term = False
            else:  # long-term policy: annual review on its start month-day
                renewal, start, long_term = None, starts[int(r() * len(starts))], True
            pop.policy(
                c,
                start,
                long_term=long_term,
                renewal=renewal,
                status=status,
                policy_id=f"P{pno:08d}",
            )
        if r() < 0.30:  # an event older than the rules' event window
            eno += 1
            day = event_days[int(r() * len(event_days))]
            at = (int(r() * 24), int(r() * 60))
            x = r()
            if c.policies and x < 0.5:
                pop.purchase(c.policies[0], day, at)
            elif c.policies and x < 0.7:
                pop.claim(c.policies[0], day)
            else:
                pop.complaint(c, day, at)
            batch.events.append(pop.events[-1].values(f"E{eno:08d}"))
        batch.policies.extend(p.values() for p in c.policies)
        if i % CHUNK == 0 or i == n:
            pop.customers.clear()
            pop.policies.clear()
            pop.events.clear()
            yield i, batch
            batch = Batch()


@dataclass
class DueSet:
    batch: Batch
    plan: Counter[str]  # what was made due, by kind


def due_set(due: int, spec: DaySpec, pools: Pools, default_zone: str, seed: int) -> DueSet:
    """``due`` customers made due on the planning day; identical for every store size."""
    pop = Population(spec.day, seed * 7 + 1, DUE_MIX)
    rng = pop.rng
    r = rng.random
    day = spec.day
    yesterday = day - dt.timedelta(days=spec.event_delay)
    n_birthday = round(due * 0.40)
    n_renewal = round(due * 0.30)
    n_review = round(due * 0.15)
    n_thanks = due - n_birthday - n_renewal - n_review
    n_lunar = max(1, n_birthday // 25) if spec.lunar_keys else 0
    kinds = (
        ["lunar"] * n_lunar
        + ["birthday"] * (n_birthday - n_lunar)
        + ["renewal"] * n_renewal
        + ["review"] * n_review
        + ["thanks"] * n_thanks
    )
    rng.shuffle(kinds)
    out = DueSet(Batch(), Counter())
    births = pools.births
    for j, kind in enumerate(kinds, 1):
        pid, eid = f"DP{j:06d}", f"DE{j:06d}"
        c = pop.customer(j, customer_id=f"D{j:06d}")
        c.birthday_calendar = "gregorian"
        c.birth_date = births[int(r() * len(births))]
        if kind == "birthday":
            key = sorted(spec.birth_keys)[int(r() * len(spec.birth_keys))]
            month, mday = divmod(key, 100)
            year = 1945 + int(r() * (day.year - 1945 - 18))
            while month == 2 and mday == 29 and not is_leap_year(year):
                year -= 1
            c.birth_date = dt.date(year, month, mday)
            if r() < 0.05:  # also a renewal reminder today: the per-day cap decides
                renewal = day + dt.timedelta(days=spec.renewal_offsets[0])
                start = add_years(renewal, -1)
                pop.policy(c, start, long_term=False, renewal=renewal, policy_id=pid)
                out.plan["(birthday also renewal)"] += 1
        elif kind == "lunar":
            c.birthday_calendar = "lunar"
            c.birth_date = pop.lunar_birth(spec.lunar_keys[int(r() * len(spec.lunar_keys))])
        elif kind == "renewal":
            offset = spec.renewal_offsets[j % len(spec.renewal_offsets)]
            renewal = day + dt.timedelta(days=offset)
            status = "lapsed" if r() < 0.05 else "active"
            start = add_years(renewal, -(1 + int(r() * 4)))
            pop.policy(c, start, long_term=False, renewal=renewal, status=status, policy_id=pid)
        elif kind == "review":
            key = sorted(spec.start_keys)[int(r() * len(spec.start_keys))]
            month, mday = divmod(key, 100)
            year = day.year - 1 - int(r() * 20)
            while month == 2 and mday == 29 and not is_leap_year(year):
                year -= 1
            status = "lapsed" if r() < 0.05 else "active"
            start = dt.date(year, month, mday)
            pop.policy(c, start, long_term=True, status=status, policy_id=pid)
        else:  # a purchase on the customer's local yesterday (5 %: two days ago, a near miss)
            zone = ZoneInfo(c.timezone or default_zone)
            local_day = yesterday - dt.timedelta(days=1 if r() < 0.05 else 0)
            local = dt.datetime.combine(local_day, dt.time(1 + int(r() * 22), int(r() * 60)))
            next_renewal: dt.date | None = (
                yesterday.replace(year=yesterday.year + 1) if month_day(yesterday) != 229 else None
            )
            if next_renewal in spec.forbidden_renewals:
                next_renewal = None
            p = pop.policy(
                c,
                yesterday,
                long_term=next_renewal is None,
                renewal=next_renewal,
                policy_id=pid,
            )
            event = pop.purchase(p, local_day, (local.hour, local.minute))
            event.occurred_at = local.replace(tzinfo=zone)  # the policy file's default zone
            out.batch.events.append(event.values(eid))
            kind = "thanks" if local_day == yesterday else "thanks-near-miss"
        out.plan[kind] += 1
        out.batch.customers.append(c.values())
        out.batch.policies.extend(p.values() for p in c.policies)
    return out


# --- building a store ------------------------------------------------------------------------


def params_for(size: int, due: int, day: dt.date, seed: int) -> dict[str, Any]:
    return {
        "generator": GENERATOR_VERSION,
        "size": size,
        "due": due,
        "day": day.isoformat(),
        "seed": seed,
    }


def _secondary_indexes() -> list[Any]:
    return [idx for table in Base.metadata.sorted_tables for idx in table.indexes]


def build_store(
    store: Store,
    params: dict[str, Any],
    spec: DaySpec,
    pools: Pools,
    due: DueSet,
    label: str,
) -> dict[str, Any]:
    """Fill an empty store; return the counts and build seconds (also kept in the marker)."""
    size, seed = params["size"], params["seed"]
    started = time.perf_counter()
    upgrade(store)
    counts = Counter[str]()
    tables: dict[str, Any] = {
        "customers": Customer.__table__,
        "policies": InsurancePolicy.__table__,
        "events": Event.__table__,
    }
    if store.is_sqlite:
        # Set on connect, outside any transaction (SQLite refuses to change the safety level
        # inside one); the build's connections are disposed of before anything is measured.
        store.dispose()
        event.listen(store.engine, "connect", bulk_pragmas)
    with store.engine.connect() as conn:
        if store.is_postgres:
            conn.exec_driver_sql("SET synchronous_commit TO OFF")
            conn.exec_driver_sql("SET maintenance_work_mem TO '256MB'")
        indexes = _secondary_indexes()
        for idx in indexes:  # loading first and indexing afterwards is much faster
            idx.drop(conn)
        conn.commit()

        progress = Progress(label, size)

        def write(batch: Batch) -> None:
            for name, rows in (
                ("customers", batch.customers),
                ("policies", batch.policies),
                ("events", batch.events),
            ):
                if rows:
                    conn.execute(insert(tables[name]), rows)
                    counts[name] += len(rows)
            conn.commit()

        for done, batch in bulk_batches(size - params["due"], spec, pools, seed):
            write(batch)
            progress.update(done, counts.total())
        write(due.batch)
        progress.update(size, counts.total(), final=True)

        t_index = time.perf_counter()
        for idx in indexes:
            idx.create(conn)
        conn.commit()
        note(f"  {label}: {len(indexes)} indexes in {time.perf_counter() - t_index:.1f} s")
        if store.is_postgres:
            # Autovacuum would analyze freshly loaded tables within a minute or so; do it now
            # so that every run plans against the same statistics.
            conn.exec_driver_sql("ANALYZE customers")
            conn.exec_driver_sql("ANALYZE policies")
            conn.exec_driver_sql("ANALYZE events")
        info = {
            **params,
            "counts": dict(counts),
            "build_seconds": round(time.perf_counter() - started, 1),
        }
        MARKER.create(conn, checkfirst=True)
        conn.execute(MARKER.delete())
        conn.execute(insert(MARKER), {"params": json.dumps(info)})
        conn.commit()
    if store.is_sqlite:
        event.remove(store.engine, "connect", bulk_pragmas)
    store.dispose()  # closing the last connection also checkpoints SQLite's WAL
    for problem in schema_differences(store, Base.metadata, extra_columns=False):
        say(f"WARNING: {store.masked_url()}: {problem}")
    return info


# --- stores per size -------------------------------------------------------------------------


@dataclass
class Target:
    size: int
    label: str
    store: Store
    reset: Callable[[], Store]  # wipe and reopen an empty store
    drop: Callable[[], None] | None = None


def sqlite_target(size: int, directory: Path) -> Target:
    path = directory / f"plan_scale_{size}.db"

    def reset() -> Store:
        target.store.dispose()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        target.store = open_store(f"sqlite:///{path}")
        return target.store

    target = Target(size, str(path), open_store(f"sqlite:///{path}"), reset)
    return target


def postgres_target(size: int, url: str, admin: Store) -> Target:
    schema = f"{SCHEMA_PREFIX}{size}"

    def connect() -> Store:
        return open_store(url, connect_args={"options": f"-csearch_path={schema}"})

    def reset() -> Store:
        target.store.dispose()
        with admin.engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        target.store = connect()
        return target.store

    def drop() -> None:
        target.store.dispose()
        with admin.engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    with admin.engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    target = Target(size, f"{admin.masked_url()} schema {schema}", connect(), reset, drop)
    return target


# --- measuring -------------------------------------------------------------------------------


@dataclass
class SelectReport:
    name: str
    rows: int
    seconds: float
    explain_seconds: float
    scans: list[str]  # tables read whole
    plan: list[str]

    @property
    def indexed(self) -> bool:
        return not self.scans


def inspect_selects(store: Store, ruleset: RuleSet, day: dt.date) -> list[SelectReport]:
    """Run and explain every candidate SELECT of every rule."""
    reports = []
    prefix = "EXPLAIN QUERY PLAN" if store.is_sqlite else "EXPLAIN"
    # plan_day reads through Store.read_session where the store has one.
    reading = getattr(store, "read_session", store.session)
    with reading() as session:
        for rule in ruleset.rules:
            selects = candidate_selects(rule, day)
            for n, stmt in enumerate(selects):
                name = rule.id if len(selects) == 1 else f"{rule.id}[{n}]"
                t0 = time.perf_counter()
                plan_rows = session.execute(Explain(stmt, prefix)).all()
                t_explain = time.perf_counter() - t0
                t0 = time.perf_counter()
                rows = len(session.execute(stmt).all())
                t_run = time.perf_counter() - t0
                if store.is_sqlite:
                    plan = [str(r[-1]) for r in plan_rows]
                    scans = [line.split()[1] for line in plan if _sqlite_scans_table(line)]
                else:
                    plan = [
                        str(r[0]).split("  (cost")[0].strip().removeprefix("->").strip()
                        for r in plan_rows
                        if any(w in str(r[0]) for w in ("Scan", "Join", "Loop"))
                    ]
                    scans = [
                        line.split("Seq Scan on ")[1].split()[0]
                        for line in plan
                        if "Seq Scan on " in line
                    ]
                reports.append(SelectReport(name, rows, t_run, t_explain, scans, plan))
    return reports


def _sqlite_scans_table(detail: str) -> bool:
    """``SCAN customers`` reads a whole table; ``SCAN CONSTANT ROW`` and b-trees do not."""
    if not detail.startswith("SCAN "):
        return False
    return not detail.startswith(("SCAN CONSTANT", "SCAN ANON")) and "COVERING INDEX" not in detail


@dataclass
class Result:
    size: int
    build: str
    counts: dict[str, int]
    selects: list[SelectReport]
    times: list[float] = field(default_factory=list)
    touches: int = 0
    breakdown: Counter[str] = field(default_factory=Counter)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def measure(
    pairs: list[tuple[Target, Result]], ruleset: RuleSet, day: dt.date, repeat: int
) -> None:
    """Warm up every store once, then time ``plan_day`` in rounds over the stores.

    Interleaving the sizes (rather than timing one store after the other) exposes them all
    to the same background load, which keeps the ratio meaningful on a busy machine.
    """
    # Planning consults the ledger as `care run` does (caps over 7 days, deferred touches,
    # touches already sent), so its queries are part of the measured time.
    for target, _ in pairs:
        upgrade(target.store)  # the ledger tables, if this store predates them
        plan_day(target.store, ruleset, day, history=Ledger(target.store))  # warm-up
    for _ in range(repeat):
        for target, res in pairs:
            gc.collect()
            t0 = time.perf_counter()
            touches = plan_day(target.store, ruleset, day, history=Ledger(target.store))
            res.times.append(time.perf_counter() - t0)
            res.touches = len(touches)
            res.breakdown = Counter(
                f"{t.rule.id}:{t.decision.value}{'/' + t.reason.value if t.reason else ''}"
                for t in touches
            )


def prepare(
    target: Target,
    args: argparse.Namespace,
    ruleset: RuleSet,
    spec: DaySpec,
    pools: Pools,
    due: DueSet,
) -> Result:
    params = params_for(target.size, args.due, spec.day, args.seed)
    marker = None if args.rebuild else read_marker(target.store, MARKER)
    same = marker is not None and {k: marker.get(k) for k in params} == params
    differences = (
        schema_differences(target.store, Base.metadata, extra_columns=False) if same else []
    )
    if marker is not None and same and not differences:
        build = f"reused ({marker['build_seconds']:.0f} s)"
        counts = marker["counts"]
        note(f"{target.label}: reusing the store built with {params}")
    else:
        why = (
            "--rebuild"
            if args.rebuild
            else "no store"
            if marker is None
            else f"schema changed: {differences[0]}"
            if differences
            else "other parameters"
        )
        note(f"{target.label}: building {target.size:,} customers ({why})")
        store = target.reset()
        info = build_store(store, params, spec, pools, due, f"build {target.size:,}")
        build = f"{info['build_seconds']:.1f} s"
        counts = info["counts"]
    selects = inspect_selects(target.store, ruleset, spec.day)
    return Result(target.size, build, counts, selects)


def print_result(res: Result) -> None:
    c = res.counts
    say(
        f"\n== {res.size:,} customers: {c.get('customers', 0):,} customers, "
        f"{c.get('policies', 0):,} policies, {c.get('events', 0):,} events; build {res.build}"
    )
    say(
        f"plan_day x{len(res.times)}: min {min(res.times):.3f} s, median {res.median:.3f} s, "
        f"{res.touches} touches"
    )
    for key, count in sorted(res.breakdown.items()):
        say(f"    {count:6d}  {key}")
    say("candidate SELECTs (rows, execution, EXPLAIN time, index use):")
    for s in res.selects:
        verdict = "index" if s.indexed else f"FULL SCAN of {', '.join(s.scans)}"
        say(
            f"  {s.name:24s} {s.rows:6d} rows  {s.seconds * 1000:8.1f} ms  "
            f"explain {s.explain_seconds * 1000:6.1f} ms  {verdict}"
        )
        for line in s.plan:
            say(f"      {line}")


def print_summary(results: list[Result], backend: str) -> None:
    say(f"\nSummary ({backend}):")
    header = f"{'size':>10}  {'build':>18}  {'plan min s':>10}  {'median s':>9}  {'touches':>7}  {'ratio':>6}"
    say(header)
    say("-" * len(header))
    base = results[0]
    for res in results:
        say(
            f"{res.size:>10,}  {res.build:>18}  {min(res.times):>10.3f}  {res.median:>9.3f}  "
            f"{res.touches:>7}  {res.median / base.median:>6.2f}"
        )
    if len({r.touches for r in results}) > 1:
        say(
            "WARNING: the stores do not plan the same number of touches: "
            + ", ".join(f"{r.size:,}: {r.touches}" for r in results)
        )
    rows = {tuple((s.name, s.rows) for s in r.selects) for r in results}
    if len(rows) > 1:
        say(
            "WARNING: the candidate SELECTs read different numbers of rows at different sizes "
            "(the bulk population leaks into the due set)"
        )
    small, big = results[0], results[-1]
    if len(results) > 1:
        say(f"ratio big/small = {big.median / small.median:.2f} (target <= 2)")
        say(f"(ratio of the minima: {min(big.times) / min(small.times):.2f})")
    notes = False
    for res in results:
        unindexed = [f"{s.name} ({', '.join(s.scans)})" for s in res.selects if not s.indexed]
        if unindexed:
            say(f"NOTE: full table scans at {res.size:,}: {'; '.join(unindexed)}")
            notes = True
    if notes and "PostgreSQL" in backend:
        say(
            "      (PostgreSQL's cost-based planner may prefer a hash join over a full scan when "
            "the due rows are a large share of a small table; at 1,000,000 customers a full "
            "scan would mean an index the query cannot use)"
        )


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="100000,1000000", help="customers per store, comma-separated")
    p.add_argument("--due", type=int, default=2000, help="customers due on the day (every store)")
    p.add_argument("--day", default="2026-11-23", help="the planning day, YYYY-MM-DD")
    p.add_argument(
        "--dir",
        default=str(Path(__file__).parent / ".data"),
        help="directory of the SQLite stores (default: bench/.data)",
    )
    p.add_argument("--store-url", help="PostgreSQL URL (one schema per size) instead of SQLite")
    p.add_argument("--repeat", type=int, default=3, help="timed plan_day runs per store")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--rebuild", action="store_true", help="build even if a matching store exists")
    p.add_argument("--keep", action="store_true", help="keep PostgreSQL schemas after the run")
    args = p.parse_args(argv)
    args.sizes = sorted(int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip())
    args.day = dt.date.fromisoformat(args.day)
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    if not args.sizes or args.sizes[0] <= args.due:
        p.error("every size must be larger than --due")
    if args.store_url and args.store_url.startswith("sqlite"):
        p.error("for SQLite use --dir (one file per size), not --store-url")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ruleset = load_rules(RULES_DIR, TemplateStore(TEMPLATES_DIR))
    if ruleset.errors:
        for err in ruleset.errors:
            note(f"rule error: {err}")
        return 1
    spec = day_spec(ruleset, args.day)
    pools = make_pools(spec)
    due = due_set(args.due, spec, pools, ruleset.policy.default_timezone, args.seed)
    say(f"Planning {args.day} ({args.day:%A}) with rules {', '.join(r.id for r in ruleset.rules)}")
    say(
        f"due set ({args.due} customers, same in every store): "
        + ", ".join(f"{k} {v}" for k, v in sorted(due.plan.items()))
    )
    admin: Store | None = None
    if args.store_url:
        admin = open_store(args.store_url)
        backend = f"PostgreSQL {admin.masked_url()}"
    else:
        Path(args.dir).mkdir(parents=True, exist_ok=True)
        backend = f"SQLite in {args.dir}"
    results = []
    targets: list[Target] = []
    try:
        for size in args.sizes:
            target = (
                postgres_target(size, args.store_url, admin)
                if admin is not None
                else sqlite_target(size, Path(args.dir))
            )
            targets.append(target)
            results.append(prepare(target, args, ruleset, spec, pools, due))
        note(f"timing plan_day: warm-up, then {args.repeat} round(s) over the stores")
        measure(list(zip(targets, results, strict=True)), ruleset, args.day, args.repeat)
        for res in results:
            print_result(res)
    finally:
        for target in targets:
            target.store.dispose()
            if target.drop is not None and not args.keep:
                target.drop()
        if admin is not None:
            admin.dispose()
    print_summary(results, backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
