"""Reading touches: their current status (from ``touch_current``), attempts and history."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any, cast

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from ..dates import aware_utc
from ..store.db import Store, among
from ..vocab import SuppressionReason, TouchStatus
from .models import REAL_TOUCH, Attempt, TouchCurrent, TouchEvent, TouchRow
from .records import TouchState
from .sql import CHUNK
from .statuses import is_handled


def latest_status(
    session: Session, touch_ids: Sequence[int]
) -> dict[int, tuple[str, str | None, bool]]:
    """Each touch's latest status, reason, and whether that decision is final."""
    return {
        touch_id: (status, reason, final)
        for touch_id, (status, reason, _, final, _) in latest_events(session, touch_ids).items()
    }


def latest_events(
    session: Session, touch_ids: Sequence[int]
) -> dict[int, tuple[str, str | None, dt.datetime | None, bool, str | None]]:
    """Each touch's latest status, reason, (for ``planned``) scheduled send time and
    channel, and whether it is final (a suppression decided at send time)."""
    latest: dict[int, tuple[str, str | None, dt.datetime | None, bool, str | None]] = {}
    for start in range(0, len(touch_ids), CHUNK):
        chunk = list(touch_ids[start : start + CHUNK])
        rows = session.execute(
            select(
                TouchCurrent.touch_id,
                TouchCurrent.status,
                TouchCurrent.reason,
                TouchCurrent.send_at,
                TouchCurrent.final,
                TouchCurrent.channel,
            ).where(among(session, TouchCurrent.touch_id, chunk))
        )
        for touch_id, status, reason, send_at, final, channel in rows:
            latest[touch_id] = (
                status,
                reason,
                aware_utc(send_at) if send_at else None,
                final,
                channel,
            )
    return latest


def states_of(session: Session, rows: Sequence[TouchRow]) -> list[TouchState]:
    """Each row's ``TouchState`` (current status, attempts made), read in ``session``."""
    ids = [r.id for r in rows]
    latest = latest_events(session, ids)
    counts: dict[int, int] = {}
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        for touch_id, count in session.execute(
            select(Attempt.touch_id, func.count())
            .where(among(session, Attempt.touch_id, chunk))
            .group_by(Attempt.touch_id)
        ):
            counts[touch_id] = count
    states = []
    for r in rows:
        status, reason, send_at, _, channel = latest.get(
            r.id, (TouchStatus.PLANNED.value, None, None, False, None)
        )
        states.append(
            TouchState(
                row=r,
                status=TouchStatus(status),
                reason=reason,
                attempts=counts.get(r.id, 0),
                scheduled=send_at if status == TouchStatus.PLANNED.value else None,
                planned_channel=channel if status == TouchStatus.PLANNED.value else None,
            )
        )
    return states


def held_states(
    session: Session, touch_ids: Sequence[int]
) -> tuple[list[TouchState], dict[int, int]]:
    """The states of these touches, in the order of ``touch_ids``, read in the caller's
    transaction (the send queue's, which holds their row locks), with each touch's highest
    attempt number (0: none yet), which its next claim adds one to.

    Two statements per 500 touches, and plain rows, not ORM objects: ``TouchState.row`` is
    then a row of the ``touches`` table with the columns as attributes (what the sender
    reads of it), not a ``TouchRow`` bound to a session."""
    ids = list(touch_ids)
    table = TouchRow.__table__
    found: dict[int, TouchState] = {}
    highest: dict[int, int] = dict.fromkeys(ids, 0)
    planned = TouchStatus.PLANNED
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        counts: dict[int, int] = {}
        for touch_id, count, top in session.execute(
            select(Attempt.touch_id, func.count(), func.max(Attempt.attempt_no))
            .where(among(session, Attempt.touch_id, chunk))
            .group_by(Attempt.touch_id)
        ):
            counts[touch_id] = count
            highest[touch_id] = top or 0
        rows = session.execute(
            select(
                table,
                TouchCurrent.status.label("current_status"),
                TouchCurrent.reason.label("current_reason"),
                TouchCurrent.send_at.label("current_send_at"),
                TouchCurrent.channel.label("current_channel"),
            )
            .outerjoin(TouchCurrent, TouchCurrent.touch_id == table.c.id)
            .where(among(session, table.c.id, chunk))
        )
        for row in rows:
            status = TouchStatus(row.current_status) if row.current_status else planned
            is_planned = status is planned
            found[row.id] = TouchState(
                # A row of ``touches`` read as such: the attributes the sender reads are the
                # columns', as on a ``TouchRow``.
                row=cast(TouchRow, row),
                status=status,
                reason=row.current_reason,
                attempts=counts.get(row.id, 0),
                scheduled=aware_utc(row.current_send_at)
                if is_planned and row.current_send_at
                else None,
                planned_channel=row.current_channel if is_planned else None,
            )
    return [found[i] for i in ids if i in found], highest


def states(store: Store, touch_ids: Iterable[int]) -> list[TouchState]:
    """The states of these touches: in the order of ``touch_ids`` (by id from 2,000 on)."""
    ids = list(touch_ids)
    with store.read_session() as session:
        rows: list[TouchRow] = []
        for start in range(0, len(ids), CHUNK):
            rows.extend(
                session.scalars(
                    select(TouchRow).where(among(session, TouchRow.id, ids[start : start + CHUNK]))
                )
            )
        rows.sort(key=lambda r: ids.index(r.id) if len(ids) < 2000 else r.id)
        return states_of(session, rows)


def states_for_day(store: Store, occurrence: dt.date) -> list[TouchState]:
    with store.read_session() as session:
        rows = list(
            session.scalars(
                select(TouchRow)
                .where(TouchRow.occurrence == occurrence, REAL_TOUCH)  # not test sends
                .order_by(TouchRow.id)
            )
        )
        return states_of(session, rows)


def narrowed(
    query: Select[Any],
    *,
    day: dt.date | None = None,
    shard: tuple[int, int] | None = None,
    rule_ids: Sequence[str] | None = None,
    joined: bool = False,
) -> Select[Any]:
    """``query`` over ``touch_current`` narrowed to the touches of one ``day``, of one
    ``shard`` ``(k, n)`` (id modulo ``n`` is ``k``), of ``rule_ids``; ``touches`` is joined
    where needed unless the query has it already (``joined``)."""
    if shard is not None:
        k, n = shard
        query = query.where(TouchCurrent.touch_id % n == k)
    if (day is not None or rule_ids is not None) and not joined:
        query = query.join(TouchRow, TouchRow.id == TouchCurrent.touch_id)
    if day is not None:
        query = query.where(TouchRow.occurrence == day)
    if rule_ids is not None:
        query = query.where(TouchRow.rule_id.in_(list(rule_ids)))
    return query


def touch_ids_in_status(
    store: Store,
    statuses: set[TouchStatus],
    *,
    day: dt.date | None = None,
    shard: tuple[int, int] | None = None,
    rule_ids: Sequence[str] | None = None,
    tests: bool = False,
) -> list[int]:
    """Ids of touches whose latest status is one of ``statuses`` (of one day, or all).

    ``shard`` ``(k, n)``: only the touches whose id is ``k`` modulo ``n`` (the share of one
    of ``n`` senders); ``rule_ids``: only the touches of these rules. Test sends (``care
    send-test``) only with ``tests`` (recovery settles them): no sender ever takes one, which
    would send it to the customer."""
    wanted = [s.value for s in statuses]
    query = select(TouchCurrent.touch_id).where(TouchCurrent.status.in_(wanted))
    if not tests:
        query = query.join(TouchRow, TouchRow.id == TouchCurrent.touch_id).where(REAL_TOUCH)
    query = narrowed(query, day=day, shard=shard, rule_ids=rule_ids, joined=not tests)
    with store.read_session() as session:
        return list(session.scalars(query.order_by(TouchCurrent.touch_id)))


def final_keys(store: Store, keys: list[str]) -> dict[str, str]:
    """The keys among ``keys`` whose fate is sealed, with the reason word to report:
    ``already_sent`` when handled (sent, failed, ...), or the reason it was suppressed
    with when it was due (``too_late``, ``quiet_hours``, a late ``frequency_cap``)."""
    found: dict[str, str] = {}
    with store.read_session() as session:
        for start in range(0, len(keys), CHUNK):
            chunk = keys[start : start + CHUNK]
            rows = list(
                session.execute(
                    select(TouchRow.id, TouchRow.touch_key).where(
                        among(session, TouchRow.touch_key, chunk)
                    )
                )
            )
            latest = latest_status(session, [r[0] for r in rows])
            for tid, key in rows:
                status, reason, final = latest[tid]
                if final and reason:
                    found[key] = reason
                elif is_handled(status, reason, final):
                    found[key] = SuppressionReason.ALREADY_SENT.value
    return found


def attempts(store: Store, touch_id: int) -> list[Attempt]:
    with store.read_session() as session:
        return list(
            session.scalars(
                select(Attempt).where(Attempt.touch_id == touch_id).order_by(Attempt.attempt_no)
            )
        )


def history(store: Store, touch_id: int) -> list[TouchEvent]:
    with store.read_session() as session:
        return list(
            session.scalars(
                select(TouchEvent).where(TouchEvent.touch_id == touch_id).order_by(TouchEvent.id)
            )
        )
