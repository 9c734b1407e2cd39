"""The record of agents' daily digests (``agent_digests``) and of tasks escalated to a
manager (``task_escalations``): the claims that make each digest go out once.

A digest for (agent, day) is claimed by inserting its row, ``claimed``, before the email is
sent: ``UNIQUE (agent_id, day)`` lets one run or worker win, and every later one finds the
row. Each change after that is compare-and-set from the status and claim (``attempts``) it
was decided on, so a decision made before another run acted fails to apply instead of
overwriting. The send itself, and what to do with a claim a crash left behind, are decided
by ``run.digest``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..dates import aware_utc
from ..vocab import DigestStatus
from .db import Store, among
from .models import AgentDigest, TaskEscalation

MAX_DETAIL = 300
MAX_RUN_ID = 128


@dataclass(frozen=True)
class DigestRecord:
    """One digest's row as read: who, which day, its status and its claim."""

    id: int
    agent_id: str
    day: dt.date
    status: DigestStatus
    attempts: int
    claimed_at: dt.datetime
    run_id: str
    detail: str | None


@dataclass(frozen=True)
class Claimed:
    """The digest's row is this run's to send (``attempt``: the claim's number)."""

    record: DigestRecord
    fresh: bool  # a new row (False: a failed or crashed claim taken over)

    @property
    def attempt(self) -> int:
        return self.record.attempts


def _changed(session: Session, statement: Any) -> int:
    """How many rows an UPDATE changed (its compare-and-set applied when 1)."""
    return cast(CursorResult[Any], session.execute(statement)).rowcount


def _record(row: AgentDigest) -> DigestRecord:
    return DigestRecord(
        row.id,
        row.agent_id,
        row.day,
        DigestStatus(row.status),
        row.attempts,
        aware_utc(row.claimed_at),
        row.run_id,
        row.detail,
    )


def find(store: Store, agent_id: str, day: dt.date) -> DigestRecord | None:
    """The digest of ``agent_id`` for ``day``, if any run claimed it."""
    with store.read_session() as session:
        row = session.scalars(
            select(AgentDigest).where(AgentDigest.agent_id == agent_id, AgentDigest.day == day)
        ).first()
        return _record(row) if row is not None else None


def claim_new(
    store: Store,
    agent_id: str,
    day: dt.date,
    *,
    run_id: str,
    now: dt.datetime,
    tasks: int,
    overdue: int,
    escalations: int,
) -> Claimed | DigestRecord:
    """Insert the (agent, day) row ``claimed``: ``Claimed`` when this run inserted it, else the
    row some run inserted first (whatever its status now)."""
    try:
        with store.session() as session:
            row = AgentDigest(
                agent_id=agent_id,
                day=day,
                status=DigestStatus.CLAIMED.value,
                attempts=1,
                run_id=run_id[:MAX_RUN_ID],
                claimed_at=now,
                tasks=tasks,
                overdue=overdue,
                escalations=escalations,
            )
            session.add(row)
            session.flush()
            return Claimed(_record(row), fresh=True)
    except IntegrityError:
        found = find(store, agent_id, day)
        if found is None:  # inserted, then gone: nothing of ours deletes digests
            raise
        return found


def claim_again(
    store: Store, record: DigestRecord, *, run_id: str, now: dt.datetime
) -> Claimed | None:
    """Take over ``record`` (failed, or claimed by a run that crashed) for another try:
    compare-and-set from its status and claim number; None when another run changed it
    first."""
    with store.session() as session:
        done = _changed(
            session,
            update(AgentDigest)
            .where(
                AgentDigest.id == record.id,
                AgentDigest.status == record.status.value,
                AgentDigest.attempts == record.attempts,
            )
            .values(
                status=DigestStatus.CLAIMED.value,
                attempts=record.attempts + 1,
                run_id=run_id[:MAX_RUN_ID],
                claimed_at=now,
                settled_at=None,
            ),
        )
        if done != 1:
            return None
    again = find(store, record.agent_id, record.day)
    assert again is not None
    return Claimed(again, fresh=False)


@dataclass(frozen=True)
class Escalation:
    """A task of an agent, overdue long enough, shown in their manager's digest."""

    touch_id: int
    agent_id: str
    manager_id: str
    days_overdue: int


def settle(
    store: Store,
    record: DigestRecord,
    status: DigestStatus,
    *,
    now: dt.datetime,
    provider_message_id: str | None = None,
    detail: str | None = None,
    escalations: Sequence[Escalation] = (),
) -> tuple[bool, int]:
    """What came of the claim ``record`` (still ``claimed`` with the same claim number, else
    nothing is written): its ``status``, and for a sent digest the escalations it carried that
    were not recorded before, in the same transaction. Returns (applied, escalations newly
    recorded)."""
    with store.session() as session:
        done = _changed(
            session,
            update(AgentDigest)
            .where(
                AgentDigest.id == record.id,
                AgentDigest.status == DigestStatus.CLAIMED.value,
                AgentDigest.attempts == record.attempts,
            )
            .values(
                status=status.value,
                settled_at=now,
                provider_message_id=provider_message_id,
                detail=(detail or None) and detail[:MAX_DETAIL],
            ),
        )
        if done != 1:
            return False, 0
        recorded = 0
        if status is DigestStatus.SENT and escalations:
            ids = [e.touch_id for e in escalations]
            before = set(
                session.scalars(
                    select(TaskEscalation.touch_id).where(
                        among(session, TaskEscalation.touch_id, ids)
                    )
                )
            )
            for e in escalations:
                if e.touch_id in before:
                    continue
                session.add(
                    TaskEscalation(
                        touch_id=e.touch_id,
                        agent_id=e.agent_id,
                        manager_id=e.manager_id,
                        day=record.day,
                        days_overdue=e.days_overdue,
                        digest_id=record.id,
                        run_id=record.run_id,
                        recorded_at=now,
                    )
                )
                recorded += 1
        return True, recorded
