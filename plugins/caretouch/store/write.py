"""Writing typed rows into the store: one upsert for SQLite and PostgreSQL alike."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .models import Base

_CHUNK = 500


def upsert(session: Session, model: type[Base], key: str, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows``, updating every column of rows whose ``key`` already exists."""
    if not rows:
        return
    table = model.__table__
    dialect = session.get_bind().dialect.name
    insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}.get(dialect)
    if insert is None:
        raise NotImplementedError(f"upsert is not implemented for {dialect}")
    columns = list(rows[0])
    for start in range(0, len(rows), _CHUNK):
        stmt = insert(table).values(rows[start : start + _CHUNK])
        stmt = stmt.on_conflict_do_update(
            index_elements=[key],
            set_={c: stmt.excluded[c] for c in columns if c != key},
        )
        session.execute(stmt)
