"""Consent: the current flags live on the customer; every change is kept as an event.

Opt-outs recorded by imports, the CLI (``care consent set``) and the providers' webhooks all
go through ``record_consent`` (or ``record_imported_changes``); the next plan sees them.
Consent events are chained like the ledger's rows (``ledger.chain``), so ``care audit
verify`` detects one edited, deleted or inserted by other means.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from enum import Enum

from sqlalchemy import func, select, update

from ..errors import CareError
from .db import Store
from .models import ConsentEvent, Customer


class Purpose(str, Enum):
    SMS = "sms"
    EMAIL = "email"
    MARKETING = "marketing"

    @property
    def column(self) -> str:
        return f"consent_{self.value}"


def record_consent(
    store: Store,
    customer_id: str,
    changes: Mapping[Purpose, bool],
    *,
    source: str,
    at: dt.datetime,
    note: str | None = None,
) -> dict[Purpose, tuple[bool, bool]]:
    """Set consents and record each real change; returns {purpose: (before, after)}."""
    from ..ledger import chain  # here: ledger imports plan, which imports this module

    with store.session() as session:
        mark = chain.lock(session)
        customer = session.scalars(
            select(Customer).where(Customer.customer_id == customer_id)
        ).one_or_none()
        if customer is None:
            raise CareError(f"unknown customer {customer_id!r}", customer_id=customer_id)
        changed: dict[Purpose, tuple[bool, bool]] = {}
        for purpose, granted in changes.items():
            before = bool(getattr(customer, purpose.column))
            if before == granted:
                continue
            changed[purpose] = (before, granted)
            session.add(
                ConsentEvent(
                    customer_id=customer_id,
                    purpose=purpose.value,
                    granted=granted,
                    source=source,
                    note=note,
                    at=at,
                )
            )
        if changed:
            session.execute(
                update(Customer)
                .where(Customer.customer_id == customer_id)
                .values({p.column: after for p, (_, after) in changed.items()})
            )
            chain.seal(session, at, mark)
    return changed


def record_imported_changes(
    store: Store,
    before: Mapping[str, Mapping[str, bool]],
    after: Iterable[Mapping[str, object]],
    *,
    source: str,
    at: dt.datetime,
) -> int:
    """Consent events for what an import changed (``before``: old flags by customer id)."""
    events = []
    for row in after:
        old = before.get(str(row["customer_id"]))
        if old is None:
            continue
        for purpose in Purpose:
            new_value = bool(row.get(purpose.column))
            if purpose.column in old and bool(old[purpose.column]) != new_value:
                events.append(
                    {
                        "customer_id": row["customer_id"],
                        "purpose": purpose.value,
                        "granted": new_value,
                        "source": source,
                        "note": None,
                        "at": at,
                    }
                )
    if events:
        from ..ledger import chain  # here: ledger imports plan, which imports this module

        with store.session() as session:
            mark = chain.lock(session)
            session.execute(ConsentEvent.__table__.insert(), events)
            chain.seal(session, at, mark)
    return len(events)


def withdrawn_consents(store: Store, customer_ids: Iterable[str]) -> dict[str, set[str]]:
    """Purposes whose latest recorded change, per customer, was a withdrawal."""
    ids = sorted(set(customer_ids))
    out: dict[str, set[str]] = defaultdict(set)
    with store.read_session() as session:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            newest = (
                select(func.max(ConsentEvent.id).label("last"))
                .where(ConsentEvent.customer_id.in_(chunk))
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
