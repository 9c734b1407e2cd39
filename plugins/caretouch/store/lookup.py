"""Looking customers up by their business id."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from .db import among
from .models import Customer

# Ids per IN list.
_CHUNK = 500


def customer_row_ids(session: Session, customer_ids: Iterable[str]) -> dict[str, int]:
    """Each of these customers' store id (``customers.id``); customers not in the store are
    left out."""
    wanted = sorted(set(customer_ids))
    table = Customer.__table__
    found: dict[str, int] = {}
    for start in range(0, len(wanted), _CHUNK):
        rows = session.execute(
            select(table.c.customer_id, table.c.id).where(
                among(session, table.c.customer_id, wanted[start : start + _CHUNK])
            )
        )
        found.update((customer_id, row_id) for customer_id, row_id in rows)
    return found
