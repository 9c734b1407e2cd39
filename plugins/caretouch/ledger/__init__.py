"""The touch ledger: one row per idempotency key, attempts, and an append-only status history.

Only this package writes the ledger tables (``writer.write``); everything else asks it.
It records what it is given (``records``): it neither plans nor renders nor sends.
"""

from .ledger import Ledger
from .models import Attempt, LedgerBase, ProviderEventRow, TouchEvent, TouchRow
from .records import (
    Claim,
    ClaimedAttempt,
    MessageMatch,
    PlanGuard,
    PlannedTouch,
    PlanRecord,
    ProviderEvent,
    StatusChange,
    TouchState,
)
from .statuses import WAIT_UNTIL

__all__ = [
    "WAIT_UNTIL",
    "Attempt",
    "Claim",
    "ClaimedAttempt",
    "Ledger",
    "LedgerBase",
    "MessageMatch",
    "PlanGuard",
    "PlanRecord",
    "PlannedTouch",
    "ProviderEvent",
    "ProviderEventRow",
    "StatusChange",
    "TouchEvent",
    "TouchRow",
    "TouchState",
]
