"""Premium reminders whose premium was paid (``run.stops``).

A touch of a rule triggered on ``policy.premium_due_date`` is about one premium: the one due
on its occurrence plus the offset (``days_before``) or minus it (``days_after``), the offset
being the frozen context's ``days``. When its policy is paid through that due date by the time
the touch would go out (a ``premium_paid`` event, a store import), the touch is no longer owed:
it is suppressed ``paid``, final, never sent. Planning asks the same question of the store
(``rules.sql.premium_unpaid``); this catches the payments that arrive after planning.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import select

from ..ledger import TouchState
from ..premiums import due_date_of
from ..rules.model import Rule, TriggerKind
from ..rules.sql import PREMIUM_DUE_FIELD
from ..store.db import among
from ..store.models import InsurancePolicy
from .engine import CareEngine

_CHUNK = 500


def _premium_rule(engine: CareEngine, rule_id: str) -> Rule | None:
    try:
        rule = engine.ruleset.by_id(rule_id)
    except KeyError:
        return None  # not loaded: the send step holds it back for that reason
    trig = rule.trigger
    if trig.field is None or trig.field.name != PREMIUM_DUE_FIELD:
        return None
    if trig.kind not in (TriggerKind.DAYS_BEFORE, TriggerKind.DAYS_AFTER):
        return None
    return rule


def _due_date(state: TouchState, rule: Rule) -> dt.date | None:
    """The due date of the premium the touch is about, from its occurrence and offset (or,
    lacking the offset, the due date its frozen context recorded)."""
    context = state.context
    days = context.get("days")
    if isinstance(days, int):
        before = rule.trigger.kind is TriggerKind.DAYS_BEFORE
        return due_date_of(state.row.occurrence, days, before=before)
    recorded = (context.get("policy") or {}).get("premium_due_date")
    if isinstance(recorded, dt.date):
        return recorded
    try:
        return dt.date.fromisoformat(str(recorded))
    except ValueError:
        return None


def paid_touches(engine: CareEngine, states: Sequence[TouchState]) -> dict[int, str]:
    """The planned premium reminders among ``states`` whose premium is paid: touch id -> why."""
    due: dict[int, tuple[str, dt.date]] = {}
    for state in states:
        rule = _premium_rule(engine, state.row.rule_id)
        if rule is None or not state.row.policy_id:
            continue
        day = _due_date(state, rule)
        if day is not None:
            due[state.id] = (state.row.policy_id, day)
    if not due:
        return {}
    policy_ids = sorted({policy_id for policy_id, _ in due.values()})
    paid: dict[str, dt.date | None] = {}
    table = InsurancePolicy.__table__
    with engine.store.read_session() as session:
        for start in range(0, len(policy_ids), _CHUNK):
            wanted = policy_ids[start : start + _CHUNK]
            stmt = select(table.c.policy_id, table.c.paid_through).where(
                among(session, table.c.policy_id, wanted)
            )
            paid.update({r.policy_id: r.paid_through for r in session.execute(stmt)})
    stops: dict[int, str] = {}
    for touch_id, (policy_id, day) in due.items():
        through = paid.get(policy_id)
        if through is not None and through >= day:
            stops[touch_id] = (
                f"policy {policy_id} is paid through {through}: the premium due {day} "
                "this reminder is about is paid"
            )
    return stops
