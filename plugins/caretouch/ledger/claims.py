"""Claims: the atomic step that lets exactly one worker send a touch.

Inserting attempt number ``n + 1`` (UNIQUE per touch) with the rendered content, and its
``sending`` event, in one transaction before any provider is called.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from ..store.db import Store
from ..vocab import TouchStatus
from . import chain
from .changes import lock_touches
from .models import Attempt, TouchEvent
from .readers import latest_status
from .records import Claim, ClaimedAttempt
from .sql import dialect_insert
from .writer import write


def claim_many(
    store: Store, claims: Sequence[Claim[Any]], *, run_id: str, now: dt.datetime
) -> dict[int, ClaimedAttempt]:
    """Atomically claim touches for one delivery attempt each; returns those won, by touch.

    Inserting attempt number ``n + 1`` is the claim: the UNIQUE (touch, attempt_no)
    constraint lets exactly one of two racing workers through (the other's insert does
    nothing), and the ``sending`` event is written in the same transaction, before any
    provider is called. A touch no longer ``planned`` is not claimed.
    """
    if not claims:
        return {}
    with write(store, now) as session:
        return claim_in(session, claims, run_id=run_id, now=now)


def claim_in(
    session: Session,
    claims: Sequence[Claim[Any]],
    *,
    run_id: str,
    now: dt.datetime,
    held: Mapping[int, tuple[TouchStatus, int]] | None = None,
) -> dict[int, ClaimedAttempt]:
    """``claim_many`` in the caller's write transaction (``queue.claim_next``).

    ``held``: the caller holds the touches' row locks and read, in this transaction, each
    one's status and highest attempt number (``readers.held_states``); they are not locked
    and read again. Every claimed touch must be in it."""
    won: dict[int, ClaimedAttempt] = {}
    if not claims:
        return won
    if held is None:
        held = _lock_and_read(session, sorted(c.state.id for c in claims))
    rows = []
    for c in claims:
        status, highest = held[c.state.id]
        if status is not TouchStatus.PLANNED:
            continue
        message = c.message
        rows.append(
            {
                "touch_id": c.state.id,
                "attempt_no": highest + 1,
                "channel": c.channel,
                "transport": c.transport,
                "recipient": c.recipient,
                "template_id": c.template_id or c.state.row.template_id,
                "template_hash": c.template_hash,
                "content_hash": chain.content_hash(
                    message.channel.value, message.subject, message.body, message.html
                ),
                "subject": message.subject,
                "body": message.body,
                "html": message.html,
                "created_at": now,
                "run_id": run_id,
            }
        )
    if not rows:
        return {}
    inserted = _insert_attempts(session, rows)
    if not inserted:
        return {}
    # Hashed as written, not read back (``chain.own_rows``).
    chain.note_inserted(
        session,
        Attempt,
        [{**row, "id": inserted[row["touch_id"]]} for row in rows if row["touch_id"] in inserted],
    )
    chain.insert_rows(
        session,
        TouchEvent,
        [
            {
                "touch_id": touch_id,
                "attempt_id": attempt_id,
                "status": TouchStatus.SENDING.value,
                "at": now,
                "run_id": run_id,
            }
            for touch_id, attempt_id in inserted.items()
        ],
    )
    # The attempts as written (not read back: the values are the ones just inserted).
    for row in rows:
        attempt_id = inserted.get(row["touch_id"])
        if attempt_id is not None:
            won[row["touch_id"]] = ClaimedAttempt(
                id=attempt_id,
                touch_id=row["touch_id"],
                attempt_no=row["attempt_no"],
                channel=row["channel"],
                transport=row["transport"],
                recipient=row["recipient"],
                template_id=row["template_id"],
                template_hash=row["template_hash"],
                content_hash=row["content_hash"],
                created_at=now,
                run_id=run_id,
            )
    return won


# The attempt columns a claim writes, in the order of the PostgreSQL arrays below.
_COLUMNS = (
    "touch_id",
    "attempt_no",
    "channel",
    "transport",
    "recipient",
    "template_id",
    "template_hash",
    "content_hash",
    "subject",
    "body",
    "html",
    "created_at",
    "run_id",
)


def _insert_attempts(session: Session, rows: list[dict[str, Any]]) -> dict[int, int]:
    """Insert the attempts unless their (touch, attempt_no) exists; the ids of those
    inserted, by touch.

    On PostgreSQL one ``INSERT … SELECT FROM unnest(arrays)``: one array per column, so the
    statement's text is the same for any number of rows (a multi-row VALUES of a chunk's
    thousands of parameters was parsed anew by the driver for every chunk)."""
    table = Attempt.__table__
    insert = dialect_insert(session)
    if session.get_bind().dialect.name != "postgresql":
        stmt = (
            insert(table)
            .on_conflict_do_nothing(index_elements=["touch_id", "attempt_no"])
            .returning(table.c.id, table.c.touch_id)
        )
        return {touch_id: attempt_id for attempt_id, touch_id in session.execute(stmt, rows)}
    arrays = [
        bindparam(f"claim_{name}", [r[name] for r in rows], type_=ARRAY(table.c[name].type))
        for name in _COLUMNS
    ]
    source = func.unnest(*arrays).table_valued(*_COLUMNS).render_derived()
    stmt = (
        insert(table)
        .from_select(list(_COLUMNS), select(*(source.c[name] for name in _COLUMNS)))
        .on_conflict_do_nothing(index_elements=["touch_id", "attempt_no"])
        .returning(table.c.id, table.c.touch_id)
    )
    return {touch_id: attempt_id for attempt_id, touch_id in session.execute(stmt)}


def _lock_and_read(session: Session, ids: list[int]) -> dict[int, tuple[TouchStatus, int]]:
    """Each touch's status and highest attempt number, read under its row lock.

    Lock the touches first. Without it, under READ COMMITTED, the status and the attempt
    count could come from either side of a racing worker's commit, and both workers would
    then "win" with different attempt numbers."""
    lock_touches(session, ids)
    latest = latest_status(session, ids)
    found: dict[int, tuple[TouchStatus, int]] = {
        i: (TouchStatus(latest[i][0]) if i in latest else TouchStatus.PLANNED, 0) for i in ids
    }
    for touch_id, highest in session.execute(
        select(Attempt.touch_id, func.max(Attempt.attempt_no))
        .where(Attempt.touch_id.in_(ids))
        .group_by(Attempt.touch_id)
    ):
        found[touch_id] = (found[touch_id][0], highest or 0)
    return found
