"""Planners racing on the same customers never exceed a cap (docs/ledger.md, "Concurrent
planners").

Two OS processes plan the same day with different rules (one the birthday greeting, the
other the renewal reminder) for customers due both: each plan alone sends its one touch,
which the policy's ``per_day: 1`` allows. Both plan first, then both record at once. Each
read a history without the other's touch; without the record-time guard both touches were
recorded as planned, two messages on one day for every customer. With it, the second
recorder finds the first's touches committed after its plan read its history and plans
those customers again: one touch each is planned, the other held back by the cap.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from ledger_processes import open_at, run_processes, where
from sqlalchemy import select

from caretouch.ledger.audit import verify
from caretouch.ledger.models import TouchCurrent, TouchRow
from caretouch.store.db import Store
from conftest import RULES_DIR, customer_row, load_rows, policy_row, utc

DAY = dt.date(2026, 11, 23)
NOON = utc(2026, 11, 23, 1)
WAIT = 120
CUSTOMERS = 30
RULES = ("birthday", "renewal-reminder")


def _rules_with_only(rule: str, where_to: Path) -> Path:
    """The shipped rules directory with one rule file left."""
    shutil.copytree(RULES_DIR, where_to)
    for path in where_to.glob("*.yaml"):
        if path.stem not in (rule, "policy", "events"):
            path.unlink()
    return where_to


def _planner(
    url: str, schema: str | None, workdir: str, rules: str, both: Any, go: Any, out: Any
) -> None:
    from caretouch.run.day import plan_and_record

    engine = open_at(url, schema, workdir, Path(rules))
    record = engine.ledger.record_plan

    def record_when_both_planned(*args: Any, **kwargs: Any) -> Any:
        both.wait(WAIT)  # each has planned from a history without the other's touches
        return record(*args, **kwargs)

    engine.ledger.record_plan = record_when_both_planned
    planned = plan_and_record(engine, DAY, run_id=f"plan-{Path(rules).name}", now=NOON)
    out.put((Path(rules).name, len(planned)))


def test_two_planners_racing_on_the_same_customers_keep_the_daily_cap(
    store: Store, tmp_path: Path
) -> None:
    load_rows(
        store,
        customers=[
            customer_row(f"C{i:02d}", phone=f"+86138{i:08d}", email="", consent_email="false")
            for i in range(CUSTOMERS)
        ],
        policies=[
            policy_row(f"P{i:02d}", f"C{i:02d}", renewal_date="2026-11-30")
            for i in range(CUSTOMERS)
        ],
    )
    url, schema = where(store)
    both = mp.get_context("spawn").Barrier(2)
    results, exits = run_processes(
        _planner,
        [
            (
                url,
                schema,
                str(tmp_path / rule),
                str(_rules_with_only(rule, tmp_path / "rules" / rule)),
                both,
            )
            for rule in RULES
        ],
    )
    assert exits == [0, 0], results
    with store.read_session() as session:
        rows = session.execute(
            select(TouchRow.customer_id, TouchRow.rule_id, TouchCurrent.status)
            .join(TouchCurrent, TouchCurrent.touch_id == TouchRow.id)
            .where(TouchRow.occurrence == DAY)
        ).all()
    # Both rules' touches exist for every customer (each planner recorded its own)...
    assert Counter(rule for _, rule, _ in rows) == dict.fromkeys(RULES, CUSTOMERS)
    # ...and no customer has more than one planned: the cap held across the two processes.
    planned = Counter(customer for customer, _, status in rows if status == "planned")
    assert sorted(planned.values()) == [1] * CUSTOMERS, planned
    assert sum(results.values()) == CUSTOMERS, results
    assert verify(store).ok
