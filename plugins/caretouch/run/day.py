"""Running a day: recover, plan and record, send what is due, anchor. Safe to rerun at any
point.

The CLI (``care run``, ``care dispatch``) and the Airflow DAGs (``care_daily``, the campaign
DAGs, ``care_dispatch``) call these same functions. Nothing here reads the clock: ``now`` is
always an argument.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence

from ..ledger import PlanGuard, PlannedTouch
from ..ledger.queue import Due
from ..plan import plan_day
from ..plan.planner import Shard
from ..rules.loader import for_customers
from ..store.write import dead_letter_events
from ..vocab import TouchStatus
from .engine import CareEngine, anchor
from .records import planned_touches, take_planned
from .recover import recover_in_flight
from .report import SendReport
from .send import send_due, send_touches
from .tasks import expire_tasks

log = logging.getLogger("caretouch.run")


def plan_and_record(
    engine: CareEngine,
    day: dt.date,
    *,
    run_id: str,
    now: dt.datetime,
    retry_render_errors: bool = False,
    report: SendReport | None = None,
    shard: Shard | None = None,
) -> list[int]:
    """Plan ``day`` and record it in the ledger; returns the ids of touches waiting to go.

    ``retry_render_errors``: plan again touches whose template failed (after a fix). Runs an
    operator starts (``care run``, ``care_daily``) do; the frequent dispatcher does not, so
    a broken template is not retried every quarter of an hour. ``report``, if given, counts
    the touches the plan recorded as planned and as suppressed. ``shard`` ``(k, n)``: plan
    only that share of the customers (``plan.plan_day``), one of ``n`` planners of the day.
    """
    ledger = engine.ledger
    unreadable: dict[str, str] = {}
    # Before the plan reads its history: what another planner records after this point is
    # checked for at record time (``PlanGuard``), and its customers planned again.
    since = ledger.chain_position()
    touches = plan_day(
        engine.store,
        engine.ruleset,
        day,
        history=ledger,
        on_unreadable=unreadable.__setitem__,
        shard=shard,
    )

    def replan(customers: set[str]) -> list[PlannedTouch]:
        again = plan_day(
            engine.store,
            for_customers(engine.ruleset, customers),
            day,
            history=ledger,
            on_unreadable=unreadable.__setitem__,
            shard=shard,
        )
        return planned_touches(again)

    if unreadable:
        # Out of the inbox, so that no later run trips over them (docs/events.md).
        dead_letter_events(
            engine.store, unreadable, source="inbox", ref=run_id, now=engine.stamp(now)
        )
    candidates = len(touches)
    record = ledger.record_plan(
        take_planned(touches),  # empties ``touches``: only their records are kept
        run_id=run_id,
        now=engine.stamp(now),
        retry_render_errors=retry_render_errors,
        guard=PlanGuard(since, replan),
    )
    if report is not None:
        report.planned += record.planned
        report.suppressed += record.suppressed
    log.info(
        "planned %s%s: %d candidates, %d new, %d re-planned, %d suppressed, %d unchanged",
        day,
        f" (shard {shard[0]} of {shard[1]})" if shard else "",
        candidates,
        record.new,
        record.replanned,
        record.suppressed,
        record.unchanged,
    )
    return list(record.planned_ids or [])


def pending_ids(
    engine: CareEngine,
    day: dt.date | None = None,
    *,
    shard: tuple[int, int] | None = None,
    rule_ids: Sequence[str] | None = None,
) -> list[int]:
    """Touches waiting in ``planned`` (all days, or one; one sender's ``shard`` ``(k, n)``
    of them; those of ``rule_ids``)."""
    return engine.ledger.touch_ids_in_status(
        {TouchStatus.PLANNED}, day=day, shard=shard, rule_ids=rule_ids
    )


def prepare_day(
    engine: CareEngine, day: dt.date, *, run_id: str, now: dt.datetime, report: SendReport
) -> list[int]:
    """The first half of a day's run: settle the crashed sends of ``day``, expire the tasks
    for agents past their expiry day, plan it and record
    the plan; returns the touches to send, the day's own and those deferred to it from
    earlier days (their occurrence is the earlier day). ``report`` counts what was done.

    ``run_day`` goes on to send them in the same process; the Airflow DAGs (``care_daily``,
    campaigns) leave them to mapped send tasks, each taking a shard of the planned touches."""
    report.merge(recover_in_flight(engine, run_id=run_id, now=now, day=day))
    # Tasks for agents left open past their expiry day (``run.tasks``): expired, before the
    # plan reads the history.
    expire_tasks(engine, day, run_id=run_id, now=now)
    planned = plan_and_record(
        engine, day, run_id=run_id, now=now, retry_render_errors=True, report=report
    )
    return sorted(set(planned) | set(pending_ids(engine, day)))


def run_day(
    engine: CareEngine,
    day: dt.date,
    *,
    run_id: str,
    now: dt.datetime,
    progress: Callable[[int, int], None] | None = None,
) -> SendReport:
    """``care run``: recover, plan, send what is due. Idempotent.

    ``progress(done, total)``, if given, follows the sending, chunk by chunk.
    """
    report = SendReport()
    ids = prepare_day(engine, day, run_id=run_id, now=now, report=report)
    done = [0]

    def step(count: int) -> None:
        done[0] += count
        if progress is not None:
            progress(done[0], len(ids))

    # The day's ids, not the day's queue: a touch deferred to this day keeps the day it was
    # planned for (its occurrence), and only the plan knows it is due now.
    report.merge(send_touches(engine, ids, run_id=run_id, now=now, progress=step))
    anchor(engine, run_id=run_id, now=now)
    return report


def dates_in_effect(now: dt.datetime) -> list[dt.date]:
    """The local dates that are "today" somewhere on Earth at ``now`` (UTC-12 to UTC+14)."""
    utc = now.astimezone(dt.timezone.utc)
    return sorted({(utc + dt.timedelta(hours=h)).date() for h in (-12, 14)} | {utc.date()})


def dispatch(engine: CareEngine, *, run_id: str, now: dt.datetime) -> SendReport:
    """``care_dispatch``: settle crashed sends, plan the dates in effect, send what is due.

    Planning again is cheap (index lookups) and idempotent; it is what gives a thank-you to
    a purchase recorded after ``care_daily`` ran, within the contact policy's daily cap.
    """
    report = recover_in_flight(engine, run_id=run_id, now=now)
    for day in dates_in_effect(now):
        plan_and_record(engine, day, run_id=run_id, now=engine.stamp(now), report=report)
    report.merge(send_due(engine, Due(), run_id=run_id, now=now))
    anchor(engine, run_id=run_id, now=now)
    return report
