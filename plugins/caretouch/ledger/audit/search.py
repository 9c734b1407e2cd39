"""Search: the touches matching an auditor's filters, page by page, recipients masked.

Filters are checked by ``make_filters`` (the CLI's options and the web view's form alike);
``touches`` pages through the ledger by id (keyset pagination).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from ...errors import CareError
from ...mask import mask_recipient
from ...store.db import Store
from ...suggest import did_you_mean
from ...vocab import Channel, TouchStatus
from ..models import Attempt, TouchCurrent, TouchEvent, TouchRow
from ..readers import states_of

PAGE = 1000
# Ledger row ids are 64-bit integers on SQLite and PostgreSQL; a larger number names no row,
# and handed to the database it would fail the query (OverflowError, "out of range").
ROW_ID_MAX = 2**63 - 1


@dataclass(frozen=True)
class Filters:
    first: dt.date | None = None
    last: dt.date | None = None
    customer_id: str | None = None
    rule_id: str | None = None
    channel: str | None = None
    status: str | None = None


class InvalidFilter(CareError):
    """A search filter that is not well formed: the CLI exits 2, the web view answers 422."""


MAX_FILTER = 128  # characters of a text filter (customer, rule)


def _filter_day(value: str | dt.date | None, name: str) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    text = value.strip()
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise InvalidFilter(f"{name}: {text[:20]!r} is not a date (YYYY-MM-DD)") from None


def _filter_word(value: str | None, name: str, allowed: list[str]) -> str | None:
    text = _filter_text(value, name)
    if text is not None and text not in allowed:
        raise InvalidFilter(
            f"{name}: {text[:20]!r} is not one of {', '.join(allowed)}"
            + did_you_mean(text, allowed)
        )
    return text


def _filter_text(value: str | None, name: str) -> str | None:
    text = (value or "").strip()
    if len(text) > MAX_FILTER:
        raise InvalidFilter(f"{name}: at most {MAX_FILTER} characters")
    if any(ch < " " or ch == "\x7f" for ch in text):
        # No id holds one; and PostgreSQL refuses a NUL in a query parameter outright (nul.py).
        raise InvalidFilter(f"{name}: control characters are not allowed")
    return text or None


def make_filters(
    *,
    first: str | dt.date | None = None,
    last: str | dt.date | None = None,
    customer_id: str | None = None,
    rule_id: str | None = None,
    channel: str | None = None,
    status: str | None = None,
) -> Filters:
    """Filters from what an auditor typed (CLI options, the web view's form), checked: dates
    are YYYY-MM-DD and ``from`` is not after ``to``, channel and status are words of their
    vocabularies (with a did-you-mean); raises ``InvalidFilter`` naming the filter."""
    day_from, day_to = _filter_day(first, "from"), _filter_day(last, "to")
    if day_from and day_to and day_from > day_to:
        raise InvalidFilter(f"from: {day_from} is after to: {day_to} (nothing can match)")
    return Filters(
        first=day_from,
        last=day_to,
        customer_id=_filter_text(customer_id, "customer"),
        rule_id=_filter_text(rule_id, "rule"),
        channel=_filter_word(channel, "channel", [c.value for c in Channel]),
        status=_filter_word(status, "status", [s.value for s in TouchStatus]),
    )


def rule_ids_in_ledger(store: Store) -> list[str]:
    """Every rule id the ledger has touches of (rules since renamed or deleted included)."""
    with store.read_session() as session:
        return sorted(session.scalars(select(TouchRow.rule_id).distinct()))


def _query(filters: Filters, after: int) -> Any:
    q = select(TouchRow).where(TouchRow.id > after)
    if filters.first:
        q = q.where(TouchRow.occurrence >= filters.first)
    if filters.last:
        q = q.where(TouchRow.occurrence <= filters.last)
    if filters.customer_id:
        q = q.where(TouchRow.customer_id == filters.customer_id)
    if filters.rule_id:
        q = q.where(TouchRow.rule_id == filters.rule_id)
    if filters.channel:
        q = q.where(TouchRow.channel == filters.channel)
    if filters.status:
        # The current status is kept, indexed by (status, touch_id), in touch_current: paging
        # in that index's order needs no sort of all the matches.
        q = q.join(TouchCurrent, TouchCurrent.touch_id == TouchRow.id).where(
            TouchCurrent.status == filters.status, TouchCurrent.touch_id > after
        )
        return q.order_by(TouchCurrent.touch_id)
    return q.order_by(TouchRow.id)


def touches(
    store: Store, filters: Filters, *, after: int = 0, limit: int | None = None
) -> Iterator[dict[str, Any]]:
    """Touches matching ``filters`` in id order (keyset pagination: pass the last id as
    ``after``), each with its current status and last attempt; recipients masked."""
    yielded = 0
    if after > ROW_ID_MAX:  # nothing is after it (and the database cannot take the number)
        return
    after = max(after, 0)
    while True:
        with store.read_session() as session:
            size = PAGE if limit is None else min(PAGE, limit - yielded)
            rows = session.scalars(_query(filters, after).limit(size)).all()
            if not rows:
                return
            states = {s.id: s for s in states_of(session, rows)}
            attempts: dict[int, Attempt] = {}
            for a in session.scalars(
                select(Attempt)
                .where(Attempt.touch_id.in_([r.id for r in rows]))
                .order_by(Attempt.id)
            ):
                attempts[a.touch_id] = a
            sent_at: dict[int, dt.datetime] = {}
            for touch_id, at in session.execute(
                select(TouchEvent.touch_id, func.max(TouchEvent.at))
                .where(TouchEvent.touch_id.in_([r.id for r in rows]), TouchEvent.status == "sent")
                .group_by(TouchEvent.touch_id)
            ):
                sent_at[touch_id] = at
        for row in rows:
            after = row.id
            state = states[row.id]
            if filters.status and state.status.value != filters.status:
                continue
            attempt = attempts.get(row.id)
            yield {
                "touch_id": row.id,
                "touch_key": row.touch_key,
                "rule_id": row.rule_id,
                "rule_hash": row.rule_hash,
                "customer_id": row.customer_id,
                "policy_id": row.policy_id,
                "event_id": row.event_id,
                "occurrence": row.occurrence.isoformat(),
                "channel": attempt.channel if attempt else row.channel,
                "status": state.status.value,
                "reason": state.reason,
                "recipient": mask_recipient(attempt.recipient, attempt.channel)
                if attempt
                else None,
                "template_id": row.template_id,
                "variant": row.variant,
                "template_hash": attempt.template_hash if attempt else None,
                "content_hash": attempt.content_hash if attempt else None,
                "locale": row.locale,
                "sent_at": iso(sent_at.get(row.id)),
                "run_id": row.run_id,
                # A test send (``care send-test``): never counted as a contact.
                "test": bool(row.test),
            }
            yielded += 1
            if limit is not None and yielded >= limit:
                return


def find_touch_id(store: Store, ref: int | str) -> int | None:
    """A touch's id from its id or its idempotency key (``rule|kind:subject|YYYY-MM-DD``)."""
    if isinstance(ref, int) or str(ref).strip().isdigit():
        touch_id = int(ref)
        # No such row (and the database cannot take the number).
        return touch_id if 0 <= touch_id <= ROW_ID_MAX else None
    with store.read_session() as session:
        found = session.scalar(select(TouchRow.id).where(TouchRow.touch_key == str(ref).strip()))
    return int(found) if found is not None else None


def iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    aware = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    return aware.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
