"""The filters templates may use besides Jinja's own: ``longdate`` and ``money``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

import jinja2

from ..errors import RenderError
from ..vocab import Locale

_MONTHS_EN = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]


def format_date(ctx: Any, value: Any) -> str:
    """``{{ policy.renewal_date | longdate }}`` in the customer's locale."""
    if value is None:
        return ""
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined: raises "... has no attribute ...", naming what is missing
    if isinstance(value, dt.datetime):
        value = value.date()
    if not isinstance(value, dt.date):
        raise RenderError(f"longdate expects a date, got {type(value).__name__}")
    locale = ctx.get("locale", Locale.EN.value)
    if str(locale).startswith("zh"):
        return f"{value.year}年{value.month}月{value.day}日"
    return f"{value.day} {_MONTHS_EN[value.month - 1]} {value.year}"


def format_money(value: Any) -> str:
    """``{{ policy.premium | money }}``: 1234.5 -> ``1,234.50``; a number or numeric text."""
    if value is None:
        return ""
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined: raises "... has no attribute ...", naming what is missing
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str)):
        raise RenderError(f"money expects a number, got {type(value).__name__}")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        # Not the value itself: it may be anything a payload carried.
        raise RenderError("money expects a number, got text that is not one") from None
    if not amount.is_finite():
        raise RenderError("money expects a finite number")
    return f"{amount:,.2f}"


FILTERS: dict[str, Callable[..., Any]] = {
    "longdate": jinja2.pass_context(format_date),
    "money": format_money,
}
