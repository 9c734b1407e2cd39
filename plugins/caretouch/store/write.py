"""Writing typed rows into the store: one upsert for SQLite and PostgreSQL alike, and taking
events that cannot be handled out of the inbox."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Text, cast, delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .models import Base, Event, EventDeadLetter, EventReceipt

if TYPE_CHECKING:
    from .db import Store

log = logging.getLogger("caretouch.events")

_CHUNK = 500


def upsert(session: Session, model: type[Base], key: str, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows``, updating every column of rows whose ``key`` already exists.

    One statement executed for all the rows (the driver's ``executemany``: SQLite's in C,
    PostgreSQL's batched by SQLAlchemy), not a statement of many VALUES compiled per chunk;
    every row has the first row's keys.
    """
    if not rows:
        return
    table = model.__table__
    dialect = session.get_bind().dialect.name
    insert: Any = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}.get(dialect)
    if insert is None:
        raise NotImplementedError(f"upsert is not implemented for {dialect}")
    stmt = insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=[key],
        set_={c: stmt.excluded[c] for c in rows[0] if c != key},
    )
    session.execute(stmt, rows)


def _bind_processors(table: Any, columns: list[str], dialect: Any) -> list[Any]:
    """Per column, what SQLAlchemy does to a value before the driver gets it (None: nothing);
    a JSON value serialised by the engine's serialiser, None staying SQL NULL."""
    dumps = getattr(dialect, "_json_serializer", None) or json.dumps
    return [
        (lambda v: None if v is None else dumps(v))
        if isinstance(table.c[c].type, JSON)
        else table.c[c].type.bind_processor(dialect)
        for c in columns
    ]


def _bound(rows: list[dict[str, Any]], columns: list[str], processors: list[Any]) -> list[tuple]:
    """The rows as tuples of ``columns``, each value through its column's processor."""
    processed = [(i, process) for i, process in enumerate(processors) if process is not None]
    out = []
    for row in rows:
        values = [row[c] for c in columns]
        for i, process in processed:
            values[i] = process(values[i])
        out.append(tuple(values))
    return out


def may_create_temporary_tables(session: Session) -> bool:
    """Whether the session's PostgreSQL role may create temporary tables (granted to PUBLIC
    by default; a hardened database may have revoked it: bulk writes then use ``upsert``)."""
    return bool(
        session.connection()
        .exec_driver_sql("SELECT has_database_privilege(current_database(), 'TEMPORARY')")
        .scalar()
    )


def bulk_upsert(session: Session, model: type[Base], key: str, rows: list[dict[str, Any]]) -> None:
    """``upsert`` for many rows at once (an import's chunk), with the values bound once by the
    columns' own types and handed to the driver in bulk.

    SQLite: the same upsert statement, run by the driver's ``executemany`` without
    SQLAlchemy's per-row parameter handling. PostgreSQL: the rows are copied (``COPY``) into
    a temporary table, then inserted from it with the same ``ON CONFLICT DO UPDATE`` (with
    ``upsert`` if the role may not create temporary tables).
    """
    if not rows:
        return
    table = model.__table__
    columns = list(rows[0])
    conn = session.connection()
    dialect = conn.dialect
    if dialect.name not in ("sqlite", "postgresql") or (
        dialect.name == "postgresql" and not may_create_temporary_tables(session)
    ):
        upsert(session, model, key, rows)
        return
    processors = _bind_processors(table, columns, dialect)
    names = ", ".join(f'"{c}"' for c in columns)
    updates = ", ".join(f'"{c}" = excluded."{c}"' for c in columns if c != key)
    if dialect.name == "sqlite":
        marks = ", ".join("?" for _ in columns)
        conn.exec_driver_sql(
            f'INSERT INTO "{table.name}" ({names}) VALUES ({marks}) '
            f'ON CONFLICT ("{key}") DO UPDATE SET {updates}',
            _bound(rows, columns, processors),
        )
        return
    staging = f"care_import_{table.name}"
    conn.exec_driver_sql(
        f'CREATE TEMPORARY TABLE IF NOT EXISTS "{staging}" '
        f'(LIKE "{table.name}" INCLUDING DEFAULTS) ON COMMIT DROP'
    )
    conn.exec_driver_sql(f'TRUNCATE "{staging}"')
    driver = conn.connection.driver_connection
    assert driver is not None  # an open psycopg connection
    cursor = driver.cursor()
    try:
        with cursor, cursor.copy(f'COPY "{staging}" ({names}) FROM STDIN') as copy:
            for values in _bound(rows, columns, processors):
                copy.write_row(values)
    except Exception as exc:
        # COPY runs outside SQLAlchemy's error handling (store.db._without_row_values):
        # PostgreSQL's further lines would show a row's values.
        if exc.args and isinstance(exc.args[0], str):
            exc.args = (exc.args[0].partition("\n")[0], *exc.args[1:])
        raise
    conn.exec_driver_sql(
        f'INSERT INTO "{table.name}" ({names}) SELECT {names} FROM "{staging}" '
        f'ON CONFLICT ("{key}") DO UPDATE SET {updates}'
    )


def _utc_text(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    # SQLite hands back naive datetimes; the store always writes UTC.
    return (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).isoformat()


def dead_letter_events(
    store: Store,
    reasons: Mapping[str, str],
    *,
    source: str,
    ref: str | None,
    now: dt.datetime,
    keep: int = 64 * 1024,
) -> list[str]:
    """Move stored events out of the inbox (``events``, ``event_receipts``) into
    ``event_dead_letters``, each with its reason and its stored text (at most ``keep``
    characters of the payload, read as text, never parsed). Returns the event ids moved.

    For an event the inbox holds but no run can handle (a payload too deep to read back,
    written by an older version or in SQL; an event whose planning fails on its own): taken
    out, it no longer stops anything, and a corrected copy may be sent with the same id.
    """
    ids = sorted(reasons)
    if not ids:
        return []
    payload_text = func.substr(cast(Event.payload, Text), 1, keep)
    moved: list[str] = []
    with store.session() as session:
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            rows = session.execute(
                select(
                    Event.event_id,
                    Event.type,
                    Event.customer_id,
                    Event.policy_id,
                    Event.occurred_at,
                    payload_text,
                ).where(Event.event_id.in_(chunk))
            ).all()
            letters = []
            for event_id, kind, customer_id, policy_id, occurred_at, text in rows:
                fields = {
                    "event_id": event_id,
                    "type": kind,
                    "customer_id": customer_id,
                    "policy_id": policy_id,
                    "occurred_at": _utc_text(occurred_at),
                }
                raw = json.dumps(fields, ensure_ascii=False, sort_keys=True)
                if text:
                    cut = " ... (truncated)" if len(text) >= keep else ""
                    raw = f'{raw[:-1]}, "payload": {text}{cut}}}'
                letters.append(
                    {
                        "source": source,
                        "ref": ref[:300] if ref else None,
                        "event_id": event_id,
                        "reason": reasons[event_id][:1000],
                        "raw": raw,
                        "received_at": now,
                    }
                )
                moved.append(event_id)
            if letters:
                session.execute(insert(EventDeadLetter), letters)
                found = [letter["event_id"] for letter in letters]
                session.execute(delete(EventReceipt).where(EventReceipt.event_id.in_(found)))
                session.execute(delete(Event).where(Event.event_id.in_(found)))
    for event_id in moved:
        log.warning("event %s taken out of the inbox: %s", event_id, reasons[event_id])
    return moved
