"""Looking customers up by their business id."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from .db import among
from .models import Agent, Customer

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


def agent_managers(
    session: Session, agent_ids: Iterable[str]
) -> dict[str, tuple[str | None, bool]]:
    """Each of these agents' manager (``agents.manager_id``, None when none is recorded) and
    whether that manager is in the store; agents not in the store are left out."""
    wanted = sorted(set(agent_ids))
    table = Agent.__table__
    managers: dict[str, str | None] = {}
    for start in range(0, len(wanted), _CHUNK):
        rows = session.execute(
            select(table.c.agent_id, table.c.manager_id).where(
                among(session, table.c.agent_id, wanted[start : start + _CHUNK])
            )
        )
        managers.update((agent_id, manager_id or None) for agent_id, manager_id in rows)
    named = sorted({m for m in managers.values() if m})
    present: set[str] = set()
    for start in range(0, len(named), _CHUNK):
        present.update(
            session.scalars(
                select(table.c.agent_id).where(
                    among(session, table.c.agent_id, named[start : start + _CHUNK])
                )
            )
        )
    return {a: (m, m in present) for a, m in managers.items()}
