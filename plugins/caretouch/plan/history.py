"""What the planner needs to know about the past, and the ledger answers.

The planner does not import the ledger (the ledger records plans, so it depends on the
planner); it asks through this small protocol, which ``ledger.Ledger`` implements.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol


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


class History(Protocol):
    def final_keys(self, keys: list[str]) -> dict[str, str]:
        """Keys whose fate is sealed, with the reason word to report (``already_sent``, or
        the reason a touch was suppressed with when it was due)."""
        ...

    def contacts(
        self, customer_ids: Iterable[str] | None, first: dt.date, last: dt.date
    ) -> list[PastContact]:
        """Counted touches of these customers (None: all) with a contact day in [first, last]."""
        ...

    def deferred(
        self, rule_ids: Iterable[str], first: dt.date, last: dt.date
    ) -> list[DeferredTouch]:
        """Touches of these rules now deferred (by a plan or at send time), with an
        occurrence in [first, last]."""
        ...

    def occasion_contacts(
        self, customer_ids: Iterable[str], rule_ids: Iterable[str], first: dt.date, last: dt.date
    ) -> list[PastContact]:
        """Counted touches (planned, sent, ...) of these customers and rules with an
        occurrence in [first, last]: who was, or is about to be, greeted for an occasion."""
        ...
