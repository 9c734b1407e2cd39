"""Touches that wait for a case to stay open (a rule's ``trigger.until``): the complaint's
escalation stops once the case is resolved or closed.

A touch of an event rule with ``until: [complaint_resolved, complaint_closed]`` is no longer
owed when the store holds an event of one of those types for the same customer with the same
payload ``case_id`` as the event that triggered it, occurring from that event on (an older
case that reused the number does not count). Checked when the touch is planned (``plan_day``
suppresses it ``case_closed``, against the events occurring before its send time) and again
when it is about to go out (``run.case_stops``, against every such event the store holds by
then), from this one function.

The store is read by the customers and event types concerned (``events`` is indexed by
customer): the few lifecycle events of a chunk's customers, not the whole table.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import select

from ..dates import aware_utc
from ..store.db import Store, among
from ..store.models import Event

# The payload field a case is named by (events.yaml declares it on every lifecycle type).
CASE_FIELD = "case_id"
_CHUNK = 500

Ref = TypeVar("Ref", bound=Hashable)


@dataclass(frozen=True)
class CaseWait(Generic[Ref]):
    """One touch that is owed only while its case is open.

    ``ref`` names the touch to the caller (its key when planning, its id when sending);
    ``event_id`` is the event that triggered it; ``until`` the rule's stopping types;
    ``before``: only stopping events occurring before this instant count (the touch's send
    time, when planning); None: every one the store holds."""

    ref: Ref
    event_id: str
    until: tuple[str, ...]
    before: dt.datetime | None = None


@dataclass(frozen=True)
class _Stored:
    event_id: str
    type: str
    customer_id: str
    occurred_at: dt.datetime
    case_id: str | None


def case_of(payload: Any) -> str | None:
    """The case a lifecycle event's payload names (``case_id``), None when none."""
    # An unreadable payload (``bounds.Unreadable``) or one without a case names no case.
    if isinstance(payload, dict) and payload.get(CASE_FIELD) not in (None, ""):
        return str(payload[CASE_FIELD])
    return None


def _read(session: Any, where: Any) -> list[_Stored]:
    rows = session.execute(
        select(Event.event_id, Event.type, Event.customer_id, Event.occurred_at, Event.payload)
        .where(*where)
        .order_by(Event.occurred_at, Event.id)
    )
    return [
        _Stored(r.event_id, r.type, r.customer_id, aware_utc(r.occurred_at), case_of(r.payload))
        for r in rows
    ]


def closed_cases(store: Store, waits: Sequence[CaseWait[Ref]]) -> dict[Ref, str]:
    """The touches among ``waits`` whose case is closed: ref -> why (for the record)."""
    if not waits:
        return {}
    triggers: dict[str, _Stored] = {}
    event_ids = sorted({w.event_id for w in waits})
    with store.read_session() as session:
        for start in range(0, len(event_ids), _CHUNK):
            chunk = event_ids[start : start + _CHUNK]
            for row in _read(session, [among(session, Event.event_id, chunk)]):
                triggers[row.event_id] = row
        customers = sorted({t.customer_id for t in triggers.values() if t.case_id})
        types = sorted({name for w in waits for name in w.until})
        closings: dict[tuple[str, str], list[_Stored]] = defaultdict(list)
        for start in range(0, len(customers), _CHUNK):
            chunk = customers[start : start + _CHUNK]
            for row in _read(
                session, [among(session, Event.customer_id, chunk), Event.type.in_(types)]
            ):
                if row.case_id:
                    closings[(row.customer_id, row.case_id)].append(row)
    found: dict[Ref, str] = {}
    for wait in waits:
        trigger = triggers.get(wait.event_id)
        if trigger is None or trigger.case_id is None:
            continue  # no case to wait for (the event is gone, or names none): it goes
        stop = _first_stop(wait, trigger, closings[(trigger.customer_id, trigger.case_id)])
        if stop is not None:
            found[wait.ref] = (
                f"case {trigger.case_id} is no longer open: {stop.type} {stop.event_id} at "
                f"{stop.occurred_at:%Y-%m-%d %H:%M}Z (trigger.until: {', '.join(wait.until)})"
            )
    return found


def _first_stop(
    wait: CaseWait[Any], trigger: _Stored, candidates: Iterable[_Stored]
) -> _Stored | None:
    for row in candidates:  # in order of occurrence
        if row.type not in wait.until or row.event_id == trigger.event_id:
            continue
        if row.occurred_at < trigger.occurred_at:
            continue  # before this receipt: an earlier round of the case, or another case
        if wait.before is not None and row.occurred_at >= wait.before:
            continue
        return row
    return None
