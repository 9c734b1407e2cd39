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

from ..ledger import TouchState
from ..premiums import due_date_of
from ..rules.model import Rule, TriggerKind
from ..rules.sql import PREMIUM_DUE_FIELD
from ..store.payments import paid_through, paid_why
from .engine import CareEngine


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
    with engine.store.read_session() as session:
        paid = paid_through(session, (policy_id for policy_id, _ in due.values()))
    stops: dict[int, str] = {}
    for touch_id, (policy_id, day) in due.items():
        why = paid_why(policy_id, paid.get(policy_id), day)
        if why is not None:
            stops[touch_id] = why
    return stops
