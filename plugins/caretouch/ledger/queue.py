"""The send queue: senders take planned touches in chunks, and no two take the same touch.

A sender asks for its next chunk (``WorkQueue.claim_next``). In one write transaction the
queue locks the next touches nobody else holds (PostgreSQL: ``FOR NO KEY UPDATE SKIP
LOCKED``; SQLite: its single writer, BEGIN IMMEDIATE, holds the whole database), hands their
states, read in that transaction, to the sender's ``decide`` (which checks them against
the contact policy and renders the messages), and writes what it decided: the status changes (compare-and-set) and the
claims (an attempt and a ``sending`` event each). A touch another sender holds is skipped,
never waited for and never rendered twice. The queue walks the touches in id order, once:
a touch that ``decide`` leaves planned (its time has not come) is not offered again in
the same walk, so a sender loops until the queue is empty, not until nothing is planned.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..store.db import Store, among
from ..vocab import TouchStatus
from .changes import append_in
from .claims import claim_in
from .models import REAL_TOUCH, TouchCurrent, TouchRow
from .readers import held_states, narrowed
from .records import Claim, ClaimedAttempt, StatusChange, TouchState
from .writer import write

# What a sender decides about the touches it holds (their states, read under their row
# locks): status changes and claims.
Decide = Callable[[list[TouchState]], tuple[Sequence[StatusChange], Sequence[Claim[Any]]]]


@dataclass(frozen=True)
class Due:
    """Which touches a sender takes: the planned touches of one ``day`` (or all), of one
    ``shard`` ``(k, n)`` (id modulo ``n`` is ``k``), of ``rule_ids``; or, with ``ids``, those
    touches (in that order, whatever their status: ``decide`` judges them)."""

    day: dt.date | None = None
    shard: tuple[int, int] | None = None
    rule_ids: tuple[str, ...] | None = None
    ids: tuple[int, ...] | None = None


@dataclass
class Taken:
    """One chunk taken from the queue: the touches held and decided (``ids``), those of an
    explicit list another sender held (``busy``), the stale changes, the claims won."""

    ids: list[int]
    busy: list[int] = field(default_factory=list)
    stale: list[StatusChange] = field(default_factory=list)
    won: dict[int, ClaimedAttempt] = field(default_factory=dict)


class WorkQueue:
    """One sender's walk over the queue (``claim_next`` until it returns None)."""

    def __init__(self, store: Store, due: Due, chunk: int) -> None:
        self.store = store
        self.due = due
        self.chunk = chunk
        self._after = 0  # the highest id walked (a filter), or the position in ``due.ids``

    def claim_next(self, decide: Decide, *, run_id: str, now: dt.datetime) -> Taken | None:
        """Lock the next chunk, let ``decide`` judge it and write what it decided; None
        when the walk is over. (A chunk of an explicit list may be all ``busy``.)"""
        with write(self.store, now) as session:
            taken = self._lock_next(session)
            if taken is None or not taken.ids:
                return taken
            states, highest = held_states(session, taken.ids)
            if self.due.ids is None:
                # The status the walk's query saw came from its snapshot: a touch another
                # sender claimed and committed while the query ran is unlocked again by then,
                # and locked here. ``held_states`` read it again (a new statement sees what was
                # committed; the row locks held keep it so): only those still planned count.
                states = [s for s in states if s.status is TouchStatus.PLANNED]
                taken.ids = [s.id for s in states]
                if not states:
                    return taken
            changes, claims = decide(states)
            # The touches are locked and their states were read in this transaction: the
            # claims need not lock and read them again (``held``).
            held = {s.id: (s.status, highest[s.id]) for s in states}
            taken.stale = append_in(session, changes, run_id=run_id, now=now)
            taken.won = claim_in(session, claims, run_id=run_id, now=now, held=held)
            return taken

    def _lock_next(self, session: Session) -> Taken | None:
        due = self.due
        if due.ids is not None:
            wanted = list(due.ids[self._after : self._after + self.chunk])
            if not wanted:
                return None
            self._after += len(wanted)
            held = set(
                session.scalars(
                    select(TouchRow.id)
                    .where(among(session, TouchRow.id, wanted))
                    .with_for_update(key_share=True, skip_locked=True)
                )
            )
            return Taken(
                ids=[i for i in wanted if i in held], busy=[i for i in wanted if i not in held]
            )
        query = narrowed(
            select(TouchRow.id)
            .join(TouchCurrent, TouchCurrent.touch_id == TouchRow.id)
            .where(
                TouchCurrent.status == TouchStatus.PLANNED.value,
                TouchRow.id > self._after,
                REAL_TOUCH,  # a test send is never sent to the customer
            ),
            day=due.day,
            shard=due.shard,
            rule_ids=due.rule_ids,
            joined=True,
        )
        ids = list(
            session.scalars(
                query.order_by(TouchRow.id)
                .limit(self.chunk)
                .with_for_update(key_share=True, skip_locked=True, of=TouchRow)
            )
        )
        if not ids:
            return None
        self._after = ids[-1]
        return Taken(ids=ids)  # checked again once locked (``claim_next``)
