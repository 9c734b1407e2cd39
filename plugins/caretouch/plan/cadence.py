"""The cadence trigger (``trigger: {kind: cadence}``): a check-in for a customer whose
service level's cadence ran out, that is, who has had no completed contact (a message that
went out, a task done) for ``cadence_days`` (``rules.contact_policy.ServiceLevel``).

A customer is due on the days ``cadence_days``, ``2 x cadence_days``, ... after their last
contact: one check-in per cadence cycle, each with its own idempotency key (its day), so a
check-in held back for good (no consent, a cap with no ``defer_days`` left) is tried again a
cycle later, not every day. A customer never contacted is due once per cycle on a day fixed
by their id (``phase``), so that a new store's customers of a level are spread evenly over
its cadence instead of all falling due on its first day.

Stateless: the due days follow from the ledger's last contact and the day planned, so any
planner (and any shard) decides alike. A plan not run on a customer's due day is not made up
later in the cycle, as for every date trigger: run the missed days (`care run --date`).
"""

from __future__ import annotations

import datetime as dt
import zlib

from ..rules.contact_policy import ContactPolicy, ServiceLevel

EPOCH = dt.date(2000, 1, 1)
"""The day the cycles of customers never contacted are counted from."""


def phase(customer_id: str, cadence_days: int) -> int:
    """The day of the cycle on which a customer never contacted is due: stable (CRC-32, not
    Python's per-process string hash) and evenly spread over the customers."""
    return zlib.crc32(customer_id.encode("utf-8")) % cadence_days


def is_due(day: dt.date, cadence_days: int, last_contact: dt.date | None, customer_id: str) -> bool:
    """Whether a check-in is due on local ``day`` for a customer last contacted on
    ``last_contact`` (None: never) under a cadence of ``cadence_days``."""
    if last_contact is None:
        return (day - EPOCH).days % cadence_days == phase(customer_id, cadence_days)
    gap = (day - last_contact).days
    return gap >= cadence_days and gap % cadence_days == 0


def levels_with_cadence(policy: ContactPolicy) -> dict[str, ServiceLevel]:
    """Tier -> its service level, for the levels that have a cadence."""
    return {
        tier: level
        for level in policy.levels.values()
        if level.cadence_days
        for tier in level.tiers
    }
