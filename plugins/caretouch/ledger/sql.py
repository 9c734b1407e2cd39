"""SQL helpers the ledger's modules share: the size of an ``IN (...)`` list, and the
dialect's INSERT (for ``ON CONFLICT``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

CHUNK = 500


def dialect_insert(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    return {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[dialect]
