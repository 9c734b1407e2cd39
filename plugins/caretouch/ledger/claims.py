"""Claims: the atomic step that lets exactly one worker send a touch.

Inserting attempt number ``n + 1`` (UNIQUE per touch) with the rendered content, and its
``sending`` event, in one transaction before any provider is called.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..store.db import Store
from ..vocab import TouchStatus
from . import chain
from .changes import lock_touches
from .models import Attempt, TouchEvent
from .readers import latest_status
from .records import Claim
from .sql import dialect_insert
from .writer import write


def claim_many(
    store: Store, claims: Sequence[Claim[Any]], *, run_id: str, now: dt.datetime
) -> dict[int, Attempt]:
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
    session: Session, claims: Sequence[Claim[Any]], *, run_id: str, now: dt.datetime
) -> dict[int, Attempt]:
    """``claim_many`` in the caller's write transaction (``queue.claim_next``)."""
    won: dict[int, Attempt] = {}
    if not claims:
        return won
    ids = sorted(c.state.id for c in claims)
    # Lock the touches first. Without it, under READ COMMITTED, the status and the
    # attempt count below could come from either side of a racing worker's commit, and
    # both workers would then "win" with different attempt numbers.
    lock_touches(session, ids)
    latest = latest_status(session, ids)
    numbers: dict[int, int] = dict.fromkeys(ids, 0)
    for touch_id, highest in session.execute(
        select(Attempt.touch_id, func.max(Attempt.attempt_no))
        .where(Attempt.touch_id.in_(ids))
        .group_by(Attempt.touch_id)
    ):
        numbers[touch_id] = highest or 0
    rows = []
    for c in claims:
        current = latest.get(c.state.id)
        if current and TouchStatus(current[0]) is not TouchStatus.PLANNED:
            continue
        rows.append(
            {
                "touch_id": c.state.id,
                "attempt_no": numbers[c.state.id] + 1,
                "channel": c.channel,
                "transport": c.transport,
                "recipient": c.recipient,
                "template_id": c.state.row.template_id,
                "template_hash": c.template_hash,
                "content_hash": chain.content_hash(
                    c.message.channel.value, c.message.subject, c.message.body, c.message.html
                ),
                "subject": c.message.subject,
                "body": c.message.body,
                "html": c.message.html,
                "created_at": now,
                "run_id": run_id,
            }
        )
    if not rows:
        return {}
    insert = dialect_insert(session)
    stmt = (
        insert(Attempt.__table__)
        .on_conflict_do_nothing(index_elements=["touch_id", "attempt_no"])
        .returning(Attempt.__table__.c.id, Attempt.__table__.c.touch_id)
    )
    inserted = {touch_id: attempt_id for attempt_id, touch_id in session.execute(stmt, rows)}
    if not inserted:
        return {}
    session.execute(
        TouchEvent.__table__.insert(),
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
    for attempt in session.scalars(select(Attempt).where(Attempt.id.in_(list(inserted.values())))):
        won[attempt.touch_id] = attempt
    return won
