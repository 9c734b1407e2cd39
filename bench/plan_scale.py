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
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from _common import (
    DOMAINS,
    RULES_DIR,
    SEED,
    TEMPLATES_DIR,
    TIERS,
    Explain,
    bulk_pragmas,
    minus_years,
    name_pool,
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
from caretouch.store.importer import with_derived_customer, with_derived_policy
from caretouch.store.models import Base, Customer, Event, InsurancePolicy

GENERATOR_VERSION = 1  # bump when the generated data changes, to invalidate reused stores
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

_CN_SURNAMES = (
    ("王", "wang"), ("李", "li"), ("张", "zhang"), ("刘", "liu"), ("陈", "chen"),
    ("杨", "yang"), ("赵", "zhao"), ("黄", "huang"), ("周", "zhou"), ("吴", "wu"),
    ("徐", "xu"), ("孙", "sun"), ("胡", "hu"), ("朱", "zhu"), ("高", "gao"),
    ("林", "lin"), ("何", "he"), ("郭", "guo"), ("马", "ma"), ("罗", "luo"),
    ("欧阳", "ouyang"), ("司马", "sima"), ("诸葛", "zhuge"), ("上官", "shangguan"),
)  # fmt: skip
_CN_GIVEN = (
    ("伟", "wei"), ("芳", "fang"), ("静", "jing"), ("敏", "min"), ("丽", "li"),
    ("强", "qiang"), ("磊", "lei"), ("军", "jun"), ("洋", "yang"), ("勇", "yong"),
    ("秀英", "xiuying"), ("建华", "jianhua"), ("志强", "zhiqiang"), ("晓燕", "xiaoyan"),
    ("子涵", "zihan"), ("雨桐", "yutong"), ("浩然", "haoran"), ("欣怡", "xinyi"),
    ("佳怡", "jiayi"), ("俊杰", "junjie"), ("婷婷", "tingting"), ("一鸣", "yiming"),
)  # fmt: skip


NAMES = name_pool(_CN_SURNAMES, _CN_GIVEN)
# (cumulative probability, locale, zones ("" = none recorded: the policy's default applies),
#  phone prefix, digits after it)
LOCALES = (
    (0.60, "zh-CN", ("Asia/Shanghai",) * 7 + ("",) * 2 + ("Asia/Urumqi",), ("+86138", "+86139", "+86186", "+86150"), 8),
    (0.75, "zh-TW", ("Asia/Taipei",) * 4 + ("",), ("+8869",), 8),
    (1.00, "en", ("Europe/London", "America/New_York", "America/Los_Angeles", "Australia/Sydney",
                  "Asia/Singapore", "Pacific/Auckland", "Pacific/Honolulu", "Asia/Shanghai"),
     ("+447911", "+61412", "+6591"), 6),
)  # fmt: skip
PRODUCTS = ("安心医疗险", "守护重疾险", "畅行意外险", "Term Life 20", "Home Protect", "Travel Care")
PREMIUMS = [Decimal(f"{p}.{c:02d}") for p in range(180, 9000, 37) for c in (0, 50)]
EVENT_TYPES = ("policy_purchased", "claim_filed", "complaint_resolved", "address_changed")


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


def _contact(rng: random.Random, i: int, tag: str) -> dict[str, Any]:
    """The customer columns that make the planner's channel choice do real work."""
    r = rng.random
    x = r()
    _, locale, zones, prefixes, digits = next(entry for entry in LOCALES if x < entry[0])
    name, local = NAMES[locale][int(r() * len(NAMES[locale]))]
    zone = zones[int(r() * len(zones))]
    x = r()
    if x < 0.08:
        phone = None
    elif x < 0.10:
        phone = f"1{int(r() * 10**10):010d}"  # no "+": imported with a warning, never used
    else:
        phone = prefixes[int(r() * len(prefixes))] + f"{int(r() * 10**digits):0{digits}d}"
    x = r()
    if x < 0.10:
        email = None
    elif x < 0.12:
        email = f"{local}.{tag}{i}@"  # not a valid address
    else:
        email = f"{local}.{tag}{i}@{DOMAINS[int(r() * 4)]}"
    return {
        "name": name,
        "phone": phone,
        "email": email,
        "locale": locale,
        "timezone": zone or None,
        "tier": TIERS[int(r() * 20)],
        "status": "inactive" if r() < 0.05 else "active",
        "consent_sms": r() < 0.80,
        "consent_email": r() < 0.65,
        "consent_marketing": r() < 0.20,
    }


def _policy(
    pid: str, cid: str, start: dt.date, renewal: dt.date | None, status: str, rng: random.Random
) -> dict[str, Any]:
    return with_derived_policy(
        {
            "policy_id": pid,
            "customer_id": cid,
            "product": PRODUCTS[int(rng.random() * len(PRODUCTS))],
            "start_date": start,
            "renewal_date": renewal,
            "status": status,
            "premium": PREMIUMS[int(rng.random() * len(PREMIUMS))],
        }
    )


def _event(
    eid: str, etype: str, cid: str, pid: str | None, at: dt.datetime, payload: Any
) -> dict[str, Any]:
    return {
        "event_id": eid,
        "type": etype,
        "customer_id": cid,
        "policy_id": pid,
        "occurred_at": at,
        "payload": payload,
    }


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
    rng = random.Random(seed)
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
        cid = f"C{i:08d}"
        row = _contact(rng, i, "c")
        row["customer_id"] = cid
        birth = births[int(r() * len(births))]
        row["birth_date"] = birth
        row["birthday_calendar"] = "gregorian"
        if i % lunar_every == 0:
            row["birthday_calendar"] = "lunar"
            with_derived_customer(row)
            while row["birth_lunar_md"] in spec.lunar_keys:  # rare: pick another date
                row["birth_date"] = births[int(r() * len(births))]
                with_derived_customer(row)
        else:
            with_derived_customer(row)
        batch.customers.append(row)

        x = r()
        npol = 0 if x < 0.15 else 1 if x < 0.65 else 2 if x < 0.90 else 3
        first_pid: str | None = None
        for _ in range(npol):
            pno += 1
            pid = f"P{pno:08d}"
            first_pid = first_pid or pid
            y = r()
            status = "active" if y < 0.85 else "lapsed" if y < 0.95 else "cancelled"
            if r() < 0.6:  # term policy: renews yearly on its start month-day
                renewal = renewals[int(r() * len(renewals))]
                start = minus_years(renewal, 1 + int(r() * 5))
            else:  # long-term policy: annual review on its start month-day
                renewal = None
                start = starts[int(r() * len(starts))]
            batch.policies.append(_policy(pid, cid, start, renewal, status, rng))
        if r() < 0.30:
            eno += 1
            etype = EVENT_TYPES[int(r() * len(EVENT_TYPES))]
            at = dt.datetime.combine(
                event_days[int(r() * len(event_days))],
                dt.time(int(r() * 24), int(r() * 60), int(r() * 60)),
                dt.timezone.utc,
            )
            payload = {"source": "app"} if r() < 0.2 else None
            about = first_pid if etype in ("policy_purchased", "claim_filed") else None
            batch.events.append(_event(f"E{eno:08d}", etype, cid, about, at, payload))
        if i % CHUNK == 0 or i == n:
            yield i, batch
            batch = Batch()


@dataclass
class DueSet:
    batch: Batch
    plan: Counter[str]  # what was made due, by kind


def due_set(due: int, spec: DaySpec, pools: Pools, default_zone: str, seed: int) -> DueSet:
    """``due`` customers made due on the planning day; identical for every store size."""
    rng = random.Random(seed * 7 + 1)
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
    lunar_births = _lunar_birth_dates(spec) if n_lunar else []
    out = DueSet(Batch(), Counter())
    births = pools.births
    for j, kind in enumerate(kinds, 1):
        cid, pid, eid = f"D{j:06d}", f"DP{j:06d}", f"DE{j:06d}"
        row = _contact(rng, j, "d")
        row["customer_id"] = cid
        row["birthday_calendar"] = "gregorian"
        row["birth_date"] = births[int(r() * len(births))]
        if kind == "birthday":
            key = sorted(spec.birth_keys)[int(r() * len(spec.birth_keys))]
            month, mday = divmod(key, 100)
            year = 1945 + int(r() * (day.year - 1945 - 18))
            while month == 2 and mday == 29 and not is_leap_year(year):
                year -= 1
            row["birth_date"] = dt.date(year, month, mday)
            if r() < 0.05:  # also a renewal reminder today: the per-day cap decides
                renewal = day + dt.timedelta(days=spec.renewal_offsets[0])
                pol = _policy(pid, cid, minus_years(renewal, 1), renewal, "active", rng)
                out.batch.policies.append(pol)
                out.plan["(birthday also renewal)"] += 1
        elif kind == "lunar":
            row["birthday_calendar"] = "lunar"
            row["birth_date"] = lunar_births[int(r() * len(lunar_births))]
        elif kind == "renewal":
            offset = spec.renewal_offsets[j % len(spec.renewal_offsets)]
            renewal = day + dt.timedelta(days=offset)
            status = "lapsed" if r() < 0.05 else "active"
            start = minus_years(renewal, 1 + int(r() * 4))
            out.batch.policies.append(_policy(pid, cid, start, renewal, status, rng))
        elif kind == "review":
            key = sorted(spec.start_keys)[int(r() * len(spec.start_keys))]
            month, mday = divmod(key, 100)
            year = day.year - 1 - int(r() * 20)
            while month == 2 and mday == 29 and not is_leap_year(year):
                year -= 1
            status = "lapsed" if r() < 0.05 else "active"
            start = dt.date(year, month, mday)
            out.batch.policies.append(_policy(pid, cid, start, None, status, rng))
        else:  # a purchase on the customer's local yesterday (5 %: two days ago, a near miss)
            zone = ZoneInfo(row["timezone"] or default_zone)
            local_day = yesterday - dt.timedelta(days=1 if r() < 0.05 else 0)
            local = dt.datetime.combine(local_day, dt.time(1 + int(r() * 22), int(r() * 60)))
            at = local.replace(tzinfo=zone).astimezone(dt.timezone.utc)
            next_renewal: dt.date | None = (
                yesterday.replace(year=yesterday.year + 1) if month_day(yesterday) != 229 else None
            )
            if next_renewal in spec.forbidden_renewals:
                next_renewal = None
            out.batch.policies.append(_policy(pid, cid, yesterday, next_renewal, "active", rng))
            payload = {"channel": "agent", "premium": "1200.00"}
            out.batch.events.append(_event(eid, spec.event_type, cid, pid, at, payload))
            kind = "thanks" if local_day == yesterday else "thanks-near-miss"
        out.plan[kind] += 1
        out.batch.customers.append(with_derived_customer(row))
    return out


def _lunar_birth_dates(spec: DaySpec) -> list[dt.date]:
    """Gregorian birth dates whose lunar month-day is one of the day's lunar keys."""
    from lunardate import LunarDate

    out = []
    for year in range(1945, spec.day.year - 18):
        for key in spec.lunar_keys:
            month, mday = divmod(key, 100)
            try:
                lunar = LunarDate(year, month, mday, False)
                # lunardate 0.3 renamed toSolarDate (deprecated) to to_solar_date.
                out.append(getattr(lunar, "to_solar_date", lunar.toSolarDate)())
            except ValueError:  # day 30 of a 29-day month
                continue
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
