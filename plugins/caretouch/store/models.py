"""Canonical tables of the customer store (SPEC section 4), SQLAlchemy 2.x.

Besides the canonical columns, customers and policies carry *derived* month-day keys
(``birth_md``, ``birth_lunar_md``, ``start_md``), kept by the store on every write. They are
indexed, so that the planner finds "anniversaries due on D" by index lookup and the cost of
planning a day grows with the touches due, not with the size of the store. A deployment that
maps its own tables through SQL views must compute them in the view (see docs/store.md).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ..vocab import BirthdayCalendar, CustomerStatus, Locale, PolicyStatus, RelationKind, Tier


class Base(DeclarativeBase):
    """Declarative base of the store tables (the ledger has its own metadata)."""


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    birth_date: Mapped[dt.date | None] = mapped_column(Date)
    birthday_calendar: Mapped[str] = mapped_column(
        String(16), nullable=False, default=BirthdayCalendar.GREGORIAN.value
    )
    phone: Mapped[str | None] = mapped_column(String(32))
    email: Mapped[str | None] = mapped_column(String(320))
    locale: Mapped[str] = mapped_column(String(8), nullable=False, default=Locale.ZH_CN.value)
    timezone: Mapped[str | None] = mapped_column(String(64))
    tier: Mapped[str] = mapped_column(String(1), nullable=False, default=Tier.C.value)
    status: Mapped[str] = mapped_column(
        String(16), nullable=False, default=CustomerStatus.ACTIVE.value
    )
    consent_sms: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    consent_email: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    consent_marketing: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # Derived keys (see module docstring).
    birth_md: Mapped[int | None] = mapped_column(Integer)
    birth_lunar_md: Mapped[int | None] = mapped_column(Integer)
    # The customer's own agent (``agents.agent_id``), and the segment they belong to
    # (``group`` for a group client's members, say): both optional (schema version 0003).
    agent_id: Mapped[str | None] = mapped_column(String(64))
    segment: Mapped[str | None] = mapped_column(String(32))

    __table_args__ = (
        Index("ix_customers_birth_md", "birth_md"),
        Index("ix_customers_birth_lunar_md", "birth_lunar_md"),
        # Inbound SMS (STOP/START) and email opt-out events find customers by address.
        Index("ix_customers_phone", "phone"),
        Index("ix_customers_email", "email"),
        Index("ix_customers_agent_id", "agent_id"),
    )


class Agent(Base):
    """An agent of the agency: the person who calls, visits and brings gifts to their
    customers (``customers.agent_id``). Their name and phone are business details that care
    messages may give to the customer; ``manager_id`` names the agent tasks escalate to."""

    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    phone: Mapped[str | None] = mapped_column(String(32))
    email: Mapped[str | None] = mapped_column(String(320))
    timezone: Mapped[str | None] = mapped_column(String(64))
    manager_id: Mapped[str | None] = mapped_column(String(64))


class Relation(Base):
    """A member of a customer's family (spouse, child, parent) whose dates care may mark:
    a child's birthday card, say. ``birth_md`` and ``birth_lunar_md`` are derived as the
    customer's are (see module docstring)."""

    __tablename__ = "relations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    relation_id: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    customer_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False, default=RelationKind.CHILD.value)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    birth_date: Mapped[dt.date | None] = mapped_column(Date)
    birthday_calendar: Mapped[str] = mapped_column(
        String(16), nullable=False, default=BirthdayCalendar.GREGORIAN.value
    )
    birth_md: Mapped[int | None] = mapped_column(Integer, index=True)
    birth_lunar_md: Mapped[int | None] = mapped_column(Integer, index=True)


class InsurancePolicy(Base):
    __tablename__ = "policies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    policy_id: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    customer_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    product: Mapped[str] = mapped_column(String(200), nullable=False)
    start_date: Mapped[dt.date] = mapped_column(Date, nullable=False, index=True)
    renewal_date: Mapped[dt.date | None] = mapped_column(Date, index=True)
    status: Mapped[str] = mapped_column(
        String(16), nullable=False, default=PolicyStatus.ACTIVE.value
    )
    premium: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    start_md: Mapped[int | None] = mapped_column(Integer, index=True)
    # Premiums kept in force (schema 0005): the next premium's due date, how often one falls
    # due (``vocab.PaymentFrequency``) and the day up to which the policy is paid. A premium
    # is unpaid while ``paid_through`` is before ``premium_due_date`` (or missing).
    premium_due_date: Mapped[dt.date | None] = mapped_column(Date, index=True)
    payment_frequency: Mapped[str | None] = mapped_column(String(16))
    paid_through: Mapped[dt.date | None] = mapped_column(Date)


class Event(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    type: Mapped[str] = mapped_column(String(64), nullable=False)
    customer_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    policy_id: Mapped[str | None] = mapped_column(String(64))
    occurred_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    # none_as_null: an empty payload is SQL NULL (so `is_null` filters match it), not JSON null.
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))

    __table_args__ = (Index("ix_events_type_occurred_at", "type", "occurred_at"),)


# The columns a rule author may name, per table, with their Python types. Derived and
# surrogate columns are not part of the vocabulary.
CANONICAL_COLUMNS: dict[str, tuple[str, ...]] = {
    "customer": (
        "customer_id",
        "name",
        "birth_date",
        "birthday_calendar",
        "phone",
        "email",
        "locale",
        "timezone",
        "tier",
        "status",
        "consent_sms",
        "consent_email",
        "consent_marketing",
        "agent_id",
        "segment",
    ),
    "policy": (
        "policy_id",
        "customer_id",
        "product",
        "start_date",
        "renewal_date",
        "status",
        "premium",
        "premium_due_date",
        "payment_frequency",
        "paid_through",
    ),
    "event": ("event_id", "type", "customer_id", "policy_id", "occurred_at", "payload"),
    "agent": ("agent_id", "name", "phone", "email", "timezone", "manager_id"),
    "relation": ("relation_id", "customer_id", "kind", "name", "birth_date", "birthday_calendar"),
}


class ConsentEvent(Base):
    """A change of a customer's consent: who changed it, how, and when (append-only).

    ``customers.consent_*`` hold the current state; these rows tell an explicit opt-out
    (``opted_out``) from consent never given (``no_contact``), and show an auditor why.
    """

    __tablename__ = "consent_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(64), nullable=False)
    purpose: Mapped[str] = mapped_column(String(16), nullable=False)  # sms | email | marketing
    granted: Mapped[bool] = mapped_column(Boolean, nullable=False)
    source: Mapped[str] = mapped_column(String(120), nullable=False)  # cli, import:FILE, webhook
    note: Mapped[str | None] = mapped_column(String(500))
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (Index("ix_consent_events_customer", "customer_id", "purpose", "id"),)


class EventReceipt(Base):
    """How and when an event entered the inbox (``events``), and whether ``care_events`` has
    planned its touches yet (``planned_at``). One row per event_id; written with the event in
    the same transaction (docs/events.md)."""

    __tablename__ = "event_receipts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    source: Mapped[str] = mapped_column(String(32), nullable=False)  # stream, api, cli, csv
    ref: Mapped[str | None] = mapped_column(String(300))  # stream entry id, FILE:LINE, run id
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    planned_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_event_receipts_unplanned", "planned_at", "id"),)


class EventDeadLetter(Base):
    """An event the inbox refused (malformed, unknown customer, conflicting replay), kept
    with the reason and the raw text as received: nothing is dropped silently."""

    __tablename__ = "event_dead_letters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(32), nullable=False)
    ref: Mapped[str | None] = mapped_column(String(300))
    event_id: Mapped[str | None] = mapped_column(String(128), index=True)
    reason: Mapped[str] = mapped_column(String(1000), nullable=False)
    raw: Mapped[str] = mapped_column(Text, nullable=False)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class CallbackIntake(Base):
    """A provider's delivery callback, verified and accepted but not yet recorded in the ledger
    (docs/webhooks.md, "How callbacks are recorded"). Not a ledger table and not chained: a
    row lives from the request that accepted it to the ledger transaction that records it,
    which deletes it in the same transaction, so a callback is either here or in
    ``provider_events``, never lost and never recorded twice.

    ``params`` is the form as the provider sent it (the recipient's number in clear, as in
    ``touch_attempts``: it is needed to match the callback); it is masked when recorded.
    ``failures`` counts drains that could not record this row alone; at ``MAX_FAILURES``
    the row is set aside (kept, with ``error``) so that one bad row never stops the rest.
    """

    __tablename__ = "callback_intake"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(16), nullable=False)  # twilio
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # status
    ref: Mapped[str | None] = mapped_column(String(32))  # ?attempt= of the callback URL
    params: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    failures: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    error: Mapped[str | None] = mapped_column(String(300))

    __table_args__ = (Index("ix_callback_intake_pending", "failures", "id"),)


class AgentDigest(Base):
    """An agent's daily digest of one day (``run.digest``): the row is the claim, inserted
    before the email is sent, so that (agent, day) is sent once by whichever run or worker
    inserts it first (``UNIQUE (agent_id, day)``), and its ``status`` says what came of it,
    a send left ``claimed`` by a crash included. Not a ledger table: a digest is staff mail,
    not a touch of a customer."""

    __tablename__ = "agent_digests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(String(64), nullable=False)
    day: Mapped[dt.date] = mapped_column(Date, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    # How many times it was claimed (a retry after a failure or a crash claims it again).
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    run_id: Mapped[str] = mapped_column(String(128), nullable=False)
    claimed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    settled_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    tasks: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    overdue: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    escalations: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    provider_message_id: Mapped[str | None] = mapped_column(String(128))
    detail: Mapped[str | None] = mapped_column(String(300))

    __table_args__ = (UniqueConstraint("agent_id", "day", name="uq_agent_digest_day"),)


class TaskEscalation(Base):
    """A task overdue long enough to go to its agent's manager (``run.digest``): recorded
    once per task (``touch_id`` is UNIQUE), on the day it first went into the manager's
    digest (``digest_id``)."""

    __tablename__ = "task_escalations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    touch_id: Mapped[int] = mapped_column(Integer, unique=True, nullable=False)
    agent_id: Mapped[str] = mapped_column(String(64), nullable=False)
    manager_id: Mapped[str] = mapped_column(String(64), nullable=False)
    day: Mapped[dt.date] = mapped_column(Date, nullable=False)
    days_overdue: Mapped[int] = mapped_column(Integer, nullable=False)
    digest_id: Mapped[int] = mapped_column(Integer, nullable=False)
    run_id: Mapped[str] = mapped_column(String(128), nullable=False)
    recorded_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
