"""The touch ledger: one row per idempotency key, attempts, and an append-only status history.

Only this package writes the ledger tables; everything else asks it.
"""

from .ledger import Claim, Ledger, StatusChange, TouchState
from .models import Attempt, LedgerBase, TouchEvent, TouchRow

__all__ = [
    "Attempt",
    "Claim",
    "Ledger",
    "LedgerBase",
    "StatusChange",
    "TouchEvent",
    "TouchRow",
    "TouchState",
]
