"""The touch ledger: one row per idempotency key, attempts, and an append-only status history.

Only this package writes the ledger tables; everything else asks it.
"""

from .ledger import (
    WAIT_UNTIL,
    Claim,
    Ledger,
    MessageMatch,
    ProviderEvent,
    StatusChange,
    TouchState,
)
from .models import Attempt, LedgerBase, ProviderEventRow, TouchEvent, TouchRow

__all__ = [
    "WAIT_UNTIL",
    "Attempt",
    "Claim",
    "Ledger",
    "LedgerBase",
    "MessageMatch",
    "ProviderEvent",
    "ProviderEventRow",
    "StatusChange",
    "TouchEvent",
    "TouchRow",
    "TouchState",
]
