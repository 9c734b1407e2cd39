"""``run.records``: a plan's touches as the ledger's records; ``take_planned`` lets each touch
go as soon as its record is made."""

from __future__ import annotations

import datetime as dt
import gc
import weakref

from caretouch.ledger import Ledger
from caretouch.plan import plan_day
from caretouch.rules.loader import RuleSet
from caretouch.run.records import planned_touches, take_planned
from caretouch.store.db import Store
from conftest import customer_row, load_rows, policy_row

DAY = dt.date(2026, 11, 23)  # the customers' birthday; their policies renew 7 days later


def test_take_planned_makes_the_same_records_and_lets_the_touches_go(
    store: Store, shipped_rules: RuleSet
) -> None:
    load_rows(
        store,
        customers=[customer_row(f"C{i}") for i in range(3)],
        policies=[policy_row(f"P{i}", f"C{i}", renewal_date="2026-11-30") for i in range(3)],
    )
    touches = plan_day(store, shipped_rules, DAY, history=Ledger(store))
    assert len(touches) >= 6
    expected = planned_touches(touches)
    gone = [weakref.ref(t) for t in touches]

    records = take_planned(touches)

    assert records == expected  # the same records, in the same order
    assert touches == []
    gc.collect()
    assert [r() for r in gone] == [None] * len(gone)
