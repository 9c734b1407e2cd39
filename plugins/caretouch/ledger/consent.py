"""Recording consent changes: the consent events, written through the ledger's writer.

``store.consent`` works out what a change changes; this module writes it: the customer's
flags and one ``consent_events`` row per real change, in one chained transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from sqlalchemy.orm import Session

from ..store.consent import ConsentChange, Purpose, consent_changes, set_consent_flags
from ..store.db import Store
from ..store.models import ConsentEvent
from .writer import write


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
    # Serial: the change is worked out from the flags read here, which a concurrent
    # change of the same customer must not alter before this one commits.
    with write(store, at, serial=True) as session:
        changed = consent_changes(session, customer_id, changes, source=source, note=note)
        if changed:
            set_consent_flags(session, changed)
            _insert(session, changed, at)
    return {c.purpose: (bool(c.before), c.granted) for c in changed}


def record_consent_changes(
    store: Store, changes: Sequence[ConsentChange], *, at: dt.datetime
) -> int:
    """Record consent changes already applied to the customers' flags (an import's,
    ``store.consent.imported_consent_changes``); returns how many were recorded."""
    if changes:
        with write(store, at, serial=True) as session:
            _insert(session, changes, at)
    return len(changes)


def _insert(session: Session, changes: Sequence[ConsentChange], at: dt.datetime) -> None:
    session.execute(
        ConsentEvent.__table__.insert(),
        [
            {
                "customer_id": c.customer_id,
                "purpose": c.purpose.value,
                "granted": c.granted,
                "source": c.source,
                "note": c.note,
                "at": at,
            }
            for c in changes
        ],
    )
