"""Several planners sharing one day (``plan_day(shard=(k, n))``, ``CARE_PLAN_SHARDS``).

Each planner takes the customers whose store id is ``k`` modulo ``n``. The shards are
disjoint and together the whole day; caps are per customer, so a shard decides about its
customers exactly as one planner would; each channel's capacity is split evenly between the
shards, each spending its share on its own customers, higher tiers first.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from ledger_processes import open_at, run_processes, where
from sqlalchemy import select
from test_contact_policy import DAY, make_rules, ruleset_of

from caretouch.ledger import Ledger
from caretouch.ledger.audit import verify
from caretouch.ledger.models import TouchCurrent, TouchRow
from caretouch.plan import plan_day
from caretouch.plan.contact import capacity_share
from caretouch.rules.sql import TABLES
from caretouch.store.db import Store
from caretouch.vocab import Decision, SuppressionReason
from conftest import customer_row, load_rows, policy_row, utc

TIERS = "ABCD"
NOON = utc(2026, 11, 23, 1)


def _customers(store: Store, count: int) -> None:
    """``count`` customers due a birthday and (every third) a renewal reminder on DAY."""
    load_rows(
        store,
        customers=[
            customer_row(
                f"C{i:03d}",
                tier=TIERS[i % 4],
                phone=f"+86138{i:08d}",
                email="",
                consent_email="false",
            )
            for i in range(count)
        ],
        policies=[
            policy_row(f"P{i:03d}", f"C{i:03d}", renewal_date="2026-11-30")
            for i in range(0, count, 3)
        ],
    )


def _decisions(touches: list[Any]) -> dict[str, tuple[Decision, Any]]:
    return {t.key: (t.decision, t.reason) for t in touches}


@pytest.mark.parametrize("n", [2, 3])
def test_shards_are_disjoint_and_together_the_whole_plan(
    store: Store, tmp_path: Path, n: int
) -> None:
    _customers(store, 40)
    ruleset = ruleset_of(make_rules(tmp_path, "version: 1\ncaps:\n  per_day: 1\n"))
    whole = _decisions(plan_day(store, ruleset, DAY, history=Ledger(store)))
    parts = [
        _decisions(plan_day(store, ruleset, DAY, history=Ledger(store), shard=(k, n)))
        for k in range(n)
    ]
    assert all(parts), "every shard has some of the 40 customers"
    assert sum(len(p) for p in parts) == len(whole)  # disjoint...
    merged = {key: d for part in parts for key, d in part.items()}
    assert merged == whole  # ...and the same decisions: the cap (1 a day) is per customer
    # The daily cap held back the second touch of the customers due two, in each shard too.
    capped = (SuppressionReason.FREQUENCY_CAP, SuppressionReason.DEFERRED)
    assert sum(1 for _, r in merged.values() if r in capped) == len(range(0, 40, 3))


def test_capacity_is_split_between_the_shards_higher_tiers_first(
    store: Store, tmp_path: Path
) -> None:
    _customers(store, 40)
    policy = "version: 1\ncaps:\n  per_day: 5\ncapacity:\n  sms:\n    per_day: 7\n"
    ruleset = ruleset_of(make_rules(tmp_path, policy, shipped=("birthday",)))
    sent_by_shard = []
    for k in range(2):
        touches = plan_day(store, ruleset, DAY, history=Ledger(store), shard=(k, 2))
        sent = [t for t in touches if t.decision is Decision.SEND]
        sent_by_shard.append(len(sent))
        held = [t for t in touches if t.reason is SuppressionReason.CAPACITY]
        assert len(sent) + len(held) == len(touches)
        # Within its share, a shard serves its higher tiers first.
        worst_sent = max(TIERS.index(t.customer["tier"]) for t in sent)
        best_held = min(TIERS.index(t.customer["tier"]) for t in held)
        assert worst_sent <= best_held
        share = capacity_share(7, (k, 2))
        assert f"planner {k} of 2's share: {share}" in " ".join(held[0].explain)
    assert sent_by_shard == [4, 3]  # the shares: 7 split evenly, the remainder to shard 0


def test_capacity_shares_add_up_to_the_budget() -> None:
    for budget in (0, 1, 7, 20_000):
        for n in (1, 2, 3, 64):
            assert sum(capacity_share(budget, (k, n)) for k in range(n)) == budget
    assert capacity_share(9, None) == 9


def test_a_shard_outside_its_count_is_refused(store: Store, tmp_path: Path) -> None:
    ruleset = ruleset_of(make_rules(tmp_path))
    with pytest.raises(ValueError, match="shard 2 of 2"):
        plan_day(store, ruleset, DAY, shard=(2, 2))


@pytest.mark.parametrize("n", [2, 4])
def test_shards_guard_locks_never_meet(store: Store, n: int) -> None:
    """Each shard's customers lock guard buckets no other shard's do (``n`` dividing the
    bucket count), so sharded planners record side by side; a customer gone from the store
    still gets a bucket."""
    from caretouch.ledger.reconcile import GUARD_BUCKETS, guard_buckets

    _customers(store, 40)
    customers = TABLES["customer"]
    with store.read_session() as session:
        rows = session.execute(select(customers.c.customer_id, customers.c.id))
        ids = {customer_id: row_id for customer_id, row_id in rows}
        by_shard = [
            set(guard_buckets(session, sorted(c for c, i in ids.items() if i % n == k)))
            for k in range(n)
        ]
        gone = guard_buckets(session, ["NOT-IN-STORE"])
    assert all(by_shard)
    assert all(a.isdisjoint(b) for i, a in enumerate(by_shard) for b in by_shard[i + 1 :])
    assert len(gone) == 1 and 0 <= gone[0] < GUARD_BUCKETS


def _planner(url: str, schema: str | None, workdir: str, k: int, n: int, go: Any, out: Any) -> None:
    from caretouch.run.day import plan_and_record

    engine = open_at(url, schema, workdir)
    go.wait(60)
    planned = plan_and_record(engine, DAY, run_id=f"plan[{k}]", now=NOON, shard=(k, n))
    out.put((k, len(planned)))


@pytest.mark.slow
def test_planners_in_separate_processes_record_the_day_once(store: Store, tmp_path: Path) -> None:
    """Three OS processes plan and record their shares of the day at once: every touch of
    the day is recorded once, with the decisions one planner would have recorded."""
    _customers(store, 60)
    url, schema = where(store)
    results, exits = run_processes(
        _planner, [(url, schema, str(tmp_path / f"w{k}"), k, 3) for k in range(3)]
    )
    assert exits == [0, 0, 0], results
    with store.read_session() as session:
        rows = session.execute(
            select(TouchRow.touch_key, TouchRow.customer_id, TouchCurrent.status)
            .join(TouchCurrent, TouchCurrent.touch_id == TouchRow.id)
            .where(TouchRow.occurrence == DAY)
        ).all()
        writers = Counter(
            session.scalars(select(TouchRow.run_id).where(TouchRow.occurrence == DAY))
        )
    assert len(rows) == len({key for key, _, _ in rows})
    assert set(writers) == {"plan[0]", "plan[1]", "plan[2]"}
    # The shipped policy's cap (one a day): every customer gets one planned touch.
    planned = Counter(c for _, c, status in rows if status == "planned")
    assert sorted(planned.values()) == [1] * 60
    assert sum(results.values()) == 60
    whole = plan_day(store, ruleset_of(make_rules(tmp_path)), DAY)
    assert {key for key, _, _ in rows} == {t.key for t in whole}
    assert verify(store).ok
