"""Status changes are compare-and-set (docs/ledger.md): a decision computed from a status the
touch has since left is never written over the newer one.

The race of issue 13, forced deterministically with two OS processes (spawned, not threads):
process A prepares a chunk while touch T is ``planned`` (a send-time suppression,
``too_late``), process B then claims, sends and records T as ``sent``, and only then does A
write its prepared changes. On main's code (before compare-and-set) A's ``append_many``
inserted the suppression unconditionally, so T ended ``suppressed/too_late`` after being
sent, A's report counted it as suppressed, and ``care audit verify`` still passed: the
first assertion below (T is ``sent``) failed there. Now A's change is stale: skipped,
handed back, and counted as skipped.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import multiprocessing as mp
import queue
from pathlib import Path
from typing import Any

import pytest
from ledger_processes import open_at, where

from caretouch.channels.base import SendResult
from caretouch.ledger import Ledger, StatusChange
from caretouch.ledger.audit import verify
from caretouch.run.day import plan_and_record
from caretouch.run.prepare import prepare_chunk
from caretouch.run.records import planned_touches
from caretouch.run.recover import SENDING_LEASE, recover_in_flight
from caretouch.run.send import send_touches
from caretouch.store.db import Store
from caretouch.vocab import Channel, Decision, Outcome, SuppressionReason, TouchStatus
from conftest import RULES_DIR, TEMPLATES_DIR, load_rows, utc

DAY = dt.date(2026, 11, 23)
NOON = utc(2026, 11, 23, 12)
# Two days later: the sending window is long gone, so a send-time check says too_late.
LATE = utc(2026, 11, 25, 4)
WAIT = 120  # seconds any process waits for the other before giving up


def _stale_preparer(
    url: str,
    schema: str | None,
    workdir: str,
    touch_id: int,
    prepared_done: Any,
    sent_done: Any,
    out: Any,
) -> None:
    """Process A: decide about T while it is planned, wait until B has sent it, then write."""
    engine = open_at(url, schema, workdir)
    prepared = prepare_chunk(engine, [touch_id], now=LATE, capacity_use={})
    out.put(("prepared", [(c.status.value, c.reason) for c in prepared.changes]))
    prepared_done.set()
    if not sent_done.wait(WAIT):
        out.put(("error", "B never sent"))
        return
    # What a sender did with a prepared chunk before the send queue held the chunk's
    # touches while deciding: write the changes, claim the rest.
    for change in engine.ledger.append_many(prepared.changes, run_id="A", now=LATE):
        prepared.report.stale(change.status, prepared.keys[change.touch_id])
    won = engine.ledger.claim_many(prepared.claims, run_id="A", now=LATE)
    prepared.report.skipped += len(prepared.claims) - len(won)
    out.put(("report", prepared.report.as_dict()))


def _sender(
    url: str,
    schema: str | None,
    workdir: str,
    touch_id: int,
    prepared_done: Any,
    sent_done: Any,
    out: Any,
) -> None:
    """Process B: once A has prepared, claim, send and record T."""
    engine = open_at(url, schema, workdir)
    if not prepared_done.wait(WAIT):
        out.put(("error", "A never prepared"))
        return
    report = send_touches(engine, [touch_id], run_id="B", now=NOON)
    out.put(("sent", report.as_dict()))
    sent_done.set()


def _planned_touch(store: Store, tmp_path: Path) -> tuple[Any, int]:
    from caretouch.config import CareConfig
    from caretouch.run.engine import open_engine
    from conftest import customer_row

    load_rows(store, customers=[customer_row("C1", email="", consent_email="false")])
    engine = open_engine(
        CareConfig(store.url, RULES_DIR, TEMPLATES_DIR, tmp_path / "outbox"), store=store
    )
    (touch_id,) = plan_and_record(engine, DAY, run_id="plan", now=NOON)
    return engine, touch_id


def test_a_stale_suppression_never_overwrites_a_send_across_processes(
    store: Store, tmp_path: Path
) -> None:
    _, touch_id = _planned_touch(store, tmp_path)
    url, schema = where(store)
    ctx = mp.get_context("spawn")
    prepared_done, sent_done, out = ctx.Event(), ctx.Event(), ctx.Queue()
    a = ctx.Process(
        target=_stale_preparer,
        args=(url, schema, str(tmp_path / "a"), touch_id, prepared_done, sent_done, out),
    )
    b = ctx.Process(
        target=_sender,
        args=(url, schema, str(tmp_path / "b"), touch_id, prepared_done, sent_done, out),
    )
    a.start()
    b.start()
    messages: dict[str, Any] = {}
    try:
        while len(messages) < 3 and "error" not in messages:
            kind, value = out.get(timeout=WAIT)
            messages[kind] = value
    except queue.Empty:
        pass
    a.join(WAIT)
    b.join(WAIT)
    assert "error" not in messages, messages
    assert (a.exitcode, b.exitcode) == (0, 0)
    # A decided while T was planned: suppressed, too_late (the stale decision of the race).
    assert messages["prepared"] == [("suppressed", SuppressionReason.TOO_LATE.value)]
    assert messages["sent"]["sent"] == 1
    ledger = Ledger(store)
    (state,) = ledger.states([touch_id])
    # Fails on main: T ended suppressed/too_late there.
    assert state.status is TouchStatus.SENT
    history = [(e.status, e.run_id) for e in ledger.history(touch_id)]
    assert history == [("planned", "plan"), ("sending", "B"), ("sent", "B")]
    # A's report is truthful: nothing suppressed, its stale decision counted as skipped.
    assert messages["report"]["suppressed"] == 0
    assert messages["report"]["skipped"] == 1
    assert verify(store).ok


# -- each writer's compare-and-set, one process --------------------------------------------


def test_append_many_hands_back_stale_changes(store: Store, tmp_path: Path) -> None:
    _, touch_id = _planned_touch(store, tmp_path)
    ledger = Ledger(store)
    stale = StatusChange(touch_id, TouchStatus.SENT, expected=TouchStatus.SENDING)
    fresh = StatusChange(touch_id, TouchStatus.SUPPRESSED, "too_late", expected=TouchStatus.PLANNED)
    # In one batch: the first is stale (T is planned), the second applies, and a third
    # expecting planned is stale because the second moved T on.
    again = dataclasses.replace(fresh, reason="frequency_cap")
    assert ledger.append_many([stale, fresh, again], run_id="t", now=NOON) == [stale, again]
    (state,) = ledger.states([touch_id])
    assert (state.status, state.reason) == (TouchStatus.SUPPRESSED, "too_late")
    assert not ledger.append(
        touch_id, TouchStatus.PLANNED, expected=TouchStatus.PLANNED, run_id="t", now=NOON
    )
    assert verify(store).ok


def test_a_stale_recovery_keeps_what_the_live_worker_recorded(store: Store, tmp_path: Path) -> None:
    """Recovery asks the provider about a touch left in ``sending``; meanwhile the worker
    that claimed it (alive after all) records ``sent``: recovery's ``planned`` is stale."""
    engine, touch_id = _planned_touch(store, tmp_path)
    ledger = Ledger(store)
    prepared = prepare_chunk(engine, [touch_id], now=NOON, capacity_use={})
    (claim,) = prepared.claims
    attempt = ledger.claim_many([claim], run_id="w", now=NOON)[touch_id]
    channel = Channel(claim.channel)
    transport = engine.transports[channel]

    class Late:
        name = transport.name

        def reconcile(self, message: Any) -> SendResult:
            # The live worker records its answer while recovery is asking the provider.
            assert ledger.append(
                touch_id,
                TouchStatus.SENT,
                expected=TouchStatus.SENDING,
                attempt_id=attempt.id,
                provider_message_id="SM1",
                run_id="w",
                now=NOON,
            )
            return SendResult(Outcome.NOT_SENT, detail="not found")

    engine = dataclasses.replace(engine, transports={**engine.transports, channel: Late()})
    report = recover_in_flight(engine, run_id="recover", now=NOON + SENDING_LEASE * 2)
    assert (report.retry, report.sent, report.unknown, report.skipped) == (0, 0, 0, 1)
    (state,) = ledger.states([touch_id])
    assert state.status is TouchStatus.SENT
    assert [e.status for e in ledger.history(touch_id)] == ["planned", "sending", "sent"]
    assert verify(store).ok


def test_a_stale_replan_leaves_a_touch_that_moved_on(store: Store, tmp_path: Path) -> None:
    """A plan computed while T was planned (now deciding to suppress it) is recorded after
    T was sent: T stays sent, nothing is appended, nothing counted as suppressed."""
    from caretouch.plan import plan_day

    engine, touch_id = _planned_touch(store, tmp_path)
    ledger = Ledger(store)
    computed = [
        dataclasses.replace(t, decision=Decision.SUPPRESS, reason=SuppressionReason.OPTED_OUT)
        for t in planned_touches(plan_day(store, engine.ruleset, DAY, history=ledger))
    ]
    assert send_touches(engine, [touch_id], run_id="send", now=NOON).sent == 1
    record = ledger.record_plan(computed, run_id="stale-plan", now=NOON)
    assert (record.suppressed, record.unchanged) == (0, 1)
    (state,) = ledger.states([touch_id])
    assert state.status is TouchStatus.SENT
    assert verify(store).ok


@pytest.mark.parametrize("transport_name", ["twilio"])
def test_a_stale_receipt_is_kept_as_a_provider_event_only(
    store: Store, tmp_path: Path, transport_name: str
) -> None:
    """A receipt for a touch planned again by a person (no attempt: a new decision) is
    stale: recorded as a provider event, marked stale, the touch's status unchanged."""
    from caretouch.ledger import ProviderEvent

    engine, touch_id = _planned_touch(store, tmp_path)
    ledger = Ledger(store)
    assert send_touches(engine, [touch_id], run_id="send", now=NOON).sent == 1
    attempt = ledger.attempts(touch_id)[-1]
    assert ledger.append(
        touch_id,
        TouchStatus.PLANNED,
        expected=TouchStatus.SENT,
        reason="resend",
        run_id="op",
        now=NOON,
    )
    receipt = ProviderEvent(
        provider=transport_name,
        provider_event_id="ev-late-1",
        kind="status",
        payload={"MessageStatus": "delivered"},
        provider_status="delivered",
        touch_id=touch_id,
        attempt_id=attempt.id,
        customer_id="C1",
        status=TouchStatus.DELIVERED,
    )
    (new,) = ledger.record_provider_events([receipt], now=NOON)
    assert new.stale
    (state,) = ledger.states([touch_id])
    assert (state.status, state.reason) == (TouchStatus.PLANNED, "resend")
    # Replayed: nothing new, still nothing applied.
    assert ledger.record_provider_events([receipt], now=NOON) == []
    # A receipt the touch may follow (it was sent) applies, and is not stale.
    ledger.append(
        touch_id,
        TouchStatus.SENT,
        expected=TouchStatus.PLANNED,
        attempt_id=attempt.id,
        run_id="op",
        now=NOON,
    )
    (ok,) = ledger.record_provider_events(
        [dataclasses.replace(receipt, provider_event_id="ev-late-2")], now=NOON
    )
    assert not ok.stale
    assert ledger.states([touch_id])[0].status is TouchStatus.DELIVERED
    assert verify(store).ok
