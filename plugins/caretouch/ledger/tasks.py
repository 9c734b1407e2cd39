"""Reading tasks for agents: ``agent_task`` touches once assigned (``care task list``, and
the task to complete for ``care task done``).

A task is a touch on the ``agent_task`` channel; its assignment is the attempt the send step
recorded (the agent as recipient, the rendered brief as body) and the ``assigned`` status
event about it, whose detail holds the kind and the due and expiry days (``run.tasks``).
Written like every status event, through ``changes.append_many``; nothing is written here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from ..dates import aware_utc
from ..store.db import Store
from ..vocab import Channel, TouchStatus
from .codec import decode
from .models import Attempt, TouchCurrent, TouchEvent, TouchRow

# Keys of the ``assigned`` event's detail.
AGENT = "agent_id"
KIND = "kind"
DUE = "due"
EXPIRES = "expires"


@dataclass(frozen=True)
class Task:
    """One task as the ledger holds it now."""

    touch_id: int
    touch_key: str
    rule_id: str
    customer_id: str
    status: str
    agent_id: str
    kind: str
    due: dt.date
    expires: dt.date
    brief: str
    attempt_id: int
    assigned_at: dt.datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.touch_id,
            "touch_key": self.touch_key,
            "rule_id": self.rule_id,
            "customer_id": self.customer_id,
            "status": self.status,
            "agent_id": self.agent_id,
            "kind": self.kind,
            "due": self.due.isoformat(),
            "expires": self.expires.isoformat(),
            "brief": self.brief,
        }


def _assignment(session: Any, touch_ids: list[int]) -> dict[int, tuple[dict[str, Any], Any]]:
    """Each touch's latest ``assigned`` event: its detail and when it was recorded."""
    found: dict[int, tuple[dict[str, Any], Any]] = {}
    if not touch_ids:
        return found
    rows = session.execute(
        select(TouchEvent.touch_id, TouchEvent.detail, TouchEvent.at)
        .where(
            TouchEvent.touch_id.in_(touch_ids),
            TouchEvent.status == TouchStatus.ASSIGNED.value,
        )
        .order_by(TouchEvent.id)
    )
    for touch_id, detail, at in rows:
        found[touch_id] = (decode(detail) if detail else {}, at)
    return found


def tasks(
    store: Store,
    *,
    statuses: frozenset[TouchStatus] | None = None,
    agent_id: str | None = None,
    due_before: dt.date | None = None,
    touch_ids: list[int] | None = None,
) -> list[Task]:
    """The tasks ever assigned whose current status is one of ``statuses`` (default: open,
    ``assigned``), of one agent, due before a day, or among ``touch_ids``; by due day, then
    id."""
    wanted = [s.value for s in (statuses or frozenset({TouchStatus.ASSIGNED}))]
    # The attempt of the assignment: the latest attempt on the agent_task channel (a task is
    # assigned at most once; a retry after a crash makes a new attempt of the same touch).
    query = (
        select(
            TouchRow.id,
            TouchRow.touch_key,
            TouchRow.rule_id,
            TouchRow.customer_id,
            TouchCurrent.status,
            Attempt.id,
            Attempt.recipient,
            Attempt.body,
        )
        .join(TouchCurrent, TouchCurrent.touch_id == TouchRow.id)
        .join(Attempt, Attempt.touch_id == TouchRow.id)
        .where(
            TouchCurrent.status.in_(wanted),
            Attempt.channel == Channel.AGENT_TASK.value,
        )
        .order_by(TouchRow.id, Attempt.attempt_no)
    )
    if agent_id is not None:
        query = query.where(Attempt.recipient == agent_id)
    if touch_ids is not None:
        query = query.where(TouchRow.id.in_(touch_ids))
    with store.read_session() as session:
        latest: dict[int, Any] = {}
        for row in session.execute(query):
            latest[row[0]] = row  # ordered by attempt: the last one wins
        assigned = _assignment(session, list(latest))
    found: list[Task] = []
    for touch_id, (_, key, rule_id, customer_id, status, attempt_id, agent, body) in latest.items():
        if touch_id not in assigned:
            continue  # claimed, never assigned (its attempt crashed): not a task yet
        detail, at = assigned[touch_id]
        due = dt.date.fromisoformat(detail[DUE])
        if due_before is not None and due >= due_before:
            continue
        found.append(
            Task(
                touch_id=touch_id,
                touch_key=key,
                rule_id=rule_id,
                customer_id=customer_id,
                status=status,
                agent_id=str(detail.get(AGENT, agent)),
                kind=str(detail[KIND]),
                due=due,
                expires=dt.date.fromisoformat(detail[EXPIRES]),
                brief=body or "",
                attempt_id=attempt_id,
                assigned_at=aware_utc(at),
            )
        )
    found.sort(key=lambda t: (t.due, t.touch_id))
    return found


def find_task(store: Store, ref: str) -> tuple[int | None, TouchStatus | None, list[Task]]:
    """The touch ``ref`` names (its id, or its touch key), its current status, and its task
    whatever its status (empty when it was never assigned)."""
    with store.read_session() as session:
        query = select(TouchRow.id, TouchCurrent.status).join(
            TouchCurrent, TouchCurrent.touch_id == TouchRow.id
        )
        if ref.isdigit():
            query = query.where(TouchRow.id == int(ref))
        else:
            query = query.where(TouchRow.touch_key == ref)
        row = session.execute(query).first()
    if row is None:
        return None, None, []
    every = frozenset(TouchStatus)
    return row[0], TouchStatus(row[1]), tasks(store, statuses=every, touch_ids=[row[0]])
