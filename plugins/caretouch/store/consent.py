"""Consent: the current flags live on the customer; every change is kept as an event.

This module reads consent and works out what a change changes (``consent_changes``,
``imported_consent_changes``); the ledger records it. Opt-outs from imports, the CLI
(``care consent set``) and the providers' webhooks all go through
``ledger.consent.record_consent`` (or ``record_consent_changes``), which writes the events
through the ledger's writer, so they are chained like the ledger's rows and ``care audit
verify`` detects one edited, deleted or inserted by other means. The next plan sees them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ..errors import CareError
from .db import Store, among
from .models import ConsentEvent, Customer


class Purpose(str, Enum):
    SMS = "sms"
    EMAIL = "email"
    MARKETING = "marketing"

    @property
    def column(self) -> str:
        return f"consent_{self.value}"


@dataclass(frozen=True)
class ConsentChange:
    """One real change of a customer's consent, to be recorded as a consent event (by the
    ledger's writer: ``ledger.consent``)."""

    customer_id: str
    purpose: Purpose
    before: bool | None  # None: not known (an import that did not read the old flag)
    granted: bool
    source: str
    note: str | None = None


def consent_changes(
    session: Session,
    customer_id: str,
    wanted: Mapping[Purpose, bool],
    *,
    source: str,
    note: str | None = None,
) -> list[ConsentChange]:
    """The real changes among ``wanted`` for one customer, read in ``session`` (a purpose
    already set as wanted is no change); raises ``CareError`` for an unknown customer."""
    customer = session.scalars(
        select(Customer).where(Customer.customer_id == customer_id)
    ).one_or_none()
    if customer is None:
        raise CareError(f"unknown customer {customer_id!r}", customer_id=customer_id)
    changed = []
    for purpose, granted in wanted.items():
        before = bool(getattr(customer, purpose.column))
        if before != granted:
            changed.append(ConsentChange(customer_id, purpose, before, granted, source, note))
    return changed


def set_consent_flags(session: Session, changes: Iterable[ConsentChange]) -> None:
    """Set the customers' current consent flags to what ``changes`` grant or withdraw."""
    by_customer: dict[str, dict[str, bool]] = defaultdict(dict)
    for change in changes:
        by_customer[change.customer_id][change.purpose.column] = change.granted
    for customer_id, values in by_customer.items():
        session.execute(update(Customer).where(Customer.customer_id == customer_id).values(values))


def imported_consent_changes(
    before: Mapping[str, Mapping[str, bool]],
    after: Iterable[Mapping[str, object]],
    *,
    source: str,
) -> list[ConsentChange]:
    """What an import changed (``before``: old flags by customer id; ``after``: the rows
    imported, their flags already written)."""
    changes = []
    for row in after:
        old = before.get(str(row["customer_id"]))
        if old is None:
            continue
        for purpose in Purpose:
            new_value = bool(row.get(purpose.column))
            if purpose.column in old and bool(old[purpose.column]) != new_value:
                changes.append(
                    ConsentChange(
                        str(row["customer_id"]),
                        purpose,
                        bool(old[purpose.column]),
                        new_value,
                        source,
                    )
                )
    return changes


def withdrawn_consents(store: Store, customer_ids: Iterable[str]) -> dict[str, set[str]]:
    """Purposes whose latest recorded change, per customer, was a withdrawal."""
    ids = sorted(set(customer_ids))
    out: dict[str, set[str]] = defaultdict(set)
    with store.read_session() as session:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            newest = (
                select(func.max(ConsentEvent.id).label("last"))
                .where(among(session, ConsentEvent.customer_id, chunk))
                .group_by(ConsentEvent.customer_id, ConsentEvent.purpose)
                .subquery()
            )
            rows = session.execute(
                select(ConsentEvent.customer_id, ConsentEvent.purpose, ConsentEvent.granted).join(
                    newest, ConsentEvent.id == newest.c.last
                )
            )
            for customer_id, purpose, granted in rows:
                if not granted:
                    out[customer_id].add(purpose)
    return out


def consent_history(store: Store, customer_id: str) -> list[ConsentEvent]:
    with store.read_session() as session:
        return list(
            session.scalars(
                select(ConsentEvent)
                .where(ConsentEvent.customer_id == customer_id)
                .order_by(ConsentEvent.id)
            )
        )
