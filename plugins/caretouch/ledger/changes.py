"""Status changes: the events the sender and recovery append (sent, failed, suppressed at
send time, planned again, ...), in one transaction each batch.

Every status change is compare-and-set: it carries the status it was computed from
(``StatusChange.expected``) and is appended only if the touch is still in that status,
read in the writing transaction under the touches' row locks (``lock_touches``). A stale
change (the touch moved on meanwhile: another worker sent it, a receipt arrived, ...) is
skipped and handed back to the caller, which counts it as skipped, not as what it meant.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..store.db import Store
from ..vocab import TouchStatus
from .models import TouchCurrent, TouchEvent, TouchRow
from .records import StatusChange
from .sql import CHUNK, among
from .statuses import is_receipt
from .writer import write

# A touch's current status as compare-and-set reads it: status, reason, and the attempt
# its current event is about.
Current = tuple[str, str | None, int | None]


def lock_touches(session: Session, touch_ids: Sequence[int]) -> None:
    """Lock the touches' rows until the transaction ends (PostgreSQL; SQLite's BEGIN
    IMMEDIATE already holds the database), in id order, as ``claims.claim_many`` does.

    FOR NO KEY UPDATE, not FOR UPDATE: status events referencing these touches take KEY
    SHARE locks, and FOR UPDATE would deadlock against a writer recording its events."""
    ids = sorted(set(touch_ids))
    for start in range(0, len(ids), CHUNK):
        session.execute(
            select(TouchRow.id)
            .where(among(session, TouchRow.id, ids[start : start + CHUNK]))
            .order_by(TouchRow.id)
            .with_for_update(key_share=True)
        ).all()


def current_statuses(session: Session, touch_ids: Sequence[int]) -> dict[int, Current]:
    """Each touch's current status (``touch_current``), with the attempt of its event."""
    ids = sorted(set(touch_ids))
    found: dict[int, Current] = {}
    for start in range(0, len(ids), CHUNK):
        for touch_id, status, reason, attempt_id in session.execute(
            select(
                TouchCurrent.touch_id,
                TouchCurrent.status,
                TouchCurrent.reason,
                TouchEvent.attempt_id,
            )
            .join(TouchEvent, TouchEvent.id == TouchCurrent.event_id)
            .where(among(session, TouchCurrent.touch_id, ids[start : start + CHUNK]))
        ):
            found[touch_id] = (status, reason, attempt_id)
    return found


def applies(change: StatusChange, current: Current | None) -> bool:
    """True when ``change`` may be appended to a touch whose current status is ``current``.

    It may when the touch is still in the status the change was computed from. One case
    more, as ``projection.refresh_current`` has it: a provider's receipt about the very
    attempt the change is about arrived before the sender recorded its answer; the
    sender's event is then appended (the receipt stays the touch's status)."""
    if current is None:
        return False
    status, reason, attempt_id = current
    if status == change.expected.value:
        return True
    return (
        is_receipt(status, reason)
        and change.expected is TouchStatus.SENDING
        and change.attempt_id is not None
        and change.attempt_id == attempt_id
        and not is_receipt(change.status.value, change.reason)
    )


def after(change: StatusChange, current: Current | None) -> Current:
    """The touch's current status once ``change`` is appended (for a later change of the
    same touch in the same batch)."""
    if (
        current is not None
        and is_receipt(current[0], current[1])
        and not is_receipt(change.status.value, change.reason)
        and change.attempt_id == current[2]
    ):
        return current
    return (change.status.value, change.reason, change.attempt_id)


def append_many(
    store: Store, changes: Sequence[StatusChange], *, run_id: str, now: dt.datetime
) -> list[StatusChange]:
    """Append status events in one transaction, each only if its touch is still in the
    status it expects; returns the stale changes, which were not appended."""
    if not changes:
        return []
    with write(store, now) as session:
        return append_in(session, changes, run_id=run_id, now=now)


def append_in(
    session: Session, changes: Sequence[StatusChange], *, run_id: str, now: dt.datetime
) -> list[StatusChange]:
    """``append_many`` in the caller's write transaction (``queue.claim_next``)."""
    stale: list[StatusChange] = []
    if not changes:
        return stale
    ids = [c.touch_id for c in changes]
    lock_touches(session, ids)
    current = current_statuses(session, ids)
    rows = []
    for c in changes:
        if not applies(c, current.get(c.touch_id)):
            stale.append(c)
            continue
        current[c.touch_id] = after(c, current.get(c.touch_id))
        rows.append(
            {
                "touch_id": c.touch_id,
                "attempt_id": c.attempt_id,
                "status": c.status.value,
                "reason": c.reason,
                "provider_message_id": c.provider_message_id,
                "detail": c.detail,
                "at": now,
                "run_id": run_id,
            }
        )
    if rows:
        session.execute(TouchEvent.__table__.insert(), rows)
    return stale
