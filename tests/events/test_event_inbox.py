"""The inbox: exactly one row per event_id, replays change nothing, refusals are kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from caretouch.errors import ValidationFailed
from caretouch.events.inbox import Incoming, dead_letters, read_csv, submit
from caretouch.store.db import Store
from caretouch.store.models import Event, EventDeadLetter, EventReceipt
from conftest import customer_row, load_rows, policy_row, utc

NOW = utc(2026, 11, 23, 3, 0)


def event(event_id: str = "E1", **overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "event_id": event_id,
        "type": "policy_purchased",
        "customer_id": "C1",
        "policy_id": "P1",
        "occurred_at": "2026-11-22T10:00:00+08:00",
        "payload": {"channel": "agent"},
    }
    raw.update(overrides)
    return {k: v for k, v in raw.items() if v is not None}


@pytest.fixture
def known(store: Store) -> Store:
    load_rows(
        store,
        customers=[customer_row("C1"), customer_row("C2", status="inactive")],
        policies=[policy_row("P1", "C1")],
    )
    return store


def count(store: Store, model: Any) -> int:
    with store.read_session() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def stored(store: Store, event_id: str) -> dict[str, Any]:
    with store.read_session() as session:
        row = session.execute(select(Event.__table__).where(Event.event_id == event_id)).one()
        return dict(row._mapping)


def test_an_event_is_accepted_once_and_a_replay_changes_nothing(known: Store) -> None:
    first = submit(known, [Incoming(event(), "s/1-0")], source="stream", now=NOW)
    assert (first.accepted, first.duplicates, first.dead) == (["E1"], [], [])
    before = stored(known, "E1")
    assert before["payload"] == {"channel": "agent"}
    assert before["occurred_at"].replace(tzinfo=None) == utc(2026, 11, 22, 2).replace(tzinfo=None)

    # The same event again, from another path, with the time written in another offset.
    again = event(occurred_at="2026-11-22T02:00:00Z")
    replay = submit(
        known, [Incoming(again, "api"), Incoming(json.dumps(again))], source="api", now=NOW
    )
    assert (replay.accepted, replay.duplicates, replay.dead) == ([], ["E1", "E1"], [])
    assert stored(known, "E1") == before
    assert (count(known, Event), count(known, EventReceipt), count(known, EventDeadLetter)) == (
        1,
        1,
        0,
    )
    with known.read_session() as session:
        receipt = session.scalars(select(EventReceipt)).one()
    assert (receipt.source, receipt.ref, receipt.planned_at) == ("stream", "s/1-0", None)


def test_a_batch_with_the_same_event_twice_records_it_once(known: Store) -> None:
    report = submit(known, [Incoming(event()), Incoming(event())], source="cli", now=NOW)
    assert (report.accepted, report.duplicates) == (["E1"], ["E1"])
    assert count(known, Event) == 1


def test_a_replay_with_different_content_is_dead_lettered_and_the_first_kept(
    known: Store,
) -> None:
    submit(known, [Incoming(event())], source="stream", now=NOW)
    changed = submit(
        known,
        [Incoming(event(occurred_at="2026-11-21T10:00:00+08:00"), "api-run-7")],
        source="api",
        now=NOW,
    )
    assert changed.accepted == []
    [(ref, reason)] = changed.dead
    assert ref == "api-run-7"
    assert "already in the inbox with different content" in reason
    assert stored(known, "E1")["occurred_at"].day == 22
    [letter] = dead_letters(known)
    assert (letter.event_id, letter.source) == ("E1", "api")
    assert json.loads(letter.raw)["occurred_at"] == "2026-11-21T10:00:00+08:00"


MALFORMED = [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "an event must be a JSON object, not list"),
    (event(event_id=None), "event_id is required"),
    (event(type=""), "type is required"),
    (event(customer_id=None), "customer_id is required"),
    (event(occurred_at=None), "occurred_at is required"),
    (event(occurred_at="2026-11-22T10:00:00"), "has no UTC offset"),
    (event(occurred_at="yesterday"), "is not an ISO 8601 timestamp"),
    (event(payload="[1, 2]"), "payload must be a JSON object"),
    (event(payload="{oops"), "payload is not valid JSON"),
    (event(payload=[1, 2]), "payload must be a JSON object"),
    (event(customer_id=["C1"]), "customer_id must be text, not list"),
    ({**event(), "customer": "C1"}, "unknown field 'customer' (did you mean 'customer_id'?)"),
    (event(occurred_at="2026-11-24T10:00:00+08:00"), "is in the future"),
    (event(event_id="x" * 129), "event_id is longer than 128 characters"),
    (event(customer_id="C404"), "unknown customer_id 'C404'"),
    (event(policy_id="P404"), "unknown policy_id 'P404'"),
]


@pytest.mark.parametrize(("raw", "reason"), MALFORMED, ids=[r for _, r in MALFORMED])
def test_a_malformed_event_is_dead_lettered_with_its_reason(
    known: Store, raw: Any, reason: str
) -> None:
    report = submit(known, [Incoming(raw, "s/9-0")], source="stream", now=NOW)
    assert report.accepted == []
    assert len(report.dead) == 1
    assert report.dead[0][0] == "s/9-0"
    assert reason in report.dead[0][1]
    assert count(known, Event) == 0
    [letter] = dead_letters(known)
    assert reason in letter.reason
    assert (letter.source, letter.ref) == ("stream", "s/9-0")
    # The raw text is kept as received, to be inspected and replayed.
    assert letter.raw == (
        raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False, sort_keys=True)
    )


def test_good_events_beside_bad_ones_are_accepted(known: Store) -> None:
    report = submit(
        known,
        [Incoming(event("E1")), Incoming("nope"), Incoming(event("E2", customer_id="C404"))],
        source="api",
        now=NOW,
    )
    assert report.accepted == ["E1"]
    assert len(report.dead) == 2
    assert (count(known, Event), count(known, EventDeadLetter)) == (1, 2)


def test_an_inactive_customers_event_is_recorded(known: Store) -> None:
    # It is a fact about the customer; the rules' audience decides whether it is acted on.
    report = submit(
        known, [Incoming(event("E9", customer_id="C2", policy_id=None))], source="cli", now=NOW
    )
    assert report.accepted == ["E9"]


def test_csv_rows_go_through_the_inbox_with_file_and_line(known: Store, tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "event_id,type,customer_id,policy_id,occurred_at,payload\n"
        "E1,policy_purchased,C1,P1,2026-11-22T10:00:00+08:00,\n"
        "E2,complaint_resolved,C1,,not-a-time,\n"
        '"E3",claim_settled,C1,P1,2026-11-22T11:00:00+08:00,"{""claim_no"": ""CL-1""}"\n',
        encoding="utf-8",
    )
    items = read_csv(path)
    report = submit(known, items, source="csv", now=NOW)
    assert report.accepted == ["E1", "E3"]
    assert report.dead == [(f"{path}:3", "occurred_at: 'not-a-time' is not an ISO 8601 timestamp")]
    assert stored(known, "E3")["payload"] == {"claim_no": "CL-1"}
    # Importing the file again changes nothing (and dead-letters the bad row again).
    again = submit(known, read_csv(path), source="csv", now=NOW)
    assert (again.accepted, again.duplicates) == ([], ["E1", "E3"])


def test_a_csv_with_a_wrong_header_is_refused_whole(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("event_id,typ,customer_id\nE1,x,C1\n", encoding="utf-8")
    with pytest.raises(ValidationFailed) as caught:
        read_csv(path)
    messages = [str(e) for e in caught.value.errors]
    assert f"{path}:1:2: unknown column 'typ' (did you mean 'type'?)" in messages
    assert f"{path}:1: missing column 'occurred_at'" in messages


# -- NUL characters: PostgreSQL cannot store them; every intake path dead-letters them --------

NUL_EVENTS: list[tuple[Any, str]] = [
    (event("N1", type="policy\x00purchased"), "type contains a NUL character"),
    (event("N2\x00"), "event_id contains a NUL character"),
    (event("N3", customer_id="C1\x00"), "customer_id contains a NUL character"),
    (event("N4", policy_id="P1\x00"), "policy_id contains a NUL character"),
    (event("N5", occurred_at="2026-11-22T10:00:00+08:00\x00"), "occurred_at contains a NUL"),
    (event("N6", payload={"note": "a\x00b"}), "payload.note contains a NUL character"),
    (event("N7", payload={"items": [{"k\x00": 1}]}), "payload.items[0].k\\x00 contains a NUL"),
    (event("N8", payload='{"note": "\\u0000"}'), "payload.note contains a NUL character"),
    (json.dumps(event("N9", type="a\x00")), "type contains a NUL character"),  # JSON text
    ('{"event_id": "N10\x00"}', "not valid JSON"),  # a raw NUL is no JSON
    (b'{"event_id": "N11", "type": "x\\u0000"}', "type contains a NUL character"),
]


def test_nul_in_any_field_is_dead_lettered_beside_good_events(known: Store) -> None:
    items = [Incoming(raw, f"s/{i}-0") for i, (raw, _) in enumerate(NUL_EVENTS)]
    report = submit(known, [*items, Incoming(event("E1"), "s/99-0")], source="stream", now=NOW)
    assert report.accepted == ["E1"]
    reasons = dict(report.dead)
    for i, (_, reason) in enumerate(NUL_EVENTS):
        assert reason in reasons[f"s/{i}-0"], (i, reasons[f"s/{i}-0"])
    letters = dead_letters(known)
    assert len(letters) == len(NUL_EVENTS)
    # Kept to be read and replayed, with each NUL written as \u0000.
    assert all("\x00" not in (letter.raw + (letter.event_id or "")) for letter in letters)
    assert {letter.event_id for letter in letters} >= {"N2\\u0000", "N1"}
    assert "\\u0000" in next(letter.raw for letter in letters if letter.ref == "s/1-0")


def test_nul_in_an_events_csv_is_a_dead_letter_with_file_and_line(
    known: Store, tmp_path: Path
) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "event_id,type,customer_id,policy_id,occurred_at,payload\n"
        "E1,policy_purchased,C1,P1,2026-11-22T10:00:00+08:00,\n"
        "E2,complaint\x00resolved,C1,,2026-11-22T10:00:00+08:00,\n",
        encoding="utf-8",
    )
    report = submit(known, read_csv(path), source="csv", now=NOW)
    assert report.accepted == ["E1"]
    assert report.dead == [
        (f"{path}:3", "type contains a NUL character (\\x00), which the store cannot hold")
    ]


# -- bounds at the door: size, depth, items, on every shape an event arrives in ----------------


def deep_object(depth: int) -> dict[str, Any]:
    top: dict[str, Any] = {}
    node = top
    for _ in range(depth - 1):
        node["a"] = {}
        node = node["a"]
    return top


def deep_text(depth: int) -> str:
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


# The payload as an object (REST asset events, DAG conf) or as JSON text (the flat stream
# form, CSV rows, ``care event emit --payload``); the event as a mapping, as JSON text (the
# stream's ``event`` field) or as bytes.
SHAPES = {
    "mapping+object": lambda payload: event(payload=payload),
    "mapping+text": lambda payload: event(payload=json.dumps(payload)),
    "json": lambda payload: json.dumps(event(payload=payload)),
    "bytes": lambda payload: json.dumps(event(payload=payload)).encode(),
}
HOSTILE = {
    # The field test's payload: 900 levels, about 6 KB.
    "deep-900": (lambda: deep_object(900), "too_deep"),
    "large": (lambda: {"note": "x" * 70_000}, "too_large"),
    "many-items": (lambda: {f"k{i}": i for i in range(1500)}, "too_many_items"),
    "many-items-in-a-list": (lambda: {"ids": list(range(1500))}, "too_many_items"),
}


@pytest.mark.parametrize("hostile", list(HOSTILE))
@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_shape_is_bounded_at_the_door(known: Store, shape: str, hostile: str) -> None:
    make, word = HOSTILE[hostile]
    raw = SHAPES[shape](make())
    assert json.loads(raw)["payload"] if shape in ("json", "bytes") else raw  # it is well formed
    report = submit(
        known, [Incoming(event("GOOD")), Incoming(raw, "s/1-0")], source="stream", now=NOW
    )
    assert report.accepted == ["GOOD"]
    [(ref, reason)] = report.dead
    assert ref == "s/1-0"
    assert reason.startswith(f"{word}: "), reason
    [letter] = dead_letters(known)
    assert letter.reason == reason
    assert len(letter.raw) <= 64 * 1024 + 100  # what is kept is bounded too
    assert count(known, Event) == 1


def test_a_900_level_payload_is_refused_before_it_can_crash_a_run(known: Store) -> None:
    text = json.dumps(event(payload=deep_object(900)))
    assert 5_000 < len(text) < 7_000  # the field test's 6 KB event: small, but 900 deep
    report = submit(known, [Incoming(text)], source="stream", now=NOW)
    assert report.dead[0][1] == (
        "too_deep: the event is nested 901 levels deep; at most 17 are accepted"
    )


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 60_000 + "]" * 60_000,  # more than the 64 KB an event may be
        "[" * 30_000 + "]" * 30_000,  # within 64 KB: refused on depth, before json.loads
        {"event_id": "D1", "payload": deep_object(60_000)},  # a parsed DAG conf or extra
        {"event_id": "D2", "payload": deep_text(20_000)},  # payload text, 40 KB
    ],
    ids=["text-60000", "text-30000", "mapping-60000", "payload-text-20000"],
)
def test_very_deep_events_are_dead_lettered_without_recursion(known: Store, raw: Any) -> None:
    report = submit(known, [Incoming(raw, "r"), Incoming(event("GOOD"))], source="api", now=NOW)
    assert report.accepted == ["GOOD"]
    [(_, reason)] = report.dead
    assert reason.split(":")[0] in ("too_deep", "too_large")
    [letter] = dead_letters(known)
    assert len(letter.raw) <= 64 * 1024 + 100


def test_a_payload_at_the_limits_is_accepted(known: Store) -> None:
    payload = deep_object(16)  # PAYLOAD_LIMITS: 16 levels
    payload.update({f"k{i}": i for i in range(1000 - 16)})
    report = submit(known, [Incoming(event(payload=payload))], source="api", now=NOW)
    assert report.accepted == ["E1"], report.dead
    assert stored(known, "E1")["payload"] == payload


@pytest.mark.parametrize(
    "raw",
    [
        # Bytes that are not UTF-8, as they are and as read with surrogateescape.
        json.dumps(event("X?")).encode().replace(b"X?", b"X\xff"),
        json.dumps(event("X?")).replace("X?", "X\udcff"),
        json.dumps(event("X1", payload={"note": "\ud800"})),  # an escaped lone surrogate
        event("X1", payload={"note": "\ud800"}),
    ],
    ids=["bytes", "surrogateescape", "json-escape", "mapping"],
)
def test_text_that_is_not_utf8_is_dead_lettered_and_kept_readable(known: Store, raw: Any) -> None:
    report = submit(known, [Incoming(raw, "r")], source="stream", now=NOW)
    [(_, reason)] = report.dead
    assert reason.startswith("not UTF-8 text")
    [letter] = dead_letters(known)
    assert '"X' in letter.raw  # stored, with U+FFFD for what could not be kept
