"""Customers' replies as the ledger holds them: which touch a reply answers, and the scores.

An inbound SMS (or email) a customer sends us is one ``provider_events`` row of kind
``inbound`` (``webhooks.replies``). What it was read as is in its ``provider_status``
(``satisfied``, ``unsatisfied``, ``message``, ``out-of-range``, ``possible-stop``) and in the
``reply`` key of its payload (``{"kind": "satisfied", "score": 5}``), both under the hash
chain. Nothing is written here; the reports and the audit views read through these.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from ..dates import aware_utc
from ..store.db import Store
from ..vocab import ReplyKind, TouchStatus
from .models import Attempt, ProviderEventRow, TouchEvent, TouchRow
from .sql import CHUNK

# The payload key holding what a reply was read as.
REPLY_KEY = "reply"
INBOUND = "inbound"


@dataclass(frozen=True)
class AnsweredTouch:
    """The touch a reply answers: the latest one sent to the customer on the reply's channel
    and address within the reply window."""

    touch_id: int
    attempt_id: int
    customer_id: str
    rule_id: str
    event_id: str | None  # the business event the touch was about, if any
    sent_at: dt.datetime


@dataclass(frozen=True)
class Reply:
    """One reply as recorded: what it answers, what it was read as, when it came."""

    provider: str
    provider_event_id: str
    touch_id: int | None
    customer_id: str | None
    rule_id: str | None
    kind: ReplyKind
    score: int | None
    received_at: dt.datetime


def answered_touch(
    store: Store,
    channel: str,
    customer_ids: Sequence[str],
    recipient: str,
    *,
    since: dt.datetime,
    until: dt.datetime,
) -> AnsweredTouch | None:
    """The latest touch of ``customer_ids`` sent on ``channel`` to ``recipient`` (compared
    without case for an email address) between ``since`` and ``until``, or None.

    "Sent" is the touch's ``sent`` status event for that attempt; a touch delivered later is
    still found by it. Among several customers sharing the number, the latest touch wins."""
    if not customer_ids or not recipient:
        return None
    wanted = recipient.strip()
    found: AnsweredTouch | None = None
    order: tuple[dt.datetime, int] | None = None
    with store.read_session() as session:
        for start in range(0, len(customer_ids), CHUNK):
            rows = session.execute(
                select(
                    TouchEvent.touch_id,
                    TouchEvent.attempt_id,
                    TouchEvent.at,
                    TouchEvent.id,
                    TouchRow.customer_id,
                    TouchRow.rule_id,
                    TouchRow.event_id,
                    Attempt.recipient,
                )
                .join(TouchRow, TouchRow.id == TouchEvent.touch_id)
                .join(Attempt, Attempt.id == TouchEvent.attempt_id)
                .where(
                    TouchRow.customer_id.in_(list(customer_ids[start : start + CHUNK])),
                    TouchEvent.status == TouchStatus.SENT.value,
                    Attempt.channel == channel,
                    TouchEvent.at >= since,
                    TouchEvent.at <= until,
                )
            )
            for touch_id, attempt_id, at, event_row_id, customer, rule, event, to in rows:
                if attempt_id is None:  # a sent event names its attempt; never otherwise
                    continue
                if not _same_address(to, wanted):
                    continue
                sent_at = aware_utc(at)
                if order is None or (sent_at, event_row_id) > order:
                    order = (sent_at, event_row_id)
                    found = AnsweredTouch(touch_id, attempt_id, customer, rule, event, sent_at)
    return found


def _same_address(a: str | None, b: str) -> bool:
    a = (a or "").strip()
    return a.lower() == b.lower() if "@" in b else a == b


def _reply_of(row: ProviderEventRow, rule_id: str | None) -> Reply:
    payload = row.payload
    read = payload.get(REPLY_KEY) if isinstance(payload, dict) else None
    kind = ReplyKind.MESSAGE
    score = None
    if isinstance(read, dict):
        try:
            kind = ReplyKind(read.get("kind"))
        except ValueError:
            kind = ReplyKind.MESSAGE
        value = read.get("score")
        score = value if isinstance(value, int) and not isinstance(value, bool) else None
    return Reply(
        provider=row.provider,
        provider_event_id=row.provider_event_id,
        touch_id=row.touch_id,
        customer_id=row.customer_id,
        rule_id=rule_id,
        kind=kind,
        score=score,
        received_at=aware_utc(row.received_at),
    )


# Inbound events that are replies: a keyword (stop, start) is not one.
_REPLY_STATUSES = ("satisfied", "unsatisfied", "message", "out-of-range", "possible-stop")


def _replies(store: Store, *conditions: object) -> list[Reply]:
    with store.read_session() as session:
        rows = session.execute(
            select(ProviderEventRow, TouchRow.rule_id)
            .outerjoin(TouchRow, TouchRow.id == ProviderEventRow.touch_id)
            .where(
                ProviderEventRow.kind == INBOUND,
                ProviderEventRow.provider_status.in_(_REPLY_STATUSES),
                *conditions,  # type: ignore[arg-type]
            )
            .order_by(ProviderEventRow.received_at, ProviderEventRow.id)
        )
        return [_reply_of(row, rule_id) for row, rule_id in rows]


def replies_between(store: Store, start: dt.datetime, end: dt.datetime) -> list[Reply]:
    """Every reply received in ``[start, end)``, oldest first: scores and messages, matched
    to a touch or not (a reply from an unknown number has no customer)."""
    return _replies(
        store, ProviderEventRow.received_at >= start, ProviderEventRow.received_at < end
    )


def _latest_scored(store: Store, column: Any, ids: list[Any], key: str) -> dict[Any, Reply]:
    """The latest satisfaction answer (a reply with a score) per value of ``column`` among
    ``ids``; ``key``: the ``Reply`` attribute holding that value."""
    latest: dict[Any, Reply] = {}
    for start in range(0, len(ids), CHUNK):
        for reply in _replies(
            store,
            column.in_(ids[start : start + CHUNK]),
            ProviderEventRow.provider_status.in_(
                (ReplyKind.SATISFIED.value, ReplyKind.UNSATISFIED.value)
            ),
        ):
            value = getattr(reply, key)
            if value is not None and reply.score is not None:
                latest[value] = reply  # oldest first: the last one wins
    return latest


def latest_scores(store: Store, customer_ids: Iterable[str]) -> dict[str, Reply]:
    """Each customer's latest satisfaction answer (a reply with a score), if any."""
    ids = sorted(set(customer_ids))
    return _latest_scored(store, ProviderEventRow.customer_id, ids, "customer_id")


def touch_scores(store: Store, touch_ids: Iterable[int]) -> dict[int, Reply]:
    """Each touch's latest satisfaction answer, if any."""
    ids = sorted(set(touch_ids))
    return _latest_scored(store, ProviderEventRow.touch_id, ids, "touch_id")


def touch_replies(store: Store, touch_id: int) -> list[Reply]:
    """Every reply recorded against one touch, oldest first."""
    return _replies(store, ProviderEventRow.touch_id == touch_id)
