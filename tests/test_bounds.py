"""Bounds at the door: depth measured without parsing, no RecursionError whatever the input."""

from __future__ import annotations

import json
from typing import Any

import pytest

from caretouch.bounds import (
    STORED_MAX_DEPTH,
    Limits,
    OutOfBounds,
    Unreadable,
    check_value,
    json_depth,
    loads,
    preview,
    read_stored_json,
)
from caretouch.vocab import DeadLetterReason

SMALL = Limits(max_bytes=1000, max_depth=3, max_items=10)
ROOMY = Limits(max_bytes=8 * 1024 * 1024, max_depth=32, max_items=100_000)


def nested(depth: int) -> dict[str, Any]:
    """A dict ``depth`` levels deep, built without recursion."""
    top: dict[str, Any] = {}
    node = top
    for _ in range(depth - 1):
        node["a"] = {}
        node = node["a"]
    return top


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ('"[[[["', 0),  # brackets inside a string do not count
        ('{"a": [1, {"b": "]]]"}]}', 3),
        ('["\\"[[", ["\\\\"]]', 2),  # escaped quotes and backslashes
        ('{"k": "x\\u005b"}', 1),
        ("[" * 100_000 + "]" * 100_000, 100_000),
        ('{"a":' * 60_000 + "1" + "}" * 60_000, 60_000),
    ],
)
def test_depth_is_measured_without_parsing(text: str, depth: int) -> None:
    assert json_depth(text) == depth
    assert json_depth(text.encode()) == depth


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("[[[[1]]]]", DeadLetterReason.TOO_DEEP),
        ("[" * 100_000 + "]" * 100_000, DeadLetterReason.TOO_LARGE),
        ('"' + "x" * 2000 + '"', DeadLetterReason.TOO_LARGE),
        ("[" + ",".join(["1"] * 11) + "]", DeadLetterReason.TOO_MANY_ITEMS),
        ('{"a": [1, 2], "b": {"c": [3, 4, 5, 6, 7, 8]}}', DeadLetterReason.TOO_MANY_ITEMS),
    ],
)
def test_text_out_of_bounds_is_refused_with_its_word(text: str, word: DeadLetterReason) -> None:
    with pytest.raises(OutOfBounds) as caught:
        loads(text, SMALL, "the body")
    assert caught.value.word is word
    assert str(caught.value).startswith(f"{word.value}: the body ")


def test_a_100000_deep_document_is_refused_before_json_loads_recurses() -> None:
    # Within the byte limit: only the depth scan stands between it and json.loads.
    text = "[" * 100_000 + "]" * 100_000
    with pytest.raises(OutOfBounds) as caught:
        loads(text, ROOMY)
    assert caught.value.word is DeadLetterReason.TOO_DEEP
    assert "100,000 levels" in str(caught.value)
    with pytest.raises(RecursionError):  # what the scan saves us from
        json.loads(text)


def test_text_within_bounds_parses() -> None:
    assert loads('{"a": [1, {"b": "[[[["}]}', SMALL) == {"a": [1, {"b": "[[[["}]}
    with pytest.raises(json.JSONDecodeError):
        loads("{oops", SMALL)


@pytest.mark.parametrize(
    ("value", "word"),
    [
        (nested(4), DeadLetterReason.TOO_DEEP),
        (nested(60_000), DeadLetterReason.TOO_DEEP),
        ({"k": list(range(11))}, DeadLetterReason.TOO_MANY_ITEMS),
        ({"k": "x" * 2000}, DeadLetterReason.TOO_LARGE),
    ],
)
def test_parsed_values_are_walked_without_recursion(value: Any, word: DeadLetterReason) -> None:
    with pytest.raises(OutOfBounds) as caught:
        check_value(value, SMALL)
    assert caught.value.word is word


def test_preview_is_bounded_and_matches_json_dumps_when_short() -> None:
    value = {"b": [1, "x", None, {"d": True}], "a": 1.5, "c": "é"}
    assert preview(value, 1000) == json.dumps(value, ensure_ascii=False, sort_keys=True)
    deep = preview(nested(60_000), 100)
    assert deep.startswith('{"a": {"a": ') and deep.endswith("(truncated to 100 characters)")
    assert len(preview("y" * 10_000, 50)) < 100


def test_stored_json_too_deep_or_broken_reads_back_as_unreadable() -> None:
    ok = '{"a": ' * STORED_MAX_DEPTH + "1" + "}" * STORED_MAX_DEPTH
    assert json_depth(ok) == STORED_MAX_DEPTH and not isinstance(read_stored_json(ok), Unreadable)
    for text in (
        "[" * (STORED_MAX_DEPTH + 1) + "]" * (STORED_MAX_DEPTH + 1),
        '{"a":' * 60_000 + "1" + "}" * 60_000,
        b"{not json",
        memoryview(b"[" * 100_000),
    ):
        value = read_stored_json(text)  # type: ignore[arg-type]
        assert isinstance(value, Unreadable)
        assert value.reason.startswith("unreadable: ")
        # Read as data, it is an ordinary small dict.
        assert dict(value) == {"$unreadable": value.reason}
    assert read_stored_json(b'{"case_no": "CS-88"}') == {"case_no": "CS-88"}
