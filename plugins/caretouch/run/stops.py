"""Touches no longer owed when their time comes: a premium reminder whose premium was paid
(``paid``), a complaint's escalation whose case was resolved or closed (``case_closed``).

Checked at send time for every planned touch of a chunk (``prepare.prepare_chunk``), so that
a touch planned days ahead (an event's delayed touch, a reminder planned before the payment
arrived) stops as soon as what it was about is settled. Final: recorded as suppressed with
the reason and an explanation, never sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..ledger import TouchState
from ..vocab import SuppressionReason
from .case_stops import closed_case_touches
from .engine import CareEngine
from .premium_stops import paid_touches


@dataclass(frozen=True)
class Stop:
    """Why one planned touch is no longer owed."""

    reason: SuppressionReason
    why: str


def stopped(engine: CareEngine, states: Sequence[TouchState]) -> dict[int, Stop]:
    """The touches among ``states`` (planned ones) no longer owed, by touch id."""
    found: dict[int, Stop] = {}
    for check, reason in (
        (paid_touches, SuppressionReason.PAID),
        (closed_case_touches, SuppressionReason.CASE_CLOSED),
    ):
        for touch_id, why in check(engine, states).items():
            found.setdefault(touch_id, Stop(reason, why))
    return found
