"""Planning the touches of events just received, so that delayed ones wait in the ledger.

``plan_new_events`` takes the inbox's events not yet planned (``event_receipts.planned_at``
is NULL), works out the local day each event rule makes them due (the event's local date in
the customer's time zone plus the rule's ``delay_days``), plans those days with the same
``plan_day`` the daily run uses (so caps, quiet hours, consent and priorities hold) and records
the event touches in the ledger with their send time. ``care_dispatch`` sends them when due.

Nothing is lost if this never runs for an event: ``care_dispatch`` plans every local date in
effect, event rules included, so a due event touch is planned on its day at the latest. This
module makes the touch visible (and the ledger complete) as soon as the event arrives.

A late event (its touch's send time has already passed when it is planned) follows the
sending window of the contact policy: ``care_dispatch`` sends it at the next time allowed
(outside quiet hours) within ``sending_window_hours`` of the send time, and otherwise records
it as suppressed, ``too_late``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.exc import InterfaceError, OperationalError

from ..errors import ConfigurationError, ValidationFailed
from ..ledger import PlanGuard, PlannedTouch
from ..mask import scrub
from ..plan import plan_day
from ..rules.loader import for_customers
from ..rules.model import Rule, TriggerKind
from ..run.records import planned_touches
from ..store.models import Customer, Event, EventReceipt
from ..store.write import dead_letter_events
from ..vocab import DeadLetterReason, Decision

if TYPE_CHECKING:
    from ..run.engine import CareEngine

log = logging.getLogger("caretouch.events")

BATCH = 500
# Failures that are not one event's fault (the store unreachable, a broken set-up or contact
# policy): they stop the run, and no event is dead-lettered for them.
_NOT_ONE_EVENTS_FAULT = (
    ConfigurationError,
    ValidationFailed,
    OperationalError,
    InterfaceError,
    MemoryError,
)


@dataclass
class EventPlanReport:
    """What one ``plan_new_events`` call did."""

    events: int = 0
    planned: int = 0  # touches recorded as planned: they wait in the ledger until due
    suppressed: int = 0  # touches recorded as suppressed, with their reason
    unchanged: int = 0  # touches the ledger already held
    without_touch: int = 0  # events no rule touches (no rule of the type, audience, ...)
    late: int = 0  # touches whose send time had already passed when planned
    days: list[str] = field(default_factory=list)
    # Events taken out of the inbox into the dead letters, with the reason: unreadable
    # payload, or planning failed for the event alone.
    dead: dict[str, str] = field(default_factory=dict)
    touched: set[str] = field(default_factory=set)  # events with at least one touch

    @property
    def dead_lettered(self) -> int:
        return len(self.dead)

    def as_dict(self) -> dict[str, int]:
        return {
            k: getattr(self, k)
            for k in (
                "events",
                "planned",
                "suppressed",
                "unchanged",
                "without_touch",
                "late",
                "dead_lettered",
            )
        }

    def add(self, other: EventPlanReport) -> None:
        """Count ``other`` (a part of this run) in."""
        for name in ("planned", "suppressed", "unchanged", "late"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.days = sorted(set(self.days) | set(other.days))
        self.touched |= other.touched
        self.dead.update(other.dead)


def event_rules(rules: list[Rule]) -> dict[str, list[Rule]]:
    """The event-triggered rules, by event type."""
    out: dict[str, list[Rule]] = defaultdict(list)
    for rule in rules:
        if rule.trigger.kind is TriggerKind.EVENT and rule.trigger.event_type:
            out[rule.trigger.event_type].append(rule)
    return out


def due_days(
    occurred_at: dt.datetime, zone: dt.tzinfo, rules: list[Rule]
) -> list[tuple[dt.date, Rule]]:
    """The local days on which ``rules`` make an event that occurred at ``occurred_at`` due."""
    if occurred_at.tzinfo is None:
        occurred_at = occurred_at.replace(tzinfo=dt.timezone.utc)
    local_day = occurred_at.astimezone(zone).date()
    return [(local_day + dt.timedelta(days=r.trigger.delay_days), r) for r in rules]


class _OwnCustomersHistory:
    """The ledger as the planner's history, for planning a few customers' event touches.

    Caps are per customer: their contacts are read as usual. Channel capacity is a budget
    shared by every customer of the day, whose reading grows with the day's touches; it is
    left out here (no contacts of other customers) and settled when ``care_dispatch`` plans
    the day in full, which it does for the dates in effect before it sends anything.
    """

    def __init__(self, ledger: Any) -> None:
        self.ledger = ledger
        # The customers being planned: only their deferred touches compete with their events.
        self.customers: set[str] = set()

    def final_keys(self, keys: list[str]) -> dict[str, str]:
        return self.ledger.final_keys(keys)

    def contacts(self, customer_ids: Any, first: dt.date, last: dt.date) -> list[Any]:
        if customer_ids is None:
            return []
        return self.ledger.contacts(customer_ids, first, last)

    def deferred(self, rule_ids: Any, first: dt.date, last: dt.date) -> list[Any]:
        return self.ledger.deferred(rule_ids, first, last, customer_ids=self.customers)

    def last_contacts(self, customer_ids: Any, day: dt.date) -> dict[str, dt.date]:
        return self.ledger.last_contacts(customer_ids, day)

    def occasion_contacts(
        self, customer_ids: Any, rule_ids: Any, first: dt.date, last: dt.date
    ) -> list[Any]:
        return self.ledger.occasion_contacts(customer_ids, rule_ids, first, last)

    def variant_outcomes(self, rule_ids: Any) -> list[Any]:
        # The whole ledger's, not these customers': every planner decides a test alike.
        return self.ledger.variant_outcomes(rule_ids)


def _unplanned(engine: CareEngine, limit: int) -> list[Any]:
    stmt = (
        select(
            EventReceipt.id,
            Event.event_id,
            Event.type,
            Event.customer_id,
            Event.occurred_at,
            Customer.timezone,
        )
        .join(Event, Event.event_id == EventReceipt.event_id)
        .outerjoin(Customer, Customer.customer_id == Event.customer_id)
        .where(EventReceipt.planned_at.is_(None))
        .order_by(EventReceipt.id)
        .limit(limit)
    )
    with engine.store.read_session() as session:
        return list(session.execute(stmt))


def _plan_day_of_events(
    engine: CareEngine,
    day: dt.date,
    rule_ids: set[str],
    event_ids: set[str],
    customer_ids: set[str],
    *,
    run_id: str,
    now: dt.datetime,
    unreadable: dict[str, str],
) -> EventPlanReport:
    """Plan ``day`` for these customers and record the touches of these events."""
    out = EventPlanReport()
    # The day is planned for these customers with every rule (the event touch competes with
    # their other touches of the day for the caps); only these events' touches are recorded.
    since = engine.ledger.chain_position()

    def plan_for(customers: set[str]) -> list[PlannedTouch]:
        history = _OwnCustomersHistory(engine.ledger)
        history.customers = customers
        planned = plan_day(
            engine.store,
            for_customers(engine.ruleset, customers),
            day,
            rule_ids=rule_ids,
            history=history,
            on_unreadable=unreadable.__setitem__,
        )
        return planned_touches(
            [t for t in planned if t.event is not None and t.event.get("event_id") in event_ids]
        )

    touches = plan_for(customer_ids)
    if not touches:
        return out
    record = engine.ledger.record_plan(
        touches, run_id=run_id, now=engine.stamp(now), guard=PlanGuard(since, plan_for)
    )
    out.planned = record.planned
    out.suppressed = record.suppressed
    out.unchanged = record.unchanged
    out.days.append(day.isoformat())
    for touch in touches:
        out.touched.add(str(touch.event_id))
        if touch.decision is Decision.SEND and touch.send_at < now:
            out.late += 1
    return out


def _unplannable(step: str, exc: Exception) -> str:
    return (
        f"{DeadLetterReason.UNPLANNABLE.value}: {step} failed: "
        f"{type(exc).__name__}: {scrub(str(exc))}"
    )[:1000]


def plan_events(
    engine: CareEngine, rows: list[Any], *, run_id: str, now: dt.datetime
) -> EventPlanReport:
    """Plan and record the touches of the given events (rows of ``_unplanned``).

    One event never stops the others: an event whose stored payload cannot be read, or
    whose planning fails when it is planned on its own, is put in ``report.dead`` with the
    reason (``plan_new_events`` takes it out of the inbox). Failures of the store or the
    set-up (``_NOT_ONE_EVENTS_FAULT``) stop the run as before.
    """
    report = EventPlanReport(events=len(rows))
    by_type = event_rules(engine.ruleset.rules)
    policy = engine.ruleset.policy
    wanted: dict[dt.date, tuple[set[str], set[str], set[str]]] = defaultdict(
        lambda: (set(), set(), set())
    )
    owner: dict[str, str] = {}
    for row in rows:
        owner[row.event_id] = row.customer_id
        try:
            due = due_days(row.occurred_at, policy.zone(row.timezone), by_type.get(row.type, []))
        except Exception as exc:  # e.g. occurred in year 1: its local day is out of range
            report.dead[row.event_id] = _unplannable("working out its due days", exc)
            continue
        for day, rule in due:
            rule_ids, event_ids, customer_ids = wanted[day]
            rule_ids.add(rule.id)
            event_ids.add(row.event_id)
            customer_ids.add(row.customer_id)
    plan = partial(_plan_day_of_events, engine, run_id=run_id, now=now, unreadable=report.dead)
    for day in sorted(wanted):
        rule_ids, event_ids, customer_ids = wanted[day]
        try:
            report.add(plan(day, rule_ids, event_ids, customer_ids))
            continue
        except _NOT_ONE_EVENTS_FAULT:
            raise
        except Exception as exc:
            log.warning(
                "planning %d event(s) of %s failed (%s); planning them one by one",
                len(event_ids),
                day,
                type(exc).__name__,
            )
        # One of them (or a touch competing with them) fails the day: plan them one by one,
        # so that the others go through and only the one that fails on its own is taken out.
        for event_id in sorted(event_ids):
            try:
                report.add(plan(day, rule_ids, {event_id}, {owner[event_id]}))
            except _NOT_ONE_EVENTS_FAULT:
                raise
            except Exception as exc:
                report.dead[event_id] = _unplannable(f"planning its touches of {day}", exc)
    report.without_touch = len({r.event_id for r in rows} - report.touched - set(report.dead))
    return report


def plan_new_events(
    engine: CareEngine, *, run_id: str, now: dt.datetime, batch: int = BATCH
) -> EventPlanReport:
    """Plan the touches of every event in the inbox not planned yet; mark them planned.

    Idempotent: the ledger keys each touch by (rule, event, occurrence), so planning an event
    twice (a crash before ``planned_at`` was written, a concurrent run) records it once.
    Events that cannot be planned are taken out of the inbox into the dead letters, with
    the reason (``plan_events``); the others are planned all the same.
    """
    total = EventPlanReport()
    while True:
        rows = _unplanned(engine, batch)
        if not rows:
            break
        report = plan_events(engine, rows, run_id=run_id, now=now)
        if report.dead:
            dead_letter_events(
                engine.store, report.dead, source="inbox", ref=run_id, now=engine.stamp(now)
            )
        ids = [r.id for r in rows]
        with engine.store.session() as session:
            for start in range(0, len(ids), 500):
                session.execute(
                    update(EventReceipt)
                    .where(EventReceipt.id.in_(ids[start : start + 500]))
                    .where(EventReceipt.planned_at.is_(None))
                    .values(planned_at=engine.stamp(now))
                )
        total.events += report.events
        total.without_touch += report.without_touch
        total.add(report)
        if len(rows) < batch:
            break
    if total.events:
        log.info("event touches: %s (days %s)", total.as_dict(), ", ".join(total.days) or "-")
    return total
