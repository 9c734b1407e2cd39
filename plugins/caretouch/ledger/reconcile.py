"""Reconciling a plan with the ledger: ``record_plan`` writes what changed, idempotently.

A plan is a list of ``PlannedTouch`` records (``run.records`` makes them from the planner's
touches). A key seen for the first time gets its ``touches`` row and a ``planned`` or
``suppressed`` event; a key already known gets an event only when the decision about it
changed, and never once it was handled (sent, or sealed when it was due).
"""

from __future__ import annotations

import datetime as dt
import logging
import zlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..store.db import Store, among
from ..store.lookup import customer_row_ids
from ..vocab import Decision, SuppressionReason, TouchStatus
from .chain import ChainEntry, insert_rows
from .changes import lock_touches
from .codec import encode
from .models import TouchEvent, TouchRow
from .readers import latest_events
from .records import PlanGuard, PlannedTouch, PlanRecord, zone
from .sql import CHUNK
from .statuses import is_handled
from .writer import write

log = logging.getLogger(__name__)

# Touches recorded per transaction of a large plan (each customer's in one).
PLAN_TRANSACTION = 2000
# Customers' guard locks are hashed into this many buckets: a transaction holds at most
# this many advisory locks (PostgreSQL's shared lock table holds max_locks_per_transaction
# x max_connections locks, 64 x 100 by default, for every session together).
GUARD_BUCKETS = 256
# The first key of the guard's two-key advisory locks (the chain lock uses a one-key lock).
_GUARD_SPACE = 0x63617265


def _moved_later(current: Any, touch: PlannedTouch) -> bool:
    scheduled = current[2] if current else None
    if scheduled is None:
        return False
    tz = zone(touch.timezone)
    return bool(scheduled.astimezone(tz).date() > touch.send_at.astimezone(tz).date())


def record_plan(
    store: Store,
    touches: Sequence[PlannedTouch],
    *,
    run_id: str,
    now: dt.datetime,
    retry_render_errors: bool = False,
    guard: PlanGuard | None = None,
) -> PlanRecord:
    """Record a day's plan idempotently; returns the ids of touches now waiting to be sent.

    A new key gets its row and a ``planned`` or ``suppressed`` event. An existing key is
    left alone once handled; a ``suppressed`` one whose decision is now ``send`` (say,
    consent was given since) is planned again, and a ``planned`` one that is now
    suppressed gets the suppression appended.

    A large plan is recorded in transactions of at most ``PLAN_TRANSACTION`` touches, each
    customer's in one. With a ``guard`` (every planner of the engine passes one), each
    transaction first makes sure no other planner recorded touches for its customers since
    this plan read its history, and plans those customers again if one did.
    """
    result = PlanRecord(planned_ids=[])
    assert result.planned_ids is not None
    for part in _transactions(touches):
        try:
            recorded = _record_transaction(store, part, run_id, now, retry_render_errors, guard)
        except IntegrityError:
            # A writer without a guard created one of these keys meanwhile (their rows are
            # inserted in bulk, not "ON CONFLICT DO NOTHING"): record the part again, which
            # now finds the key and decides from its status.
            log.info("plan: a touch was recorded by another writer meanwhile: recording again")
            recorded = _record_transaction(store, part, run_id, now, retry_render_errors, guard)
        result.merge(recorded)
    return result


def _record_transaction(
    store: Store,
    part: Sequence[PlannedTouch],
    run_id: str,
    now: dt.datetime,
    retry_render_errors: bool,
    guard: PlanGuard | None,
) -> PlanRecord:
    """Record one transaction's part of a plan; what it changed."""
    recorded = PlanRecord(planned_ids=[])
    with write(store, now) as session:
        if guard is not None:
            part = _guarded(session, part, guard)
        _record_part(session, part, recorded, run_id, now, retry_render_errors)
    return recorded


def _record_part(
    session: Session,
    touches: Sequence[PlannedTouch],
    result: PlanRecord,
    run_id: str,
    now: dt.datetime,
    retry_render_errors: bool,
) -> None:
    """Record one transaction's part of a plan into ``result``."""
    assert result.planned_ids is not None
    for start in range(0, len(touches), CHUNK):
        chunk = touches[start : start + CHUNK]
        ids = known_keys(session, [t.key for t in chunk])
        known = list(ids.values())
        ids.update(_insert_touch_rows(session, chunk, ids, run_id, now))
        # Compare-and-set: each decision below is taken from the touch's status read here,
        # under its row lock, so a touch that moved on since the plan was computed (sent,
        # suppressed at send time) is left alone, never overwritten by a stale plan. The
        # touches this transaction created have no status yet, and nobody else can see them.
        lock_touches(session, known)
        latest = latest_events(session, known)
        events: list[dict[str, Any]] = []
        for touch in chunk:
            touch_id = ids[touch.key]
            current = latest.get(touch_id)
            status = TouchStatus(current[0]) if current else None
            reason = current[1] if current else None
            final = current[3] if current else False
            wanted_reason = touch.reason.value if touch.reason else None
            if touch.reason is SuppressionReason.ALREADY_SENT:
                result.unchanged += 1
                continue
            if status is TouchStatus.PLANNED and _moved_later(current, touch):
                # Deferred and already planned for a later day: planning its first
                # day again must neither pull it back nor suppress it.
                result.unchanged += 1
                continue
            if status is None:
                result.new += 1
                new_status = (
                    TouchStatus.PLANNED
                    if touch.decision is Decision.SEND
                    else TouchStatus.SUPPRESSED
                )
            elif is_handled(status.value, reason, final) or (
                status is TouchStatus.FAILED and not retry_render_errors
            ):
                result.unchanged += 1
                continue
            elif touch.decision is Decision.SEND and status in (
                TouchStatus.SUPPRESSED,
                TouchStatus.FAILED,
            ):
                result.replanned += 1
                new_status = TouchStatus.PLANNED
            elif touch.decision is Decision.SUPPRESS and (
                status is TouchStatus.PLANNED or reason != wanted_reason
            ):
                new_status = TouchStatus.SUPPRESSED
            elif (
                touch.decision is Decision.SEND
                and status is TouchStatus.PLANNED
                and touch.channel is not None
                and current is not None
                and current[4] not in (None, touch.channel.value)
            ):
                # Still to send, but now on another channel (consent changed).
                new_status = TouchStatus.PLANNED
            else:
                if status is TouchStatus.PLANNED:
                    result.planned_ids.append(touch_id)
                result.unchanged += 1
                continue
            if new_status is TouchStatus.PLANNED:
                result.planned_ids.append(touch_id)
                result.planned += 1
            else:
                result.suppressed += 1
            events.append(
                {
                    "touch_id": touch_id,
                    "status": new_status.value,
                    "reason": wanted_reason if new_status is TouchStatus.SUPPRESSED else None,
                    "detail": {
                        # A missed obligation's window is over: no plan revives it.
                        **(
                            {"final": True}
                            if touch.reason is SuppressionReason.OBLIGATION_MISSED
                            else {}
                        ),
                        "explain": touch.explain,
                        # What the customer had consented to when this was decided.
                        "consent": dict(touch.consent),
                    },
                    "send_at": touch.send_at if new_status is TouchStatus.PLANNED else None,
                    "channel": touch.channel.value
                    if new_status is TouchStatus.PLANNED and touch.channel
                    else None,
                    "at": now,
                    "run_id": run_id,
                }
            )
        # A plan's details have string keys only (explanations, consent by purpose).
        insert_rows(session, TouchEvent, events, string_keyed=("detail",))


def _transactions(touches: Sequence[PlannedTouch]) -> list[Sequence[PlannedTouch]]:
    """A plan cut into transactions of about ``PLAN_TRANSACTION`` touches, each customer's
    touches in one (caps are per customer); a small plan stays whole, in its order."""
    if len(touches) <= PLAN_TRANSACTION:
        return [touches]
    by_customer: dict[str, list[PlannedTouch]] = {}
    for touch in touches:
        by_customer.setdefault(touch.customer_id, []).append(touch)
    parts: list[Sequence[PlannedTouch]] = []
    part: list[PlannedTouch] = []
    for own in by_customer.values():
        if part and len(part) + len(own) > PLAN_TRANSACTION:
            parts.append(part)
            part = []
        part.extend(own)
    if part:
        parts.append(part)
    return parts


def _guarded(
    session: Session, touches: Sequence[PlannedTouch], guard: PlanGuard
) -> Sequence[PlannedTouch]:
    """The part of a plan to record, once no other planner can record for its customers.

    Takes the customers' guard locks (``lock_customers``), then looks for touches of these
    customers that another writer committed after the plan read its history (chain
    entries after ``guard.since``): those customers are planned again now
    (``guard.replan``), against a history that includes them, so that two planners racing on
    a customer can never both spend the same cap."""
    customers = sorted({t.customer_id for t in touches})
    lock_customers(session, customers)
    moved = customers_written_since(session, guard.since, customers)
    if not moved:
        return touches
    log.info("plan: %d customer(s) written by another planner meanwhile: planned again", len(moved))
    fresh = [t for t in guard.replan(moved) if t.customer_id in moved]
    return [t for t in touches if t.customer_id not in moved] + fresh


def guard_buckets(session: Session, customer_ids: Sequence[str]) -> list[int]:
    """The guard buckets of these customers, in order: the customer's store id modulo
    ``GUARD_BUCKETS`` (a customer no longer in the store: a hash of its id). Sharded planners
    take the customers whose store id is ``k`` modulo ``n`` (``plan.planner.in_shard``), so
    with ``n`` dividing ``GUARD_BUCKETS`` (1, 2, 4, 8, ...) their buckets never meet and they
    record side by side; a hash would spread every large transaction over all the buckets."""
    found = customer_row_ids(session, customer_ids)
    return sorted(
        {
            found[c] % GUARD_BUCKETS if c in found else zlib.crc32(c.encode()) % GUARD_BUCKETS
            for c in customer_ids
        }
    )


def lock_customers(session: Session, customer_ids: Sequence[str]) -> None:
    """Hold the customers' guard locks until the transaction ends (PostgreSQL: advisory
    transaction locks on their ``guard_buckets``, taken in bucket order, so no two planners
    deadlock; SQLite's BEGIN IMMEDIATE already holds the database)."""
    if session.get_bind().dialect.name != "postgresql" or not customer_ids:
        return
    buckets = guard_buckets(session, customer_ids)
    session.execute(
        text(
            "SELECT count(pg_advisory_xact_lock(:space, b)) "
            "FROM (SELECT unnest(CAST(:buckets AS integer[])) AS b ORDER BY 1) AS ordered"
        ),
        {"space": _GUARD_SPACE, "buckets": buckets},
    )


def customers_written_since(session: Session, since: int, customer_ids: Sequence[str]) -> set[str]:
    """The customers among ``customer_ids`` with a status event chained after entry
    ``since`` (committed after it: the chain is in commit order)."""
    found: set[str] = set()
    for start in range(0, len(customer_ids), CHUNK):
        found.update(
            session.scalars(
                select(TouchRow.customer_id)
                .distinct()
                .join(TouchEvent, TouchEvent.touch_id == TouchRow.id)
                .join(
                    ChainEntry,
                    (ChainEntry.table_name == TouchEvent.__tablename__)
                    & (ChainEntry.row_id == TouchEvent.id),
                )
                .where(
                    ChainEntry.seq > since,
                    among(session, TouchRow.customer_id, customer_ids[start : start + CHUNK]),
                )
            )
        )
    return found


def known_keys(session: Session, keys: Sequence[str]) -> dict[str, int]:
    """The ids of the touches among these keys that the ledger holds."""
    return {
        key: int(touch_id)
        for key, touch_id in session.execute(
            select(TouchRow.touch_key, TouchRow.id).where(among(session, TouchRow.touch_key, keys))
        )
    }


def _insert_touch_rows(
    session: Session,
    touches: Sequence[PlannedTouch],
    known: dict[str, int],
    run_id: str,
    now: dt.datetime,
) -> dict[str, int]:
    """Insert the rows of the touches whose keys the ledger does not hold; their ids."""
    new: dict[str, PlannedTouch] = {}
    for t in touches:
        if t.key not in known:
            new.setdefault(t.key, t)
    rows = [touch_row(t, run_id, now) for t in new.values()]
    ids = insert_rows(session, TouchRow, rows, string_keyed=("context",))
    return dict(zip(new, ids, strict=True))


def touch_row(t: PlannedTouch, run_id: str, now: dt.datetime) -> dict[str, Any]:
    """The ``touches`` row of a planned touch, as ``record_plan`` inserts it."""
    return {
        "touch_key": t.key,
        "rule_id": t.rule_id,
        "rule_hash": t.rule_hash,
        "category": t.category,
        "priority": t.priority,
        "subject_kind": t.subject_kind,
        "subject_id": t.subject_id,
        "customer_id": t.customer_id,
        "policy_id": t.policy_id,
        "event_id": t.event_id,
        "occurrence": t.occurrence,
        "send_at": t.send_at,
        "timezone": t.timezone,
        "locale": t.locale,
        "tier": t.tier,
        "channel": t.channel.value if t.channel else None,
        "template_id": t.template_id,
        "variant": t.variant,
        "context": encode(t.context),
        "created_at": now,
        "run_id": run_id,
    }
