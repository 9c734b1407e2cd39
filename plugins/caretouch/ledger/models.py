"""Ledger tables. Rows are only ever inserted: a status change is a new ``touch_events`` row.

- ``touches``: one row per idempotency key (rule, subject, occurrence); the key is UNIQUE, so
  two runs racing on the same day cannot both create it.
- ``touch_attempts``: one row per attempt to deliver the touch on a channel, with the rendered
  content and its hashes; ``(touch_id, attempt_no)`` is UNIQUE, which makes inserting an
  attempt the atomic claim that stops two workers sending the same touch.
- ``touch_events``: the status history (planned, sending, sent, failed, suppressed, ...).
- ``ledger_anchors``: every anchor written to the anchor file, recorded here too (chained like
  the rest), so that a cut-back or deleted anchor file is detected (``ledger.anchors``).
- ``provider_events``: every delivery receipt and inbound message a provider's webhook sent
  us, once each (``(provider, provider_event_id)`` is UNIQUE, so a replayed webhook adds
  nothing), with addresses masked.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class LedgerBase(DeclarativeBase):
    """Declarative base of the ledger tables."""


class TouchRow(LedgerBase):
    __tablename__ = "touches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    touch_key: Mapped[str] = mapped_column(String(300), unique=True, nullable=False)
    rule_id: Mapped[str] = mapped_column(String(64), nullable=False)
    rule_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    category: Mapped[str] = mapped_column(String(16), nullable=False)
    priority: Mapped[int] = mapped_column(Integer, nullable=False)
    subject_kind: Mapped[str] = mapped_column(String(16), nullable=False)
    subject_id: Mapped[str] = mapped_column(String(128), nullable=False)
    customer_id: Mapped[str] = mapped_column(String(64), nullable=False)
    policy_id: Mapped[str | None] = mapped_column(String(64))
    event_id: Mapped[str | None] = mapped_column(String(128))
    occurrence: Mapped[dt.date] = mapped_column(Date, nullable=False, index=True)
    send_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    timezone: Mapped[str] = mapped_column(String(64), nullable=False)
    locale: Mapped[str] = mapped_column(String(8), nullable=False)
    tier: Mapped[str] = mapped_column(String(1), nullable=False)
    # The channel chosen at planning time (null when suppressed for want of one), and the
    # facts the templates are rendered from, frozen when the touch was planned.
    channel: Mapped[str | None] = mapped_column(String(16))
    template_id: Mapped[str] = mapped_column(String(64), nullable=False)
    context: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    run_id: Mapped[str] = mapped_column(String(250), nullable=False)
    # The message variant the touch was given (a rule's ``variants:``), NULL without any; and
    # TRUE on a test send (``care send-test``), NULL on every touch of a customer. NULL is
    # left out of a row's hash, so both leave the rows chained before them as they were.
    variant: Mapped[str | None] = mapped_column(String(64))
    test: Mapped[bool | None] = mapped_column(Boolean)

    __table_args__ = (
        # A customer's recent touches (caps over 7 days) and a rule's deferred ones.
        Index("ix_touches_customer_occurrence", "customer_id", "occurrence"),
        Index("ix_touches_rule_occurrence", "rule_id", "occurrence"),
    )


class Attempt(LedgerBase):
    __tablename__ = "touch_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    touch_id: Mapped[int] = mapped_column(ForeignKey("touches.id"), nullable=False)
    attempt_no: Mapped[int] = mapped_column(Integer, nullable=False)
    channel: Mapped[str] = mapped_column(String(16), nullable=False)
    transport: Mapped[str] = mapped_column(String(32), nullable=False)
    recipient: Mapped[str] = mapped_column(String(320), nullable=False)
    template_id: Mapped[str] = mapped_column(String(64), nullable=False)
    template_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    content_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    subject: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str | None] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    run_id: Mapped[str] = mapped_column(String(250), nullable=False)

    __table_args__ = (UniqueConstraint("touch_id", "attempt_no", name="uq_attempt_touch_no"),)


class TouchEvent(LedgerBase):
    __tablename__ = "touch_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    touch_id: Mapped[int] = mapped_column(ForeignKey("touches.id"), nullable=False)
    attempt_id: Mapped[int | None] = mapped_column(ForeignKey("touch_attempts.id"))
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str | None] = mapped_column(String(64))
    provider_message_id: Mapped[str | None] = mapped_column(String(128))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    # On ``planned`` events: when and on which channel to send (a touch planned again, after
    # a deferral or a change of consent, may move to another day or channel).
    send_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    channel: Mapped[str | None] = mapped_column(String(16))
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    run_id: Mapped[str] = mapped_column(String(250), nullable=False)

    __table_args__ = (
        Index("ix_touch_events_touch_id_id", "touch_id", "id"),
        # Delivery receipts that do not name our attempt are matched by the provider's id.
        Index("ix_touch_events_provider_message_id", "provider_message_id"),
        # A run's summary counts what the run recorded (Ledger.run_counts) and lists the
        # service obligations it recorded as missed (Ledger.missed_obligations).
        Index("ix_touch_events_run_id", "run_id", "status"),
    )


class TouchCurrent(LedgerBase):
    """Each touch's current status: derived from ``touch_events``, kept for fast queries.

    The current status is the latest event's, except that a provider's delivery receipt is
    not replaced by a later event of the sender about the same attempt (``refresh_current``);
    ``event_id`` is then the newest event taken into account, not the receipt's.

    Not part of the audited record: it is rewritten in place (the chain does not cover it,
    the append-only triggers do not guard it) and can be rebuilt from the events at any time
    (``Ledger.refresh_current``). It spares every reader a "latest event per touch" query.
    """

    __tablename__ = "touch_current"

    touch_id: Mapped[int] = mapped_column(ForeignKey("touches.id"), primary_key=True)
    event_id: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str | None] = mapped_column(String(64))
    send_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    channel: Mapped[str | None] = mapped_column(String(16))
    final: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)

    __table_args__ = (
        Index("ix_touch_current_status", "status", "touch_id"),
        Index("ix_touch_current_event", "event_id"),
        # The touches waiting as deferred, which every plan looks up; partial, so it holds
        # those only, however many touches the deferrable rules have.
        Index(
            "ix_touch_current_deferred",
            "touch_id",
            "event_id",
            "status",
            sqlite_where=text("reason = 'deferred'"),
            postgresql_where=text("reason = 'deferred'"),
        ),
    )


class ProviderEventRow(LedgerBase):
    """One event a provider's webhook reported: a delivery receipt or an inbound message.

    Written once per ``(provider, provider_event_id)``: Twilio's ``MessageSid:MessageStatus``
    for a status callback and the inbound ``MessageSid`` for an inbound SMS; SendGrid's
    ``sg_event_id``. Matched to our touch and attempt where possible (else both are NULL and
    the event is kept all the same). ``payload`` is what the provider sent, with phone
    numbers and email addresses masked and location fields left out.
    """

    __tablename__ = "provider_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(16), nullable=False)
    provider_event_id: Mapped[str] = mapped_column(String(200), nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)  # status | inbound | event
    provider_status: Mapped[str | None] = mapped_column(String(64))  # the provider's word
    provider_message_id: Mapped[str | None] = mapped_column(String(200))
    touch_id: Mapped[int | None] = mapped_column(ForeignKey("touches.id"))
    attempt_id: Mapped[int | None] = mapped_column(ForeignKey("touch_attempts.id"))
    customer_id: Mapped[str | None] = mapped_column(String(64))
    # The touch status it was mapped to (delivered, undelivered, bounced, failed), if any.
    status: Mapped[str | None] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    occurred_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (
        UniqueConstraint("provider", "provider_event_id", name="uq_provider_event"),
        Index("ix_provider_events_touch", "touch_id"),
    )


class AnchorRow(LedgerBase):
    """One anchor: the chain head at ``seq``, linked to the previous anchor (``prev_hash``),
    as appended to the anchor file (``ledger.anchors``). ``number`` counts anchors from 1
    without gaps; ``hmac`` is the signature under ``$CARE_ANCHOR_KEY`` (None: unsigned).
    """

    __tablename__ = "ledger_anchors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    number: Mapped[int] = mapped_column(Integer, unique=True, nullable=False)
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    chain_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    prev_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    anchor_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    hmac: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    run_id: Mapped[str] = mapped_column(String(250), nullable=False)


# The touches of customers, not test sends (``care send-test``: ``test`` TRUE; NULL on every
# customer touch): what the readers that count contacts, the reports and the send queue take.
REAL_TOUCH = TouchRow.test.is_not(True)
