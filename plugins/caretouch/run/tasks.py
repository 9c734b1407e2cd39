"""Tasks for agents: what the ``agent_task`` channel's touches become in the ledger.

A task is a touch. Planned like any (caps, consent for calls: ``plan.contact``), it is
"sent" by the send step through ``channels.agent_task``, whose ``sent`` answer is recorded
as ``assigned`` (``assigned_change``): the agent is the attempt's recipient, the rendered
brief its body, and the event's detail says the kind, the due day (the touch's local send
day) and the day it expires (``task.expires_days`` after). Then one of:

- ``care task done`` (``complete_task``): the agent's outcome, compare-and-set from
  ``assigned``: reached and visited → ``done``, no_answer → ``no_answer``, declined →
  ``declined``, with who recorded it, a satisfaction score and a note;
- the daily run (``expire_tasks``): still ``assigned`` after its expiry day → ``expired``.

Every change is a status event appended through ``Ledger.append_many``: chained like the rest.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import select

from ..errors import TaskError
from ..ledger import ClaimedAttempt, Ledger, StatusChange, TouchState
from ..ledger.tasks import AGENT, DUE, EXPIRES, KIND, Task, find_task, tasks
from ..mask import mask_phone, scrub
from ..rules.loader import RuleSet
from ..store.db import Store, among
from ..store.models import Customer
from ..vocab import Channel, TaskOutcome, TouchStatus
from .engine import CareEngine

log = logging.getLogger("caretouch.run")

# The status each outcome the agent reports closes the task with.
OUTCOME_STATUS = {
    TaskOutcome.REACHED: TouchStatus.DONE,
    TaskOutcome.VISITED: TouchStatus.DONE,
    TaskOutcome.NO_ANSWER: TouchStatus.NO_ANSWER,
    TaskOutcome.DECLINED: TouchStatus.DECLINED,
}
# A task's note is a line or two for the record, not a file: longer is refused.
MAX_NOTE = 1000
MAX_BY = 200
DEFAULT_EXPIRES_DAYS = 7


def is_task(channel: str | None) -> bool:
    return channel == Channel.AGENT_TASK.value


def assigned_change(
    ruleset: RuleSet, state: TouchState, attempt: ClaimedAttempt, zone_day: dt.date
) -> StatusChange:
    """The ``assigned`` event of a task the channel took (its ``sent`` answer): the agent,
    the kind, the due day (``zone_day``: the touch's local send day) and the expiry day."""
    try:
        task = ruleset.by_id(state.row.rule_id).task
    except KeyError:
        task = None
    kind = task.kind.value if task is not None else "call"
    days = task.expires_days if task is not None else DEFAULT_EXPIRES_DAYS
    return StatusChange(
        state.id,
        TouchStatus.ASSIGNED,
        attempt_id=attempt.id,
        provider_message_id=None,
        detail={
            AGENT: attempt.recipient,
            KIND: kind,
            DUE: zone_day.isoformat(),
            EXPIRES: (zone_day + dt.timedelta(days=days)).isoformat(),
        },
        expected=TouchStatus.SENDING,
    )


def complete_task(
    store: Store,
    ref: str,
    outcome: TaskOutcome,
    *,
    by: str,
    run_id: str,
    now: dt.datetime,
    satisfaction: int | None = None,
    note: str | None = None,
) -> Task:
    """Record the agent's ``outcome`` of task ``ref`` (a touch id or key), compare-and-set
    from ``assigned``. Raises ``TaskError`` (nothing written) when there is no such task or
    it is no longer open (done, expired, recorded by someone else meanwhile)."""
    if satisfaction is not None and not 1 <= satisfaction <= 5:
        raise TaskError(f"satisfaction must be 1 to 5, not {satisfaction}")
    if note is not None and len(note) > MAX_NOTE:
        raise TaskError(f"the note is {len(note)} characters; at most {MAX_NOTE}")
    if not by.strip() or len(by) > MAX_BY:
        raise TaskError(f"who recorded it (--by) must be 1 to {MAX_BY} characters")
    touch_id, status, found = find_task(store, ref)
    if touch_id is None or not found:
        raise TaskError(f"no task {ref!r} (a task's id is its touch id: see care task list)")
    task = found[0]
    if status is not TouchStatus.ASSIGNED:
        raise TaskError(f"task {task.touch_id} is {status.value if status else '?'}, not open")
    detail: dict[str, object] = {"outcome": outcome.value, "by": by.strip()}
    if satisfaction is not None:
        detail["satisfaction"] = satisfaction
    if note:
        detail["note"] = scrub(note)  # a phone or an address in it is masked
    change = StatusChange(
        task.touch_id,
        OUTCOME_STATUS[outcome],
        outcome.value,
        attempt_id=task.attempt_id,
        detail=detail,
        expected=TouchStatus.ASSIGNED,
    )
    if Ledger(store).append_many([change], run_id=run_id, now=now):
        raise TaskError(f"task {task.touch_id} was closed by someone else meanwhile; not recorded")
    return task


def expire_tasks(engine: CareEngine, day: dt.date, *, run_id: str, now: dt.datetime) -> int:
    """Record ``expired`` for every task still ``assigned`` whose expiry day is before
    ``day``; how many. A task its agent closes meanwhile keeps the agent's outcome."""
    changes = [
        StatusChange(
            t.touch_id,
            TouchStatus.EXPIRED,
            attempt_id=t.attempt_id,
            detail={EXPIRES: t.expires.isoformat()},
            expected=TouchStatus.ASSIGNED,
        )
        for t in tasks(engine.store)
        if t.expires < day
    ]
    stale = engine.ledger.append_many(changes, run_id=run_id, now=engine.stamp(now))
    if changes:
        log.info("tasks expired: %d (%d closed meanwhile)", len(changes) - len(stale), len(stale))
    return len(changes) - len(stale)


def open_tasks(
    store: Store,
    today: dt.date,
    *,
    agent_id: str | None = None,
    due_before: dt.date | None = None,
) -> list[dict[str, Any]]:
    """The open (``assigned``) tasks, by due day: each with the customer's phone masked
    (as every listing shows it) and whether it is overdue on ``today``."""
    found = tasks(store, agent_id=agent_id, due_before=due_before)
    phones: dict[str, str | None] = {}
    ids = sorted({t.customer_id for t in found})
    with store.read_session() as session:
        for start in range(0, len(ids), 500):
            wanted = ids[start : start + 500]
            for customer_id, phone in session.execute(
                select(Customer.customer_id, Customer.phone).where(
                    among(session, Customer.customer_id, wanted)
                )
            ):
                phones[customer_id] = phone
    return [
        {
            **t.as_dict(),
            "phone": mask_phone(phones.get(t.customer_id)),
            "overdue": t.due < today,
        }
        for t in found
    ]
