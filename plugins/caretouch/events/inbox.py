"""The durable inbox: every event lands in ``events`` exactly once per ``event_id``.

``submit`` validates a batch of incoming events and commits, in one transaction:
- new, valid events to ``events`` (with a receipt in ``event_receipts``: source, reference,
  time received, not yet planned);
- replays of an event already recorded with the same content: nothing (they are counted);
- everything else to ``event_dead_letters`` with the reason and the raw text: malformed
  events, events naming an unknown customer or policy, a ``premium_paid`` without a policy or
  naming another customer's, and a replay of an ``event_id`` with different content (the
  inbox keeps the first version; a replay never changes anything).

A new ``premium_paid`` moves its policy's ``paid_through`` and ``premium_due_date`` in the
same transaction (``store.payments``).

Only after ``submit`` returns may an intake path acknowledge what it received (a Redis Stream
entry, an API call): a crash before that re-delivers, and re-delivery is harmless.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import insert as insert_rows
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ..bounds import Limits, OutOfBounds, check_size, check_value, preview
from ..bounds import loads as bounded_loads
from ..dates import aware_utc
from ..errors import CareError, Location, ValidationError, ValidationFailed
from ..nul import escape_nul, escape_nul_values
from ..rules.event_types import EventTypes
from ..store.db import Store
from ..store.importer import PAYLOAD_LIMITS, RowError, csv_file_problem, parse_event
from ..store.models import (
    CANONICAL_COLUMNS,
    Customer,
    Event,
    EventDeadLetter,
    EventReceipt,
    InsurancePolicy,
)
from ..store.payments import (
    PREMIUM_PAID,
    PaymentRefused,
    apply_payment,
    paid_through_of,
    policy_owners,
)
from ..suggest import did_you_mean

log = logging.getLogger("caretouch.events")

EVENT_FIELDS: tuple[str, ...] = CANONICAL_COLUMNS["event"]
# An event stamped further in the future than this is refused: a clock that far off would
# plan a touch for a day that has not begun.
FUTURE_TOLERANCE = dt.timedelta(minutes=15)
# One event as received, whatever the path (docs/events.md, "Limits"), checked before it is
# parsed or walked: its fields and its payload (``PAYLOAD_LIMITS``, one level down).
EVENT_LIMITS = Limits(
    max_bytes=64 * 1024,
    max_depth=PAYLOAD_LIMITS.max_depth + 1,
    max_items=PAYLOAD_LIMITS.max_items + len(EVENT_FIELDS),
)
# A dead letter keeps at most this much of what was received.
MAX_RAW_KEPT = 64 * 1024
_CHUNK = 500


class MalformedEvent(CareError):
    """An incoming event that cannot be accepted; the message is the dead-letter reason."""


@dataclass(frozen=True)
class Incoming:
    """One event as received: a mapping of event fields or JSON text, and where it came from
    (a stream entry id, ``FILE:LINE``, an API run) for the receipt or the dead letter."""

    raw: Any  # a mapping or JSON text; anything else is refused as malformed
    ref: str | None = None
    # Set by an intake path that refuses the item before the inbox looks at it (e.g. an API
    # call with too many events): it is dead-lettered with this reason.
    refusal: str | None = None


@dataclass
class IntakeReport:
    """What one ``submit`` did."""

    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    dead: list[tuple[str | None, str]] = field(default_factory=list)  # (ref, reason)

    def merge(self, other: IntakeReport) -> IntakeReport:
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.dead += other.dead
        return self

    def as_dict(self) -> dict[str, int]:
        return {
            "accepted": len(self.accepted),
            "duplicates": len(self.duplicates),
            "dead_lettered": len(self.dead),
        }


def _text_value(name: str, value: Any) -> str:
    """One field as the CSV parsers expect it: text, empty for missing."""
    if value is None:
        return ""
    if name == "payload":
        if isinstance(value, str):
            return value
        if isinstance(value, dict):
            return json.dumps(value, ensure_ascii=False)
        raise MalformedEvent("payload must be a JSON object")
    if name == "occurred_at" and isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise MalformedEvent("occurred_at has no UTC offset (e.g. +08:00)")
        return value.isoformat()
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise MalformedEvent(f"{name} must be text, not {type(value).__name__}")
    return str(value)


def parse(raw: Any, *, now: dt.datetime) -> dict[str, Any]:
    """A valid event row from ``raw``, or ``MalformedEvent`` saying what is wrong.

    Size, depth and item count are checked first (``EVENT_LIMITS``): before the text is
    parsed, before a mapping is walked by anything that recurses.
    """
    try:
        if isinstance(raw, bytes):
            check_size(len(raw), EVENT_LIMITS, "the event")
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise MalformedEvent("not UTF-8 text") from None
        if isinstance(raw, str):
            try:
                raw = bounded_loads(raw, EVENT_LIMITS, "the event")
            except json.JSONDecodeError as exc:
                raise MalformedEvent(f"not valid JSON: {exc.msg} at column {exc.colno}") from None
        else:
            check_value(raw, EVENT_LIMITS, "the event")
    except OutOfBounds as exc:
        raise MalformedEvent(exc.message) from None
    if not isinstance(raw, Mapping):
        raise MalformedEvent(f"an event must be a JSON object, not {type(raw).__name__}")
    unknown = [k for k in raw if k not in EVENT_FIELDS]
    if unknown:
        name = str(unknown[0])
        hint = did_you_mean(name, EVENT_FIELDS)
        raise MalformedEvent(f"unknown field {name!r}{hint}; fields: " + ", ".join(EVENT_FIELDS))
    text = {name: _text_value(name, raw.get(name)) for name in EVENT_FIELDS}
    try:
        row, _ = parse_event(text)
    except RowError as exc:
        raise MalformedEvent(str(exc)) from None
    try:
        # Bounded above, so this cannot recurse too deep. Lone surrogates come from bytes
        # that are not UTF-8 (a stream entry) or from JSON escapes (``"\ud800"``): no
        # store holds them, and a message rendered from one could not be recorded.
        json.dumps(row, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedEvent("not UTF-8 text (a lone surrogate)") from None
    if row["occurred_at"] > now + FUTURE_TOLERANCE:
        raise MalformedEvent(
            f"occurred_at {row['occurred_at']:%Y-%m-%dT%H:%M:%SZ} is in the future "
            f"(now {now.astimezone(dt.timezone.utc):%Y-%m-%dT%H:%M:%SZ}); check the sender's clock"
        )
    return row


def _raw_text(raw: Any) -> str:
    # Bounded and without recursion: what is kept of a 60,000-deep or 10 MB event.
    return preview(raw, MAX_RAW_KEPT)


def _same(stored: Mapping[str, Any], row: Mapping[str, Any]) -> bool:
    return (
        stored["type"] == row["type"]
        and stored["customer_id"] == row["customer_id"]
        and (stored["policy_id"] or None) == (row["policy_id"] or None)
        and aware_utc(stored["occurred_at"]) == aware_utc(row["occurred_at"])
        and (stored["payload"] or None) == (row["payload"] or None)
    )


def _existing(session: Session, column: Any, ids: Iterable[str]) -> set[str]:
    wanted = sorted(set(ids))
    found: set[str] = set()
    for start in range(0, len(wanted), _CHUNK):
        found.update(
            session.scalars(select(column).where(column.in_(wanted[start : start + _CHUNK])))
        )
    return found


def _stored_events(session: Session, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    wanted = sorted(set(ids))
    table = Event.__table__
    out: dict[str, dict[str, Any]] = {}
    for start in range(0, len(wanted), _CHUNK):
        stmt = select(table).where(table.c.event_id.in_(wanted[start : start + _CHUNK]))
        for row in session.execute(stmt):
            out[row.event_id] = dict(row._mapping)
    return out


def _insert_ignoring_duplicates(session: Session, model: Any, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[dialect]
    for start in range(0, len(rows), _CHUNK):
        stmt: Any = insert(model.__table__).values(rows[start : start + _CHUNK])
        session.execute(stmt.on_conflict_do_nothing(index_elements=["event_id"]))


def _storable(text: str) -> str:
    """``text`` as every store can hold it: a NUL written as ``\\u0000`` (nul.py), a lone
    surrogate as ``?``."""
    return escape_nul(text.encode("utf-8", "replace").decode("utf-8"))


def _event_id_of(raw: Any) -> str | None:
    if isinstance(raw, (str, bytes)):
        try:
            raw = bounded_loads(raw, EVENT_LIMITS, "the event")
        except (OutOfBounds, ValueError):
            return None
    event_id = raw.get("event_id") if isinstance(raw, Mapping) else None
    return _storable(str(event_id)[:128]) if isinstance(event_id, (str, int)) and event_id else None


def _letter(
    item: Incoming, reason: str, event_id: str | None, *, source: str, now: dt.datetime
) -> dict[str, Any]:
    return {
        "source": source,
        "ref": (item.ref or "")[:300] or None,
        "event_id": event_id,
        "reason": _storable(reason[:1000]),
        "raw": _storable(_raw_text(item.raw)),
        "received_at": now,
    }


def dead_letter(
    store: Store, item: Incoming, reason: str, *, source: str, now: dt.datetime
) -> None:
    """Put one incoming event straight into the dead letters with ``reason`` (an intake path
    giving up on it, e.g. a stream entry that failed too many deliveries)."""
    with store.session() as session:
        session.execute(
            insert_rows(EventDeadLetter),
            [_letter(item, reason, _event_id_of(item.raw), source=source, now=now)],
        )
    log.warning("event dead-lettered (%s, %s): %s", source, item.ref or "-", reason)


def submit(
    store: Store,
    items: Sequence[Incoming],
    *,
    source: str,
    now: dt.datetime,
    event_types: EventTypes | None = None,
) -> IntakeReport:
    """Validate ``items`` and commit them to the inbox or the dead letters, all at once.

    With ``event_types`` (care_rules/events.yaml), an event of an undeclared type, or whose
    payload has an undeclared, missing required or mistyped field, is dead-lettered too.
    Idempotent: submitting the same events again changes nothing. When this returns, every
    item is durable in one table or the other; the caller may acknowledge them.
    """
    report = IntakeReport()
    parsed: list[tuple[Incoming, dict[str, Any]]] = []
    dead: list[dict[str, Any]] = []

    def refuse(item: Incoming, reason: str, event_id: str | None = None) -> None:
        report.dead.append((item.ref, reason))
        dead.append(_letter(item, reason, event_id, source=source, now=now))

    for item in items:
        if item.refusal is not None:
            refuse(item, item.refusal)
            continue
        try:
            row = parse(item.raw, now=now)
            problems = event_types.problems(row["type"], row["payload"]) if event_types else []
            if problems:
                raise MalformedEvent("; ".join(problems))
            parsed.append((item, row))
        except MalformedEvent as exc:
            refuse(item, exc.message, _event_id_of(item.raw))

    # Reads and writes in one write transaction: on SQLite it holds the write lock, so two
    # consumers cannot both see an event as new; on PostgreSQL ON CONFLICT settles races.
    with store.session() as session:
        stored = _stored_events(session, (row["event_id"] for _, row in parsed))
        customers = _existing(session, Customer.customer_id, (r["customer_id"] for _, r in parsed))
        policies = _existing(
            session,
            InsurancePolicy.policy_id,
            (r["policy_id"] for _, r in parsed if r["policy_id"]),
        )
        new_events: list[dict[str, Any]] = []
        receipts: list[dict[str, Any]] = []
        owners: dict[str, str] | None = None  # of the policies payments name, once needed
        for item, row in parsed:
            event_id = row["event_id"]
            first = stored.get(event_id)
            if first is not None:
                if _same(first, row):
                    report.duplicates.append(event_id)
                else:
                    refuse(
                        item,
                        f"event_id {event_id!r} is already in the inbox with different content "
                        "(an event is never changed; send a new event_id)",
                        event_id,
                    )
                continue
            if row["customer_id"] not in customers:
                refuse(item, f"unknown customer_id {row['customer_id']!r}", event_id)
                continue
            if row["policy_id"] and row["policy_id"] not in policies:
                refuse(item, f"unknown policy_id {row['policy_id']!r}", event_id)
                continue
            if row["type"] == PREMIUM_PAID:
                # The payment moves its policy in this transaction (store.payments): stored
                # with its effect, or dead-lettered with the reason, never half of it.
                if owners is None:
                    owners = policy_owners(
                        session, (r["policy_id"] for _, r in parsed if r["type"] == PREMIUM_PAID)
                    )
                try:
                    with session.begin_nested():
                        apply_payment(session, row["policy_id"], paid_through_of(row, owners))
                except PaymentRefused as exc:
                    refuse(item, str(exc), event_id)
                    continue
                except SQLAlchemyError as exc:  # e.g. policies is a view that cannot be updated
                    reason = str(getattr(exc, "orig", exc)).splitlines()[0][:300]
                    refuse(item, f"the payment could not be recorded on its policy: {reason}")
                    continue
            stored[event_id] = row
            new_events.append(row)
            receipts.append(
                {
                    "event_id": event_id,
                    "source": source,
                    "ref": (item.ref or "")[:300] or None,
                    "received_at": now,
                    "planned_at": None,
                }
            )
            report.accepted.append(event_id)
        _insert_ignoring_duplicates(session, Event, new_events)
        _insert_ignoring_duplicates(session, EventReceipt, receipts)
        if dead:
            # A refused event keeps its raw text, NULs included: written as \u0000 (the store
            # cannot hold a NUL; nul.py), so refusing it cannot fail.
            session.execute(insert_rows(EventDeadLetter), [escape_nul_values(d) for d in dead])
    for ref, reason in report.dead:
        log.warning("event dead-lettered (%s, %s): %s", source, ref or "-", reason)
    return report


def read_csv(path: Path) -> list[Incoming]:
    """The rows of an events CSV (the ``events`` column names as headers) as incoming events.

    A header naming an unknown column, or lacking a required one, refuses the whole file
    (``ValidationFailed``); bad rows are the inbox's business (dead letters with FILE:LINE).
    """
    problem = csv_file_problem(path)  # missing, unreadable, empty, not UTF-8: the file
    if problem is not None:
        raise ValidationFailed([ValidationError(problem[1], location=problem[0])])
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise ValidationFailed(
            [ValidationError(f"cannot read: {exc.strerror}", location=Location(str(path)))]
        ) from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ValidationFailed(
                [ValidationError("empty file (no header row)", location=Location(str(path), 1))]
            ) from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ValidationFailed(
                [ValidationError(f"unreadable header: {exc}", location=Location(str(path), 1))]
            ) from None
        if not set(header) & set(EVENT_FIELDS):
            raise ValidationFailed(
                [
                    ValidationError(
                        "no header row: the first line must name the columns (events columns "
                        f"are: {', '.join(EVENT_FIELDS)})",
                        location=Location(str(path), 1),
                    )
                ]
            )
        errors = []
        for col, name in enumerate(header, start=1):
            if name not in EVENT_FIELDS:
                hint = did_you_mean(name, EVENT_FIELDS)
                errors.append(
                    ValidationError(
                        f"unknown column {name!r}{hint}",
                        location=Location(str(path), 1, col),
                    )
                )
        for name in ("event_id", "type", "customer_id", "occurred_at"):
            if name not in header:
                errors.append(
                    ValidationError(f"missing column {name!r}", location=Location(str(path), 1))
                )
        if errors:
            raise ValidationFailed(errors)
        items = []
        try:
            for values in reader:
                line = reader.line_num
                if not any(v.strip() for v in values):
                    continue
                raw = {name: values[i] if i < len(values) else "" for i, name in enumerate(header)}
                items.append(Incoming({k: v for k, v in raw.items() if v != ""}, f"{path}:{line}"))
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ValidationFailed(
                [
                    ValidationError(
                        f"unreadable CSV: {exc}", location=Location(str(path), reader.line_num)
                    )
                ]
            ) from None
    return items


def dead_letters(store: Store, *, limit: int = 100) -> list[EventDeadLetter]:
    """The latest dead letters, newest first."""
    with store.read_session() as session:
        return list(
            session.scalars(
                select(EventDeadLetter).order_by(EventDeadLetter.id.desc()).limit(limit)
            )
        )
