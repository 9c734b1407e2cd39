"""SQL helpers the ledger's modules share: the size of an ``IN (...)`` list, the dialect's
INSERT (for ``ON CONFLICT``), and bulk inserts (``COPY`` on PostgreSQL). Lists of ids are
matched with ``store.db.among``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import JSON, String, bindparam, cast, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

CHUNK = 500


def dialect_insert(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    return {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[dialect]


def allocate_ids(session: Session, table: Any, count: int) -> list[int] | None:
    """``count`` new ids from the table's own sequence (PostgreSQL), in one round trip, for
    rows about to be inserted with ``copy_rows``; None where there is no such sequence
    (SQLite, or a table a deployment maps through a view): insert with ``insert_returning``."""
    if session.get_bind().dialect.name != "postgresql" or count == 0:
        return None
    # The sequence's name, once per database connection (its search_path is the connection's).
    connection = session.connection()
    names = connection.info.setdefault("caretouch.sequences", {})
    if table.name not in names:
        names[table.name] = session.scalar(
            text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table.name}
        )
    if names[table.name] is None:
        return None
    ids = session.scalars(
        text("SELECT nextval(CAST(:s AS regclass)) FROM generate_series(1, :n)"),
        {"s": names[table.name], "n": count},
    )
    return [int(i) for i in ids]


def insert_returning(
    session: Session, table: Any, rows: Sequence[Mapping[str, Any]], *, json_text: bool = False
) -> list[int]:
    """Insert ``rows`` (one statement, many parameter sets) and return their new ids, in
    the rows' order. ``json_text``: the JSON columns hold JSON text already."""
    if not rows:
        return []
    uniform = _uniform(table, rows)
    statement = _insert(session, table, json_text, uniform[0]).returning(
        table.c.id, sort_by_parameter_order=True
    )
    return [int(i) for i in session.execute(statement, uniform).scalars()]


def _insert(session: Session, table: Any, json_text: bool, row: Mapping[str, Any]) -> Any:
    """An INSERT into ``table`` of rows like ``row``; with ``json_text``, one that takes
    their JSON columns' text as it is (bound as strings, not serialised again; PostgreSQL
    casts them)."""
    statement = table.insert()
    if json_text:
        postgres = session.get_bind().dialect.name == "postgresql"
        statement = statement.values(
            {
                c.name: cast(bindparam(c.name, type_=String()), c.type)
                if postgres
                else bindparam(c.name, type_=String())
                for c in table.columns
                if isinstance(c.type, JSON) and c.name in row
            }
        )
    return statement


def copy_rows(
    session: Session, table: Any, rows: Sequence[Mapping[str, Any]], *, json_text: bool = False
) -> None:
    """Insert ``rows`` in bulk: PostgreSQL's ``COPY`` (about a tenth of the server's work
    of one ``INSERT`` per row), elsewhere one statement with many parameter sets. JSON
    columns are serialised as SQLAlchemy's JSON type does (``json.dumps``), unless
    ``json_text`` (they hold JSON text already); a None is NULL."""
    if not rows:
        return
    uniform = _uniform(table, rows)
    if session.get_bind().dialect.name != "postgresql":
        session.execute(_insert(session, table, json_text, uniform[0]), uniform)
        return
    columns = [c.name for c in table.columns if c.name in uniform[0]]
    json_columns = (
        set() if json_text else {c.name for c in table.columns if isinstance(c.type, JSON)}
    )
    quote = session.get_bind().dialect.identifier_preparer.quote
    statement = f"COPY {quote(table.name)} ({', '.join(quote(c) for c in columns)}) FROM STDIN"
    raw = session.connection().connection.driver_connection
    assert raw is not None
    dbapi = session.get_bind().dialect.dbapi
    assert dbapi is not None
    try:
        with raw.cursor() as cursor, cursor.copy(statement) as copy:
            for row in uniform:
                copy.write_row(
                    [
                        json.dumps(row[c]) if c in json_columns and row[c] is not None else row[c]
                        for c in columns
                    ]
                )
    except dbapi.IntegrityError as exc:
        # As SQLAlchemy raises it for the statements it runs (the driver's own here).
        raise IntegrityError(statement, None, exc) from exc


def _uniform(table: Any, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rows with the same keys each (a key some rows lack is None in them; rows as
    many keys long are taken to have the same keys: every caller builds its rows alike)."""
    width = len(rows[0])
    if all(len(row) == width for row in rows):
        return rows  # type: ignore[return-value]
    present = set().union(*(row.keys() for row in rows))
    return [{c: row.get(c) for c in present} for row in rows]
