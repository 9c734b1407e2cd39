"""Delivery callbacks accepted first, recorded in batches (docs/webhooks.md, "How callbacks
are recorded").

A Twilio status callback is one HTTP request per event; recording each in a ledger
transaction of its own (hash chain sealed each time) capped them at a few dozen a second. So:

1. **Accept**: the verified callback is inserted into ``callback_intake`` in a transaction of
   its own (one row, no chain, no lock): from then on it is durable.
2. **Record, in batches (group commit)**: ``drain`` reads what is pending and records it in
   one ledger transaction (``Ledger.record_provider_events``), which deletes the intake rows
   it records. A row is therefore in the intake or in the ledger, never both, never neither;
   a crash between accept and record leaves it in the intake for the next drain.
3. **Who drains**: the requests themselves (``GroupCommit``). A request that finds no drain
   running in its process becomes the drainer and records everything pending (its own row
   and those of every request that arrived meanwhile, in any process); the others wait until
   their row is recorded. Across processes the drains exclude each other by the rows they
   take (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite has one writer). ``care run``,
   ``care dispatch`` and the DAGs drain too when they start, so a row left by a crash
   is recorded even if no callback follows it.

The answer is sent once the callback is recorded, so it still means what it meant (204:
recorded). A request that waited ``WAIT`` seconds (a stalled database) is answered 204 all
the same: its callback is durable, and the next drain records it.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from ..errors import CareError
from ..store.db import Store
from ..store.models import CallbackIntake
from ..vocab import Provider
from .recording import Received
from .twilio import StatusCallback, check_status, record_status_callbacks

log = logging.getLogger("caretouch.webhooks")

# Rows recorded per ledger transaction: one multi-row statement of each kind per chunk.
BATCH = 2000
# A row that failed to be recorded alone this many times is set aside (kept, not retried).
MAX_FAILURES = 5
# How long a request waits for its callback to be recorded before answering anyway.
WAIT = 10.0
# How often a waiting request looks again when the drain is in another process.
POLL = 0.02
STATUS = "status"


def accept_status(
    store: Store, params: Mapping[str, str], *, attempt: str | None, now: dt.datetime
) -> int:
    """Accept a verified Twilio status callback: refused (``CareError``) if it cannot be
    recorded, else made durable in ``callback_intake``; returns its intake id."""
    check_status(params)
    with store.session() as session:
        return int(
            session.execute(
                insert(CallbackIntake)
                .values(
                    provider=Provider.TWILIO.value,
                    kind=STATUS,
                    ref=(attempt or "")[:32] or None,
                    params=dict(params),
                    received_at=now,
                    failures=0,
                )
                .returning(CallbackIntake.id)
            ).scalar_one()
        )


@dataclass
class Drained:
    """What one ``drain`` did."""

    rows: int = 0  # intake rows it read
    settled: set[int] = field(default_factory=set)  # intake rows it recorded (and deleted)
    new: int = 0  # events new to the ledger (the rest were replays)
    set_aside: int = 0  # rows that failed alone MAX_FAILURES times

    def add(self, other: Drained) -> None:
        self.rows += other.rows
        self.settled |= other.settled
        self.new += other.new
        self.set_aside += other.set_aside


def pending(store: Store, limit: int = BATCH) -> list[StatusCallback]:
    """The oldest callbacks waiting in the intake (not set aside), at most ``limit``."""
    with store.read_session() as session:
        rows = session.execute(
            select(
                CallbackIntake.id,
                CallbackIntake.provider,
                CallbackIntake.kind,
                CallbackIntake.ref,
                CallbackIntake.params,
                CallbackIntake.received_at,
            )
            .where(
                CallbackIntake.failures < MAX_FAILURES,
                CallbackIntake.provider == Provider.TWILIO.value,
                CallbackIntake.kind == STATUS,
            )
            .order_by(CallbackIntake.failures, CallbackIntake.id)
            .limit(limit)
        ).all()
    return [
        StatusCallback(params, ref, received_at, intake_id)
        for intake_id, _provider, _kind, ref, params, received_at in rows
    ]


def drain(store: Store, *, now: dt.datetime, limit: int = BATCH) -> Drained:
    """Record up to ``limit`` pending callbacks in one ledger transaction. Rows another drain
    records meanwhile are left to it. If the batch fails, each row is tried alone, so one
    bad row never stops the rest; a row failing alone ``MAX_FAILURES`` times is set aside
    with the error's name (``callback_intake.error``)."""
    callbacks = pending(store, limit)
    done = Drained(rows=len(callbacks))
    if not callbacks:
        return done
    try:
        done.new = _record(store, callbacks, now, done.settled)
        return done
    except (CareError, SQLAlchemyError) as exc:
        if len(callbacks) == 1:
            done.set_aside += _failed(store, callbacks[0], exc)
            return done
        log.warning(
            "webhook: a batch of %d callbacks failed (%s); recording them one by one",
            len(callbacks),
            type(exc).__name__,
        )
    for callback in callbacks:
        try:
            done.new += _record(store, [callback], now, done.settled)
        except (CareError, SQLAlchemyError) as exc:
            done.set_aside += _failed(store, callback, exc)
    return done


def drain_all(store: Store, *, now: dt.datetime) -> Drained:
    """Drain until nothing recordable is pending (``care run``, ``care dispatch``, the DAGs
    call it when they start: a callback left by a crash is recorded then at the latest)."""
    total = Drained()
    while True:
        done = drain(store, now=now)
        total.add(done)
        if done.rows < BATCH or not (done.settled or done.set_aside):
            break
    if total.settled:
        log.info(
            "webhook: recorded %d callback(s) left in the intake (%d new)",
            len(total.settled),
            total.new,
        )
    return total


def _record(
    store: Store, callbacks: Sequence[StatusCallback], now: dt.datetime, settled: set[int]
) -> int:
    received: Received = record_status_callbacks(store, callbacks, now=now, settled=settled)
    return received.new


def _failed(store: Store, callback: StatusCallback, exc: Exception) -> int:
    """Count a failure of one row; returns 1 if it is now set aside."""
    assert callback.intake_id is not None
    # The error's class only: its message may quote the row (addresses).
    error = type(exc).__name__
    with store.session() as session:
        failures = session.execute(
            update(CallbackIntake)
            .where(CallbackIntake.id == callback.intake_id)
            .values(failures=CallbackIntake.failures + 1, error=error)
            .returning(CallbackIntake.failures)
        ).scalar()
    if failures is not None and failures >= MAX_FAILURES:
        log.error(
            "webhook: callback intake row %d set aside after %d failures (%s): "
            "see docs/webhooks.md",
            callback.intake_id,
            failures,
            error,
        )
        return 1
    log.warning("webhook: callback intake row %d not recorded (%s)", callback.intake_id, error)
    return 0


class GroupCommit:
    """Waits for callbacks to be recorded, in one process, recording them in batches: the
    waiting request that finds no drain running here drains (``drain``: everything pending,
    every process's), the others wait for it. Thread-safe; one per store and process."""

    def __init__(self, store: Store, clock: Callable[[], dt.datetime]) -> None:
        self.store = store
        self.clock = clock
        self._drainer = threading.Lock()  # held by the request draining now
        self._changed = threading.Condition()
        self._waiting: set[int] = set()
        self._settled: set[int] = set()  # recorded rows some request here waits for

    def record_status(self, params: Mapping[str, str], *, attempt: str | None) -> int | None:
        """Accept a Twilio status callback (``accept_status``) and wait until it is recorded;
        returns its intake id if it is still pending when the wait ends, else None."""
        intake_id = accept_status(self.store, params, attempt=attempt, now=self.clock())
        return None if self.wait(intake_id) else intake_id

    def wait(self, intake_id: int, timeout: float = WAIT) -> bool:
        """Until ``intake_id`` is recorded (True) or ``timeout`` seconds have passed (False:
        it stays durable in the intake, and a later drain records it)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            self._waiting.add(intake_id)
        try:
            while True:
                with self._changed:
                    if intake_id in self._settled:
                        return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                if self._drainer.acquire(blocking=False):
                    try:
                        progressed = self._drain_once()
                    except (CareError, SQLAlchemyError) as exc:
                        # Accepted, so durable: answered as such, recorded by a later drain.
                        log.warning(
                            "webhook: callback intake row %d accepted, not recorded yet (%s)",
                            intake_id,
                            type(exc).__name__,
                        )
                        return False
                    finally:
                        self._drainer.release()
                    if progressed:
                        continue
                # Another request drains (here or elsewhere): wait for its news.
                with self._changed:
                    if intake_id not in self._settled:
                        self._changed.wait(min(POLL, remaining))
        finally:
            with self._changed:
                self._waiting.discard(intake_id)
                self._settled.discard(intake_id)

    def _drain_once(self) -> bool:
        """Drain once; note what this process's requests may stop waiting for. True when
        something was recorded here or found recorded elsewhere."""
        done = drain(self.store, now=self.clock())
        with self._changed:
            waiting = set(self._waiting)
        elsewhere = waiting - done.settled
        if elsewhere:
            # Rows another process's drain took (or set aside) are no longer pending here.
            elsewhere -= _still_pending(self.store, elsewhere)
        with self._changed:
            self._settled |= (done.settled & self._waiting) | (elsewhere & self._waiting)
            self._changed.notify_all()
        return bool(done.settled or elsewhere)


def _still_pending(store: Store, ids: set[int]) -> set[int]:
    with store.read_session() as session:
        return set(
            session.scalars(
                select(CallbackIntake.id).where(
                    CallbackIntake.id.in_(sorted(ids)), CallbackIntake.failures < MAX_FAILURES
                )
            )
        )
