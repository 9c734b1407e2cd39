"""Complaint touches that wait for the case to stay open (``run.stops``): a planned touch of
a rule with ``trigger.until`` (the escalation to the agent's manager) whose case was resolved
or closed since it was planned is suppressed ``case_closed`` at send time.

The decision is ``plan.cases.closed_cases``, the same one the planner applies: here against
every stopping event the store holds by now (one that arrived after the touch's send time,
while the touch waited for quiet hours or a dispatcher, stops it too).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..ledger import TouchState
from ..plan.cases import CaseWait, closed_cases
from .engine import CareEngine


def closed_case_touches(engine: CareEngine, states: Sequence[TouchState]) -> dict[int, str]:
    """The planned touches among ``states`` whose complaint case is closed: touch id -> why."""
    waits: list[CaseWait[int]] = []
    for state in states:
        if state.row.event_id is None:
            continue
        try:
            until = engine.ruleset.by_id(state.row.rule_id).trigger.until
        except KeyError:
            continue  # its rule is not loaded: prepare leaves it planned
        if until:
            waits.append(CaseWait(state.id, state.row.event_id, until))
    return closed_cases(engine.store, waits)
