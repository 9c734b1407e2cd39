"""How fast does ``care store import`` take a large customers CSV (issue 13: 1,000,000 in 60 s)?

It writes (or reuses) a customers CSV of ``--customers`` rows made by the store's population
generator (``caretouch.store.population``, the demo's mix: valid, missing and malformed
addresses, some lunar-calendar birthdays), in a child process so that the import's peak RSS
is its own. It then imports it twice into a fresh store, as ``care store import --customers``
does (``store.importer.import_csv``, then ``ledger.consent.record_consent_changes``):

1. ``fresh``: into the empty store, every row inserted;
2. ``reimport``: the same file again with the SMS consent of every 10th customer flipped,
   every row updated and those consent changes recorded.

For each it prints rows/s, the seconds of each phase and the peak RSS. The phases are timed by
wrapping the importer's functions (time inside a nested wrapped call counts for the inner
one only): ``existence`` (``_fill_missing_columns``, ``_existing_ids``, ``_check_references``),
``insert`` (``upsert``, ``bulk_upsert``), ``consent`` (``_consents``,
``imported_consent_changes``, ``record_consent_changes``), and ``read+validate``: the rest of
``import_csv`` (reading the CSV, parsing and checking each row, and the commit). Figures only;
nothing is asserted.

    python bench/import_scale.py [--customers 1000000] [--store-url URL] [--dir bench/.data]
        [--no-reimport] [--profile FILE] [--keep]

The default store is the SQLite file ``DIR/import_scale.db``, made anew for every run. With
``--store-url postgresql+psycopg://postgres@127.0.0.1:5432/test`` the store is a schema of its
own (``bench_import_scale_<hex>``), dropped at the end unless ``--keep``. ``--profile FILE``
writes a cProfile of the imports (``python -m pstats FILE``).
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import datetime as dt
import functools
import multiprocessing
import resource
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _common import SEED, note, say
from sqlalchemy import func, select

from caretouch.ledger import consent as ledger_consent
from caretouch.schema.migrate import upgrade
from caretouch.store import importer
from caretouch.store.db import Store, open_store
from caretouch.store.models import CANONICAL_COLUMNS, ConsentEvent, Customer
from caretouch.store.population import Population

GENERATOR_VERSION = 1  # bump when the generated CSV changes, to invalidate reused files
TODAY = dt.date(2026, 11, 23)
NOW = dt.datetime(2026, 11, 23, 4, 0, tzinfo=dt.timezone.utc)
FLIP_EVERY = 10  # the re-import flips the SMS consent of every 10th customer
SCHEMA_PREFIX = "bench_import_scale_"

# phase -> (module, function name): the functions whose time counts for the phase, where the
# module has them (the names of the code measured before and after issue 13's bulk import).
PHASES: dict[str, list[tuple[Any, str]]] = {
    "existence": [
        (importer, "_fill_missing_columns"),
        (importer, "_existing_ids"),
        (importer, "_check_references"),
    ],
    "insert": [(importer, "upsert"), (importer, "bulk_upsert")],
    "consent": [
        (importer, "_consents"),
        (importer, "imported_consent_changes"),
        (ledger_consent, "record_consent_changes"),
    ],
}
PHASE_ORDER = ("read+validate", "existence", "insert", "consent")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- the CSV ---------------------------------------------------------------------------------


def write_customers(path: Path, customers: int, seed: int) -> None:
    """``customers`` generated customers as a CSV file (run in a child process)."""
    population = Population(TODAY, seed)
    columns = CANONICAL_COLUMNS["customer"]
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for number in range(1, customers + 1):
            row = population.customer(number).csv_row()
            writer.writerow([row[c] for c in columns])
            if number % 10_000 == 0:
                population.customers.clear()  # streamed: keep only the used emails
    tmp.replace(path)


def customers_csv(directory: Path, customers: int, seed: int) -> Path:
    path = directory / f"import_scale_{customers}_{seed}_v{GENERATOR_VERSION}.csv"
    if path.exists():
        note(f"reusing {path}")
        return path
    note(f"writing {customers:,} customers to {path} ...")
    start = time.perf_counter()
    child = multiprocessing.get_context("spawn").Process(
        target=write_customers, args=(path, customers, seed)
    )
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"generating the CSV failed (exit {child.exitcode})")
    note(f"  written in {time.perf_counter() - start:.1f} s")
    return path


def flipped_csv(source: Path, target: Path) -> int:
    """``source`` with the SMS consent of every ``FLIP_EVERY``-th row flipped; returns how many."""
    flipped = 0
    with (
        source.open(encoding="utf-8", newline="") as src,
        target.open("w", encoding="utf-8", newline="") as dst,
    ):
        reader, writer = csv.reader(src), csv.writer(dst)
        header = next(reader)
        writer.writerow(header)
        sms = header.index("consent_sms")
        for number, row in enumerate(reader, 1):
            if number % FLIP_EVERY == 0:
                row[sms] = "false" if row[sms] == "true" else "true"
                flipped += 1
            writer.writerow(row)
    return flipped


# --- timing the phases -----------------------------------------------------------------------


class PhaseClock:
    """Exclusive seconds per phase of the wrapped functions (a nested wrapped call counts for
    its own phase only); the rest of ``import_csv`` is ``read+validate``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[list[float]] = []  # [start, nested seconds]

    def wrap(self, phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            frame = [time.perf_counter(), 0.0]
            self._stack.append(frame)
            try:
                return fn(*args, **kwargs)
            finally:
                self._stack.pop()
                total = time.perf_counter() - frame[0]
                self.seconds[phase] += total - frame[1]
                self.calls[phase] += 1
                if self._stack:
                    self._stack[-1][1] += total

        return timed

    @contextmanager
    def installed(self) -> Iterator[None]:
        saved = []
        for phase, places in [*PHASES.items(), ("read+validate", [(importer, "import_csv")])]:
            for module, name in places:
                fn = getattr(module, name, None)
                if fn is not None:
                    saved.append((module, name, fn))
                    setattr(module, name, self.wrap(phase, fn))
        try:
            yield
        finally:
            for module, name, fn in saved:
                setattr(module, name, fn)


# --- stores ----------------------------------------------------------------------------------


@contextmanager
def fresh_store(url: str | None, directory: Path, keep: bool) -> Iterator[tuple[Store, str]]:
    if url is None or url.startswith("sqlite"):
        path = directory / "import_scale.db"
        if url is not None:
            path = Path(url.split(":///", 1)[1])
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        store = open_store(f"sqlite:///{path}")
        upgrade(store)
        try:
            yield store, f"SQLite {path}"
        finally:
            store.dispose()
            if not keep:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    admin = open_store(url)
    schema = f"{SCHEMA_PREFIX}{uuid.uuid4().hex[:10]}"
    with admin.engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    store = open_store(url, connect_args={"options": f"-csearch_path={schema}"})
    try:
        upgrade(store)
        yield store, f"PostgreSQL {admin.masked_url()} schema {schema}"
    finally:
        store.dispose()
        if not keep:
            with admin.engine.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


# --- one import ------------------------------------------------------------------------------


def run_import(
    store: Store, path: Path, label: str, rows: int, profiler: cProfile.Profile | None
) -> dict[str, Any]:
    clock = PhaseClock()
    start = time.perf_counter()
    cpu = time.process_time()
    with clock.installed():
        if profiler is not None:
            profiler.enable()
        report = importer.import_csv(store, {"customer": path})
        recorded = 0
        if report.written:
            recorded = ledger_consent.record_consent_changes(store, report.consent_changes, at=NOW)
        if profiler is not None:
            profiler.disable()
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu
    phases = {p: clock.seconds.get(p, 0.0) for p in PHASE_ORDER}
    with store.read_session() as session:
        stored = session.scalar(select(func.count()).select_from(Customer))
        consent_rows = session.scalar(select(func.count()).select_from(ConsentEvent))
    return {
        "label": label,
        "rows": rows,
        "wall": wall,
        "cpu": cpu,
        "phases": phases,
        "inserted": report.inserted.get("customer", 0),
        "updated": report.updated.get("customer", 0),
        "rejected": len(report.rejected) + len(report.file_errors),
        "warnings": len(report.warnings),
        "consent_changes": recorded,
        "stored": stored,
        "consent_rows": consent_rows,
        "peak_rss_mb": peak_rss_mb(),
    }


def print_result(r: dict[str, Any]) -> None:
    say(
        f"{r['label']}: {r['rows']:,} rows in {r['wall']:.1f} s = {r['rows'] / r['wall']:,.0f} rows/s "
        f"(CPU {r['cpu']:.1f} s); {r['inserted']:,} inserted, {r['updated']:,} updated, "
        f"{r['rejected']} rejected, {r['warnings']:,} warnings, "
        f"{r['consent_changes']:,} consent changes recorded"
    )
    say(
        "  phases: "
        + ", ".join(f"{p} {r['phases'][p]:.1f} s" for p in PHASE_ORDER)
        + f"; store holds {r['stored']:,} customers, {r['consent_rows']:,} consent events; "
        f"peak RSS so far {r['peak_rss_mb']:,.0f} MB"
    )


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--customers", type=lambda s: int(s.replace("_", "")), default=1_000_000)
    p.add_argument(
        "--store-url",
        help="store URL (default: a new SQLite file DIR/import_scale.db); on PostgreSQL, "
        "a schema of its own, dropped at the end",
    )
    p.add_argument(
        "--dir",
        type=Path,
        default=Path(__file__).parent / ".data",
        help="directory of the CSV files and the SQLite store (default: bench/.data)",
    )
    p.add_argument("--no-reimport", action="store_true", help="only the fresh import")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--profile", type=Path, help="write a cProfile of the imports to this file")
    p.add_argument("--keep", action="store_true", help="keep the store (file or schema)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    source = customers_csv(args.dir, args.customers, args.seed)
    flipped_path = args.dir / "import_scale_reimport.csv"
    flips = 0 if args.no_reimport else flipped_csv(source, flipped_path)
    profiler = cProfile.Profile() if args.profile else None
    say(f"peak RSS before importing: {peak_rss_mb():,.0f} MB")
    results = []
    try:
        with fresh_store(args.store_url, args.dir, args.keep) as (store, where):
            say(f"store: {where}; {args.customers:,} customers ({source.name})")
            results.append(run_import(store, source, "fresh", args.customers, profiler))
            print_result(results[-1])
            if not args.no_reimport:
                label = f"reimport ({flips:,} SMS consents flipped)"
                results.append(run_import(store, flipped_path, label, args.customers, profiler))
                print_result(results[-1])
    finally:
        flipped_path.unlink(missing_ok=True)
        if profiler is not None:
            profiler.dump_stats(args.profile)
            note(f"profile written to {args.profile}")
    say("")
    say(f"| import | rows/s | seconds | {' | '.join(PHASE_ORDER)} | peak RSS MB |")
    say("|---|---|---|" + "---|" * len(PHASE_ORDER) + "---|")
    for r in results:
        say(
            f"| {r['label']} | {r['rows'] / r['wall']:,.0f} | {r['wall']:.1f} | "
            + " | ".join(f"{r['phases'][p]:.1f}" for p in PHASE_ORDER)
            + f" | {r['peak_rss_mb']:,.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
