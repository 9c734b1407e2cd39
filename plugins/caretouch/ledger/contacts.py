"""What the planner asks of the past (``plan.history.History``): the contacts that count
against its caps, who was greeted for an occasion, and the touches waiting as deferred."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..dates import aware_utc
from ..store.db import Store, among
from ..touch_history import DeferredTouch, PastContact
from ..vocab import SuppressionReason, TouchStatus
from .codec import decode
from .models import REAL_TOUCH, Attempt, TouchCurrent, TouchEvent, TouchRow
from .readers import states_of
from .records import zone
from .sql import CHUNK
from .statuses import CONTACT_MADE, COUNTED, HANDLED, MAX_DEFER_DAYS, TASK_DONE, WAIT_UNTIL


def contacts(
    store: Store, customer_ids: Iterable[str] | None, first: dt.date, last: dt.date
) -> list[PastContact]:
    """Touches that reached, or are planned to reach, customers on local days first..last.

    A touch's contact day is the local date of its last attempt, or of its scheduled send
    time if it has not been attempted. Suppressed and failed touches do not count.
    """
    # Deferral moves a touch at most MAX_DEFER_DAYS forward, a late send one more day.
    lo = first - dt.timedelta(days=MAX_DEFER_DAYS + 1)
    # Test sends (``care send-test``) never count against a customer's caps.
    query = select(TouchRow).where(
        TouchRow.occurrence >= lo, TouchRow.occurrence <= last, REAL_TOUCH
    )
    found: list[PastContact] = []
    with store.read_session() as session:
        batches: list[list[TouchRow]] = []
        if customer_ids is None:
            batches.append(list(session.scalars(query)))
        else:
            wanted = sorted(set(customer_ids))
            for start in range(0, len(wanted), CHUNK):
                chunk = wanted[start : start + CHUNK]
                batches.append(
                    list(session.scalars(query.where(among(session, TouchRow.customer_id, chunk))))
                )
        for rows in batches:
            states = states_of(session, rows)
            attempted = _last_attempts(session, [st.id for st in states])
            attempted_channel = _last_attempt_channels(session, [st.id for st in states])
            for st in states:
                if st.status not in COUNTED:
                    continue
                instant = attempted.get(st.id) or st.send_at
                day = instant.astimezone(zone(st.row.timezone)).date()
                if first <= day <= last:
                    found.append(
                        PastContact(
                            key=st.row.touch_key,
                            customer_id=st.row.customer_id,
                            rule_id=st.row.rule_id,
                            category=st.row.category,
                            channel=attempted_channel.get(st.id) or st.channel,
                            day=day,
                            handled=st.status in HANDLED,
                            occurrence=st.row.occurrence,
                        )
                    )
    return found


def last_contacts(store: Store, customer_ids: Iterable[str], day: dt.date) -> dict[str, dt.date]:
    """Per customer, the local day of the last completed contact (``CONTACT_MADE``) on or
    before ``day``; customers never contacted are left out.

    A message's day is the local date of its current send time, as the caps count it (one
    sent late, past its planned day, counts on its planned day here: a day's difference does
    not matter for a cadence of weeks). A task's is the local date it was recorded done."""
    made = [s.value for s in CONTACT_MADE]
    found: dict[str, dt.date] = {}
    wanted = sorted(set(customer_ids))
    query = (
        select(
            TouchRow.customer_id,
            TouchRow.timezone,
            TouchCurrent.status,
            TouchCurrent.send_at,
            TouchRow.send_at,
            TouchEvent.at,
        )
        .join(TouchCurrent, TouchCurrent.touch_id == TouchRow.id)
        .join(TouchEvent, TouchEvent.id == TouchCurrent.event_id)
        .where(TouchCurrent.status.in_(made), REAL_TOUCH)  # a test send is no contact
    )
    with store.read_session() as session:
        for start in range(0, len(wanted), CHUNK):
            chunk = wanted[start : start + CHUNK]
            rows = session.execute(query.where(among(session, TouchRow.customer_id, chunk)))
            for customer_id, tz, status, current, planned, recorded in rows:
                instant = recorded if status == TASK_DONE.value else (current or planned)
                local = aware_utc(instant).astimezone(zone(tz)).date()
                if local <= day and local > found.get(customer_id, dt.date.min):
                    found[customer_id] = local
    return found


def occasion_contacts(
    store: Store,
    customer_ids: Iterable[str],
    rule_ids: Iterable[str],
    first: dt.date,
    last: dt.date,
) -> list[PastContact]:
    """Counted touches (``planned``, ``sending``, ``sent``, ...: ``COUNTED``) of these
    customers and rules with an occurrence in first..last; ``day`` is the occurrence."""
    rules = sorted(set(rule_ids))
    wanted = sorted(set(customer_ids))
    if not rules or not wanted:
        return []
    counted = [s.value for s in COUNTED]
    handled = {s.value for s in HANDLED}
    found: list[PastContact] = []
    with store.read_session() as session:
        for start in range(0, len(wanted), CHUNK):
            query = (
                select(TouchRow, TouchCurrent.status)
                .join(TouchCurrent, TouchCurrent.touch_id == TouchRow.id)
                .where(
                    among(session, TouchRow.customer_id, wanted[start : start + CHUNK]),
                    TouchRow.rule_id.in_(rules),
                    TouchRow.occurrence >= first,
                    TouchRow.occurrence <= last,
                    TouchCurrent.status.in_(counted),
                    REAL_TOUCH,  # a test send greets nobody
                )
            )
            for row, status in session.execute(query):
                found.append(
                    PastContact(
                        key=row.touch_key,
                        customer_id=row.customer_id,
                        rule_id=row.rule_id,
                        category=row.category,
                        channel=row.channel,
                        day=row.occurrence,
                        handled=status in handled,
                        occurrence=row.occurrence,
                    )
                )
    return found


def _last_attempt_channels(session: Session, touch_ids: Sequence[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    for start in range(0, len(touch_ids), CHUNK):
        chunk = list(touch_ids[start : start + CHUNK])
        for touch_id, channel in session.execute(
            select(Attempt.touch_id, Attempt.channel)
            .where(among(session, Attempt.touch_id, chunk))
            .order_by(Attempt.id)
        ):
            out[touch_id] = channel  # the last attempt's channel wins
    return out


def _last_attempts(session: Session, touch_ids: Sequence[int]) -> dict[int, dt.datetime]:
    out: dict[int, dt.datetime] = {}
    for start in range(0, len(touch_ids), CHUNK):
        chunk = list(touch_ids[start : start + CHUNK])
        for touch_id, created in session.execute(
            select(Attempt.touch_id, func.max(Attempt.created_at))
            .where(among(session, Attempt.touch_id, chunk))
            .group_by(Attempt.touch_id)
        ):
            out[touch_id] = aware_utc(created)
    return out


def deferred(
    store: Store,
    rule_ids: Iterable[str],
    first: dt.date,
    last: dt.date,
    customer_ids: Iterable[str] | None = None,
) -> list[DeferredTouch]:
    """Touches of ``rule_ids`` (occurrence first..last; of ``customer_ids`` only, if
    given) whose current status is a deferral, with the day they wait for when the send
    step deferred them (``wait_until``).

    Read from the deferred touches (a partial index holds just those), not from the
    rules' touches of the period, which on a 1,000,000-customer store are many more; for
    a few customers, from their touches."""
    wanted = set(rule_ids)
    if not wanted:
        return []
    period = (TouchRow.occurrence >= first, TouchRow.occurrence <= last)
    # By reason only, so that the partial index serves the query (the status is checked
    # below): a statement that names the status may pick the status index instead, and
    # read every suppressed touch. Rule ids are checked below too, so that a few
    # customers' touches are found through their own index.
    deferred = TouchCurrent.reason == SuppressionReason.DEFERRED.value
    suppressed = TouchStatus.SUPPRESSED.value
    with store.read_session() as session:
        found: list[tuple[TouchRow, int]] = []
        if customer_ids is not None:
            customers = sorted(set(customer_ids))
            for start in range(0, len(customers), CHUNK):
                found += [
                    (row, event_id)
                    for row, event_id, status in session.execute(
                        select(TouchRow, TouchCurrent.event_id, TouchCurrent.status)
                        .join(TouchCurrent, TouchCurrent.touch_id == TouchRow.id)
                        .where(
                            among(session, TouchRow.customer_id, customers[start : start + CHUNK]),
                            *period,
                            deferred,
                        )
                    )
                    if status == suppressed and row.rule_id in wanted
                ]
        else:
            waiting = {
                touch_id: event_id
                for touch_id, event_id, status in session.execute(
                    select(TouchCurrent.touch_id, TouchCurrent.event_id, TouchCurrent.status).where(
                        deferred
                    )
                )
                if status == suppressed
            }
            ids = sorted(waiting)
            for start in range(0, len(ids), CHUNK):
                found += [
                    (row, waiting[row.id])
                    for row in session.scalars(
                        select(TouchRow).where(
                            among(session, TouchRow.id, ids[start : start + CHUNK]), *period
                        )
                    )
                    if row.rule_id in wanted
                ]
        details: dict[int, Any] = {}
        events = sorted({event_id for _, event_id in found})
        for start in range(0, len(events), CHUNK):
            details.update(
                session.execute(
                    select(TouchEvent.id, TouchEvent.detail).where(
                        among(session, TouchEvent.id, events[start : start + CHUNK])
                    )
                ).all()
            )
    result = []
    for r, event_id in found:
        detail = details.get(event_id)
        wait = detail.get(WAIT_UNTIL) if isinstance(detail, dict) else None
        result.append(
            DeferredTouch(
                key=r.touch_key,
                rule_id=r.rule_id,
                customer_id=r.customer_id,
                policy_id=r.policy_id,
                event_id=r.event_id,
                occurrence=r.occurrence,
                context=decode(r.context),
                wait_until=dt.date.fromisoformat(wait) if wait else None,
                subject_id=r.subject_id,
                variant=r.variant,
            )
        )
    return result
