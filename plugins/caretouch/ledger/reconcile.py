"""Reconciling a plan with the ledger: ``record_plan`` writes what changed, idempotently.

A plan is a list of ``PlannedTouch`` records (``run.records`` makes them from the planner's
touches). A key seen for the first time gets its ``touches`` row and a ``planned`` or
``suppressed`` event; a key already known gets an event only when the decision about it
changed, and never once it was handled (sent, or sealed when it was due).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..store.db import Store
from ..vocab import Decision, SuppressionReason, TouchStatus
from .changes import lock_touches
from .codec import encode
from .models import TouchEvent, TouchRow
from .readers import latest_events
from .records import PlannedTouch, PlanRecord, zone
from .sql import CHUNK, dialect_insert
from .statuses import is_handled
from .writer import write


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
) -> PlanRecord:
    """Record a day's plan idempotently; returns the ids of touches now waiting to be sent.

    A new key gets its row and a ``planned`` or ``suppressed`` event. An existing key is
    left alone once handled; a ``suppressed`` one whose decision is now ``send`` (say,
    consent was given since) is planned again, and a ``planned`` one that is now
    suppressed gets the suppression appended.
    """
    result = PlanRecord(planned_ids=[])
    assert result.planned_ids is not None
    with write(store, now) as session:
        for start in range(0, len(touches), CHUNK):
            chunk = touches[start : start + CHUNK]
            _insert_touch_rows(session, chunk, run_id, now)
            rows = {
                r.touch_key: r
                for r in session.scalars(
                    select(TouchRow).where(TouchRow.touch_key.in_([t.key for t in chunk]))
                )
            }
            # Compare-and-set: each decision below is taken from the touch's status read here,
            # under its row lock, so a touch that moved on since the plan was computed (sent,
            # suppressed at send time) is left alone, never overwritten by a stale plan.
            lock_touches(session, [r.id for r in rows.values()])
            latest = latest_events(session, [r.id for r in rows.values()])
            events: list[dict[str, Any]] = []
            for touch in chunk:
                row = rows[touch.key]
                current = latest.get(row.id)
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
                        result.planned_ids.append(row.id)
                    result.unchanged += 1
                    continue
                if new_status is TouchStatus.PLANNED:
                    result.planned_ids.append(row.id)
                    result.planned += 1
                else:
                    result.suppressed += 1
                events.append(
                    {
                        "touch_id": row.id,
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
            if events:
                session.execute(TouchEvent.__table__.insert(), events)
    return result


def _insert_touch_rows(
    session: Session, touches: Sequence[PlannedTouch], run_id: str, now: dt.datetime
) -> None:
    rows = [
        {
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
            "context": encode(t.context),
            "created_at": now,
            "run_id": run_id,
        }
        for t in touches
    ]
    insert = dialect_insert(session)
    session.execute(
        insert(TouchRow.__table__).values(rows).on_conflict_do_nothing(index_elements=["touch_key"])
    )
