"""Message templates: where they live, how they are checked, how they are rendered.

Layout: ``templates/<template_id>/<channel>.<locale>.<part>`` where the parts are
``txt`` for SMS and ``subject.txt``, ``html`` and ``txt`` for email. Templates render in Jinja's
sandbox with ``StrictUndefined`` (a missing variable is an error, never an empty string) and
HTML autoescape for ``.html`` parts, so a customer named ``<script>`` or ``{{ 7*7 }}`` is printed
literally.

Every render runs on a budget (``RenderBudget``): loop iterations and calls, the size of any
value built and of all of them together, the size of the output, and, as a last resort for
work the counts do not see, time. A template that overruns it (``range`` nested three deep,
``'x' * 10**9``) fails with a ``RenderError`` naming its file and line, like any template
error: ``care validate`` refuses it, ``care preview`` says so, and at send time only that
touch fails (recorded, not sent).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import os
import re
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from contextvars import ContextVar
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Protocol

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.loaders import split_template_path
from jinja2.sandbox import SandboxedEnvironment
from jinja2.visitor import NodeTransformer

from ..errors import ConfigurationError, Location, RenderError, ValidationError
from ..nul import NUL
from ..sms import SMS_MAX_CHARS, SmsSize, sms_size
from ..vocab import Channel, Locale

PARTS: dict[Channel, tuple[str, ...]] = {
    Channel.SMS: ("txt",),
    Channel.EMAIL: ("subject.txt", "html", "txt"),
}
_PART_NAMES = {"txt": "message text", "subject.txt": "subject", "html": "HTML part"}


class DeclaredPayload(Protocol):
    """What a template check needs of an event type (``rules.event_types.EventType``)."""

    @property
    def name(self) -> str: ...

    @property
    def fields(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class RenderedMessage:
    """A message ready for a channel: what the customer will read."""

    channel: Channel
    body: str
    subject: str | None = None
    html: str | None = None

    def content_hash(self) -> str:
        h = hashlib.sha256()
        for part in (self.channel.value, self.subject or "", self.body, self.html or ""):
            h.update(part.encode("utf-8"))
            h.update(b"\x00")
        return h.hexdigest()


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


def _format_date(ctx: Any, value: Any) -> str:
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


def _format_money(value: Any) -> str:
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


# --- the render budget ------------------------------------------------------------------

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


class _Overrun(RenderError):
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


class _Meter:
    """The budget of one render, spent as the template runs."""

    def __init__(self, budget: RenderBudget) -> None:
        self.budget = budget
        self.steps = 0
        self.work = 0
        self.deadline = budget.clock() + budget.max_seconds

    def tick(self) -> None:
        self.steps += 1
        if self.steps > self.budget.max_steps:
            raise _Overrun(f"more than {self.budget.max_steps:,} loop iterations and calls")
        if not self.steps & 255:
            self.check_time()

    def check_time(self) -> None:
        if self.budget.clock() > self.deadline:
            raise _Overrun(f"rendering took more than {self.budget.max_seconds:g} s")

    def charge(self, value: Any) -> Any:
        """Count a value the template built; refuse one too big, or too many together."""
        if isinstance(value, int) and not isinstance(value, bool):
            if value.bit_length() > MAX_INT_BITS:
                raise _Overrun(f"a number of more than {MAX_INT_BITS:,} bits")
            return value
        size = _extent(value, self.budget.max_value)
        if size > self.budget.max_value:
            raise _Overrun(f"a value of more than {self.budget.max_value:,} characters or items")
        self.work += size
        if self.work > self.budget.max_work:
            raise _Overrun(f"more than {self.budget.max_work:,} characters built in all")
        self.check_time()
        return value


_METER: ContextVar[_Meter | None] = ContextVar("caretouch_render_meter", default=None)

_PERCENT_WIDTHS = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\d+|\*)?(?:\.(\d+|\*))?")
_BRACE_WIDTHS = re.compile(r"\{[^{}]*:[^{}]*?(\d+)[^{}]*\}")


def _too_big(size: int, budget: RenderBudget, what: str) -> None:
    if size > budget.max_value:
        raise _Overrun(f"{what} would make more than {budget.max_value:,} characters or items")


def _check_int_args(args: Iterable[Any], budget: RenderBudget, what: str) -> None:
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


def _check_binop(operator: str, left: Any, right: Any, budget: RenderBudget) -> None:
    """Refuse before computing what would be too big to compute."""
    ints = [isinstance(v, int) and not isinstance(v, bool) for v in (left, right)]
    if operator == "*":
        if all(ints):
            if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise _Overrun(f"a number of more than {MAX_INT_BITS:,} bits")
        elif any(ints):
            seq, times = (right, left) if ints[0] else (left, right)
            _too_big(_extent(seq, budget.max_value) * max(times, 0), budget, "a repetition")
    elif operator == "**" and all(ints) and right > 0 and abs(left) > 1:
        if right * left.bit_length() > MAX_INT_BITS:
            raise _Overrun(f"a number of more than {MAX_INT_BITS:,} bits")
    elif operator == "%" and isinstance(left, str):
        _check_percent_format(left, right, budget)
    elif operator == "+" and not any(ints):
        _too_big(
            _extent(left, budget.max_value) + _extent(right, budget.max_value), budget, "a sum"
        )


def _check_str_method(method: Any, args: tuple[Any, ...], budget: RenderBudget) -> None:
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
    _check_int_args(args[1:], budget, f"{name}()")
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


def _budgeted_filter(name: str, func: Callable[..., Any], budget: RenderBudget) -> Any:
    """A filter that checks its arguments first and charges its result.

    The checks run even outside a render: Jinja folds filters of constants at compile time.
    """
    passes = getattr(func, "jinja_pass_arg", None)

    @functools.wraps(func)
    def filtered(*args: Any, **kwargs: Any) -> Any:
        own = args[1:] if passes is not None else args  # the context is not an argument
        _check_filter(name, tuple(own) + tuple(kwargs.values()), budget)
        meter = _METER.get()
        if meter is None:
            return func(*args, **kwargs)
        meter.tick()
        return meter.charge(func(*args, **kwargs))

    return filtered


class _Counted:
    """A loop's iterable: each iteration is a step of the render budget."""

    def __init__(self, iterable: Any) -> None:
        self.iterable = iterable

    def __iter__(self) -> Iterator[Any]:
        meter = _METER.get()
        for item in self.iterable:
            if meter is not None:
                meter.tick()
            yield item

    def __len__(self) -> int:
        return len(self.iterable)


@jinja2.pass_context  # never folded at compile time: it must run with the render
def _loop_steps(_ctx: Any, iterable: Any) -> Any:
    return _Counted(iterable)


@jinja2.pass_context
def _charged(_ctx: Any, value: Any) -> Any:
    meter = _METER.get()
    return meter.charge(value) if meter is not None else value


def _finalize(value: Any) -> Any:
    """Every ``{{ expression }}`` printed is charged."""
    meter = _METER.get()
    return meter.charge(value) if meter is not None else value


class _Metering(NodeTransformer):
    """Rewrites a template so that loops tick the budget and every piece of text it prints or
    joins is charged (static text inside a loop or macro too: it is printed over and over)."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)  # in place: For and Output nodes stay themselves
        node.iter = nodes.Filter(node.iter, "_care_loop", [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Filter(node, "_care_charge", [], [], None, None, lineno=node.lineno)

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        self.generic_visit(node)
        node.nodes = [
            nodes.Filter(child, "_care_charge", [], [], None, None, lineno=child.lineno)
            if isinstance(child, nodes.TemplateData)
            else child
            for child in node.nodes
        ]
        return node


class _MeteringCodeGenerator(CodeGenerator):
    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        _Metering().visit(node)
        super().visit_Template(node, frame)


class _BoundedLoader(jinja2.FileSystemLoader):
    """Refuses a template file bigger than the budget allows, before reading it."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        super().__init__(str(root))
        self.max_bytes = max_bytes

    def get_source(self, environment: jinja2.Environment, template: str) -> Any:
        for searchpath in self.searchpath:
            path = os.path.join(searchpath, *split_template_path(template))
            if os.path.isfile(path) and os.path.getsize(path) > self.max_bytes:
                raise jinja2.TemplateError(
                    f"{template} is {os.path.getsize(path):,} bytes; a template may have at "
                    f"most {self.max_bytes:,}"
                )
        return super().get_source(environment, template)


class _BudgetedEnvironment(SandboxedEnvironment):
    """Jinja's sandbox, with every loop, call and growing operation on the render budget."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _MeteringCodeGenerator

    def __init__(self, budget: RenderBudget, **options: Any) -> None:
        super().__init__(finalize=_finalize, **options)
        self.budget = budget

    def install_filters(self, filters: Mapping[str, Callable[..., Any]]) -> None:
        self.filters.update(filters)
        for name, func in list(self.filters.items()):
            self.filters[name] = _budgeted_filter(name, func, self.budget)
        self.filters["_care_loop"] = _loop_steps
        self.filters["_care_charge"] = _charged

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right, self.budget)
        result = super().call_binop(context, operator, left, right)
        meter = _METER.get()
        if meter is None:
            return result
        meter.tick()
        return meter.charge(result)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _check_int_args((*args, *kwargs.values()), self.budget, "a call")
        _check_str_method(obj, args, self.budget)
        meter = _METER.get()
        if meter is not None:
            meter.tick()
        result = super().call(context, obj, *args, **kwargs)
        return meter.charge(result) if meter is not None else result


class TemplateStore:
    """The templates directory, with a sandboxed Jinja environment over it."""

    def __init__(self, root: str | Path, budget: RenderBudget | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ConfigurationError(f"templates directory not found: {self.root}")
        self.budget = budget or RenderBudget()
        self.env = _BudgetedEnvironment(
            self.budget,
            loader=_BoundedLoader(self.root, self.budget.max_source),
            undefined=jinja2.StrictUndefined,
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.install_filters(
            {"longdate": jinja2.pass_context(_format_date), "money": _format_money}
        )
        self._hashes: dict[tuple[str, Channel, str], str] = {}
        self._warnings: list[ValidationError] = []

    def template_ids(self) -> list[str]:
        """The templates rules may name: every folder but the shared ones (``_layout``)."""
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("_")
        )

    def relpath(self, template_id: str, channel: Channel, locale: str, part: str) -> str:
        return f"{template_id}/{channel.value}.{locale}.{part}"

    def paths(self, template_id: str, channel: Channel, locale: str) -> list[Path]:
        return [
            self.root / self.relpath(template_id, channel, locale, part) for part in PARTS[channel]
        ]

    def template_hash(self, template_id: str, channel: Channel, locale: str) -> str:
        """Content hash of the files that make one (template, channel, locale)."""
        key = (template_id, channel, locale)
        if key not in self._hashes:
            h = hashlib.sha256()
            for path in self.paths(template_id, channel, locale):
                h.update(path.name.encode())
                h.update(b"\x00")
                h.update(path.read_bytes())
                h.update(b"\x00")
            self._hashes[key] = h.hexdigest()
        return self._hashes[key]

    def render(
        self, template_id: str, channel: Channel, locale: str, context: Mapping[str, Any]
    ) -> RenderedMessage:
        """Render one message; raises ``RenderError`` naming the template file on failure."""
        rendered: dict[str, str] = {}
        for part in PARTS[channel]:
            name = self.relpath(template_id, channel, locale, part)
            try:
                text = self._render_part(name, {**context, "locale": locale})
            except jinja2.TemplateNotFound as exc:
                # The missing file may be the template or one it extends (the layout).
                raise RenderError(f"template not found: {self.root / (exc.name or name)}") from exc
            except Exception as exc:
                # Whatever a template does wrong (an undefined variable, a filter given the
                # wrong type, the budget overrun, a macro recursing forever) fails this
                # message only, as a RenderError naming the file and, where known, the line.
                where = _template_line(exc, self.root) or (str(self.root / name), None)
                if isinstance(exc, RenderError):
                    message = exc.message
                elif isinstance(exc, jinja2.TemplateError):
                    message = str(exc)
                elif isinstance(exc, RecursionError):
                    message = "macros or loops nested too deeply (recursion)"
                else:
                    message = f"{type(exc).__name__}: {exc}"
                raise RenderError(f"cannot render: {message}", location=Location(*where)) from exc
            if NUL in text:  # a "\x00" in an expression: nothing can send or record it
                raise RenderError(
                    "cannot render: the message would contain a NUL character (\\x00)",
                    location=Location(str(self.root / name)),
                )
            rendered[part] = text.strip() if part != "html" else text
            if not text.strip():
                # Never send a blank message: an SMS with no text, an email with no subject.
                raise RenderError(
                    f"cannot render: the {_PART_NAMES[part]} is empty",
                    location=Location(str(self.root / name)),
                )
        if channel is Channel.SMS:
            return RenderedMessage(channel, body=rendered["txt"])
        subject = " ".join(rendered["subject.txt"].split())
        return RenderedMessage(
            channel, body=rendered["txt"], subject=subject, html=rendered["html"]
        )

    def _render_part(self, name: str, context: Mapping[str, Any]) -> str:
        """One template file rendered on a fresh budget; its output counted as it comes."""
        template = self.env.get_template(name)
        meter = _Meter(self.budget)
        token = _METER.set(meter)
        try:
            chunks: list[str] = []
            size = 0
            for chunk in template.generate(context):
                size += len(chunk)
                if size > self.budget.max_output:
                    raise _Overrun(f"more than {self.budget.max_output:,} characters of output")
                chunks.append(chunk)
            return "".join(chunks)
        finally:
            _METER.reset(token)

    def check(
        self,
        template_id: str,
        channel: Channel,
        locales: Iterable[str],
        provided: Mapping[str, frozenset[str] | None],
        samples: Sequence[Mapping[str, Any]] = (),
        payload: DeclaredPayload | None = None,
        sms_warn_segments: int | None = None,
    ) -> list[ValidationError]:
        """Check that the template's files exist, compile, and use only ``provided`` names.

        ``provided`` maps each top-level variable to the attributes it offers (``None``: any).
        Each of ``samples`` (contexts shaped like the real ones, e.g. an event without a
        policy) is then rendered, so that what only fails at run time (an unguarded
        ``policy.product`` when there is no policy, a filter given the wrong type) is
        caught by ``care validate`` instead of at send time. ``payload``, for an event rule,
        is its event type: ``event.payload.X`` must name one of its declared fields. An SMS
        that renders longer than providers take (``sms.SMS_MAX_CHARS``) is an error; one of
        more than ``sms_warn_segments`` segments, a warning (``take_warnings``).
        """
        errors: list[ValidationError] = []
        for locale in locales:
            complete = True
            for path in self.paths(template_id, channel, locale):
                if not path.is_file():
                    complete = False
                    errors.append(
                        ValidationError(
                            f"missing template file for channel {channel.value}, locale {locale}",
                            location=Location(str(path)),
                        )
                    )
                    continue
                found = _check_source(self.env, path, provided, payload)
                complete = complete and not found
                errors.extend(found)
            if not complete:
                continue
            longest: tuple[SmsSize, int, str] | None = None
            for sample in samples:
                described = sample.get("_sample", "typical values")
                try:
                    message = self.render(template_id, channel, locale, sample)
                except RenderError as exc:
                    errors.append(
                        ValidationError(
                            f"{exc.message} (with sample data: {described})",
                            location=exc.location,
                        )
                    )
                    break
                if channel is Channel.SMS:
                    size = sms_size(message.body)
                    if longest is None or len(message.body) > longest[1]:
                        longest = (size, len(message.body), described)
            if longest is not None:
                errors.extend(self._check_sms_size(template_id, locale, longest, sms_warn_segments))
        return errors

    def _check_sms_size(
        self,
        template_id: str,
        locale: str,
        longest: tuple[SmsSize, int, str],
        warn_segments: int | None,
    ) -> list[ValidationError]:
        """An SMS over the provider's limit is an error; one of more segments than the
        contact policy's ``sms.warn_segments`` a warning (kept in ``take_warnings``)."""
        size, chars, described = longest
        where = Location(str(self.root / self.relpath(template_id, Channel.SMS, locale, "txt")))
        if chars > SMS_MAX_CHARS:
            return [
                ValidationError(
                    f"the SMS is {chars:,} characters with sample data ({described}); "
                    f"providers take at most {SMS_MAX_CHARS:,} (Twilio)",
                    location=where,
                )
            ]
        if warn_segments is not None and size.segments > warn_segments:
            self._warnings.append(
                ValidationError(
                    f"the SMS is {size} with sample data ({described}), more than "
                    f"sms.warn_segments={warn_segments} of the contact policy: each segment "
                    "is billed",
                    location=where,
                )
            )
        return []

    def take_warnings(self) -> list[ValidationError]:
        """The warnings of the checks since the last call (SMS longer than the policy likes)."""
        warnings, self._warnings = self._warnings, []
        return warnings


def _template_line(exc: BaseException, root: Path) -> tuple[str, int | None] | None:
    """The template file and line an exception was raised at: Jinja's own errors carry them;
    for others, the innermost template frame of the traceback (Jinja rewrites it so)."""
    lineno = getattr(exc, "lineno", None)
    filename = getattr(exc, "filename", None)
    if lineno is not None and filename:
        return str(filename), lineno
    prefix = os.path.normpath(str(root)) + os.sep
    found = None
    tb = exc.__traceback__
    while tb is not None:
        file = tb.tb_frame.f_code.co_filename
        if os.path.normpath(file).startswith(prefix):
            found = (file, tb.tb_lineno)
        tb = tb.tb_next
    return found


def _payload_reads(tree: nodes.Template) -> Iterator[tuple[str, int]]:
    """``(field, line)`` for each ``event.payload.X``, ``event.payload['X']`` and
    ``event.payload.get('X')`` in a template."""

    def is_payload(node: nodes.Node) -> bool:
        return (
            isinstance(node, nodes.Getattr)
            and node.attr == "payload"
            and isinstance(node.node, nodes.Name)
            and node.node.name == "event"
        )

    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Call)):
        if isinstance(node, nodes.Getattr) and is_payload(node.node):
            if node.attr not in _DICT_METHODS:
                yield node.attr, node.lineno
        elif isinstance(node, nodes.Getitem) and is_payload(node.node):
            if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                yield node.arg.value, node.lineno
        elif (
            isinstance(node, nodes.Call)
            and isinstance(node.node, nodes.Getattr)
            and node.node.attr == "get"
            and is_payload(node.node.node)
            and node.args
            and isinstance(node.args[0], nodes.Const)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value, node.lineno


_DICT_METHODS = frozenset({"get", "items", "keys", "values"})


def _check_source(
    env: jinja2.Environment,
    path: Path,
    provided: Mapping[str, frozenset[str] | None],
    payload: DeclaredPayload | None = None,
) -> list[ValidationError]:
    from difflib import get_close_matches

    source = path.read_text(encoding="utf-8")
    if NUL in source:
        # It would be sent and recorded as it is; the store cannot hold it (nul.py).
        before = source[: source.index(NUL)]
        line, col = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        return [
            ValidationError(
                "a NUL character (\\x00) is not allowed in a template",
                location=Location(str(path), line, col),
            )
        ]
    try:
        tree = env.parse(source, filename=str(path))
        # Compiling also checks what parsing does not, such as unknown filters and tests.
        env.compile(tree, filename=str(path))
    except jinja2.TemplateSyntaxError as exc:
        return [
            ValidationError(
                f"template syntax error: {exc.message}", location=Location(str(path), exc.lineno)
            )
        ]
    errors: list[ValidationError] = []
    assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    assigned |= {m.name for m in tree.find_all(nodes.Macro)}
    assigned |= {i.target for i in tree.find_all(nodes.Import)}
    for imported in tree.find_all(nodes.FromImport):
        assigned |= {n if isinstance(n, str) else n[1] for n in imported.names}
    known = set(provided) | assigned | {"locale", "loop", "range", "true", "false", "none"}
    for name_node in tree.find_all(nodes.Name):
        if name_node.ctx != "load" or name_node.name in known:
            continue
        hint = get_close_matches(name_node.name, sorted(provided), n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        errors.append(
            ValidationError(
                f"undefined variable {name_node.name!r}{suggestion}; "
                f"available: {', '.join(sorted(provided))}",
                location=Location(str(path), name_node.lineno),
            )
        )
    for attr_node in tree.find_all(nodes.Getattr):
        target = attr_node.node
        if not isinstance(target, nodes.Name) or target.name not in provided:
            continue
        allowed = provided[target.name]
        if allowed is None or attr_node.attr in allowed:
            continue
        hint = get_close_matches(attr_node.attr, sorted(allowed), n=1)
        suggestion = f" (did you mean {target.name}.{hint[0]}?)" if hint else ""
        errors.append(
            ValidationError(
                f"undefined field {target.name}.{attr_node.attr}{suggestion}",
                location=Location(str(path), attr_node.lineno),
            )
        )
    if payload is not None and "event" in provided:
        for name, line in _payload_reads(tree):
            if name in payload.fields:
                continue
            hint = get_close_matches(name, sorted(payload.fields), n=1)
            suggestion = f" (did you mean event.payload.{hint[0]}?)" if hint else ""
            errors.append(
                ValidationError(
                    f"payload field {name!r} is not declared for {payload.name}{suggestion}; "
                    f"declared: {', '.join(payload.fields) or 'none'} (events.yaml)",
                    location=Location(str(path), line),
                )
            )
    return errors
