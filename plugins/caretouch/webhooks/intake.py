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
3. **Who drains**: the requests themselves (``GroupCommit``). While callbacks wait in a
   server process, one task there runs rounds: it accepts what is queued in one INSERT and
   records everything pending (its own rows and any other process's); the requests wait for
   their answer without holding a thread. On PostgreSQL one process drains at a time
   (``pg_try_advisory_lock``), and a drain records only the rows its own transaction deletes
   (``FOR UPDATE SKIP LOCKED``; SQLite has one writer), so no row is recorded twice. ``care run``,
   ``care dispatch`` and the DAGs drain too when they start, so a row left by a crash
   is recorded even if no callback follows it.

The answer is sent once the callback is recorded, so it still means what it meant (204:
recorded). A request that waited ``WAIT`` seconds (a stalled database) is answered 204 all
the same: its callback is durable, and the next drain records it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from anyio import to_thread
from sqlalchemy import insert, select, text, update
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
# How long a request waits for its callback to be recorded before answering anyway (Twilio
# gives up on a callback after 15 s; the ledger's lock may be held longer by a big plan).
WAIT = 5.0
# How often a waiting request looks again when the drain is in another process.
POLL = 0.02
STATUS = "status"
# Any constant: the PostgreSQL advisory lock of the process draining the intake.
_PG_DRAIN = 0x63626B73  # "cbks"


def accept_status(
    store: Store, params: Mapping[str, str], *, attempt: str | None, now: dt.datetime
) -> int:
    """Accept one verified Twilio status callback: refused (``CareError``) if it cannot be
    recorded, else made durable in ``callback_intake``; returns its intake id."""
    check_status(params)
    (intake_id,) = accept_many(store, [StatusCallback(params, attempt, now)])
    return intake_id


def accept_many(store: Store, callbacks: Sequence[StatusCallback]) -> list[int]:
    """Make checked status callbacks durable in ``callback_intake``, in one transaction;
    returns their intake ids, in order."""
    table = CallbackIntake.__table__
    with store.session() as session:
        return [
            int(i)
            for i in session.scalars(
                insert(table).returning(table.c.id, sort_by_parameter_order=True),
                [
                    {
                        "provider": Provider.TWILIO.value,
                        "kind": STATUS,
                        "ref": (c.attempt or "")[:32] or None,
                        "params": dict(c.params),
                        "received_at": c.received_at,
                        "failures": 0,
                    }
                    for c in callbacks
                ],
            )
        ]


@dataclass
class Drained:
    """What one ``drain`` did."""

    rows: int = 0  # intake rows it read
    settled: set[int] = field(default_factory=set)  # intake rows it recorded (and deleted)
    new: int = 0  # events new to the ledger (the rest were replays)
    set_aside: int = 0  # rows that failed alone MAX_FAILURES times
    busy: bool = False  # another process was draining: nothing done here

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


@contextmanager
def _draining(store: Store) -> Iterator[bool]:
    """Whether this process may drain now: on PostgreSQL one process at a time does
    (``pg_try_advisory_lock``, released at the end or when its connection drops), so that two
    processes do not both read, match and mask the same rows only for one to record them.
    Correctness does not rest on it: a drain records only the rows its own transaction
    deletes. SQLite: its single writer serialises the drains."""
    if not store.is_postgres:
        yield True
        return
    with store.engine.connect() as conn:
        mine = bool(
            conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _PG_DRAIN}).scalar()
        )
        conn.commit()
        try:
            yield mine
        finally:
            if mine:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_DRAIN})
                conn.commit()


def drain(store: Store, *, now: dt.datetime, limit: int = BATCH) -> Drained:
    """Record up to ``limit`` pending callbacks in one ledger transaction, unless another
    process is draining (``Drained.busy``: it records them). Rows another drain records
    meanwhile are left to it. If the batch fails, each row is tried alone, so one bad row
    never stops the rest; a row failing alone ``MAX_FAILURES`` times is set aside with the
    error's name (``callback_intake.error``)."""
    with _draining(store) as mine:
        if not mine:
            return Drained(busy=True)
        return _drain(store, now=now, limit=limit)


def _drain(store: Store, *, now: dt.datetime, limit: int) -> Drained:
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
    deadline = time.monotonic() + WAIT
    while True:
        done = drain(store, now=now)
        total.add(done)
        if done.busy and time.monotonic() < deadline:
            time.sleep(POLL)  # another process drains; then what it left
            continue
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


@dataclass(eq=False)
class _Ticket:
    """One request's callback in ``GroupCommit``: queued, accepted (``intake_id``), then
    answered through ``answer`` (None: recorded; an intake id: durable, not yet recorded)."""

    callback: StatusCallback
    answer: asyncio.Future[int | None]
    intake_id: int | None = None


@dataclass(eq=False)
class _Rounds:
    """The group commit's state in one event loop."""

    queued: list[_Ticket] = field(default_factory=list)
    accepted: dict[int, _Ticket] = field(default_factory=dict)  # by intake id, until recorded
    task: asyncio.Task[None] | None = None


class GroupCommit:
    """Callbacks of one process, accepted and recorded in batches (group commit).

    A request queues its callback and awaits its answer; it holds no thread while it waits.
    While callbacks wait, one task per event loop runs rounds: it accepts everything queued
    in one INSERT (durable from then on), drains (``drain``: every pending row, every
    process's; in a worker thread) and answers the requests whose rows were recorded, here or
    by another process's drain. When another process is draining it looks again every
    ``POLL`` seconds. One per store and process.
    """

    def __init__(self, store: Store, clock: Callable[[], dt.datetime]) -> None:
        self.store = store
        self.clock = clock
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Rounds] = (
            weakref.WeakKeyDictionary()
        )

    async def record_status(
        self, params: Mapping[str, str], *, attempt: str | None, timeout: float | None = None
    ) -> int | None:
        """Accept a Twilio status callback and wait until it is recorded: returns None once
        it is, or its intake id if it is only durable when ``timeout`` seconds (``WAIT``)
        have passed (a later drain records it). Refused (``CareError``) if it cannot be
        recorded."""
        check_status(params)
        loop = asyncio.get_running_loop()
        rounds = self._loops.get(loop)
        if rounds is None:
            rounds = self._loops[loop] = _Rounds()
        ticket = _Ticket(StatusCallback(params, attempt, self.clock()), loop.create_future())
        rounds.queued.append(ticket)
        if rounds.task is None:
            rounds.task = loop.create_task(self._run(rounds))
        try:
            return await asyncio.wait_for(
                asyncio.shield(ticket.answer), WAIT if timeout is None else timeout
            )
        except asyncio.TimeoutError:
            return await self._give_up(rounds, ticket)

    async def _give_up(self, rounds: _Rounds, ticket: _Ticket) -> int | None:
        """The wait is over: answer once the callback is durable, accepting it here if no
        round has yet."""
        if ticket.answer.done():
            return ticket.answer.result()
        if ticket in rounds.queued:
            rounds.queued.remove(ticket)
        elif ticket.intake_id is not None:
            rounds.accepted.pop(ticket.intake_id, None)
            return ticket.intake_id
        # Not accepted yet (or being accepted by the running round: then it has two rows,
        # and recording the event once settles both).
        (intake_id,) = await to_thread.run_sync(accept_many, self.store, [ticket.callback])
        return intake_id

    async def _run(self, rounds: _Rounds) -> None:
        try:
            while rounds.queued or rounds.accepted:
                if not await self._round(rounds):
                    await asyncio.sleep(POLL)  # another process drains: look again soon
        finally:
            rounds.task = None

    async def _round(self, rounds: _Rounds) -> bool:
        """Accept what is queued, drain, answer who may stop waiting. True when something
        was accepted, or recorded here or elsewhere."""
        batch, rounds.queued = rounds.queued, []
        if batch:
            try:
                ids = await to_thread.run_sync(accept_many, self.store, [t.callback for t in batch])
            except Exception as exc:
                for ticket in batch:
                    _answer(ticket, exc)
                return True
            for ticket, intake_id in zip(batch, ids, strict=True):
                ticket.intake_id = intake_id
                rounds.accepted[intake_id] = ticket
        try:
            done = await to_thread.run_sync(functools.partial(drain, self.store, now=self.clock()))
        except (CareError, SQLAlchemyError) as exc:
            # Accepted, so durable: answered as such, recorded by a later drain.
            log.warning("webhook: callbacks accepted, not recorded yet (%s)", type(exc).__name__)
            for intake_id, ticket in rounds.accepted.items():
                _answer(ticket, intake_id)
            rounds.accepted.clear()
            return True
        waiting = set(rounds.accepted) - done.settled
        if waiting:
            # Rows another process's drain took (or set aside) are no longer pending here.
            waiting &= await to_thread.run_sync(_still_pending, self.store, waiting)
        finished = set(rounds.accepted) - waiting
        for intake_id in finished:
            _answer(rounds.accepted.pop(intake_id), None)
        return bool(batch or finished or done.settled)


def _answer(ticket: _Ticket, value: int | Exception | None) -> None:
    if ticket.answer.done():
        return
    if isinstance(value, Exception):
        ticket.answer.set_exception(value)
    else:
        ticket.answer.set_result(value)


def _still_pending(store: Store, ids: set[int]) -> set[int]:
    with store.read_session() as session:
        return set(
            session.scalars(
                select(CallbackIntake.id).where(
                    CallbackIntake.id.in_(sorted(ids)), CallbackIntake.failures < MAX_FAILURES
                )
            )
        )
