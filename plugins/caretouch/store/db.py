"""Connecting to the store: SQLite (embedded default) or PostgreSQL (production)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, any_, bindparam, create_engine, event, inspect, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ..bounds import read_stored_json
from ..errors import ConfigurationError

log = logging.getLogger(__name__)


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


# The ledger's tables: append-only on PostgreSQL (triggers made by caretouch.schema), chained
# on every database. ``append_only_gaps`` reports a missing or disabled trigger.
LEDGER_TABLES = (
    "touches",
    "touch_attempts",
    "touch_events",
    "ledger_chain",
    "consent_events",
    "provider_events",
    "ledger_anchors",
)
# Queues the application empties: a row is deleted by the transaction that handles it.
DRAINED_TABLES = ("callback_intake",)
APPEND_ONLY_TRIGGERS = ("care_append_only", "care_no_truncate")


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

    def dispose(self) -> None:
        self.engine.dispose()

    def masked_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)


@contextmanager
def bulk_page_cache(session: Session, mebibytes: int = 256) -> Iterator[None]:
    """On SQLite, a page cache of up to ``mebibytes`` for the session's connection while a
    bulk write runs (the default is 2 MB), then the connection's own again.

    Inserting a million rows updates five indexes of a million entries each: with the default
    cache, SQLite re-reads their pages from the OS and spills dirty ones to the WAL all along.
    The cache grows only as pages are used. PostgreSQL: nothing to do.
    """
    if session.get_bind().dialect.name != "sqlite":
        yield
        return
    conn = session.connection()
    before = conn.exec_driver_sql("PRAGMA cache_size").scalar()
    conn.exec_driver_sql(f"PRAGMA cache_size=-{int(mebibytes) * 1024}")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA cache_size={int(before if before is not None else -2000)}")


def among(session: Session, column: Any, values: Sequence[Any]) -> Any:
    """``column IN (values)``, written as PostgreSQL runs it best: ``column = ANY(:array)``,
    one parameter, so the statement's text is the same whatever the number of values and is
    parsed and planned once (prepared), not rendered, sent and planned afresh with one
    parameter per value (psycopg parses a long statement anew each time: its query cache
    skips them; on the send path that parsing cost more CPU than the queries); elsewhere a
    plain ``IN``."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(list(values))


def _without_row_values(context: ExceptionContext) -> None:
    """Keep only the first line of a database error's message.

    PostgreSQL explains a failed constraint with the row's values on further lines
    (``DETAIL:  Failing row contains (…, +8613812348000, wang.fang@example.com, …)``,
    ``Key (email)=(…) already exists``), which would reach logs and tracebacks with the
    exception. The first line names the constraint or column; the full diagnostics stay on the
    driver's exception (``exc.orig.diag``) for code that needs them.
    """
    if context.statement is None:  # connecting: the server's hints are worth keeping
        return
    for exc in (context.original_exception, context.sqlalchemy_exception):
        if exc is not None and exc.args and isinstance(exc.args[0], str):
            first, _, rest = exc.args[0].partition("\n")
            if rest:
                exc.args = (first, *exc.args[1:])


def open_store(url: str, **engine_kwargs: Any) -> Store:
    """Open the store at ``url`` (``CareConfig.store_url``: ``--store``, ``$CARE_STORE_URL``)."""
    raw = _normalise(url)
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
    # A statement's parameters are customers' phones, emails and names: never in an error
    # message, a traceback or SQLAlchemy's own logging.
    kwargs["hide_parameters"] = True
    try:
        engine = create_engine(raw, **kwargs)
    except (ArgumentError, ImportError) as exc:
        raise ConfigurationError(f"cannot open store {parsed!r}: {exc}") from exc
    event.listen(engine, "handle_error", _without_row_values)
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


def append_only_gaps(conn: Connection) -> list[str]:
    """On PostgreSQL, the append-only triggers that are missing or disabled on the ledger
    tables of the current schema, as ``trigger care_append_only on touches (disabled)``."""
    if conn.dialect.name != "postgresql":
        return []
    found = {
        (table, name): enabled
        for table, name, enabled in conn.execute(
            text(
                "SELECT c.relname, t.tgname, t.tgenabled FROM pg_trigger t "
                "JOIN pg_class c ON c.oid = t.tgrelid "
                "WHERE c.relnamespace = current_schema()::regnamespace "
                "AND t.tgname IN ('care_append_only', 'care_no_truncate')"
            )
        )
    }
    tables = set(inspect(conn).get_table_names())
    gaps = []
    for table in LEDGER_TABLES:
        if table not in tables:
            continue
        for name in APPEND_ONLY_TRIGGERS:
            state = found.get((table, name))
            if state is None:
                gaps.append(f"trigger {name} on {table} (missing)")
            elif state == "D":
                gaps.append(f"trigger {name} on {table} (disabled)")
    return gaps
