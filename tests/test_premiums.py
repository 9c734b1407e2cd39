"""The premium schedule's date arithmetic (``caretouch.premiums``): next due dates, unpaid,
in grace, lapsed. Tables for the cases named in docs/rules.md, properties for the rest."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caretouch.premiums import (
    DEFAULT_GRACE_DAYS,
    add_months,
    due_date_of,
    frequency,
    in_grace,
    lapsed,
    next_due_date,
    unpaid,
)
from caretouch.vocab import PaymentFrequency

D = dt.date


@pytest.mark.parametrize(
    ("due", "paid_through", "word", "start", "expected"),
    [
        # Paid up to the day before the next due date: the one after it falls due.
        (D(2026, 12, 23), D(2027, 12, 22), "annual", None, D(2027, 12, 23)),
        # Paid for the period only: due a period later.
        (D(2026, 12, 23), D(2027, 6, 22), "semi-annual", None, D(2027, 6, 23)),
        (D(2026, 12, 23), D(2027, 3, 22), "quarterly", None, D(2027, 3, 23)),
        (D(2026, 12, 23), D(2027, 1, 22), "monthly", None, D(2027, 1, 23)),
        # Several periods at once, on the anchor's day of the month.
        (D(2026, 1, 31), D(2026, 4, 30), "monthly", None, D(2026, 5, 31)),
        # The month's last day stays the last day through February (no drift).
        (D(2026, 1, 31), D(2026, 1, 31), "monthly", None, D(2026, 2, 28)),
        (D(2028, 1, 31), D(2028, 1, 31), "monthly", None, D(2028, 2, 29)),
        # A payment that does not reach the due date leaves it where it is (never earlier).
        (D(2026, 12, 23), D(2026, 5, 1), "annual", None, D(2026, 12, 23)),
        # Paid through the due date itself: that premium is paid, the next is due.
        (D(2026, 12, 23), D(2026, 12, 23), "annual", None, D(2027, 12, 23)),
        # A single premium: nothing falls due after it.
        (D(2026, 12, 23), D(2099, 1, 1), "single", None, None),
        # No frequency recorded, or a word outside the vocabulary: annual.
        (D(2026, 12, 23), D(2027, 12, 22), None, None, D(2027, 12, 23)),
        (D(2026, 12, 23), D(2027, 12, 22), "fortnightly", None, D(2027, 12, 23)),
        # No due date yet: the schedule from the start date.
        (None, D(2026, 12, 1), "annual", D(2020, 3, 15), D(2027, 3, 15)),
        (None, D(2026, 12, 1), "annual", None, None),
        # 29 February anchors: 28 February in common years, 29 again in leap years.
        (D(2024, 2, 29), D(2025, 3, 1), "annual", None, D(2026, 2, 28)),
        (D(2024, 2, 29), D(2027, 3, 1), "annual", None, D(2028, 2, 29)),
    ],
)
def test_next_due_date(
    due: dt.date | None,
    paid_through: dt.date,
    word: str | None,
    start: dt.date | None,
    expected: dt.date | None,
) -> None:
    assert next_due_date(due, paid_through, word, start) == expected


def test_unknown_or_missing_frequency_is_annual() -> None:
    assert frequency(None) is PaymentFrequency.ANNUAL
    assert frequency("weekly") is PaymentFrequency.ANNUAL
    assert frequency("quarterly") is PaymentFrequency.QUARTERLY


@pytest.mark.parametrize(
    ("policy", "day", "grace", "expected_in_grace", "expected_lapsed"),
    [
        # Paid up to the day before the due date, before it: nothing owed yet.
        ({"premium_due_date": D(2026, 12, 1), "paid_through": D(2026, 11, 30)}, D(2026, 11, 23), 60, False, False),
        # Unpaid on the due date, and on the last day of grace.
        ({"premium_due_date": D(2026, 12, 1), "paid_through": D(2026, 11, 30)}, D(2026, 12, 1), 60, True, False),
        ({"premium_due_date": D(2026, 12, 1), "paid_through": None}, D(2027, 1, 30), 60, True, False),
        # The day after grace: lapsed.
        ({"premium_due_date": D(2026, 12, 1), "paid_through": None}, D(2027, 1, 31), 60, False, True),
        # Paid: neither, however late the day.
        ({"premium_due_date": D(2026, 12, 1), "paid_through": D(2027, 11, 30)}, D(2027, 3, 1), 60, False, False),
        # No due date (a single premium paid): neither.
        ({"premium_due_date": None, "paid_through": None}, D(2027, 3, 1), 60, False, False),
        # A grace period of its own.
        ({"premium_due_date": D(2026, 12, 1), "paid_through": None}, D(2026, 12, 31), 30, True, False),
        ({"premium_due_date": D(2026, 12, 1), "paid_through": None}, D(2027, 1, 1), 30, False, True),
        # The insurer's own status counts.
        ({"status": "lapsed", "premium_due_date": None}, D(2027, 1, 1), 60, False, True),
        ({"status": "cancelled", "premium_due_date": D(2026, 1, 1)}, D(2027, 1, 1), 60, False, False),
    ],
)  # fmt: skip
def test_in_grace_and_lapsed(
    policy: dict, day: dt.date, grace: int, expected_in_grace: bool, expected_lapsed: bool
) -> None:
    assert in_grace(policy, day, grace) is expected_in_grace
    assert lapsed(policy, day, grace) is expected_lapsed


def test_a_policy_object_is_read_like_a_row() -> None:
    class Policy:
        premium_due_date = D(2026, 12, 1)
        paid_through = None
        status = "active"

    assert in_grace(Policy(), D(2026, 12, 10), DEFAULT_GRACE_DAYS)
    assert not lapsed(Policy(), D(2026, 12, 10), DEFAULT_GRACE_DAYS)


def test_due_date_of_a_reminder() -> None:
    assert due_date_of(D(2026, 11, 23), 30, before=True) == D(2026, 12, 23)
    assert due_date_of(D(2026, 11, 23), 7, before=False) == D(2026, 11, 16)


dates = st.dates(min_value=D(1990, 1, 1), max_value=D(2090, 12, 31))
words = st.sampled_from([f.value for f in PaymentFrequency if f is not PaymentFrequency.SINGLE])


@given(due=dates, paid=dates, word=words)
def test_next_due_date_is_after_payment_on_schedule_and_never_earlier(
    due: dt.date, paid: dt.date, word: str
) -> None:
    months = PaymentFrequency(word).months
    nxt = next_due_date(due, paid, word)
    assert nxt is not None
    assert nxt > paid and nxt >= due
    # On the schedule: a whole number of periods from the due date, on its day of the month
    # where the month has it.
    periods = (nxt.year - due.year) * 12 + nxt.month - due.month
    assert periods % months == 0
    assert nxt == add_months(due, periods)
    # The first such date: one period earlier is not after the payment (or before the due).
    if periods:
        assert add_months(due, periods - months) <= paid


@given(due=dates, paid=dates, later=st.integers(min_value=0, max_value=4000), word=words)
def test_a_later_payment_never_moves_the_due_date_back(
    due: dt.date, paid: dt.date, later: int, word: str
) -> None:
    first = next_due_date(due, paid, word)
    assert first is not None
    second = next_due_date(first, paid + dt.timedelta(days=later), word)
    assert second is not None and second >= first


@given(day=dates, months=st.integers(min_value=-1200, max_value=1200))
def test_add_months_keeps_the_day_or_takes_the_months_last(day: dt.date, months: int) -> None:
    moved = add_months(day, months)
    assert (moved.year * 12 + moved.month) - (day.year * 12 + day.month) == months
    assert moved.day == day.day or (moved.day < day.day and (moved + dt.timedelta(days=1)).day == 1)


@given(due=dates, day=dates, grace=st.integers(min_value=0, max_value=366))
def test_an_unpaid_premium_is_in_grace_or_lapsed_from_its_due_date(
    due: dt.date, day: dt.date, grace: int
) -> None:
    policy = {"premium_due_date": due, "paid_through": due - dt.timedelta(days=1)}
    assert unpaid(due, policy["paid_through"])
    assert in_grace(policy, day, grace) + lapsed(policy, day, grace) == (day >= due)
