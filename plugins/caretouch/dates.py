"""Calendar arithmetic for care triggers: anniversaries, 29 February, lunar birthdays.

Everything here is pure and takes its dates as arguments; "today" is never read from a clock.
A month-day is encoded as the integer ``month * 100 + day`` (``229`` is 29 February); the store
keeps these keys in indexed columns so that "whose birthday is today" is an index lookup.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from enum import Enum
from functools import lru_cache

from lunardate import LunarDate

from .errors import CareError

LUNAR_MAX_YEAR = 2099
# lunardate's tables start at lunar 1900-01-01, which is Gregorian 1900-01-31.
LUNAR_FIRST_DAY = dt.date(1900, 1, 31)
LUNAR_LAST_DAY = dt.date(LUNAR_MAX_YEAR, 12, 31)


def aware_utc(value: dt.datetime) -> dt.datetime:
    """``value`` with UTC attached when it is naive: SQLite returns naive datetimes, and the
    store and the ledger always write UTC."""
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value


def in_lunar_range(d: dt.date) -> bool:
    """True when the lunar calendar tables cover ``d``."""
    return LUNAR_FIRST_DAY <= d <= LUNAR_LAST_DAY


class LeapDayPolicy(str, Enum):
    """When a 29 February anniversary falls in a year without one."""

    FEB28 = "feb28"
    MAR1 = "mar1"


def month_day(d: dt.date) -> int:
    """The month-day key of a date, e.g. 2000-02-29 -> 229."""
    return d.month * 100 + d.day


def is_leap_year(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def anniversary_keys(day: dt.date, leap_day: LeapDayPolicy = LeapDayPolicy.FEB28) -> list[int]:
    """Month-day keys whose anniversary falls on ``day``.

    In a year without 29 February, a 29 February date is celebrated on 28 February (default)
    or on 1 March.
    """
    keys = [month_day(day)]
    if not is_leap_year(day.year):
        if leap_day is LeapDayPolicy.FEB28 and (day.month, day.day) == (2, 28):
            keys.append(229)
        if leap_day is LeapDayPolicy.MAR1 and (day.month, day.day) == (3, 1):
            keys.append(229)
    return keys


def anniversary_in_year(origin: dt.date, year: int, leap_day: LeapDayPolicy) -> dt.date:
    """The date on which ``origin``'s anniversary falls in ``year``."""
    if (origin.month, origin.day) == (2, 29) and not is_leap_year(year):
        return dt.date(year, 2, 28) if leap_day is LeapDayPolicy.FEB28 else dt.date(year, 3, 1)
    return origin.replace(year=year)


def lunar_month_day(d: dt.date) -> int:
    """The lunar month-day key of a Gregorian date; a leap month counts as the regular month."""
    if not in_lunar_range(d):
        raise CareError(
            f"{d.isoformat()} is outside the lunar calendar's range "
            f"({LUNAR_FIRST_DAY} to {LUNAR_LAST_DAY})"
        )
    lunar = LunarDate.from_solar_date(d.year, d.month, d.day)
    return lunar.month * 100 + lunar.day


def lunar_month_length(year: int, month: int, leap: bool) -> int:
    """29 or 30: the number of days of a lunar month."""
    try:
        LunarDate(year, month, 30, leap).to_solar_date()
    except ValueError:
        return 29
    return 30


def lunar_anniversary_keys(day: dt.date) -> list[int]:
    """Lunar month-day keys whose lunar birthday falls on Gregorian ``day``.

    A lunar birthday is celebrated in the regular (not the leap) month of that number; a
    birthday on day 30 is celebrated on day 29 when the month has only 29 days.
    """
    if not in_lunar_range(day):
        return []
    lunar = LunarDate.from_solar_date(day.year, day.month, day.day)
    if lunar.is_leap_month:
        return []
    keys = [lunar.month * 100 + lunar.day]
    if lunar.day == 29 and lunar_month_length(lunar.year, lunar.month, False) == 29:
        keys.append(lunar.month * 100 + 30)
    return keys


def lunar_birthday_in_year(birth: dt.date, lunar_year: int) -> dt.date:
    """The Gregorian date of the lunar birthday of ``birth`` in lunar year ``lunar_year``."""
    key = lunar_month_day(birth)
    month, day = divmod(key, 100)
    day = min(day, lunar_month_length(lunar_year, month, False))
    return LunarDate(lunar_year, month, day, False).to_solar_date()


def lunar_years_between(origin: dt.date, day: dt.date) -> int:
    """Lunar years from ``origin`` to ``day`` (the age at a lunar birthday on ``day``)."""
    first = LunarDate.from_solar_date(origin.year, origin.month, origin.day)
    second = LunarDate.from_solar_date(day.year, day.month, day.day)
    return int(second.year - first.year)


# -- festivals -------------------------------------------------------------------------------
# Named days a `calendar` trigger may use. Lunar ones are computed from the lunar calendar,
# so they move every Gregorian year.


def _lunar(month: int, day: int) -> Callable[[int], dt.date | None]:
    def on(year: int) -> dt.date | None:
        try:
            return LunarDate(year, month, day, False).to_solar_date()
        except ValueError:
            return None

    return on


def _lunar_new_years_eve(year: int) -> dt.date | None:
    # The last day of the twelfth lunar month of the previous lunar year.
    new_year = _lunar(1, 1)(year)
    return new_year - dt.timedelta(days=1) if new_year else None


HOLIDAYS: dict[str, Callable[[int], dt.date | None]] = {
    "new_year": lambda year: dt.date(year, 1, 1),
    "lunar_new_years_eve": _lunar_new_years_eve,
    "spring_festival": _lunar(1, 1),
    "lantern_festival": _lunar(1, 15),
    "dragon_boat": _lunar(5, 5),
    "mid_autumn": _lunar(8, 15),
    "national_day": lambda year: dt.date(year, 10, 1),
}


def holidays_on(day: dt.date) -> list[str]:
    """The named festivals that fall on ``day`` (in Gregorian year ``day.year``)."""
    return list(_holidays_on(day))


@lru_cache(maxsize=4096)
def _holidays_on(day: dt.date) -> tuple[str, ...]:
    # Cached: the planner asks once per candidate row of a calendar rule (a festival or
    # campaign day can have a million), and the lunar conversions are slow.
    found = []
    for name, when in HOLIDAYS.items():
        try:
            if when(day.year) == day:
                found.append(name)
        except (ValueError, IndexError):  # outside the lunar tables
            continue
    return tuple(found)


def public_holiday_cn(day: dt.date) -> tuple[bool | None, str | None]:
    """Whether ``day`` is a statutory public holiday in mainland China, and its name.

    ``(None, why)`` when the ``chinese-calendar`` data does not cover the year: the State
    Council publishes each year's schedule only late in the year before.
    """
    import chinese_calendar

    try:
        is_holiday, name = chinese_calendar.get_holiday_detail(day)
    except NotImplementedError as exc:
        return None, str(exc)
    return bool(is_holiday and name), name if is_holiday and name else None
