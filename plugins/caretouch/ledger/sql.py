"""SQL helpers the ledger's modules share: the size of an ``IN (...)`` list, a list
condition that keeps one statement text on PostgreSQL (``among``), and the dialect's INSERT
(for ``ON CONFLICT``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, any_, bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

CHUNK = 500


def among(session: Session, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
    """``column IN (values)``; on PostgreSQL ``column = ANY(:values)``, one array parameter.

    An expanded ``IN`` of hundreds of parameters is a new statement text for every list
    length, which psycopg parses anew each time (its query cache skips long statements):
    on the send path that parsing cost more CPU than the queries. With the array the text is
    the same every time, and the driver's cache and prepared statements serve it."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(column.type)))
    return column.in_(list(values))


def dialect_insert(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    return {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[dialect]
