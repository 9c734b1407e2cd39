"""What the planner asks of the past, and the ledger answers: past contacts and deferred
touches.

Plain values below both: the planner (``plan.history.History``) asks for them, the ledger
(``ledger.contacts``) reads them from its tables; neither imports the other.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PastContact:
    """A touch that has reached, or is about to reach, a customer: it counts against caps."""

    key: str
    customer_id: str
    rule_id: str
    category: str
    channel: str | None
    day: dt.date  # the customer-local day of the contact
    handled: bool  # sent (or being sent): it can no longer be moved or suppressed
    occurrence: dt.date | None = None  # the local date it was due (its idempotency key's)


@dataclass(frozen=True)
class DeferredTouch:
    """A touch an earlier plan deferred; it competes again on later days of its window."""

    key: str
    rule_id: str
    customer_id: str
    policy_id: str | None
    event_id: str | None
    occurrence: dt.date
    context: dict[str, Any]
    # Deferred at send time (a service obligation that missed its planned day): it competes
    # again from the plan of this local date on, not before.
    wait_until: dt.date | None = None
    # What the touch is about (its key's subject id): a relation touch needs it back.
    subject_id: str | None = None
    # The message variant it was given when first planned (a rule's ``variants:``), if any.
    variant: str | None = None
