"""Status callbacks: accepted into the intake, recorded in batches (webhooks.intake,
docs/webhooks.md "How callbacks are recorded"). Every callback is recorded exactly once:
from several OS processes at once, after a crash between accept and record, and when
replayed."""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import queue
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text
from webhook_helpers import (
    DAY,
    NOON,
    counts,
    engine_for,
    new_keys,
    provider_events,
    status_params,
    twilio_post,
)
from webhook_helpers import client as make_client

from caretouch.ledger import Ledger
from caretouch.ledger.audit import verify
from caretouch.ledger.models import TouchEvent
from caretouch.run.day import run_day
from caretouch.store.db import Store, open_store
from caretouch.store.models import CallbackIntake
from caretouch.webhooks import intake
from conftest import PG_URL, cli_url, customer_row, load_rows

WAIT = 180  # seconds the test waits for its processes


def _sent_sms(store: Store, tmp_path: Path, n: int) -> list[int]:
    """``n`` SMS touches sent through the outbox: their attempt ids."""
    load_rows(
        store,
        customers=[
            customer_row(f"S{i:04d}", email="", consent_email="false", phone=f"+86139{i:08d}")
            for i in range(n)
        ],
    )
    report = run_day(engine_for(store, tmp_path), DAY, run_id="t-send", now=NOON)
    assert report.sent == n
    ledger = Ledger(store)
    return sorted(ledger.attempts(s.id)[-1].id for s in ledger.states_for_day(DAY))


def _intake_rows(store: Store) -> int:
    with store.read_session() as session:
        return session.scalar(select(func.count()).select_from(CallbackIntake)) or 0


def _delivered(store: Store) -> Counter[int]:
    with store.read_session() as session:
        return Counter(
            session.scalars(select(TouchEvent.touch_id).where(TouchEvent.status == "delivered"))
        )


def _poster(schema: str, attempts: list[int], threads: int, start: Any, out: Any) -> None:
    """One web server process: ``threads`` clients post, for every attempt, its ``sent`` and
    ``delivered`` callbacks (every process posts the same ones: Twilio retrying, or a replay
    racing the original)."""
    store = open_store(PG_URL, connect_args={"options": f"-csearch_path={schema}"})
    try:
        with make_client(store, new_keys()) as http:
            answers: list[int] = []
            lock = threading.Lock()

            def post(share: list[int]) -> None:
                for attempt in share:
                    for status in ("sent", "delivered"):
                        answer = twilio_post(
                            http,
                            "status",
                            status_params(f"SM{attempt:032d}", status),
                            query={"attempt": str(attempt)},
                        )
                        with lock:
                            answers.append(answer.status_code)

            workers = [
                threading.Thread(target=post, args=(attempts[i::threads],)) for i in range(threads)
            ]
            start.wait(WAIT)
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(WAIT)
            out.put(("answers", sorted(Counter(answers).items())))
    except BaseException as exc:  # reported to the test, which fails with it
        out.put(("error", repr(exc)))
    finally:
        store.dispose()


@pytest.mark.postgres
def test_callbacks_from_several_processes_are_recorded_once_each(
    pg_store: Store, tmp_path: Path
) -> None:
    attempts = _sent_sms(pg_store, tmp_path, 24)
    with pg_store.read_session() as session:
        schema = str(session.scalar(text("SELECT current_schema()")))
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    processes = [
        ctx.Process(target=_poster, args=(schema, attempts, 4, start, out)) for _ in range(3)
    ]
    for p in processes:
        p.start()
    start.set()
    results = []
    try:
        for _ in processes:
            results.append(out.get(timeout=WAIT))
    except queue.Empty:
        pass
    for p in processes:
        p.join(WAIT)
    assert [kind for kind, _ in results] == ["answers"] * 3, results
    # 3 processes x 24 attempts x 2 callbacks, every one answered 204 (recorded).
    assert all(value == [(204, 48)] for _, value in results), results
    assert [p.exitcode for p in processes] == [0, 0, 0]
    events = provider_events(pg_store)
    assert len(events) == 48  # each callback once, however many times it was posted
    assert Counter(e.provider_event_id for e in events).most_common(1)[0][1] == 1
    assert {e.attempt_id for e in events} == set(attempts)
    assert all(n == 1 for n in _delivered(pg_store).values())
    assert sum(_delivered(pg_store).values()) == 24
    assert _intake_rows(pg_store) == 0
    assert verify(pg_store).ok


def test_a_callback_accepted_before_a_crash_is_recorded_by_the_next_drain(
    store: Store, tmp_path: Path
) -> None:
    first, second = _sent_sms(store, tmp_path, 2)
    # Accepted (durable), then the server died before any drain: nothing in the ledger yet.
    intake.accept_status(
        store,
        status_params("SM" + "1" * 32, "delivered"),
        attempt=str(first),
        now=NOON,
    )
    assert _intake_rows(store) == 1
    assert counts(store)["provider_events"] == 0
    # The next callback's request drains everything pending, the orphan included.
    answer = twilio_post(
        make_client(store, new_keys()),
        "status",
        status_params("SM" + "2" * 32, "delivered"),
        query={"attempt": str(second)},
    )
    assert answer.status_code == 204
    assert _intake_rows(store) == 0
    events = {e.provider_event_id: e for e in provider_events(store)}
    assert set(events) == {"SM" + "1" * 32 + ":delivered", "SM" + "2" * 32 + ":delivered"}
    # It keeps the instant it was accepted, not the drain's.
    orphan = events["SM" + "1" * 32 + ":delivered"]
    assert orphan.received_at.replace(tzinfo=dt.timezone.utc) == NOON
    assert orphan.attempt_id == first
    assert sum(_delivered(store).values()) == 2
    assert verify(store).ok


def test_care_dispatch_records_what_a_crash_left_in_the_intake(
    store: Store, tmp_path: Path, care: Any
) -> None:
    (attempt,) = _sent_sms(store, tmp_path, 1)
    intake.accept_status(
        store, status_params("SM" + "3" * 32, "delivered"), attempt=str(attempt), now=NOON
    )
    result = care("dispatch", "--now", "2026-11-23T12:10:00Z", store=cli_url(store))
    assert result.exit_code == 0, result.output
    assert _intake_rows(store) == 0
    assert [e.provider_event_id for e in provider_events(store)] == ["SM" + "3" * 32 + ":delivered"]
    assert sum(_delivered(store).values()) == 1


def test_replays_add_nothing_whether_recorded_or_still_pending(
    store: Store, tmp_path: Path
) -> None:
    (attempt,) = _sent_sms(store, tmp_path, 1)
    http = make_client(store, new_keys())
    params = status_params("SM" + "4" * 32, "delivered")
    for _ in range(2):
        answer = twilio_post(http, "status", params, query={"attempt": str(attempt)})
        assert answer.status_code == 204
    before = counts(store)
    # The same callback twice more in the intake at once (a retry while the first waited),
    # and once more through the app: one drain, nothing new.
    for _ in range(2):
        intake.accept_status(store, params, attempt=str(attempt), now=NOON)
    done = intake.drain_all(store, now=NOON)
    assert (len(done.settled), done.new) == (2, 0)
    answer = twilio_post(http, "status", params, query={"attempt": str(attempt)})
    assert answer.status_code == 204
    assert counts(store) == before
    assert before["provider_events"] == 1
    assert _intake_rows(store) == 0


def test_one_bad_row_never_stops_the_rest(store: Store, tmp_path: Path) -> None:
    (attempt,) = _sent_sms(store, tmp_path, 1)
    # A row that cannot be recorded (written by hand: the route refuses such a callback).
    with store.session() as session:
        session.execute(
            insert(CallbackIntake).values(
                provider="twilio",
                kind="status",
                params={"MessageSid": "SM" + "5" * 32},
                received_at=NOON,
                failures=0,
            )
        )
    intake.accept_status(
        store, status_params("SM" + "6" * 32, "delivered"), attempt=str(attempt), now=NOON
    )
    done = intake.drain_all(store, now=NOON)
    assert done.new == 1 and len(done.settled) == 1
    assert [e.provider_event_id for e in provider_events(store)] == ["SM" + "6" * 32 + ":delivered"]
    # The bad row is retried by later drains, then set aside with the error's name.
    for _ in range(intake.MAX_FAILURES):
        intake.drain_all(store, now=NOON)
    with store.read_session() as session:
        (row,) = session.scalars(select(CallbackIntake))
    assert (row.failures, row.error) == (intake.MAX_FAILURES, "CareError")
    assert intake.drain_all(store, now=NOON).rows == 0


def test_a_callback_the_engine_cannot_record_is_refused_before_it_is_accepted(
    store: Store,
) -> None:
    answer = twilio_post(
        make_client(store, new_keys()), "status", {"MessageSid": "SM" + "7" * 32}, query={}
    )
    assert answer.status_code == 400
    assert _intake_rows(store) == 0


@pytest.mark.postgres
def test_a_callback_waiting_too_long_is_answered_once_durable(
    pg_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (attempt,) = _sent_sms(pg_store, tmp_path, 1)
    monkeypatch.setattr(intake, "WAIT", 0.5)
    # Another process is draining (it holds the drain lock) and does not finish in time.
    with pg_store.engine.connect() as other:
        other.execute(text("SELECT pg_advisory_lock(:k)"), {"k": intake._PG_DRAIN})
        answer = twilio_post(
            make_client(pg_store, new_keys()),
            "status",
            status_params("SM" + "8" * 32, "delivered"),
            query={"attempt": str(attempt)},
        )
        # Answered: the callback is durable in the intake, not yet in the ledger.
        assert answer.status_code == 204
        assert _intake_rows(pg_store) == 1
        assert counts(pg_store)["provider_events"] == 0
        other.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": intake._PG_DRAIN})
        other.commit()
    done = intake.drain_all(pg_store, now=NOON)
    assert (len(done.settled), done.new) == (1, 1)
    assert _intake_rows(pg_store) == 0
    assert sum(_delivered(pg_store).values()) == 1
