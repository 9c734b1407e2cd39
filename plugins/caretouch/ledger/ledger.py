"""Reading and appending to the touch ledger."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ..dates import aware_utc
from ..plan.history import DeferredTouch, PastContact
from ..plan.touch import Touch
from ..render.templates import RenderedMessage
from ..store.db import Store
from ..vocab import Decision, SuppressionReason, TouchStatus
from . import chain
from .codec import decode, encode
from .models import Attempt, ProviderEventRow, TouchCurrent, TouchEvent, TouchRow

_CHUNK = 500
# ``Ledger.run_counts``: what a run recorded, in the order summaries print it.
RUN_COUNTS = ("planned", "suppressed", "sent", "failed", "unknown", "retry", "in_flight")
# Statuses after which a rerun leaves the touch alone: it was (or may have been) sent.
HANDLED = frozenset(
    {
        TouchStatus.SENDING,
        TouchStatus.SENT,
        TouchStatus.DELIVERED,
        TouchStatus.UNDELIVERED,
        TouchStatus.BOUNCED,
        TouchStatus.FAILED,
        TouchStatus.UNKNOWN,
    }
)


# Touches that count against the contact policy's caps: sent or about to be.
COUNTED = HANDLED - {TouchStatus.FAILED} | {TouchStatus.PLANNED}
# The longest deferral a rule may ask for (rules.schema: defer_days maximum).
MAX_DEFER_DAYS = 14


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


# In a deferral's ``detail``: the local date from whose plan on the touch competes again
# (set when the send step defers a service obligation that missed its planned day).
WAIT_UNTIL = "wait_until"


# Failures that happened before anything reached a provider: a rerun may try again.
RETRYABLE_BY_RERUN = frozenset({"render_error"})
# Statuses a provider's delivery receipt sets (webhooks); ``failed`` only with this reason.
RECEIPTS = frozenset(
    {TouchStatus.DELIVERED, TouchStatus.UNDELIVERED, TouchStatus.BOUNCED, TouchStatus.FAILED}
)
DELIVERY_FAILED = "delivery_failed"


def is_receipt(status: str, reason: str | None) -> bool:
    """True for a status event that records a provider's delivery receipt."""
    if status == TouchStatus.FAILED.value:
        return reason == DELIVERY_FAILED
    return status in (
        TouchStatus.DELIVERED.value,
        TouchStatus.UNDELIVERED.value,
        TouchStatus.BOUNCED.value,
    )


def is_handled(status: str, reason: str | None, final: bool = False) -> bool:
    """True when a rerun must leave the touch alone: it was, or may have been, sent, or its
    fate was sealed when it was due to go (``final``: suppressed at send time)."""
    if final:
        return True
    if status == TouchStatus.FAILED.value and reason in RETRYABLE_BY_RERUN:
        return False
    return TouchStatus(status) in HANDLED


@dataclass(frozen=True)
class TouchState:
    """A touch as the ledger knows it now: its row and its latest status."""

    row: TouchRow
    status: TouchStatus
    reason: str | None
    attempts: int
    scheduled: dt.datetime | None = None  # a later planned event's send time, if any
    planned_channel: str | None = None  # the channel of the latest planned event, if any

    @property
    def channel(self) -> str | None:
        """The channel the touch is planned for now (it may have changed since first planned)."""
        return self.planned_channel or self.row.channel

    @property
    def send_at(self) -> dt.datetime:
        """When the touch is to be sent: as first planned, or as re-planned after deferral."""
        return self.scheduled or aware_utc(self.row.send_at)

    @property
    def id(self) -> int:
        return self.row.id

    @property
    def context(self) -> dict[str, Any]:
        return decode(self.row.context)  # type: ignore[no-any-return]


@dataclass
class PlanRecord:
    """What ``record_plan`` changed."""

    new: int = 0
    replanned: int = 0
    suppressed: int = 0  # suppressed events appended
    unchanged: int = 0
    planned_ids: list[int] | None = None
    planned: int = 0  # planned events appended (new, planned again, or on another channel)


@dataclass(frozen=True)
class StatusChange:
    """One status event to append."""

    touch_id: int
    status: TouchStatus
    reason: str | None = None
    attempt_id: int | None = None
    provider_message_id: str | None = None
    detail: dict[str, Any] | None = None


@dataclass(frozen=True)
class MessageMatch:
    """The touch and attempt a provider's event is about."""

    touch_id: int
    attempt_id: int
    customer_id: str


@dataclass(frozen=True)
class ProviderEvent:
    """One event from a provider's webhook, normalised, to record once.

    ``payload`` must already be masked (no phone number or email address in clear).
    ``status`` is the touch status the event means (a delivery receipt), or None when it is
    kept as a provider event only (queued, processed, open, click, inbound, ...).
    """

    provider: str
    provider_event_id: str
    kind: str
    payload: dict[str, Any]
    provider_status: str | None = None
    provider_message_id: str | None = None
    touch_id: int | None = None
    attempt_id: int | None = None
    customer_id: str | None = None
    status: TouchStatus | None = None
    reason: str | None = None
    detail: dict[str, Any] | None = None  # added to the status event's detail (masked)
    occurred_at: dt.datetime | None = None


@dataclass(frozen=True)
class Claim:
    """A touch a worker wants to send now, with the message it rendered for it."""

    state: TouchState
    channel: str
    transport: str
    recipient: str
    template_hash: str
    message: RenderedMessage


def _dialect_insert(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    return {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[dialect]


def _moved_later(current: Any, touch: Touch) -> bool:
    scheduled = current[2] if current else None
    if scheduled is None:
        return False
    zone = _zone(touch.timezone)
    return bool(scheduled.astimezone(zone).date() > touch.send_at.astimezone(zone).date())


class Ledger:
    """The only writer of the ledger tables."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @contextmanager
    def _write(self, now: dt.datetime) -> Iterator[Session]:
        """A write transaction whose new rows are chained before it commits."""
        with self.store.session() as session:
            mark = chain.lock(session)
            yield session
            self.refresh_current(session)
            chain.seal(session, now, mark)

    @staticmethod
    def refresh_current(session: Session) -> int:
        """Bring ``touch_current`` up to date with the events written since it last was.

        Writers are serialised, so the events newer than the newest one it reflects are this
        transaction's (or, on a store that predates the table, all of them).

        The latest event wins, with one exception: once a provider has reported the outcome
        of an attempt (a delivery receipt: delivered, undelivered, bounced, or failed with
        ``delivery_failed``), a later event of the sender about that same attempt (its
        ``sent`` recorded after the receipt arrived, ``unknown``, a retry) does not replace
        it. The event is then still taken into account (``event_id`` moves on), the status
        stays. An event of another attempt, or a later receipt, replaces it as usual.
        """
        session.flush()
        seen = session.scalar(select(func.max(TouchCurrent.event_id))) or 0
        latest: dict[int, dict[str, Any]] = {}
        attempt_of: dict[int, int | None] = {}
        after = seen
        while True:
            batch = session.scalars(
                select(TouchEvent).where(TouchEvent.id > after).order_by(TouchEvent.id).limit(5000)
            ).all()
            if not batch:
                break
            # Touches that may hold a receipt from an earlier transaction, which a sender's
            # event in this batch must not override.
            unknown = {
                e.touch_id
                for e in batch
                if e.attempt_id is not None
                and e.touch_id not in latest
                and not is_receipt(e.status, e.reason)
            }
            Ledger._current_receipts(session, sorted(unknown), latest, attempt_of)
            for event in batch:
                current = latest.get(event.touch_id)
                if (
                    current is not None
                    and is_receipt(current["status"], current["reason"])
                    and event.attempt_id is not None
                    and event.attempt_id == attempt_of.get(event.touch_id)
                    and not is_receipt(event.status, event.reason)
                ):
                    current["event_id"] = event.id
                    continue
                latest[event.touch_id] = {
                    "touch_id": event.touch_id,
                    "event_id": event.id,
                    "status": event.status,
                    "reason": event.reason,
                    "send_at": event.send_at,
                    "channel": event.channel,
                    "final": bool(isinstance(event.detail, dict) and event.detail.get("final")),
                }
                attempt_of[event.touch_id] = event.attempt_id
            after = batch[-1].id
        if not latest:
            return 0
        rows = list(latest.values())
        insert = _dialect_insert(session)
        for start in range(0, len(rows), _CHUNK):
            stmt = insert(TouchCurrent.__table__).values(rows[start : start + _CHUNK])
            stmt = stmt.on_conflict_do_update(
                index_elements=["touch_id"],
                set_={
                    c: stmt.excluded[c]
                    for c in ("event_id", "status", "reason", "send_at", "final")
                },
            )
            session.execute(stmt)
        return len(rows)

    @staticmethod
    def _current_receipts(
        session: Session,
        touch_ids: Sequence[int],
        latest: dict[int, dict[str, Any]],
        attempt_of: dict[int, int | None],
    ) -> None:
        """Load into ``latest`` the touches among ``touch_ids`` whose current status is a
        delivery receipt, with the attempt it is about."""
        for start in range(0, len(touch_ids), _CHUNK):
            chunk = list(touch_ids[start : start + _CHUNK])
            rows = session.execute(
                select(
                    TouchCurrent.touch_id,
                    TouchCurrent.event_id,
                    TouchCurrent.status,
                    TouchCurrent.reason,
                    TouchCurrent.send_at,
                    TouchCurrent.channel,
                    TouchCurrent.final,
                    TouchEvent.attempt_id,
                )
                .join(TouchEvent, TouchEvent.id == TouchCurrent.event_id)
                .where(
                    TouchCurrent.touch_id.in_(chunk),
                    TouchCurrent.status.in_([s.value for s in RECEIPTS]),
                )
            )
            for touch_id, event_id, status, reason, send_at, channel, final, attempt_id in rows:
                if not is_receipt(status, reason):
                    continue
                latest[touch_id] = {
                    "touch_id": touch_id,
                    "event_id": event_id,
                    "status": status,
                    "reason": reason,
                    "send_at": send_at,
                    "channel": channel,
                    "final": final,
                }
                attempt_of[touch_id] = attempt_id

    # -- reading ---------------------------------------------------------------------------

    @staticmethod
    def _latest(
        session: Session, touch_ids: Sequence[int]
    ) -> dict[int, tuple[str, str | None, bool]]:
        """Each touch's latest status, reason, and whether that decision is final."""
        return {
            touch_id: (status, reason, final)
            for touch_id, (status, reason, _, final, _) in Ledger._latest_events(
                session, touch_ids
            ).items()
        }

    @staticmethod
    def _latest_events(
        session: Session, touch_ids: Sequence[int]
    ) -> dict[int, tuple[str, str | None, dt.datetime | None, bool, str | None]]:
        """Each touch's latest status, reason, (for ``planned``) scheduled send time and
        channel, and whether it is final (a suppression decided at send time)."""
        latest: dict[int, tuple[str, str | None, dt.datetime | None, bool, str | None]] = {}
        for start in range(0, len(touch_ids), _CHUNK):
            chunk = list(touch_ids[start : start + _CHUNK])
            rows = session.execute(
                select(
                    TouchCurrent.touch_id,
                    TouchCurrent.status,
                    TouchCurrent.reason,
                    TouchCurrent.send_at,
                    TouchCurrent.final,
                    TouchCurrent.channel,
                ).where(TouchCurrent.touch_id.in_(chunk))
            )
            for touch_id, status, reason, send_at, final, channel in rows:
                latest[touch_id] = (
                    status,
                    reason,
                    aware_utc(send_at) if send_at else None,
                    final,
                    channel,
                )
        return latest

    def _states(self, session: Session, rows: Sequence[TouchRow]) -> list[TouchState]:
        ids = [r.id for r in rows]
        latest = self._latest_events(session, ids)
        counts: dict[int, int] = {}
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            for touch_id, count in session.execute(
                select(Attempt.touch_id, func.count())
                .where(Attempt.touch_id.in_(chunk))
                .group_by(Attempt.touch_id)
            ):
                counts[touch_id] = count
        states = []
        for r in rows:
            status, reason, send_at, _, channel = latest.get(
                r.id, (TouchStatus.PLANNED.value, None, None, False, None)
            )
            states.append(
                TouchState(
                    row=r,
                    status=TouchStatus(status),
                    reason=reason,
                    attempts=counts.get(r.id, 0),
                    scheduled=send_at if status == TouchStatus.PLANNED.value else None,
                    planned_channel=channel if status == TouchStatus.PLANNED.value else None,
                )
            )
        return states

    def states(self, touch_ids: Iterable[int]) -> list[TouchState]:
        ids = list(touch_ids)
        with self.store.read_session() as session:
            rows: list[TouchRow] = []
            for start in range(0, len(ids), _CHUNK):
                rows.extend(
                    session.scalars(
                        select(TouchRow).where(TouchRow.id.in_(ids[start : start + _CHUNK]))
                    )
                )
            rows.sort(key=lambda r: ids.index(r.id) if len(ids) < 2000 else r.id)
            return self._states(session, rows)

    def states_for_day(self, occurrence: dt.date) -> list[TouchState]:
        with self.store.read_session() as session:
            rows = list(
                session.scalars(
                    select(TouchRow).where(TouchRow.occurrence == occurrence).order_by(TouchRow.id)
                )
            )
            return self._states(session, rows)

    def touch_ids_in_status(
        self, statuses: set[TouchStatus], *, day: dt.date | None = None
    ) -> list[int]:
        """Ids of touches whose latest status is one of ``statuses`` (of one day, or all)."""
        wanted = [s.value for s in statuses]
        query = select(TouchCurrent.touch_id).where(TouchCurrent.status.in_(wanted))
        if day is not None:
            query = query.join(TouchRow, TouchRow.id == TouchCurrent.touch_id).where(
                TouchRow.occurrence == day
            )
        with self.store.read_session() as session:
            return list(session.scalars(query.order_by(TouchCurrent.touch_id)))

    def final_keys(self, keys: list[str]) -> dict[str, str]:
        """The keys among ``keys`` whose fate is sealed, with the reason word to report:
        ``already_sent`` when handled (sent, failed, ...), or the reason it was suppressed
        with when it was due (``too_late``, ``quiet_hours``, a late ``frequency_cap``)."""
        found: dict[str, str] = {}
        with self.store.read_session() as session:
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start : start + _CHUNK]
                rows = list(
                    session.execute(
                        select(TouchRow.id, TouchRow.touch_key).where(TouchRow.touch_key.in_(chunk))
                    )
                )
                latest = self._latest(session, [r[0] for r in rows])
                for tid, key in rows:
                    status, reason, final = latest[tid]
                    if final and reason:
                        found[key] = reason
                    elif is_handled(status, reason, final):
                        found[key] = SuppressionReason.ALREADY_SENT.value
        return found

    # -- history for the planner (plan.history.History) ----------------------------------------

    def contacts(
        self, customer_ids: Iterable[str] | None, first: dt.date, last: dt.date
    ) -> list[PastContact]:
        """Touches that reached, or are planned to reach, customers on local days first..last.

        A touch's contact day is the local date of its last attempt, or of its scheduled send
        time if it has not been attempted. Suppressed and failed touches do not count.
        """
        # Deferral moves a touch at most MAX_DEFER_DAYS forward, a late send one more day.
        lo = first - dt.timedelta(days=MAX_DEFER_DAYS + 1)
        query = select(TouchRow).where(TouchRow.occurrence >= lo, TouchRow.occurrence <= last)
        found: list[PastContact] = []
        with self.store.read_session() as session:
            batches: list[list[TouchRow]] = []
            if customer_ids is None:
                batches.append(list(session.scalars(query)))
            else:
                wanted = sorted(set(customer_ids))
                for start in range(0, len(wanted), _CHUNK):
                    chunk = wanted[start : start + _CHUNK]
                    batches.append(
                        list(session.scalars(query.where(TouchRow.customer_id.in_(chunk))))
                    )
            for rows in batches:
                states = self._states(session, rows)
                attempted = self._last_attempts(session, [st.id for st in states])
                attempted_channel = self._last_attempt_channels(session, [st.id for st in states])
                for st in states:
                    if st.status not in COUNTED:
                        continue
                    instant = attempted.get(st.id) or st.send_at
                    day = instant.astimezone(_zone(st.row.timezone)).date()
                    if first <= day <= last:
                        found.append(
                            PastContact(
                                key=st.row.touch_key,
                                customer_id=st.row.customer_id,
                                rule_id=st.row.rule_id,
                                category=st.row.category,
                                channel=attempted_channel.get(st.id) or st.channel,
                                day=day,
                                handled=st.status in HANDLED,
                                occurrence=st.row.occurrence,
                            )
                        )
        return found

    def occasion_contacts(
        self, customer_ids: Iterable[str], rule_ids: Iterable[str], first: dt.date, last: dt.date
    ) -> list[PastContact]:
        """Counted touches (``planned``, ``sending``, ``sent``, ...: ``COUNTED``) of these
        customers and rules with an occurrence in first..last; ``day`` is the occurrence."""
        rules = sorted(set(rule_ids))
        wanted = sorted(set(customer_ids))
        if not rules or not wanted:
            return []
        counted = [s.value for s in COUNTED]
        handled = {s.value for s in HANDLED}
        found: list[PastContact] = []
        with self.store.read_session() as session:
            for start in range(0, len(wanted), _CHUNK):
                query = (
                    select(TouchRow, TouchCurrent.status)
                    .join(TouchCurrent, TouchCurrent.touch_id == TouchRow.id)
                    .where(
                        TouchRow.customer_id.in_(wanted[start : start + _CHUNK]),
                        TouchRow.rule_id.in_(rules),
                        TouchRow.occurrence >= first,
                        TouchRow.occurrence <= last,
                        TouchCurrent.status.in_(counted),
                    )
                )
                for row, status in session.execute(query):
                    found.append(
                        PastContact(
                            key=row.touch_key,
                            customer_id=row.customer_id,
                            rule_id=row.rule_id,
                            category=row.category,
                            channel=row.channel,
                            day=row.occurrence,
                            handled=status in handled,
                            occurrence=row.occurrence,
                        )
                    )
        return found

    @staticmethod
    def _last_attempt_channels(session: Session, touch_ids: Sequence[int]) -> dict[int, str]:
        out: dict[int, str] = {}
        for start in range(0, len(touch_ids), _CHUNK):
            chunk = list(touch_ids[start : start + _CHUNK])
            for touch_id, channel in session.execute(
                select(Attempt.touch_id, Attempt.channel)
                .where(Attempt.touch_id.in_(chunk))
                .order_by(Attempt.id)
            ):
                out[touch_id] = channel  # the last attempt's channel wins
        return out

    @staticmethod
    def _last_attempts(session: Session, touch_ids: Sequence[int]) -> dict[int, dt.datetime]:
        out: dict[int, dt.datetime] = {}
        for start in range(0, len(touch_ids), _CHUNK):
            chunk = list(touch_ids[start : start + _CHUNK])
            for touch_id, created in session.execute(
                select(Attempt.touch_id, func.max(Attempt.created_at))
                .where(Attempt.touch_id.in_(chunk))
                .group_by(Attempt.touch_id)
            ):
                out[touch_id] = aware_utc(created)
        return out

    def deferred(
        self,
        rule_ids: Iterable[str],
        first: dt.date,
        last: dt.date,
        customer_ids: Iterable[str] | None = None,
    ) -> list[DeferredTouch]:
        """Touches of ``rule_ids`` (occurrence first..last; of ``customer_ids`` only, if
        given) whose current status is a deferral, with the day they wait for when the send
        step deferred them (``wait_until``).

        Read from the deferred touches (a partial index holds just those), not from the
        rules' touches of the period, which on a 1,000,000-customer store are many more; for
        a few customers, from their touches."""
        wanted = set(rule_ids)
        if not wanted:
            return []
        period = (TouchRow.occurrence >= first, TouchRow.occurrence <= last)
        # By reason only, so that the partial index serves the query (the status is checked
        # below): a statement that names the status may pick the status index instead, and
        # read every suppressed touch. Rule ids are checked below too, so that a few
        # customers' touches are found through their own index.
        deferred = TouchCurrent.reason == SuppressionReason.DEFERRED.value
        suppressed = TouchStatus.SUPPRESSED.value
        with self.store.read_session() as session:
            found: list[tuple[TouchRow, int]] = []
            if customer_ids is not None:
                customers = sorted(set(customer_ids))
                for start in range(0, len(customers), _CHUNK):
                    found += [
                        (row, event_id)
                        for row, event_id, status in session.execute(
                            select(TouchRow, TouchCurrent.event_id, TouchCurrent.status)
                            .join(TouchCurrent, TouchCurrent.touch_id == TouchRow.id)
                            .where(
                                TouchRow.customer_id.in_(customers[start : start + _CHUNK]),
                                *period,
                                deferred,
                            )
                        )
                        if status == suppressed and row.rule_id in wanted
                    ]
            else:
                waiting = {
                    touch_id: event_id
                    for touch_id, event_id, status in session.execute(
                        select(
                            TouchCurrent.touch_id, TouchCurrent.event_id, TouchCurrent.status
                        ).where(deferred)
                    )
                    if status == suppressed
                }
                ids = sorted(waiting)
                for start in range(0, len(ids), _CHUNK):
                    found += [
                        (row, waiting[row.id])
                        for row in session.scalars(
                            select(TouchRow).where(
                                TouchRow.id.in_(ids[start : start + _CHUNK]), *period
                            )
                        )
                        if row.rule_id in wanted
                    ]
            details: dict[int, Any] = {}
            events = sorted({event_id for _, event_id in found})
            for start in range(0, len(events), _CHUNK):
                details.update(
                    session.execute(
                        select(TouchEvent.id, TouchEvent.detail).where(
                            TouchEvent.id.in_(events[start : start + _CHUNK])
                        )
                    ).all()
                )
        result = []
        for r, event_id in found:
            detail = details.get(event_id)
            wait = detail.get(WAIT_UNTIL) if isinstance(detail, dict) else None
            result.append(
                DeferredTouch(
                    key=r.touch_key,
                    rule_id=r.rule_id,
                    customer_id=r.customer_id,
                    policy_id=r.policy_id,
                    event_id=r.event_id,
                    occurrence=r.occurrence,
                    context=decode(r.context),
                    wait_until=dt.date.fromisoformat(wait) if wait else None,
                )
            )
        return result

    def missed_obligations(self, run_id: str | Sequence[str]) -> list[dict[str, Any]]:
        """The service obligations run ``run_id`` (or the writers of one run, as in
        ``run_counts``) recorded as ``obligation_missed``: touch id and key, rule id,
        customer id and occurrence (the day it was due), oldest first."""
        missed = SuppressionReason.OBLIGATION_MISSED.value
        writers = [run_id] if isinstance(run_id, str) else list(run_id)
        with self.store.read_session() as session:
            rows = session.execute(
                select(
                    TouchRow.id,
                    TouchRow.touch_key,
                    TouchRow.rule_id,
                    TouchRow.customer_id,
                    TouchRow.occurrence,
                )
                .join(TouchEvent, TouchEvent.touch_id == TouchRow.id)
                .where(TouchEvent.run_id.in_(writers), TouchEvent.reason == missed)
                .order_by(TouchEvent.id)
            ).all()
        return [
            {
                "touch_id": i,
                "touch_key": k,
                "rule_id": r,
                "customer_id": c,
                "occurrence": o.isoformat(),
            }
            for i, k, r, c, o in rows
        ]

    def attempts(self, touch_id: int) -> list[Attempt]:
        with self.store.read_session() as session:
            return list(
                session.scalars(
                    select(Attempt).where(Attempt.touch_id == touch_id).order_by(Attempt.attempt_no)
                )
            )

    def history(self, touch_id: int) -> list[TouchEvent]:
        with self.store.read_session() as session:
            return list(
                session.scalars(
                    select(TouchEvent)
                    .where(TouchEvent.touch_id == touch_id)
                    .order_by(TouchEvent.id)
                )
            )

    # -- writing ---------------------------------------------------------------------------

    def record_plan(
        self,
        touches: Sequence[Touch],
        *,
        run_id: str,
        now: dt.datetime,
        retry_render_errors: bool = False,
    ) -> PlanRecord:
        """Record a day's plan idempotently; returns the ids of touches now waiting to be sent.

        A new key gets its row and a ``planned`` or ``suppressed`` event. An existing key is
        left alone once handled; a ``suppressed`` one whose decision is now ``send`` (say,
        consent was given since) is planned again, and a ``planned`` one that is now
        suppressed gets the suppression appended.
        """
        result = PlanRecord(planned_ids=[])
        assert result.planned_ids is not None
        with self._write(now) as session:
            for start in range(0, len(touches), _CHUNK):
                chunk = touches[start : start + _CHUNK]
                self._insert_touch_rows(session, chunk, run_id, now)
                rows = {
                    r.touch_key: r
                    for r in session.scalars(
                        select(TouchRow).where(TouchRow.touch_key.in_([t.key for t in chunk]))
                    )
                }
                latest = self._latest_events(session, [r.id for r in rows.values()])
                events: list[dict[str, Any]] = []
                for touch in chunk:
                    row = rows[touch.key]
                    current = latest.get(row.id)
                    status = TouchStatus(current[0]) if current else None
                    reason = current[1] if current else None
                    final = current[3] if current else False
                    wanted_reason = touch.reason.value if touch.reason else None
                    if touch.reason is SuppressionReason.ALREADY_SENT:
                        result.unchanged += 1
                        continue
                    if status is TouchStatus.PLANNED and _moved_later(current, touch):
                        # Deferred and already planned for a later day: planning its first
                        # day again must neither pull it back nor suppress it.
                        result.unchanged += 1
                        continue
                    if status is None:
                        result.new += 1
                        new_status = (
                            TouchStatus.PLANNED
                            if touch.decision is Decision.SEND
                            else TouchStatus.SUPPRESSED
                        )
                    elif is_handled(status.value, reason, final) or (
                        status is TouchStatus.FAILED and not retry_render_errors
                    ):
                        result.unchanged += 1
                        continue
                    elif touch.decision is Decision.SEND and status in (
                        TouchStatus.SUPPRESSED,
                        TouchStatus.FAILED,
                    ):
                        result.replanned += 1
                        new_status = TouchStatus.PLANNED
                    elif touch.decision is Decision.SUPPRESS and (
                        status is TouchStatus.PLANNED or reason != wanted_reason
                    ):
                        new_status = TouchStatus.SUPPRESSED
                    elif (
                        touch.decision is Decision.SEND
                        and status is TouchStatus.PLANNED
                        and touch.channel is not None
                        and current is not None
                        and current[4] not in (None, touch.channel.value)
                    ):
                        # Still to send, but now on another channel (consent changed).
                        new_status = TouchStatus.PLANNED
                    else:
                        if status is TouchStatus.PLANNED:
                            result.planned_ids.append(row.id)
                        result.unchanged += 1
                        continue
                    if new_status is TouchStatus.PLANNED:
                        result.planned_ids.append(row.id)
                        result.planned += 1
                    else:
                        result.suppressed += 1
                    events.append(
                        {
                            "touch_id": row.id,
                            "status": new_status.value,
                            "reason": wanted_reason
                            if new_status is TouchStatus.SUPPRESSED
                            else None,
                            "detail": {
                                # A missed obligation's window is over: no plan revives it.
                                **(
                                    {"final": True}
                                    if touch.reason is SuppressionReason.OBLIGATION_MISSED
                                    else {}
                                ),
                                "explain": touch.explain,
                                # What the customer had consented to when this was decided.
                                "consent": {
                                    p: bool(touch.customer.get(f"consent_{p}"))
                                    for p in ("sms", "email", "marketing")
                                },
                            },
                            "send_at": touch.send_at if new_status is TouchStatus.PLANNED else None,
                            "channel": touch.channel.value
                            if new_status is TouchStatus.PLANNED and touch.channel
                            else None,
                            "at": now,
                            "run_id": run_id,
                        }
                    )
                if events:
                    session.execute(TouchEvent.__table__.insert(), events)
        return result

    def _insert_touch_rows(
        self, session: Session, touches: Sequence[Touch], run_id: str, now: dt.datetime
    ) -> None:
        rows = [
            {
                "touch_key": t.key,
                "rule_id": t.rule.id,
                "rule_hash": t.rule.file_hash,
                "category": t.rule.category.value,
                "priority": t.rule.priority,
                "subject_kind": t.subject.value,
                "subject_id": t.subject_id,
                "customer_id": t.customer_id,
                "policy_id": (t.policy or {}).get("policy_id"),
                "event_id": (t.event or {}).get("event_id"),
                "occurrence": t.occurrence,
                "send_at": t.send_at,
                "timezone": t.timezone,
                "locale": t.customer.get("locale") or "zh-CN",
                "tier": t.customer.get("tier") or "C",
                "channel": t.channel.value if t.channel else None,
                "template_id": t.rule.template,
                "context": encode(t.template_context()),
                "created_at": now,
                "run_id": run_id,
            }
            for t in touches
        ]
        dialect = session.get_bind().dialect.name
        insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[dialect]
        session.execute(
            insert(TouchRow.__table__)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["touch_key"])
        )

    def append(
        self,
        touch_id: int,
        status: TouchStatus,
        *,
        run_id: str,
        now: dt.datetime,
        reason: str | None = None,
        attempt_id: int | None = None,
        provider_message_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append one status event."""
        self.append_many(
            [StatusChange(touch_id, status, reason, attempt_id, provider_message_id, detail)],
            run_id=run_id,
            now=now,
        )

    def append_many(
        self, changes: Sequence[StatusChange], *, run_id: str, now: dt.datetime
    ) -> None:
        """Append status events in one transaction."""
        if not changes:
            return
        rows = [
            {
                "touch_id": c.touch_id,
                "attempt_id": c.attempt_id,
                "status": c.status.value,
                "reason": c.reason,
                "provider_message_id": c.provider_message_id,
                "detail": c.detail,
                "at": now,
                "run_id": run_id,
            }
            for c in changes
        ]
        with self._write(now) as session:
            session.execute(TouchEvent.__table__.insert(), rows)

    def claim_many(
        self, claims: Sequence[Claim], *, run_id: str, now: dt.datetime
    ) -> dict[int, Attempt]:
        """Atomically claim touches for one delivery attempt each; returns those won, by touch.

        Inserting attempt number ``n + 1`` is the claim: the UNIQUE (touch, attempt_no)
        constraint lets exactly one of two racing workers through (the other's insert does
        nothing), and the ``sending`` event is written in the same transaction, before any
        provider is called. A touch no longer ``planned`` is not claimed.
        """
        if not claims:
            return {}
        won: dict[int, Attempt] = {}
        with self._write(now) as session:
            ids = sorted(c.state.id for c in claims)
            # Lock the touches first (PostgreSQL; SQLite's BEGIN IMMEDIATE already holds the
            # database). Without it, under READ COMMITTED, the status and the attempt count
            # below could come from either side of a racing worker's commit, and both
            # workers would then "win" with different attempt numbers. FOR NO KEY UPDATE, not
            # FOR UPDATE: status events referencing these touches take KEY SHARE locks, and
            # FOR UPDATE would deadlock a claimer against a worker recording its results.
            session.execute(
                select(TouchRow.id)
                .where(TouchRow.id.in_(ids))
                .order_by(TouchRow.id)
                .with_for_update(key_share=True)
            ).all()
            latest = self._latest(session, ids)
            numbers: dict[int, int] = dict.fromkeys(ids, 0)
            for touch_id, highest in session.execute(
                select(Attempt.touch_id, func.max(Attempt.attempt_no))
                .where(Attempt.touch_id.in_(ids))
                .group_by(Attempt.touch_id)
            ):
                numbers[touch_id] = highest or 0
            rows = []
            for c in claims:
                current = latest.get(c.state.id)
                if current and TouchStatus(current[0]) is not TouchStatus.PLANNED:
                    continue
                rows.append(
                    {
                        "touch_id": c.state.id,
                        "attempt_no": numbers[c.state.id] + 1,
                        "channel": c.channel,
                        "transport": c.transport,
                        "recipient": c.recipient,
                        "template_id": c.state.row.template_id,
                        "template_hash": c.template_hash,
                        "content_hash": c.message.content_hash(),
                        "subject": c.message.subject,
                        "body": c.message.body,
                        "html": c.message.html,
                        "created_at": now,
                        "run_id": run_id,
                    }
                )
            if not rows:
                return {}
            insert = _dialect_insert(session)
            stmt = (
                insert(Attempt.__table__)
                .on_conflict_do_nothing(index_elements=["touch_id", "attempt_no"])
                .returning(Attempt.__table__.c.id, Attempt.__table__.c.touch_id)
            )
            inserted = {
                touch_id: attempt_id for attempt_id, touch_id in session.execute(stmt, rows)
            }
            if not inserted:
                return {}
            session.execute(
                TouchEvent.__table__.insert(),
                [
                    {
                        "touch_id": touch_id,
                        "attempt_id": attempt_id,
                        "status": TouchStatus.SENDING.value,
                        "at": now,
                        "run_id": run_id,
                    }
                    for touch_id, attempt_id in inserted.items()
                ],
            )
            for attempt in session.scalars(
                select(Attempt).where(Attempt.id.in_(list(inserted.values())))
            ):
                won[attempt.touch_id] = attempt
        return won

    # -- provider webhooks -----------------------------------------------------------------

    def match_message(
        self, channel: str, *, attempt_id: int | None, message_ids: Sequence[str]
    ) -> MessageMatch | None:
        """The attempt a provider's event is about: by our attempt id (carried in the status
        callback URL or the email's custom args) when it names an attempt on ``channel``,
        else by the provider message id recorded on a ``sent`` event."""
        return self.match_messages(channel, [(attempt_id, message_ids)])[0]

    def match_messages(
        self, channel: str, wanted: Sequence[tuple[int | None, Sequence[str]]]
    ) -> list[MessageMatch | None]:
        """``match_message`` for many events at once (a SendGrid batch), in a few queries."""
        by_attempt: dict[int, MessageMatch] = {}
        by_message: dict[str, MessageMatch] = {}
        attempt_ids = sorted({a for a, _ in wanted if a is not None})
        message_ids = sorted({m for _, ms in wanted for m in ms if m})
        with self.store.read_session() as session:
            for start in range(0, len(attempt_ids), _CHUNK):
                for attempt, touch, customer in session.execute(
                    select(Attempt.id, Attempt.touch_id, TouchRow.customer_id)
                    .join(TouchRow, TouchRow.id == Attempt.touch_id)
                    .where(
                        Attempt.id.in_(attempt_ids[start : start + _CHUNK]),
                        Attempt.channel == channel,
                    )
                ):
                    by_attempt[attempt] = MessageMatch(touch, attempt, customer)
            for start in range(0, len(message_ids), _CHUNK):
                for message, attempt, touch, customer in session.execute(
                    select(
                        TouchEvent.provider_message_id,
                        Attempt.id,
                        TouchEvent.touch_id,
                        TouchRow.customer_id,
                    )
                    .join(TouchRow, TouchRow.id == TouchEvent.touch_id)
                    .join(Attempt, Attempt.id == TouchEvent.attempt_id)
                    .where(
                        TouchEvent.provider_message_id.in_(message_ids[start : start + _CHUNK]),
                        TouchEvent.status == TouchStatus.SENT.value,
                        Attempt.channel == channel,
                    )
                    .order_by(TouchEvent.id)
                ):
                    by_message[str(message)] = MessageMatch(touch, attempt, customer)  # newest
        found: list[MessageMatch | None] = []
        for attempt_id, ids in wanted:
            match = by_attempt.get(attempt_id) if attempt_id is not None else None
            for message_id in ids:
                if match is None:
                    match = by_message.get(message_id)
            found.append(match)
        return found

    def known_provider_events(self, provider: str, event_ids: Iterable[str]) -> set[str]:
        """The ids among ``event_ids`` already recorded for ``provider``."""
        ids = sorted(set(event_ids))
        found: set[str] = set()
        with self.store.read_session() as session:
            for start in range(0, len(ids), _CHUNK):
                found.update(
                    session.scalars(
                        select(ProviderEventRow.provider_event_id).where(
                            ProviderEventRow.provider == provider,
                            ProviderEventRow.provider_event_id.in_(ids[start : start + _CHUNK]),
                        )
                    )
                )
        return found

    def record_provider_events(
        self, events: Sequence[ProviderEvent], *, now: dt.datetime
    ) -> list[ProviderEvent]:
        """Record webhook events once each; returns those that were new.

        One transaction: the ``provider_events`` rows (a ``(provider, provider_event_id)``
        already present inserts nothing, so a replayed webhook changes nothing) and, for each
        new event that means a touch status and names a touch, its status event, written
        with ``run_id`` ``webhook:<provider>``. See ``refresh_current`` for why a receipt
        that arrives before the sender's ``sent`` is not undone by it.
        """
        unique = list({(e.provider, e.provider_event_id): e for e in events}.values())
        if not unique:
            return []
        new: list[ProviderEvent] = []
        with self._write(now) as session:
            insert = _dialect_insert(session)
            table = ProviderEventRow.__table__
            for start in range(0, len(unique), _CHUNK):
                chunk = unique[start : start + _CHUNK]
                stmt = (
                    insert(table)
                    .on_conflict_do_nothing(index_elements=["provider", "provider_event_id"])
                    .returning(table.c.provider, table.c.provider_event_id)
                )
                rows = [
                    {
                        "provider": e.provider,
                        "provider_event_id": e.provider_event_id,
                        "kind": e.kind,
                        "provider_status": e.provider_status,
                        "provider_message_id": (e.provider_message_id or "")[:200] or None,
                        "touch_id": e.touch_id,
                        "attempt_id": e.attempt_id,
                        "customer_id": e.customer_id,
                        "status": e.status.value if e.status else None,
                        "payload": e.payload,
                        "occurred_at": e.occurred_at,
                        "received_at": now,
                    }
                    for e in chunk
                ]
                inserted = {tuple(r) for r in session.execute(stmt, rows)}
                new.extend(e for e in chunk if (e.provider, e.provider_event_id) in inserted)
            changes = [
                {
                    "touch_id": e.touch_id,
                    "attempt_id": e.attempt_id,
                    "status": e.status.value,
                    "reason": DELIVERY_FAILED if e.status is TouchStatus.FAILED else e.reason,
                    # touch_events keeps at most 128 characters of it (the full one is above).
                    "provider_message_id": (e.provider_message_id or "")[:128] or None,
                    "detail": {
                        "receipt": e.provider,
                        "provider_event_id": e.provider_event_id,
                        "provider_status": e.provider_status,
                        **(e.detail or {}),
                    },
                    "at": now,
                    "run_id": f"webhook:{e.provider}",
                }
                for e in new
                if e.status is not None and e.touch_id is not None
            ]
            if changes:
                session.execute(TouchEvent.__table__.insert(), changes)
        return new

    # -- summaries -------------------------------------------------------------------------

    def run_counts(self, run_id: str | Sequence[str]) -> dict[str, int]:
        """What one run recorded: its status events by status, so a run summary's counts are
        the ledger's own. ``planned``: touches planned (or planned again) by a decision;
        ``retry``: put back to ``planned`` after a retryable failure or a crash that did
        not reach the provider; ``in_flight``: claimed by the run and still ``sending`` (the
        provider's answer was unclear: recovery asks again)."""
        counts = dict.fromkeys(RUN_COUNTS, 0)
        # One run id, or the ids of every writer of one run (a DAG run's tasks).
        writers = [run_id] if isinstance(run_id, str) else list(run_id)
        ours = TouchEvent.run_id.in_(writers)
        has_reason = TouchEvent.reason.is_not(None)
        with self.store.read_session() as session:
            rows = session.execute(
                select(TouchEvent.status, has_reason, func.count())
                .where(ours)
                .group_by(TouchEvent.status, has_reason)
            )
            for status, reason, count in rows:
                key = "retry" if status == TouchStatus.PLANNED.value and reason else status
                if key in counts:
                    counts[key] += count
            counts["in_flight"] = (
                session.scalar(
                    select(func.count(func.distinct(TouchEvent.touch_id)))
                    .join(TouchCurrent, TouchCurrent.touch_id == TouchEvent.touch_id)
                    .where(
                        ours,
                        TouchEvent.status == TouchStatus.SENDING.value,
                        TouchCurrent.status == TouchStatus.SENDING.value,
                    )
                )
                or 0
            )
        return counts

    def counts_for_day(self, occurrence: dt.date) -> list[dict[str, Any]]:
        """One dict per touch of the day: rule, channel, tier, status and reason."""
        out = []
        for state in self.states_for_day(occurrence):
            out.append(
                {
                    "rule_id": state.row.rule_id,
                    "channel": state.row.channel,
                    "tier": state.row.tier,
                    "status": state.status.value,
                    "reason": state.reason,
                    "send_at": aware_utc(state.row.send_at),
                }
            )
        return out
