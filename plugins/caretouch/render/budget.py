"""The render budget: what rendering one part of one message may cost, and the meter that
spends it as a template runs.

Loop iterations and calls, the size of any value built and of all of them together, the
size of the output, and, as a last resort for work the counts do not see, time. The checks
here refuse an operation *before* it computes what would be too big to compute (``'x' *
10**9``, ``2 ** 10 ** 10``, ``center(10**9)``); the meter charges what was built.
"""

from __future__ import annotations

import functools
import re
import time
import types
from collections.abc import Callable, Iterable, Sized
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup

from ..errors import RenderError

# Integers may grow to this many bits (Python prints at most 4,300 digits anyway): without
# a bound, ``2 ** 10 ** 10`` alone would run for hours.
MAX_INT_BITS = 64 * 1024


@dataclass(frozen=True)
class RenderBudget:
    """What rendering one part of one message may cost. Real templates use a fraction of it."""

    max_output: int = 200_000  # characters of one rendered part
    max_value: int = 200_000  # characters (or items) of any one value built while rendering
    max_work: int = 2_000_000  # characters (and items) of all the values built, in all
    max_steps: int = 100_000  # loop iterations and calls
    max_seconds: float = 2.0  # a last resort, for work the counts above do not see
    max_source: int = 64 * 1024  # bytes of one template file
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)


class Overrun(RenderError):
    """A render went over its budget."""

    def __init__(self, what: str) -> None:
        super().__init__(f"over the render budget: {what}")


def _extent(value: Any, limit: int) -> int:
    """Characters and items in ``value``, nested ones included; stops counting past ``limit``."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        total = len(value)
        items = value.items() if isinstance(value, dict) else value
        for item in items:
            if total > limit:
                break
            if isinstance(item, (str, list, tuple, set, frozenset, dict)):
                total += _extent(item, limit - total)
        return total
    return 0


# Exact types whose extent is their length (``_extent`` of a ``str``; ``Markup`` is one).
_TEXT = frozenset({str, Markup})


class Meter:
    """The budget of one render, spent as the template runs."""

    def __init__(self, budget: RenderBudget) -> None:
        self.budget = budget
        self.steps = 0
        self.work = 0
        self.deadline = budget.clock() + budget.max_seconds

    def tick(self) -> None:
        self.steps += 1
        if self.steps > self.budget.max_steps:
            raise Overrun(f"more than {self.budget.max_steps:,} loop iterations and calls")
        if not self.steps & 255:
            self.check_time()

    def check_time(self) -> None:
        if self.budget.clock() > self.deadline:
            raise Overrun(f"rendering took more than {self.budget.max_seconds:g} s")

    def charge(self, value: Any) -> Any:
        """Count a value the template built; refuse one too big, or too many together."""
        if type(value) in _TEXT:  # most of what a template prints: its size is its length
            size = len(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            if value.bit_length() > MAX_INT_BITS:
                raise Overrun(f"a number of more than {MAX_INT_BITS:,} bits")
            return value
        else:
            size = _extent(value, self.budget.max_value)
        if size > self.budget.max_value:
            raise Overrun(f"a value of more than {self.budget.max_value:,} characters or items")
        self.work += size
        if self.work > self.budget.max_work:
            raise Overrun(f"more than {self.budget.max_work:,} characters built in all")
        self.check_time()
        return value


METER: ContextVar[Meter | None] = ContextVar("caretouch_render_meter", default=None)

_PERCENT_WIDTHS = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\d+|\*)?(?:\.(\d+|\*))?")
_BRACE_WIDTHS = re.compile(r"\{[^{}]*:[^{}]*?(\d+)[^{}]*\}")


def _too_big(size: int, budget: RenderBudget, what: str) -> None:
    if size > budget.max_value:
        raise Overrun(f"{what} would make more than {budget.max_value:,} characters or items")


def check_int_args(args: Iterable[Any], budget: RenderBudget, what: str) -> None:
    # Widths and counts (center(10**9), indent, wordwrap, ljust, zfill...) bound the output.
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool):
            _too_big(abs(arg), budget, what)


def _check_percent_format(fmt: str, args: Any, budget: RenderBudget) -> None:
    widths = [int(n) for m in _PERCENT_WIDTHS.finditer(fmt) for n in m.groups() if n and n != "*"]
    if "*" in fmt:
        values = args if isinstance(args, tuple) else (args,)
        widths += [abs(v) for v in values if isinstance(v, int) and not isinstance(v, bool)]
    _too_big(max(widths, default=0), budget, "a format width")


def check_binop(operator: str, left: Any, right: Any, budget: RenderBudget) -> None:
    """Refuse before computing what would be too big to compute."""
    ints = [isinstance(v, int) and not isinstance(v, bool) for v in (left, right)]
    if operator == "*":
        if all(ints):
            if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise Overrun(f"a number of more than {MAX_INT_BITS:,} bits")
        elif any(ints):
            seq, times = (right, left) if ints[0] else (left, right)
            _too_big(_extent(seq, budget.max_value) * max(times, 0), budget, "a repetition")
    elif operator == "**" and all(ints) and right > 0 and abs(left) > 1:
        if right * left.bit_length() > MAX_INT_BITS:
            raise Overrun(f"a number of more than {MAX_INT_BITS:,} bits")
    elif operator == "%" and isinstance(left, str):
        _check_percent_format(left, right, budget)
    elif operator == "+" and not any(ints):
        _too_big(
            _extent(left, budget.max_value) + _extent(right, budget.max_value), budget, "a sum"
        )


def check_str_method(method: Any, args: tuple[Any, ...], budget: RenderBudget) -> None:
    target = getattr(method, "__wrapped__", method)  # the sandbox wraps str.format
    if not isinstance(target, types.BuiltinMethodType) or not isinstance(
        getattr(target, "__self__", None), str
    ):
        return
    text = str(target.__self__)
    name = target.__name__
    if name in ("format", "format_map"):
        widths = [int(m.group(1)) for m in _BRACE_WIDTHS.finditer(text)]
        _too_big(max(widths, default=0), budget, "a format width")
    elif name == "replace" and len(args) >= 2:
        _check_replace(text, str(args[0]), str(args[1]), budget)
    elif name == "join" and args and hasattr(args[0], "__len__"):
        _too_big(len(text) * len(args[0]), budget, "a join")


def _check_replace(text: str, old: str, new: str, budget: RenderBudget) -> None:
    count = len(text) + 1 if not old else text.count(old)
    _too_big(len(text) + count * max(len(new) - len(old), 0), budget, "a replace")


def _check_filter(name: str, args: tuple[Any, ...], budget: RenderBudget) -> None:
    check_int_args(args[1:], budget, f"{name}()")
    value = args[0] if args else None
    if name == "replace" and len(args) >= 3:
        _check_replace(str(value), str(args[1]), str(args[2]), budget)
    elif name == "format" and isinstance(value, str):
        _check_percent_format(value, tuple(args[1:]), budget)
    elif name == "join" and len(args) >= 2 and isinstance(value, Sized):
        _too_big(len(str(args[1])) * len(value), budget, "a join")
    elif name == "indent" and len(args) >= 2 and isinstance(value, str):
        width = args[1] if isinstance(args[1], int) else len(str(args[1]))
        _too_big(len(value) + (value.count("\n") + 1) * width, budget, "indent()")


def budgeted_filter(name: str, func: Callable[..., Any], budget: RenderBudget) -> Any:
    """A filter that checks its arguments first and charges its result.

    The checks run even outside a render: Jinja folds filters of constants at compile time.
    """
    passes = getattr(func, "jinja_pass_arg", None)

    @functools.wraps(func)
    def filtered(*args: Any, **kwargs: Any) -> Any:
        own = args[1:] if passes is not None else args  # the context is not an argument
        _check_filter(name, tuple(own) + tuple(kwargs.values()), budget)
        meter = METER.get()
        if meter is None:
            return func(*args, **kwargs)
        meter.tick()
        return meter.charge(func(*args, **kwargs))

    return filtered
