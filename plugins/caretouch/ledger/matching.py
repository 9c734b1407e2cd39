"""Providers' webhook events: which of our attempts an event is about, and recording each
event once (a delivery receipt also appends its touch's status event)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ..store.db import Store
from ..store.models import CallbackIntake
from ..vocab import TouchStatus
from .chain import insert_rows
from .changes import Current, current_statuses, lock_touches
from .models import Attempt, ProviderEventRow, TouchEvent, TouchRow
from .records import MessageMatch, ProviderEvent
from .sql import CHUNK, dialect_insert
from .statuses import DELIVERY_FAILED, RECEIPT_FROM, is_receipt
from .writer import write


def match_messages(
    store: Store, channel: str, wanted: Sequence[tuple[int | None, Sequence[str]]]
) -> list[MessageMatch | None]:
    """``match_message`` for many events at once (a SendGrid batch), in a few queries."""
    by_attempt: dict[int, MessageMatch] = {}
    by_message: dict[str, MessageMatch] = {}
    attempt_ids = sorted({a for a, _ in wanted if a is not None})
    message_ids = sorted({m for _, ms in wanted for m in ms if m})
    with store.read_session() as session:
        for start in range(0, len(attempt_ids), CHUNK):
            for attempt, touch, customer in session.execute(
                select(Attempt.id, Attempt.touch_id, TouchRow.customer_id)
                .join(TouchRow, TouchRow.id == Attempt.touch_id)
                .where(
                    Attempt.id.in_(attempt_ids[start : start + CHUNK]),
                    Attempt.channel == channel,
                )
            ):
                by_attempt[attempt] = MessageMatch(touch, attempt, customer)
        for start in range(0, len(message_ids), CHUNK):
            for message, attempt, touch, customer in session.execute(
                select(
                    TouchEvent.provider_message_id,
                    Attempt.id,
                    TouchEvent.touch_id,
                    TouchRow.customer_id,
                )
                .join(TouchRow, TouchRow.id == TouchEvent.touch_id)
                .join(Attempt, Attempt.id == TouchEvent.attempt_id)
                .where(
                    TouchEvent.provider_message_id.in_(message_ids[start : start + CHUNK]),
                    TouchEvent.status == TouchStatus.SENT.value,
                    Attempt.channel == channel,
                )
                .order_by(TouchEvent.id)
            ):
                by_message[str(message)] = MessageMatch(touch, attempt, customer)  # newest
    found: list[MessageMatch | None] = []
    for attempt_id, ids in wanted:
        match = by_attempt.get(attempt_id) if attempt_id is not None else None
        for message_id in ids:
            if match is None:
                match = by_message.get(message_id)
        found.append(match)
    return found


def known_provider_events(store: Store, provider: str, event_ids: Iterable[str]) -> set[str]:
    """The ids among ``event_ids`` already recorded for ``provider``."""
    ids = sorted(set(event_ids))
    found: set[str] = set()
    with store.read_session() as session:
        for start in range(0, len(ids), CHUNK):
            found.update(
                session.scalars(
                    select(ProviderEventRow.provider_event_id).where(
                        ProviderEventRow.provider == provider,
                        ProviderEventRow.provider_event_id.in_(ids[start : start + CHUNK]),
                    )
                )
            )
    return found


def receipt_applies(current: Current, attempt_id: int | None) -> bool:
    """True when a delivery receipt about ``attempt_id`` may follow a touch's ``current``
    status: one of ``RECEIPT_FROM`` (``failed`` only as an earlier receipt), or any status
    recorded about that same attempt (the sender took it for a retryable failure, or it
    failed: the provider's receipt about it is the later word)."""
    status, reason, current_attempt = current
    if attempt_id is not None and current_attempt == attempt_id:
        return True
    if status == TouchStatus.FAILED.value:
        return is_receipt(status, reason)
    return TouchStatus(status) in RECEIPT_FROM


def _take_intake(session: Session, ids: Sequence[int]) -> set[int]:
    """Delete the ``callback_intake`` rows ``ids`` that no other transaction holds, returning
    those this transaction took. On PostgreSQL rows another drain has locked are skipped
    (``FOR UPDATE SKIP LOCKED``) and rows it deleted are gone; on SQLite the transaction
    holds the database (``BEGIN IMMEDIATE``)."""
    table = CallbackIntake.__table__
    taken: set[int] = set()
    for start in range(0, len(ids), CHUNK):
        free = (
            select(table.c.id)
            .where(table.c.id.in_(ids[start : start + CHUNK]))
            .with_for_update(skip_locked=True)
        )
        taken.update(
            session.scalars(delete(table).where(table.c.id.in_(free)).returning(table.c.id))
        )
    return taken


def record_provider_events(
    store: Store,
    events: Sequence[ProviderEvent],
    *,
    now: dt.datetime,
    settled: set[int] | None = None,
) -> list[ProviderEvent]:
    """Record webhook events once each; returns those that were new.

    Events accepted through the intake (``ProviderEvent.intake_ids``) are recorded in the
    same transaction that deletes their intake rows, and only if it took one of them: a
    callback is in the intake or in ``provider_events``, never both and never neither, and
    two drains racing for the same rows record each once. The intake ids this transaction
    deleted are added to ``settled``.

    One transaction: the ``provider_events`` rows (a ``(provider, provider_event_id)``
    already present inserts nothing, so a replayed webhook changes nothing) and, for each
    new event that means a touch status and names a touch, its status event, written
    with ``run_id`` ``webhook:<provider>``. See ``projection.refresh_current`` for why a receipt
    that arrives before the sender's ``sent`` is not undone by it. A receipt for a touch in
    a status no receipt may follow (``receipt_applies``) is recorded as a provider event
    only and returned with ``stale`` set.
    """
    merged: dict[tuple[str, str], ProviderEvent] = {}
    for e in events:
        key = (e.provider, e.provider_event_id)
        before = merged.get(key)
        merged[key] = (
            e
            if before is None
            else dataclasses.replace(e, intake_ids=before.intake_ids + e.intake_ids)
        )
    unique = list(merged.values())
    if not unique:
        return []
    new: list[ProviderEvent] = []
    with write(store, now) as session:
        intake_ids = sorted({i for e in unique for i in e.intake_ids})
        if intake_ids:
            taken = _take_intake(session, intake_ids)
            unique = [e for e in unique if not e.intake_ids or taken.intersection(e.intake_ids)]
            if settled is not None:
                settled.update(taken)
        insert = dialect_insert(session)
        table = ProviderEventRow.__table__
        for start in range(0, len(unique), CHUNK):
            chunk = unique[start : start + CHUNK]
            stmt = (
                insert(table)
                .on_conflict_do_nothing(index_elements=["provider", "provider_event_id"])
                .returning(table.c.provider, table.c.provider_event_id)
            )
            rows = [
                {
                    "provider": e.provider,
                    "provider_event_id": e.provider_event_id,
                    "kind": e.kind,
                    "provider_status": e.provider_status,
                    "provider_message_id": (e.provider_message_id or "")[:200] or None,
                    "touch_id": e.touch_id,
                    "attempt_id": e.attempt_id,
                    "customer_id": e.customer_id,
                    "status": e.status.value if e.status else None,
                    "payload": e.payload,
                    "occurred_at": e.occurred_at,
                    "received_at": e.received_at or now,
                }
                for e in chunk
            ]
            inserted = {tuple(r) for r in session.execute(stmt, rows)}
            new.extend(e for e in chunk if (e.provider, e.provider_event_id) in inserted)
        receipts = [e for e in new if e.status is not None and e.touch_id is not None]
        # Compare-and-set: a receipt applies only to a touch in a status a receipt may follow
        # (``RECEIPT_FROM``), read under the touches' row locks; any other is stale: kept as
        # a provider event only, and handed back marked ``stale``.
        touch_ids = [e.touch_id for e in receipts if e.touch_id is not None]
        lock_touches(session, touch_ids)
        current = current_statuses(session, touch_ids)
        stale: set[tuple[str, str]] = set()
        changes = []
        for e in receipts:
            assert e.status is not None and e.touch_id is not None
            now_at = current.get(e.touch_id)
            if now_at is None or not receipt_applies(now_at, e.attempt_id):
                stale.add((e.provider, e.provider_event_id))
                continue
            reason = DELIVERY_FAILED if e.status is TouchStatus.FAILED else e.reason
            current[e.touch_id] = (e.status.value, reason, e.attempt_id)
            changes.append(
                {
                    "touch_id": e.touch_id,
                    "attempt_id": e.attempt_id,
                    "status": e.status.value,
                    "reason": reason,
                    # touch_events keeps at most 128 characters of it (the full one is above).
                    "provider_message_id": (e.provider_message_id or "")[:128] or None,
                    "detail": {
                        "receipt": e.provider,
                        "provider_event_id": e.provider_event_id,
                        "provider_status": e.provider_status,
                        **(e.detail or {}),
                    },
                    "at": now,
                    "run_id": f"webhook:{e.provider}",
                }
            )
        insert_rows(session, TouchEvent, changes)
    if stale:
        new = [
            dataclasses.replace(e, stale=True) if (e.provider, e.provider_event_id) in stale else e
            for e in new
        ]
    return new
