"""Bounds at the door: the size, nesting depth and item count of JSON and JSON-like input.

Every intake (events from the Redis Stream, the Airflow REST API, a DAG run's conf, the CLI
and CSV files; the providers' webhooks) checks what it receives against ``Limits`` before it
parses or walks it, and refuses what does not fit with a reason word
(``DeadLetterReason.TOO_LARGE`` / ``TOO_DEEP`` / ``TOO_MANY_ITEMS``). Further down, json.loads,
json.dumps, the ledger's codec, the webhooks' masking and Jinja all recurse: a deep enough
document would raise ``RecursionError`` in any of them, for every run that touches it.

Depth is measured without parsing: strings are cut out and the brackets left are counted,
at C speed (regular expressions, ``itertools.accumulate``), so a 100,000-deep document costs
one linear scan of text whose size is already bounded.

What the store reads back goes through ``read_stored_json`` (the store's JSON deserializer):
a value written by an older version, or directly in SQL, that is too deep to handle safely
comes back as an ``Unreadable`` marker instead of raising in the middle of a query.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from .errors import CareError
from .vocab import DeadLetterReason

# A JSON string (escapes included); DOTALL so that an escaped newline, invalid in JSON, cannot
# make the scan skip a string the parser would read differently.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}

# What the store reads back (``read_stored_json``): deeper than any intake lets in, and far
# below what Python's recursion limit (1,000 frames) allows the code that handles it.
STORED_MAX_DEPTH = 64


@dataclass(frozen=True)
class Limits:
    """How much of something is accepted: bytes (UTF-8), nesting depth (an object or array
    is one level; a scalar alone is depth 0) and items (object keys plus array elements,
    counted over the whole document)."""

    max_bytes: int
    max_depth: int
    max_items: int


class OutOfBounds(CareError):
    """Input that exceeds its ``Limits``; ``word`` is the reason word, and the message starts
    with it (``too_deep: ...``)."""

    def __init__(self, word: DeadLetterReason, message: str) -> None:
        super().__init__(f"{word.value}: {message}")
        self.word = word


def _utf8(text: str | bytes) -> bytes:
    if isinstance(text, bytes):
        return text
    return text.encode("utf-8", "surrogatepass")


def json_depth(text: str | bytes) -> int:
    """The nesting depth of JSON ``text``, without parsing it. For text that is not valid
    JSON the figure is an upper bound up to the first error (where a parser stops)."""
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", _utf8(text)))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def check_size(size: int, limits: Limits, what: str) -> None:
    """``OutOfBounds(too_large)`` when ``size`` bytes exceed the limit."""
    if size > limits.max_bytes:
        raise OutOfBounds(
            DeadLetterReason.TOO_LARGE,
            f"{what} is {size:,} bytes; at most {limits.max_bytes:,} are accepted",
        )


def _check_depth(depth: int, limits: Limits, what: str, *, exact: bool = True) -> None:
    if depth > limits.max_depth:
        found = f"{depth:,} levels" if exact else f"more than {limits.max_depth} levels"
        raise OutOfBounds(
            DeadLetterReason.TOO_DEEP,
            f"{what} is nested {found} deep; at most {limits.max_depth} are accepted",
        )


def _too_many(limits: Limits, what: str) -> OutOfBounds:
    return OutOfBounds(
        DeadLetterReason.TOO_MANY_ITEMS,
        f"{what} has more than {limits.max_items:,} keys and list items",
    )


def check_text(text: str | bytes, limits: Limits, what: str = "the document") -> None:
    """Refuse JSON ``text`` that is too large or too deep, before anything parses it."""
    data = _utf8(text)
    check_size(len(data), limits, what)
    _check_depth(json_depth(data), limits, what)


def _walk(value: Any, limits: Limits, what: str) -> None:
    """Depth and item count of a parsed value, iteratively (no recursion whatever its depth)."""
    items = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, Mapping):
            children: Any = node.values()
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            continue
        depth += 1
        _check_depth(depth, limits, what, exact=False)
        items += len(children)
        if items > limits.max_items:
            raise _too_many(limits, what)
        stack.extend((child, depth) for child in children)


def loads(text: str | bytes, limits: Limits, what: str = "the document") -> Any:
    """``json.loads`` of ``text`` within ``limits``: ``OutOfBounds`` when it does not fit
    (checked before parsing), ``ValueError`` (``json.JSONDecodeError``) when it is not JSON."""
    check_text(text, limits, what)
    try:
        value = json.loads(text)
    except RecursionError:  # unreachable after the depth scan; kept as the last line
        raise OutOfBounds(DeadLetterReason.TOO_DEEP, f"{what} is nested too deep") from None
    _walk(value, limits, what)
    return value


def check_value(value: Any, limits: Limits, what: str = "the document") -> None:
    """Refuse an already parsed value (a DAG run's conf, an asset event's extra) that is too
    deep, has too many items or is too large as JSON; depth and items are checked first,
    iteratively, so measuring the size cannot recurse too deep."""
    _walk(value, limits, what)
    size = len(_utf8(json.dumps(value, ensure_ascii=False, default=str, skipkeys=True)))
    check_size(size, limits, what)


_END: Any = object()


def _tokens(value: Any) -> Iterator[str]:
    """``value`` as ``json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)``
    writes it, token by token, without recursion."""
    stack: list[tuple[str, Iterator[Any], bool, list[bool]]] = []
    current, fresh = value, True
    while True:
        if fresh:
            if isinstance(current, Mapping):
                yield "{"
                pairs = sorted(current.items(), key=lambda pair: str(pair[0]))
                stack.append(("}", iter(pairs), True, [True]))
            elif isinstance(current, (list, tuple)):
                yield "["
                stack.append(("]", iter(current), False, [True]))
            else:
                yield json.dumps(current, ensure_ascii=False, default=str)
            fresh = False
        if not stack:
            return
        closing, items, is_object, first = stack[-1]
        item = next(items, _END)
        if item is _END:
            stack.pop()
            yield closing
            continue
        if not first[0]:
            yield ", "
        first[0] = False
        if is_object:
            key, current = item
            yield json.dumps(str(key), ensure_ascii=False) + ": "
        else:
            current = item
        fresh = True


def preview(value: Any, limit: int) -> str:
    """At most ``limit`` characters of ``value`` as JSON with sorted keys (text as it is),
    for a dead letter's raw copy: whatever its depth or size, this never recurses."""
    if isinstance(value, bytes):
        value = value[: limit * 4].decode("utf-8", errors="replace")
    if isinstance(value, str):
        text = value
    else:
        parts: list[str] = []
        size = 0
        for token in _tokens(value):
            parts.append(token)
            size += len(token)
            if size > limit:
                break
        text = "".join(parts)
    if len(text) <= limit:
        return text
    return text[:limit] + f" ... (truncated to {limit:,} characters)"


class Unreadable(dict[str, str]):
    """A stored JSON value that cannot be read back safely, in place of the value.

    A dict (``{"$unreadable": reason}``) so that code which only reads it as data sees an
    unknown key and nothing crashes; the planner looks for it and takes the event out of the
    inbox (``event_dead_letters``) with ``reason``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__({"$unreadable": reason})
        self.reason = reason


def read_stored_json(data: str | bytes) -> Any:
    """The store's JSON deserializer: ``json.loads``, except that a value nested deeper than
    ``STORED_MAX_DEPTH`` or not JSON at all comes back as ``Unreadable`` instead of raising
    (``RecursionError``, ``JSONDecodeError``) in the middle of a query for every row."""
    if isinstance(data, memoryview):
        data = bytes(data)
    # Fast path for what the engine reads all day (ledger contexts): with this few brackets,
    # brackets in strings included, the depth cannot be over the limit.
    if isinstance(data, bytes):
        opens = data.count(b"[") + data.count(b"{")
    else:
        opens = data.count("[") + data.count("{")
    depth = json_depth(data) if opens > STORED_MAX_DEPTH else 0
    if depth > STORED_MAX_DEPTH:
        return Unreadable(
            f"{DeadLetterReason.UNREADABLE.value}: stored JSON nested {depth:,} levels deep "
            f"(at most {STORED_MAX_DEPTH} are read back)"
        )
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        return Unreadable(
            f"{DeadLetterReason.UNREADABLE.value}: stored JSON does not parse "
            f"({type(exc).__name__})"
        )
