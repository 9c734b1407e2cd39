"""A ``premium_paid`` event moves its policy's premium schedule (docs/events.md, "Premium
payments").

Every path by which an event enters the store calls these in the transaction that stores the
event (the inbox: ``events.inbox.submit``; the store import: ``care store import --events``),
so a payment is never stored without its effect, nor applied without being stored.

Applying a payment is idempotent and monotone: ``paid_through`` becomes the later of the
stored day and the payment's, never earlier, and ``premium_due_date`` becomes the first due
date after it (``premiums.next_due_date``). The change is compare-and-set: one UPDATE whose
WHERE names the values it was computed from, tried again on what is stored when another
writer (a payment on another host) got there first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from ..premiums import next_due_date
from .models import InsurancePolicy

PREMIUM_PAID = "premium_paid"
"""The event type that records a premium payment (care_rules/events.yaml)."""

# Compare-and-set attempts before giving up: each failed one means another writer moved the
# policy in between, which a handful of concurrent payments cannot do forever.
_ATTEMPTS = 20
_CHUNK = 500


class PaymentRefused(Exception):
    """A ``premium_paid`` event that cannot move its policy; the message is the reason."""


def policy_owners(session: Session, policy_ids: Iterable[str]) -> dict[str, str]:
    """The customer of each stored policy among ``policy_ids``: policy id -> customer id."""
    wanted = sorted({p for p in policy_ids if p})
    owners: dict[str, str] = {}
    table = InsurancePolicy.__table__
    for start in range(0, len(wanted), _CHUNK):
        stmt = select(table.c.policy_id, table.c.customer_id).where(
            table.c.policy_id.in_(wanted[start : start + _CHUNK])
        )
        owners.update({r.policy_id: r.customer_id for r in session.execute(stmt)})
    return owners


def paid_through(session: Session, policy_ids: Iterable[str]) -> dict[str, dt.date | None]:
    """How far each stored policy among ``policy_ids`` is paid: policy id -> ``paid_through``."""
    wanted = sorted({p for p in policy_ids if p})
    found: dict[str, dt.date | None] = {}
    table = InsurancePolicy.__table__
    for start in range(0, len(wanted), _CHUNK):
        stmt = select(table.c.policy_id, table.c.paid_through).where(
            table.c.policy_id.in_(wanted[start : start + _CHUNK])
        )
        found.update({r.policy_id: r.paid_through for r in session.execute(stmt)})
    return found


def paid_why(policy_id: str, through: dt.date | None, due: dt.date) -> str | None:
    """Why a reminder of the premium due on ``due`` is no longer owed, or None while that
    premium is unpaid (``paid_through`` before it, or nothing recorded)."""
    if through is None or through < due:
        return None
    return (
        f"policy {policy_id} is paid through {through}: the premium due {due} this reminder "
        "is about is paid"
    )


def paid_through_of(row: Mapping[str, Any], owners: Mapping[str, str]) -> dt.date:
    """The day a ``premium_paid`` event row (``events`` columns, parsed) pays its policy
    through; ``PaymentRefused`` saying why when it cannot move one: no policy named, a policy
    not stored (``owners``: policy id -> customer id), another customer's policy, or no
    ``payload.paid_through`` date."""
    policy_id = row.get("policy_id")
    if not policy_id:
        raise PaymentRefused(
            "premium_paid needs policy_id: the policy whose premium was paid (none given)"
        )
    owner = owners.get(policy_id)
    if owner is None:
        raise PaymentRefused(f"unknown policy_id {policy_id!r}")
    if owner != row.get("customer_id"):
        raise PaymentRefused(
            f"policy_id {policy_id!r} is not a policy of customer {row.get('customer_id')!r} "
            "(it belongs to another customer)"
        )
    text = (row.get("payload") or {}).get("paid_through")
    if isinstance(text, dt.date):
        return text
    try:
        return dt.date.fromisoformat(str(text))
    except ValueError:
        raise PaymentRefused(
            f"premium_paid needs payload.paid_through, a date (YYYY-MM-DD); got {text!r}"
        ) from None


def apply_payment(session: Session, policy_id: str, paid_through: dt.date) -> bool:
    """Move ``policy_id``'s ``paid_through`` to ``paid_through`` if that is later, and its
    ``premium_due_date`` to the first due date after it. True if the policy changed; False
    if it was already paid that far (a replay, a late or duplicate payment) or is not
    stored. Compare-and-set, in the caller's transaction."""
    c = InsurancePolicy
    for _ in range(_ATTEMPTS):
        current = session.execute(
            select(c.paid_through, c.premium_due_date, c.payment_frequency, c.start_date).where(
                c.policy_id == policy_id
            )
        ).one_or_none()
        if current is None:
            return False
        if current.paid_through is not None and current.paid_through >= paid_through:
            return False
        due = next_due_date(
            current.premium_due_date, paid_through, current.payment_frequency, current.start_date
        )
        moved: CursorResult[Any] = session.execute(  # type: ignore[assignment]
            update(InsurancePolicy)
            .where(
                c.policy_id == policy_id,
                c.paid_through.is_not_distinct_from(current.paid_through),
                c.premium_due_date.is_not_distinct_from(current.premium_due_date),
            )
            .values(paid_through=paid_through, premium_due_date=due)
        )
        if moved.rowcount == 1:
            return True
    raise PaymentRefused(
        f"policy {policy_id!r} kept changing under {_ATTEMPTS} attempts to record the payment"
    )
