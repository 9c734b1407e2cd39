"""Premiums kept in force: the date arithmetic of a policy's premium schedule.

Pure functions of dates (no store, no clock): when the next premium falls due after a payment,
whether a premium is unpaid, in its grace period or lapsed on a given local day. The store
(``store.payments``) moves ``paid_through`` and ``premium_due_date`` with them; the planner,
the send-time stops and the lead's churn figures ask them the same questions.

A policy's schedule, in the words of ``policies``:

* ``premium_due_date``: the next premium's due date (NULL: none falls due, e.g. a single
  premium paid, or a policy not on a schedule);
* ``payment_frequency``: annual, semi-annual, quarterly, monthly or single
  (``vocab.PaymentFrequency``); a missing or unknown word is taken as annual (``frequency``);
* ``paid_through``: the last day the premiums paid cover (NULL: nothing recorded).

The premium due on ``premium_due_date`` is unpaid while ``paid_through`` is missing or before
it. The grace period (``policy.yaml``'s ``premiums.grace_days``, 60 days for long-term life
policies in mainland China) runs from the due date: the policy stays in force through day
``grace_days`` after it; from the next day an unpaid premium has lapsed the policy.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Mapping
from typing import Any

from .vocab import PaymentFrequency

DEFAULT_GRACE_DAYS = 60
"""The grace period when the contact policy names none (long-term life policies in China)."""


def add_months(day: dt.date, months: int) -> dt.date:
    """The same day of the month ``months`` later (or earlier); a day the month lacks
    becomes its last (31 January + 1 month = 28 or 29 February)."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def frequency(word: str | None) -> PaymentFrequency:
    """The payment frequency a ``payment_frequency`` value stands for.

    A missing or unknown word is taken as annual: the store's importer refuses unknown words,
    so one only comes from a store written by other means, and annual is the schedule of most
    long-term policies and the one that reminds least often if it is wrong.
    """
    try:
        return PaymentFrequency(word)
    except ValueError:
        return PaymentFrequency.ANNUAL


def next_due_date(
    due: dt.date | None,
    paid_through: dt.date,
    word: str | None,
    start: dt.date | None = None,
) -> dt.date | None:
    """The premium due date once the policy is paid through ``paid_through``.

    The first date of the schedule after ``paid_through``, counting whole periods of the
    frequency from the current due date (or, without one, from the policy's ``start``); never
    before the current due date. A single premium has no next one: None. Periods are counted
    from the anchor (not one after the other), so 31 January stays the month's last day
    through February (28) and March (31).
    """
    freq = frequency(word)
    if freq is PaymentFrequency.SINGLE:
        return None
    anchor = due if due is not None else start
    if anchor is None:
        return None
    months = freq.months
    # Jump close, then step: a policy paid many years ahead needs few iterations.
    periods = max(0, ((paid_through.year - anchor.year) * 12 + paid_through.month - anchor.month))
    periods = periods // months - 1 if periods >= months else 0
    while True:
        candidate = add_months(anchor, periods * months)
        if candidate > paid_through:
            return candidate
        periods += 1


def unpaid(due: dt.date | None, paid_through: dt.date | None) -> bool:
    """Whether the premium due on ``due`` is unpaid (no due date: nothing is owed)."""
    return due is not None and (paid_through is None or paid_through < due)


def _field(policy: Mapping[str, Any] | Any, name: str) -> Any:
    return policy.get(name) if isinstance(policy, Mapping) else getattr(policy, name, None)


def in_grace(policy: Mapping[str, Any] | Any, day: dt.date, grace_days: int) -> bool:
    """Whether ``policy`` (a ``policies`` row, as a mapping or an object) is in its grace
    period on local ``day``: its premium is unpaid, was due on or before ``day``, and ``day``
    is at most ``grace_days`` days after the due date."""
    due = _field(policy, "premium_due_date")
    if not unpaid(due, _field(policy, "paid_through")):
        return False
    return due <= day <= due + dt.timedelta(days=grace_days)


def lapsed(policy: Mapping[str, Any] | Any, day: dt.date, grace_days: int) -> bool:
    """Whether ``policy``'s unpaid premium has lapsed it by local ``day``: more than
    ``grace_days`` days after the due date. A policy whose status is already lapsed or
    cancelled counts too (the insurer recorded it)."""
    if _field(policy, "status") in ("lapsed", "cancelled"):
        return _field(policy, "status") == "lapsed"
    due = _field(policy, "premium_due_date")
    if not unpaid(due, _field(policy, "paid_through")):
        return False
    return day > due + dt.timedelta(days=grace_days)


def due_date_of(occurrence: dt.date, days: int, *, before: bool) -> dt.date:
    """The due date a premium reminder planned on ``occurrence`` was about: ``days`` later
    for a ``days_before`` trigger, earlier for ``days_after``."""
    return occurrence + dt.timedelta(days=days if before else -days)
