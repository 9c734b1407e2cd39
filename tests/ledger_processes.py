"""What the ledger's multi-process tests share: how a spawned process opens the same store."""

from __future__ import annotations

import multiprocessing as mp
import queue
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import text

from caretouch.store.db import Store, open_store
from conftest import PG_URL, RULES_DIR, TEMPLATES_DIR


def where(store: Store) -> tuple[str, str | None]:
    """How another process opens the same store: its URL and (PostgreSQL) its schema."""
    if store.engine.dialect.name != "postgresql":
        return store.url, None
    with store.read_session() as session:
        return PG_URL, session.scalar(text("SELECT current_schema()"))


def open_store_at(url: str, schema: str | None) -> Store:
    if schema:
        return open_store(url, connect_args={"options": f"-csearch_path={schema}"})
    return open_store(url)


def open_at(url: str, schema: str | None, workdir: str, rules: Path = RULES_DIR) -> Any:
    """The engine of a process working in ``workdir`` on the store at ``url``/``schema``
    (with the rules in ``rules``)."""
    from caretouch.config import CareConfig
    from caretouch.run.engine import open_engine

    config = CareConfig(url, rules, TEMPLATES_DIR, Path(workdir) / "outbox")
    return open_engine(config, store=open_store_at(url, schema))


def run_processes(
    target: Callable[..., None], args: Sequence[tuple[Any, ...]], wait: float = 120
) -> tuple[dict[Any, Any], list[int | None]]:
    """Run ``target(*a, go, out)`` for each ``a`` in ``args`` in spawned processes, all
    started before ``go`` is set; each puts ``(name, value)`` on ``out``. Returns the values
    by name and the exit codes."""
    ctx = mp.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    processes = [ctx.Process(target=target, args=(*a, go, out)) for a in args]
    for p in processes:
        p.start()
    go.set()
    results: dict[Any, Any] = {}
    try:
        while len(results) < len(processes):
            name, value = out.get(timeout=wait)
            results[name] = value
    except queue.Empty:
        pass
    for p in processes:
        p.join(wait)
    return results, [p.exitcode for p in processes]


def planned_sms_day(store: Store, day: Any, now: Any, customers: int, workdir: Path) -> None:
    """``customers`` customers due a birthday SMS on ``day``, planned and recorded."""
    from caretouch.run.day import plan_and_record
    from conftest import customer_row, load_rows

    load_rows(
        store,
        customers=[
            # Tier C: no shipped cadence check-in falls on their day.
            customer_row(
                f"C{i:03d}", phone=f"+86138{i:08d}", email="", consent_email="false", tier="C"
            )
            for i in range(customers)
        ],
    )
    planner = open_at(*where(store), str(workdir))
    assert len(plan_and_record(planner, day, run_id="plan", now=now)) == customers
