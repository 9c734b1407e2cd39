"""The send queue reads and claims a chunk without reading it twice (issue 13, CPU per touch):
``readers.held_states`` reads the touches as plain rows in the queue's transaction, and
``claims.claim_in`` hands back the attempts it wrote instead of loading them. Both must
say exactly what the ledger says when asked the long way."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from caretouch.channels.outbox import OutboxTransport
from caretouch.config import CareConfig
from caretouch.dates import aware_utc
from caretouch.ledger import Claim, Ledger, StatusChange, TouchState
from caretouch.ledger.audit import verify
from caretouch.ledger.queue import Due, Taken, WorkQueue
from caretouch.ledger.readers import held_states
from caretouch.run.day import plan_and_record
from caretouch.run.engine import CareEngine, open_engine
from caretouch.run.prepare import prepare_chunk
from caretouch.run.send import CHUNK, MAX_CHUNK, chunk_for
from caretouch.store.db import Store
from caretouch.vocab import MESSAGE_CHANNELS, Channel, TouchStatus
from conftest import RULES_DIR, TEMPLATES_DIR, customer_row, load_rows, utc

DAY = dt.date(2026, 11, 23)
NOON = utc(2026, 11, 23, 12)


def _engine(store: Store, tmp_path: Path, n: int = 6) -> tuple[CareEngine, list[int]]:
    load_rows(
        store,
        customers=[
            customer_row(f"C{i}", consent_sms="true" if i % 2 else "false") for i in range(n)
        ],
    )
    engine = open_engine(
        CareConfig(store.url, RULES_DIR, TEMPLATES_DIR, tmp_path / "outbox"), store=store
    )
    return engine, plan_and_record(engine, DAY, run_id="plan", now=NOON)


def _state_fields(state: object) -> dict[str, object]:
    fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}  # type: ignore[arg-type]
    row = fields.pop("row")
    fields.update({c: getattr(row, c) for c in ("id", "touch_key", "customer_id", "template_id")})
    fields.update(channel=state.channel, send_at=state.send_at, context=state.context)  # type: ignore[attr-defined]
    return fields


def test_held_states_say_what_states_says(store: Store, tmp_path: Path) -> None:
    engine, ids = _engine(store, tmp_path)
    ledger = Ledger(store)
    # Move the touches on to different statuses: one claimed and sent, one claimed and
    # left sending, one suppressed; the rest stay planned.
    prepared = prepare_chunk(engine, ids[:2], now=NOON, capacity_use={})
    won = ledger.claim_many(prepared.claims, run_id="w", now=NOON)
    first = won[ids[0]]
    ledger.append(
        ids[0], TouchStatus.SENT, expected=TouchStatus.SENDING, attempt_id=first.id,
        run_id="w", now=NOON,
    )  # fmt: skip
    ledger.append(
        ids[2], TouchStatus.SUPPRESSED, expected=TouchStatus.PLANNED, reason="too_late",
        run_id="w", now=NOON,
    )  # fmt: skip
    order = [ids[3], ids[0], *ids[4:], ids[1], ids[2], 10**9]  # any order; one unknown id
    with store.read_session() as session:
        held, highest = held_states(session, order)
    long_way = ledger.states(order)
    assert [s.id for s in held] == [s.id for s in long_way] == order[:-1]
    assert [_state_fields(s) for s in held] == [_state_fields(s) for s in long_way]
    assert [s.status for s in held[:2]] == [TouchStatus.PLANNED, TouchStatus.SENT]
    assert highest == {**dict.fromkeys(order, 0), ids[0]: 1, ids[1]: 1}


def test_claimed_attempts_are_the_attempts_written(store: Store, tmp_path: Path) -> None:
    engine, ids = _engine(store, tmp_path)
    ledger = Ledger(store)
    # A first attempt of one touch, answered with a retry: its next claim is attempt 2.
    prepared = prepare_chunk(engine, ids[:1], now=NOON, capacity_use={})
    (first,) = ledger.claim_many(prepared.claims, run_id="w1", now=NOON).values()
    assert ledger.append_many(
        [StatusChange(ids[0], TouchStatus.PLANNED, "retry", first.id, expected=TouchStatus.SENDING)],
        run_id="w1",
        now=NOON,
    ) == []  # fmt: skip
    later = NOON + dt.timedelta(minutes=5)
    seen: list[list[int]] = []

    messages: dict[int, Any] = {}

    def decide(states: list[TouchState]) -> tuple[list[StatusChange], list[Claim[Any]]]:
        seen.append([s.id for s in states])
        ids = [s.id for s in states]
        chunk = prepare_chunk(engine, ids, now=later, capacity_use={}, states=states)
        messages.update({c.state.id: c.message for c in chunk.claims})
        return chunk.changes, chunk.claims

    taken = WorkQueue(store, Due(day=DAY), chunk=len(ids)).claim_next(
        decide, run_id="w2", now=later
    )
    assert taken is not None and seen == [sorted(ids)]
    assert sorted(taken.won) == sorted(ids)
    for touch_id, claimed in taken.won.items():
        (stored,) = [a for a in ledger.attempts(touch_id) if a.id == claimed.id]
        for name in (f.name for f in dataclasses.fields(claimed)):
            value = getattr(stored, name)
            assert getattr(claimed, name) == (aware_utc(value) if name == "created_at" else value)
        assert claimed.attempt_no == (2 if touch_id == ids[0] else 1)
        message = messages[touch_id]
        assert (stored.channel, stored.subject, stored.body, stored.html) == (
            message.channel.value,
            message.subject,
            message.body,
            message.html,
        )
        assert stored.content_hash == message.content_hash()
    assert {message.channel for message in messages.values()} == set(MESSAGE_CHANNELS)
    states = ledger.states(ids)
    assert {s.status for s in states} == {TouchStatus.SENDING}
    assert verify(store).ok


def test_a_touch_claimed_meanwhile_is_not_decided_again(store: Store, tmp_path: Path) -> None:
    """The walk's query saw the touch planned (its snapshot), but another sender claimed it
    before the chunk was locked: it is left out of the chunk (not decided, not counted)."""
    engine, ids = _engine(store, tmp_path)
    ledger = Ledger(store)
    prepared = prepare_chunk(engine, ids[1:2], now=NOON, capacity_use={})
    assert ledger.claim_many(prepared.claims, run_id="rival", now=NOON)
    queue = WorkQueue(store, Due(day=DAY), chunk=len(ids))
    lock_next = queue._lock_next

    def stale_snapshot(session: Session) -> Taken | None:
        taken = lock_next(session)
        assert taken is not None and ids[1] not in taken.ids
        return Taken(ids=sorted(ids))  # as a query from before the rival's commit saw it

    queue._lock_next = stale_snapshot  # type: ignore[method-assign]
    seen: list[list[int]] = []

    def decide(states: list[TouchState]) -> tuple[list[StatusChange], list[Claim[Any]]]:
        seen.append([s.id for s in states])
        return [], []

    taken = queue.claim_next(decide, run_id="w", now=NOON)
    assert taken is not None
    assert seen == [[i for i in sorted(ids) if i != ids[1]]]
    assert taken.ids == seen[0] and taken.won == {}


def test_chunks_follow_the_slowest_channels_rate(store: Store, tmp_path: Path) -> None:
    engine, _ = _engine(store, tmp_path, n=1)

    def with_rates(sms: float, email: float) -> int:
        transports = {}
        for channel, rate in ((Channel.SMS, sms), (Channel.EMAIL, email)):
            t = OutboxTransport(channel, tmp_path / "outbox")
            t.rate = rate
            transports[channel] = t
        return chunk_for(dataclasses.replace(engine, transports=transports))

    assert chunk_for(engine) == MAX_CHUNK == 200  # the outbox: 10,000 messages/s
    assert with_rates(10, 10_000) == CHUNK == 50  # Twilio's and SendGrid's default rate
    assert with_rates(1, 1) == CHUNK
    assert with_rates(25, 30) == 125
    assert with_rates(1e6, 100) == MAX_CHUNK
    assert chunk_for(dataclasses.replace(engine, transports={})) == CHUNK
