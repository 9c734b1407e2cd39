"""Calendar arithmetic of care triggers (SPEC section 5): anniversaries, 29 February, lunar dates.

Property-based tests (hypothesis) state the laws; table tests pin the examples a reader checks.
"""

from __future__ import annotations

import calendar
import datetime as dt

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from lunardate import LunarDate

from caretouch.dates import (
    LUNAR_MAX_YEAR,
    LeapDayPolicy,
    anniversary_in_year,
    anniversary_keys,
    is_leap_year,
    lunar_anniversary_keys,
    lunar_birthday_in_year,
    lunar_month_day,
    lunar_month_length,
    month_day,
)
from caretouch.errors import CareError

ONE_DAY = dt.timedelta(days=1)
POLICIES = st.sampled_from(list(LeapDayPolicy))
# Days the planner may be asked about, and origins (birth, policy start) that may be stored.
DAYS = st.dates(dt.date(1901, 1, 1), dt.date(2399, 12, 31))
ORIGINS = st.dates(dt.date(1800, 1, 1), dt.date(2399, 12, 31))
LUNAR_DAYS = st.dates(dt.date(1901, 1, 1), dt.date(2098, 12, 31))


def days_of_year(year: int) -> list[dt.date]:
    first = dt.date(year, 1, 1)
    return [first + dt.timedelta(days=i) for i in range(366 if calendar.isleap(year) else 365)]


def days_of_lunar_year(year: int) -> list[dt.date]:
    """Every Gregorian date whose lunar year is ``year``."""
    first = LunarDate(year, 1, 1).to_solar_date()
    end = LunarDate(year + 1, 1, 1).to_solar_date()
    return [first + dt.timedelta(days=i) for i in range((end - first).days)]


def lunar(d: dt.date) -> LunarDate:
    return LunarDate.from_solar_date(d.year, d.month, d.day)


def is_due(origin: dt.date, day: dt.date, policy: LeapDayPolicy) -> bool:
    """What the planner's SQL pre-filter asks: is the origin's month-day key among the day's."""
    return month_day(origin) in anniversary_keys(day, policy)


# --- Gregorian anniversaries ---------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(day=DAYS, origin=ORIGINS, policy=POLICIES)
@example(day=dt.date(2027, 2, 28), origin=dt.date(2000, 2, 29), policy=LeapDayPolicy.FEB28)
@example(day=dt.date(2027, 3, 1), origin=dt.date(2000, 2, 29), policy=LeapDayPolicy.FEB28)
@example(day=dt.date(2027, 3, 1), origin=dt.date(2000, 2, 29), policy=LeapDayPolicy.MAR1)
@example(day=dt.date(2027, 2, 28), origin=dt.date(2000, 2, 29), policy=LeapDayPolicy.MAR1)
@example(day=dt.date(2028, 2, 28), origin=dt.date(2000, 2, 29), policy=LeapDayPolicy.FEB28)
@example(day=dt.date(2028, 2, 29), origin=dt.date(2000, 2, 29), policy=LeapDayPolicy.MAR1)
@example(day=dt.date(2100, 2, 28), origin=dt.date(2000, 2, 29), policy=LeapDayPolicy.FEB28)
@example(day=dt.date(2100, 3, 1), origin=dt.date(2000, 2, 29), policy=LeapDayPolicy.MAR1)
@example(day=dt.date(2027, 3, 1), origin=dt.date(1990, 3, 1), policy=LeapDayPolicy.MAR1)
@example(day=dt.date(2027, 2, 28), origin=dt.date(1990, 2, 28), policy=LeapDayPolicy.FEB28)
def test_keys_due_on_a_day_agree_with_the_anniversary_of_the_year(
    day: dt.date, origin: dt.date, policy: LeapDayPolicy
) -> None:
    assert is_due(origin, day, policy) == (anniversary_in_year(origin, day.year, policy) == day)


@settings(max_examples=150, deadline=None)
@given(origin=ORIGINS, year=st.integers(1901, 2399), policy=POLICIES)
@example(origin=dt.date(2000, 2, 29), year=2027, policy=LeapDayPolicy.FEB28)
@example(origin=dt.date(2000, 2, 29), year=2027, policy=LeapDayPolicy.MAR1)
@example(origin=dt.date(2000, 2, 29), year=2100, policy=LeapDayPolicy.FEB28)
@example(origin=dt.date(2000, 2, 29), year=2028, policy=LeapDayPolicy.MAR1)
@example(origin=dt.date(1999, 3, 1), year=2027, policy=LeapDayPolicy.MAR1)
@example(origin=dt.date(1999, 2, 28), year=2027, policy=LeapDayPolicy.FEB28)
@example(origin=dt.date(1999, 12, 31), year=2028, policy=LeapDayPolicy.FEB28)
def test_exactly_one_anniversary_per_year(
    origin: dt.date, year: int, policy: LeapDayPolicy
) -> None:
    due = [d for d in days_of_year(year) if is_due(origin, d, policy)]
    assert due == [anniversary_in_year(origin, year, policy)]
    assert due[0].year == year


@settings(max_examples=200, deadline=None)
@given(origin=ORIGINS, year=st.integers(1901, 2399), policy=POLICIES)
def test_an_ordinary_origin_keeps_its_month_and_day(
    origin: dt.date, year: int, policy: LeapDayPolicy
) -> None:
    anniversary = anniversary_in_year(origin, year, policy)
    if (origin.month, origin.day) != (2, 29) or calendar.isleap(year):
        assert anniversary == dt.date(year, origin.month, origin.day)
    else:
        assert (
            anniversary
            == {
                LeapDayPolicy.FEB28: dt.date(year, 2, 28),
                LeapDayPolicy.MAR1: dt.date(year, 3, 1),
            }[policy]
        )


@pytest.mark.parametrize(
    ("year", "policy", "expected"),
    [
        (2027, LeapDayPolicy.FEB28, dt.date(2027, 2, 28)),
        (2027, LeapDayPolicy.MAR1, dt.date(2027, 3, 1)),
        (2028, LeapDayPolicy.FEB28, dt.date(2028, 2, 29)),
        (2028, LeapDayPolicy.MAR1, dt.date(2028, 2, 29)),
        (2100, LeapDayPolicy.FEB28, dt.date(2100, 2, 28)),  # divisible by 100: common
        (2100, LeapDayPolicy.MAR1, dt.date(2100, 3, 1)),
        (2000, LeapDayPolicy.FEB28, dt.date(2000, 2, 29)),  # divisible by 400: leap
        (2400, LeapDayPolicy.MAR1, dt.date(2400, 2, 29)),
    ],
)
def test_29_february_anniversary(year: int, policy: LeapDayPolicy, expected: dt.date) -> None:
    for origin in (dt.date(1996, 2, 29), dt.date(2000, 2, 29), dt.date(2024, 2, 29)):
        assert anniversary_in_year(origin, year, policy) == expected


@pytest.mark.parametrize(
    ("day", "policy", "keys"),
    [
        (dt.date(2027, 2, 28), LeapDayPolicy.FEB28, [228, 229]),
        (dt.date(2027, 3, 1), LeapDayPolicy.FEB28, [301]),
        (dt.date(2027, 2, 28), LeapDayPolicy.MAR1, [228]),
        (dt.date(2027, 3, 1), LeapDayPolicy.MAR1, [301, 229]),
        (dt.date(2028, 2, 28), LeapDayPolicy.FEB28, [228]),
        (dt.date(2028, 2, 29), LeapDayPolicy.FEB28, [229]),
        (dt.date(2028, 2, 29), LeapDayPolicy.MAR1, [229]),
        (dt.date(2028, 3, 1), LeapDayPolicy.MAR1, [301]),
        (dt.date(2100, 2, 28), LeapDayPolicy.FEB28, [228, 229]),
        (dt.date(2000, 2, 28), LeapDayPolicy.FEB28, [228]),
        (dt.date(2026, 11, 23), LeapDayPolicy.FEB28, [1123]),
        (dt.date(2026, 12, 31), LeapDayPolicy.MAR1, [1231]),
        (dt.date(2026, 1, 1), LeapDayPolicy.FEB28, [101]),
    ],
)
def test_anniversary_keys_table(day: dt.date, policy: LeapDayPolicy, keys: list[int]) -> None:
    assert sorted(anniversary_keys(day, policy)) == sorted(keys)


def test_anniversary_keys_default_policy_is_feb28() -> None:
    assert sorted(anniversary_keys(dt.date(2027, 2, 28))) == [228, 229]
    assert anniversary_keys(dt.date(2027, 3, 1)) == [301]


@settings(max_examples=300, deadline=None)
@given(day=st.dates(dt.date(1, 1, 1), dt.date(9999, 12, 31)))
def test_month_day_and_leap_years(day: dt.date) -> None:
    assert month_day(day) == int(day.strftime("%m%d"))
    assert is_leap_year(day.year) == calendar.isleap(day.year)


# --- lunar birthdays -----------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(day=LUNAR_DAYS)
@example(day=dt.date(2025, 7, 25))  # first day of the leap sixth month of 2025
@example(day=dt.date(2026, 4, 16))  # day 29 of a 29-day second month
@example(day=dt.date(2026, 2, 17))  # Spring Festival 2026
def test_lunar_keys_of_a_day(day: dt.date) -> None:
    ld = lunar(day)
    keys = lunar_anniversary_keys(day)
    if ld.is_leap_month:
        assert keys == []  # leap months never match
        return
    assert keys[0] == ld.month * 100 + ld.day
    assert lunar_month_day(day) == keys[0]
    length = lunar_month_length(ld.year, ld.month, False)
    if ld.day == 29 and length == 29:
        assert keys == [ld.month * 100 + 29, ld.month * 100 + 30]
    else:
        assert keys == [ld.month * 100 + ld.day]


@settings(max_examples=120, deadline=None)
@given(
    birth=st.dates(dt.date(1901, 1, 1), dt.date(2098, 12, 31)),
    year=st.integers(1901, 2097),
)
@example(birth=dt.date(1985, 4, 19), year=2026)  # lunar 2/30; 2026's second month has 29 days
@example(birth=dt.date(1985, 4, 19), year=2027)  # ... 2027's has 30
@example(birth=dt.date(2020, 6, 1), year=2021)  # born in the leap fourth month of 2020
@example(birth=dt.date(2020, 6, 1), year=2020)
@example(birth=dt.date(1990, 7, 31), year=2025)  # regular sixth month; 2025 has a leap sixth
def test_a_lunar_birthday_is_found_exactly_once_per_lunar_year(birth: dt.date, year: int) -> None:
    key = lunar_month_day(birth)
    due = [d for d in days_of_lunar_year(year) if key in lunar_anniversary_keys(d)]
    assert len(due) == 1, (birth, year, due)
    greeted = lunar(due[0])
    assert not greeted.is_leap_month
    assert greeted.month * 100 + greeted.day == key or (
        key % 100 == 30 and greeted.day == 29 and lunar_month_length(year, key // 100, False) == 29
    )
    assert due[0] == lunar_birthday_in_year(birth, year)


@settings(max_examples=150, deadline=None)
@given(year=st.integers(1901, 2098), month=st.integers(1, 12))
def test_lunar_month_length_is_where_the_next_month_starts(year: int, month: int) -> None:
    length = lunar_month_length(year, month, False)
    assert length in (29, 30)
    last = LunarDate(year, month, length, False).to_solar_date()
    assert lunar(last).day == length
    assert lunar(last + ONE_DAY).day == 1


def test_day_30_birth_falls_back_to_day_29_in_a_short_month() -> None:
    birth = dt.date(1985, 4, 19)
    assert (lunar(birth).year, lunar(birth).month, lunar(birth).day) == (1985, 2, 30)
    assert lunar_month_day(birth) == 230
    # 2026: the second lunar month has 29 days; day 29 is 16 April, 17 April is 3/1.
    assert lunar_month_length(2026, 2, False) == 29
    assert lunar_anniversary_keys(dt.date(2026, 4, 16)) == [229, 230]
    assert lunar_anniversary_keys(dt.date(2026, 4, 17)) == [301]
    assert lunar_birthday_in_year(birth, 2026) == dt.date(2026, 4, 16)
    # 2027: the second month has 30 days, so day 30 itself is the birthday and day 29 is not.
    assert lunar_month_length(2027, 2, False) == 30
    day29 = LunarDate(2027, 2, 29, False).to_solar_date()
    day30 = LunarDate(2027, 2, 30, False).to_solar_date()
    assert lunar_anniversary_keys(day29) == [229]
    assert lunar_anniversary_keys(day30) == [230]
    assert lunar_birthday_in_year(birth, 2027) == day30


def test_leap_month_days_never_match_and_the_regular_month_does() -> None:
    # 2025 has a leap sixth month (25 July - 22 August 2025).
    regular = LunarDate(2025, 6, 10, False).to_solar_date()
    leap = LunarDate(2025, 6, 10, True).to_solar_date()
    assert leap > regular and lunar(leap).is_leap_month
    assert lunar_anniversary_keys(regular) == [610]
    start = LunarDate(2025, 6, 1, True).to_solar_date()
    assert start == dt.date(2025, 7, 25)
    for i in range(29):
        assert lunar_anniversary_keys(start + dt.timedelta(days=i)) == []


def test_a_leap_month_birth_counts_as_the_regular_month() -> None:
    birth = dt.date(2020, 6, 1)  # leap fourth month of 2020, day 10
    assert lunar(birth).is_leap_month and (lunar(birth).month, lunar(birth).day) == (4, 10)
    assert lunar_month_day(birth) == 410
    assert lunar_birthday_in_year(birth, 2021) == LunarDate(2021, 4, 10, False).to_solar_date()
    assert 410 in lunar_anniversary_keys(LunarDate(2021, 4, 10, False).to_solar_date())


@pytest.mark.parametrize(
    ("day", "key"),
    [
        (dt.date(1990, 11, 23), 1007),
        (dt.date(2026, 2, 17), 101),  # Spring Festival
        (dt.date(2026, 9, 25), 815),  # Mid-Autumn
        (dt.date(2000, 2, 29), 125),
        (dt.date(1900, 1, 31), 101),  # the first day lunardate knows
        (dt.date(2099, 12, 31), 1120),
    ],
)
def test_lunar_month_day_table(day: dt.date, key: int) -> None:
    assert lunar_month_day(day) == key


@pytest.mark.parametrize("day", [dt.date(1899, 12, 31), dt.date(1850, 5, 5), dt.date(2100, 1, 1)])
def test_lunar_month_day_outside_the_range_is_an_error(day: dt.date) -> None:
    with pytest.raises(CareError, match="outside the lunar calendar's range"):
        lunar_month_day(day)
    assert lunar_anniversary_keys(day) == []


@pytest.mark.parametrize("day", [dt.date(1900, 1, 1), dt.date(1900, 1, 15), dt.date(1900, 1, 30)])
def test_first_days_of_1900_give_a_valid_lunar_key_or_an_error(day: dt.date) -> None:
    try:
        key = lunar_month_day(day)
    except CareError:
        return
    assert 1 <= key // 100 <= 12 and 1 <= key % 100 <= 30, key


def test_lunar_range_end_is_supported() -> None:
    assert lunar_anniversary_keys(dt.date(LUNAR_MAX_YEAR, 12, 31)) == [1120]
