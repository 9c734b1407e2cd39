"""Connecting to the store: SQLite (embedded default) or PostgreSQL (production)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ..bounds import read_stored_json
from ..errors import ConfigurationError

DEFAULT_STORE_URL = "sqlite:///care.db"


def store_url_from_env(explicit: str | None = None) -> str:
    """``--store`` wins, then ``$CARE_STORE_URL``, then ``sqlite:///care.db``."""
    return explicit or os.environ.get("CARE_STORE_URL") or DEFAULT_STORE_URL


def _normalise(url: str) -> str:
    # Plain "postgresql://" would pick psycopg2, which we do not ship; use psycopg 3.
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the driver, decide how transactions begin (see _sqlite_begin).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    # WAL lets readers (an auditor, the planner) run beside a writer; NORMAL is safe with WAL.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


# On PostgreSQL the ledger refuses UPDATE, DELETE and TRUNCATE at the database level, for
# everyone, the application included. The one exception is retention: erasing an attempt's
# message content (subject, body, html -> NULL) while every other column, and so the hash
# chain, stays as it was. On SQLite the hash chain detects what the database cannot prevent.
LEDGER_TABLES = (
    "touches",
    "touch_attempts",
    "touch_events",
    "ledger_chain",
    "consent_events",
    "provider_events",
)
_PG_APPEND_ONLY = [
    """
    CREATE OR REPLACE FUNCTION care_ledger_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'UPDATE' AND TG_TABLE_NAME = 'touch_attempts' THEN
        -- Nested: NEW.subject exists only on touch_attempts.
        IF NEW.subject IS NULL AND NEW.body IS NULL AND NEW.html IS NULL
           AND (to_jsonb(NEW) - 'subject' - 'body' - 'html')
               = (to_jsonb(OLD) - 'subject' - 'body' - 'html') THEN
          RETURN NEW;
        END IF;
      END IF;
      RAISE EXCEPTION 'caretouch: % on % refused: the ledger is append-only',
        TG_OP, TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
    END $$
    """,
    *[
        stmt
        for table in LEDGER_TABLES
        for stmt in (
            f"DROP TRIGGER IF EXISTS care_append_only ON {table}",
            f"CREATE TRIGGER care_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION care_ledger_append_only()",
            f"DROP TRIGGER IF EXISTS care_no_truncate ON {table}",
            f"CREATE TRIGGER care_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION care_ledger_append_only()",
        )
    ],
]


def _sqlite_begin(conn: Any) -> None:
    # A write transaction takes SQLite's write lock up front (BEGIN IMMEDIATE). A deferred
    # transaction that reads and then writes can fail with "database is locked" when another
    # writer committed in between (WAL's busy snapshot, which busy_timeout does not retry);
    # taking the lock first makes racing workers wait their turn instead.
    if conn.get_execution_options().get("care_read_only"):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


@dataclass
class Store:
    """A connection to one customer store (and the ledger, which lives beside it)."""

    url: str
    engine: Engine
    sessions: sessionmaker[Session]
    read_sessions: sessionmaker[Session]

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A write session in a transaction: committed on success, rolled back on error."""
        with self.sessions() as session, session.begin():
            yield session

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A session for reading only: on SQLite it does not take the write lock."""
        with self.read_sessions() as session, session.begin():
            yield session

    def init(self) -> None:
        """Create every table and index the engine needs (idempotent)."""
        from sqlalchemy import inspect

        from ..ledger.models import LedgerBase
        from .models import Base

        # Tables mapped as views by a deployment are left alone (create_all skips names it
        # finds among tables only, so views are excluded explicitly).
        views = set(inspect(self.engine).get_view_names())
        store_tables = [t for t in Base.metadata.sorted_tables if t.name not in views]
        Base.metadata.create_all(self.engine, tables=store_tables)
        LedgerBase.metadata.create_all(self.engine)
        # create_all does not add indexes to tables that already exist (an older store):
        # add any that are missing.
        with self.engine.begin() as conn:
            for table in [*store_tables, *LedgerBase.metadata.sorted_tables]:
                for index in table.indexes:
                    index.create(conn, checkfirst=True)
            if self.is_postgres:
                for statement in _PG_APPEND_ONLY:
                    conn.execute(text(statement))
        self._catch_up_current_status()

    def _catch_up_current_status(self) -> None:
        """A ledger written before ``touch_current`` existed gets it filled once, here."""
        from sqlalchemy import func, select

        from ..ledger import Ledger
        from ..ledger.models import TouchCurrent, TouchEvent

        with self.read_session() as session:
            behind = (session.scalar(select(func.max(TouchEvent.id))) or 0) > (
                session.scalar(select(func.max(TouchCurrent.event_id))) or 0
            )
        if behind:
            with self.session() as session:
                Ledger.refresh_current(session)

    def dispose(self) -> None:
        self.engine.dispose()

    def masked_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)


def open_store(url: str | None = None, **engine_kwargs: Any) -> Store:
    """Open the store at ``url`` (see :func:`store_url_from_env`)."""
    raw = _normalise(store_url_from_env(url))
    try:
        parsed = make_url(raw)
    except ArgumentError as exc:
        raise ConfigurationError(f"invalid store URL {raw!r}: {exc}") from exc
    # JSON too deep to handle safely (written by an older version or directly in SQL) reads
    # back as a marker, not as a RecursionError that fails the query for every row (bounds.py).
    kwargs: dict[str, Any] = {"future": True, "json_deserializer": read_stored_json}
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
    kwargs.update(engine_kwargs)
    try:
        engine = create_engine(raw, **kwargs)
    except (ArgumentError, ImportError) as exc:
        raise ConfigurationError(f"cannot open store {parsed!r}: {exc}") from exc
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    reader = engine.execution_options(care_read_only=True)
    return Store(
        url=raw,
        engine=engine,
        sessions=sessionmaker(engine, expire_on_commit=False),
        read_sessions=sessionmaker(reader, expire_on_commit=False),
    )


def check_reachable(store: Store) -> None:
    """Raise ``ConfigurationError`` naming the (masked) URL when the store cannot be reached."""
    try:
        with store.engine.connect():
            pass
    except OperationalError as exc:
        raise ConfigurationError(
            f"cannot connect to store {store.masked_url()}: {exc.orig}"
        ) from exc


def check_initialised(store: Store) -> None:
    """Refuse to work on a store without its tables, and create missing ledger tables.

    A mistyped SQLite path would otherwise silently create an empty database and plan
    nothing; instead the user is told to run ``care store init``.
    """
    from sqlalchemy import inspect

    url = make_url(store.url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        from pathlib import Path

        if not Path(url.database).exists():
            raise ConfigurationError(
                f"store {store.masked_url()} does not exist: run `care store init` "
                "(or check --store / $CARE_STORE_URL)"
            )
    check_reachable(store)
    inspector = inspect(store.engine)
    # A deployment may map its own data through views of these names (docs/store.md).
    tables = set(inspector.get_table_names()) | set(inspector.get_view_names())
    missing = {"customers", "policies", "events"} - tables
    if missing:
        raise ConfigurationError(
            f"store {store.masked_url()} has no {', '.join(sorted(missing))} table(s): "
            "run `care store init` (or check --store / $CARE_STORE_URL)"
        )
    store.init()
    _check_columns(store)


def _check_columns(store: Store) -> None:
    """Tables made by an older Caretouch may lack newer columns: say which, plainly.

    There are no automatic migrations yet (docs/store.md shows the ALTER TABLE to run).
    """
    from sqlalchemy import inspect

    from ..ledger.models import LedgerBase
    from .models import Base

    inspector = inspect(store.engine)
    lacking = []
    for metadata in (Base.metadata, LedgerBase.metadata):
        for table in metadata.sorted_tables:
            present = {c["name"] for c in inspector.get_columns(table.name)}
            lacking += [f"{table.name}.{c.name}" for c in table.columns if c.name not in present]
    if lacking:
        raise ConfigurationError(
            f"store {store.masked_url()} was created by an older Caretouch: missing column(s) "
            f"{', '.join(lacking)}; add them (docs/store.md, 'Upgrading') or start a new store"
        )
