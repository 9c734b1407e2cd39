"""What the planner needs to know about the past, and the ledger answers.

The planner does not import the ledger (the ledger sits above it); it asks through this
small protocol, which ``ledger.Ledger`` implements. The values it answers with
(``PastContact``, ``DeferredTouch``) live in ``caretouch.touch_history``, below both.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Protocol

from ..rules.variants import VariantOutcomes
from ..touch_history import DeferredTouch, PastContact


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

    def last_contacts(self, customer_ids: Iterable[str], day: dt.date) -> dict[str, dt.date]:
        """Per customer, the local day of their last completed contact (a message that went
        out, a task done) on or before ``day``; customers never contacted are left out."""
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

    def variant_outcomes(self, rule_ids: Iterable[str]) -> list[VariantOutcomes]:
        """What the touches of these rules came to, per rule and variant, over the whole
        ledger (test sends left out): one aggregate query, whatever the number of rules."""
        ...
