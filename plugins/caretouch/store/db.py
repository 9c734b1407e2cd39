"""Connecting to the store: SQLite (embedded default) or PostgreSQL (production)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
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


# On PostgreSQL the ledger refuses UPDATE, DELETE and TRUNCATE at the database level, for
# everyone, the application included. The one exception is retention: erasing an attempt's
# message content (subject, body, html -> NULL) while every other column, and so the hash
# chain, stays as it was. On SQLite the hash chain detects what the database cannot prevent.
# The triggers and their function belong to the role that runs `care store init` (the
# schema's owner); the application connects as another role (`--app-role`), which may only
# SELECT and INSERT here, so it can neither disable nor replace them (docs/deploy.md).
LEDGER_TABLES = (
    "touches",
    "touch_attempts",
    "touch_events",
    "ledger_chain",
    "consent_events",
    "provider_events",
    "ledger_anchors",
)
APPEND_ONLY_TRIGGERS = ("care_append_only", "care_no_truncate")
_ROLE_RX = re.compile(r"[A-Za-z_][A-Za-z0-9_$-]{0,62}")
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

    def init(self, *, app_role: str | None = None) -> None:
        """Create every table, index and (PostgreSQL) append-only trigger the engine needs,
        idempotently; run it as the role that is to own the schema.

        ``app_role`` (PostgreSQL): the role the application connects as, granted only what
        it needs: SELECT and INSERT on the ledger tables (plus erasing message content for
        retention), SELECT, INSERT and UPDATE on the others.
        """
        from ..ledger.models import LedgerBase
        from .models import Base

        if app_role is not None and not self.is_postgres:
            raise ConfigurationError("--app-role needs a PostgreSQL store (SQLite has no roles)")
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
                if app_role is not None:
                    _grant_app_role(
                        conn,
                        app_role,
                        [t.name for t in [*store_tables, *LedgerBase.metadata.sorted_tables]],
                    )
        self._catch_up_chain()
        self._catch_up_current_status()

    def missing(self) -> list[str]:
        """What ``init`` would create: tables, indexes and (PostgreSQL) append-only triggers
        that do not exist, or are disabled. Reads the catalogue only."""
        from ..ledger.models import LedgerBase
        from .models import Base

        inspector = inspect(self.engine)
        present = set(inspector.get_table_names())
        views = set(inspector.get_view_names())
        gaps: list[str] = []
        for metadata in (Base.metadata, LedgerBase.metadata):
            for table in metadata.sorted_tables:
                if table.name in views:
                    continue
                if table.name not in present:
                    gaps.append(f"table {table.name}")
                    continue
                indexes = {i["name"] for i in inspector.get_indexes(table.name)}
                gaps += [f"index {i.name}" for i in table.indexes if i.name not in indexes]
        if self.is_postgres:
            with self.engine.connect() as conn:
                gaps += append_only_gaps(conn)
        return gaps

    def _catch_up_chain(self) -> None:
        """Consent changes of a store from before they were chained are chained, once."""
        from ..ledger import chain

        with self.session() as session:
            adopted = chain.adopt_unchained_tables(session)
        for table, count in adopted.items():
            log.warning("chained the %d existing %s row(s) of this older store", count, table)

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


def _grant_app_role(conn: Connection, role: str, tables: list[str]) -> None:
    """Let ``role`` run the application and nothing more (see LEDGER_TABLES); ``tables``:
    the engine's tables that are tables here (a deployment's views are its own business)."""
    if not _ROLE_RX.fullmatch(role):
        raise ConfigurationError(f"--app-role {role[:70]!r} is not a role name")
    if not conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first():
        raise ConfigurationError(
            f"no PostgreSQL role {role!r}: create it first (CREATE ROLE {role} LOGIN PASSWORD ...)"
        )
    owner = conn.execute(
        text("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'touches'::regclass")
    ).scalar()
    if owner == role:
        raise ConfigurationError(
            f"role {role!r} owns the ledger tables: the application role must not (it could "
            "disable the append-only triggers); run `care store init --app-role` as the "
            "schema's owner (docs/deploy.md)"
        )
    q = conn.dialect.identifier_preparer.quote
    r = q(role)
    schema = q(str(conn.execute(text("SELECT current_schema()")).scalar()))
    ledger = [t for t in LEDGER_TABLES if t in tables]
    others = [t for t in tables if t not in LEDGER_TABLES]
    statements = [f"GRANT USAGE ON SCHEMA {schema} TO {r}"]
    for table in [*ledger, *others]:
        statements.append(f"REVOKE ALL ON {q(table)} FROM {r}")
    statements += [f"GRANT SELECT, INSERT ON {q(t)} TO {r}" for t in ledger]
    statements += [
        # Retention (care audit erase-content): the trigger lets only content -> NULL through.
        f"GRANT UPDATE (subject, body, html) ON {q('touch_attempts')} TO {r}",
        # A claim locks its touches (SELECT ... FOR NO KEY UPDATE), which PostgreSQL allows
        # only with an UPDATE privilege on some column; the trigger refuses any real UPDATE.
        f"GRANT UPDATE (id) ON {q('touches')} TO {r}",
    ]
    statements += [f"GRANT SELECT, INSERT, UPDATE ON {q(t)} TO {r}" for t in others]
    statements.append(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {r}")
    for statement in statements:
        conn.execute(text(statement))


def check_initialised(store: Store) -> None:
    """Refuse to work on a store without its tables; create what a newer Caretouch needs
    only where something is missing.

    A mistyped SQLite path would otherwise silently create an empty database and plan
    nothing; instead the user is told to run ``care store init``. On a complete store this
    reads the catalogue only: the application role of a PostgreSQL deployment may not change
    the schema (``init --app-role``), so it is never asked to.
    """
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
    gaps = store.missing()
    if gaps:
        try:
            store.init()
        except DBAPIError as exc:
            raise ConfigurationError(
                f"store {store.masked_url()} lacks {', '.join(gaps[:5])}"
                f"{' and more' if len(gaps) > 5 else ''}, and this role may not create them "
                f"({str(exc.orig).splitlines()[0]}): run `care store init` as the schema's "
                "owner (docs/deploy.md)"
            ) from exc
    else:
        store._catch_up_current_status()
    _check_columns(store)
    _warn_if_owner(store)


_WARNED_OWNER: set[str] = set()


def _warn_if_owner(store: Store) -> None:
    """Say so, once per store, when the application connects as the owner of the ledger
    tables: that role can disable the append-only triggers."""
    if not store.is_postgres or store.url in _WARNED_OWNER:
        return
    _WARNED_OWNER.add(store.url)
    with store.engine.connect() as conn:
        owns = conn.execute(
            text(
                "SELECT pg_has_role(current_user, relowner, 'USAGE') FROM pg_class "
                "WHERE oid = to_regclass('touches')"
            )
        ).scalar()
    if owns:
        log.warning(
            "store %s: this role owns the ledger tables (or is a member of their owner, or a "
            "superuser), so it could disable their append-only triggers; connect the "
            "application as a role made with `care store init --app-role` (docs/deploy.md)",
            store.masked_url(),
        )


def _check_columns(store: Store) -> None:
    """Tables made by an older Caretouch may lack newer columns: say which, plainly.

    There are no automatic migrations yet (docs/store.md shows the ALTER TABLE to run).
    """
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
