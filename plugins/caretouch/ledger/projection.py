"""``touch_current``: each touch's current status, projected from its status events.

Not part of the audited record (``models.TouchCurrent``): rewritten in place, rebuilt from
``touch_events`` at any time. The writer (``writer.write``) brings it up to date at the end
of every write transaction; readers (``readers``) read it instead of the events.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..store.db import among
from .models import TouchCurrent, TouchEvent
from .sql import CHUNK, copy_rows, dialect_insert
from .statuses import RECEIPTS, is_receipt


def refresh_current(
    session: Session,
    events: Sequence[Mapping[str, Any]] | None = None,
    new_touches: Collection[int] = (),
) -> int:
    """Bring ``touch_current`` up to date with ``events`` (a write transaction's own status
    events, in id order, as mappings of column to value: ``writer.write``), or, when None,
    with every event newer than the newest one it reflects (a rebuild, or a store that
    predates the table; the caller holds the chain lock). Returns how many touches changed.
    ``new_touches``: touches the transaction created, which have no row yet (inserted in
    bulk, not upserted).

    A writer's events are its own touches' newest: every writer of status events holds the
    touches' row locks (``changes.lock_touches``) or created the touches itself.

    The latest event wins, with one exception: once a provider has reported the outcome
    of an attempt (a delivery receipt: delivered, undelivered, bounced, or failed with
    ``delivery_failed``), a later event of the sender about that same attempt (its
    ``sent`` recorded after the receipt arrived, ``unknown``, a retry) does not replace
    it. The event is then still taken into account (``event_id`` moves on), the status
    stays. An event of another attempt, or a later receipt, replaces it as usual.
    """
    session.flush()
    latest: dict[int, dict[str, Any]] = {}
    attempt_of: dict[int, int | None] = {}
    if events is not None:
        for start in range(0, len(events), 5000):
            _apply(session, events[start : start + 5000], latest, attempt_of)
    else:
        after = session.scalar(select(func.max(TouchCurrent.event_id))) or 0
        while True:
            batch = [
                row._mapping
                for row in session.execute(
                    select(TouchEvent.__table__)
                    .where(TouchEvent.id > after)
                    .order_by(TouchEvent.id)
                    .limit(5000)
                )
            ]
            if not batch:
                break
            _apply(session, batch, latest, attempt_of)
            after = batch[-1]["id"]
    if not latest:
        return 0
    fresh = [row for row in latest.values() if row["touch_id"] in new_touches]
    copy_rows(session, TouchCurrent.__table__, fresh)
    rows = [row for row in latest.values() if row["touch_id"] not in new_touches]
    if not rows:
        return len(fresh)
    # One statement, many parameter sets: compiled once and cached (a multi-row VALUES
    # built from the rows would be compiled again for every transaction).
    stmt = dialect_insert(session)(TouchCurrent.__table__)
    stmt = stmt.on_conflict_do_update(
        index_elements=["touch_id"],
        set_={c: stmt.excluded[c] for c in ("event_id", "status", "reason", "send_at", "final")},
    )
    session.execute(stmt, rows)
    return len(fresh) + len(rows)


def _apply(
    session: Session,
    batch: Sequence[Any],
    latest: dict[int, dict[str, Any]],
    attempt_of: dict[int, int | None],
) -> None:
    """Fold a batch of status events (in id order) into ``latest``."""
    # Touches that may hold a receipt from an earlier transaction, which a sender's event
    # in this batch must not override.
    unknown = {
        e["touch_id"]
        for e in batch
        if e.get("attempt_id") is not None
        and e["touch_id"] not in latest
        and not is_receipt(e["status"], e.get("reason"))
    }
    _current_receipts(session, sorted(unknown), latest, attempt_of)
    for event in batch:
        touch_id = event["touch_id"]
        current = latest.get(touch_id)
        if (
            current is not None
            and is_receipt(current["status"], current["reason"])
            and event.get("attempt_id") is not None
            and event.get("attempt_id") == attempt_of.get(touch_id)
            and not is_receipt(event["status"], event.get("reason"))
        ):
            current["event_id"] = event["id"]
            continue
        detail = event.get("detail")
        latest[touch_id] = {
            "touch_id": touch_id,
            "event_id": event["id"],
            "status": event["status"],
            "reason": event.get("reason"),
            "send_at": event.get("send_at"),
            "channel": event.get("channel"),
            "final": bool(isinstance(detail, dict) and detail.get("final")),
        }
        attempt_of[touch_id] = event.get("attempt_id")


def _current_receipts(
    session: Session,
    touch_ids: Sequence[int],
    latest: dict[int, dict[str, Any]],
    attempt_of: dict[int, int | None],
) -> None:
    """Load into ``latest`` the touches among ``touch_ids`` whose current status is a
    delivery receipt, with the attempt it is about."""
    for start in range(0, len(touch_ids), CHUNK):
        chunk = list(touch_ids[start : start + CHUNK])
        rows = session.execute(
            select(
                TouchCurrent.touch_id,
                TouchCurrent.event_id,
                TouchCurrent.status,
                TouchCurrent.reason,
                TouchCurrent.send_at,
                TouchCurrent.channel,
                TouchCurrent.final,
                TouchEvent.attempt_id,
            )
            .join(TouchEvent, TouchEvent.id == TouchCurrent.event_id)
            .where(
                among(session, TouchCurrent.touch_id, chunk),
                TouchCurrent.status.in_([s.value for s in RECEIPTS]),
            )
        )
        for touch_id, event_id, status, reason, send_at, channel, final, attempt_id in rows:
            if not is_receipt(status, reason):
                continue
            latest[touch_id] = {
                "touch_id": touch_id,
                "event_id": event_id,
                "status": status,
                "reason": reason,
                "send_at": send_at,
                "channel": channel,
                "final": final,
            }
            attempt_of[touch_id] = attempt_id
