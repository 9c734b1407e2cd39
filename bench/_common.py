"""What the benchmark scripts in bench/ share: paths, output and store helpers.

Synthetic customers, policies and events come from ``caretouch.store.population``.

Imported as ``from _common import ...``: the scripts run as ``python bench/<script>.py``, which
puts bench/ on ``sys.path``.
"""

from __future__ import annotations

import json
import queue
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, Table, inspect, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ClauseElement, Executable

from caretouch.store.db import Store

ROOT = Path(__file__).resolve().parents[1]
RULES_DIR = ROOT / "care_rules"
TEMPLATES_DIR = ROOT / "templates"

SEED = 20261123


# --- output ----------------------------------------------------------------------------------


def say(message: str = "") -> None:
    print(message, flush=True)


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- stores ----------------------------------------------------------------------------------


def start_when_ready(procs: list[Any], ready: Any, timeout: float) -> int:
    """Start ``procs`` and wait until each has put one item on ``ready`` (it is set up and
    waits for the common start signal), or ``timeout`` seconds, or until all have exited (a
    crashed child never reports). Returns how many reported."""
    for proc in procs:
        proc.start()
    started = 0
    deadline = time.monotonic() + timeout
    while started < len(procs) and time.monotonic() < deadline:
        try:
            ready.get(timeout=1)
            started += 1
        except queue.Empty:
            if all(p.exitcode is not None for p in procs):
                break
    return started


def read_marker(store: Store, marker: Table) -> dict[str, Any] | None:
    """The build parameters recorded in a store's ``marker`` table, or None."""
    if not inspect(store.engine).has_table(marker.name):
        return None
    with store.engine.connect() as conn:
        raw = conn.execute(select(marker.c.params)).scalar()
    return json.loads(raw) if raw else None


def bulk_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA synchronous=OFF")
    cur.execute("PRAGMA cache_size=-400000")  # 400 MB, for the index builds
    cur.execute("PRAGMA temp_store=MEMORY")
    cur.close()


def schema_differences(store: Store, metadata: MetaData, *, extra_columns: bool) -> list[str]:
    """How the store's tables of ``metadata`` differ from what ``caretouch.schema.migrate.upgrade`` creates now.

    With ``extra_columns``, columns the model no longer has are reported too.
    """
    insp = inspect(store.engine)
    out = []
    for table in metadata.sorted_tables:
        if not insp.has_table(table.name):
            out.append(f"no table {table.name}")
            continue
        columns = {c["name"] for c in insp.get_columns(table.name)}
        out.extend(f"no column {table.name}.{c.name}" for c in table.c if c.name not in columns)
        if extra_columns:
            extra = sorted(columns - {c.name for c in table.c})
            out.extend(f"column {table.name}.{name} is no longer in the model" for name in extra)
        want = {(i.name, tuple(c.name for c in i.columns)) for i in table.indexes}
        have = {(i["name"], tuple(i["column_names"])) for i in insp.get_indexes(table.name)}
        out.extend(f"no index {name} {cols}" for name, cols in sorted(want - have))
    return out


# --- measuring -------------------------------------------------------------------------------


class Explain(Executable, ClauseElement):
    """``EXPLAIN [QUERY PLAN] <select>`` with the select's own bound parameters."""

    inherit_cache = False

    def __init__(self, stmt: Any, prefix: str) -> None:
        self.stmt = stmt
        self.prefix = prefix


@compiles(Explain)
def _compile_explain(element: Explain, compiler: Any, **kw: Any) -> str:
    return f"{element.prefix} {compiler.process(element.stmt, **kw)}"
