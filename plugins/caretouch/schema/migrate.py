"""Running the migrations: ``upgrade``, what `care store init` and `care store upgrade` do.
The only place that changes the store's schema."""

from __future__ import annotations

import logging

from alembic import command
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import DBAPIError

from ..errors import ConfigurationError
from ..ledger import Ledger, chain
from ..ledger.models import LedgerBase, TouchCurrent, TouchEvent
from ..store.db import Store, append_only_gaps
from ..store.models import Base
from . import protection
from .version import (
    CORE_TABLES,
    VERSION_TABLE,
    Shape,
    config,
    current_version,
    engine_tables,
    head,
    present_tables,
    shape,
)

log = logging.getLogger(__name__)

# Serialises concurrent `care store init`/`upgrade` on one PostgreSQL database.
_PG_LOCK = 0x63617265  # "care"
_INSUFFICIENT_PRIVILEGE = "42501"


def upgrade(store: Store, *, app_role: str | None = None) -> tuple[str | None, str]:
    """Bring the store's schema to ``head()``: create it on an empty store, adopt a store
    made by an older Caretouch (its tables checked, then stamped), apply newer migrations.
    Safe to repeat. Run it as the role that is to own the schema.

    ``app_role`` (PostgreSQL): the role the application connects as, granted only what it
    needs: SELECT and INSERT on the ledger tables (plus erasing message content for
    retention), SELECT, INSERT and UPDATE on the others, SELECT on the version table.

    Returns the version before (None: empty or unversioned) and after.
    """
    if app_role is not None and not store.is_postgres:
        raise ConfigurationError("--app-role needs a PostgreSQL store (SQLite has no roles)")
    if shape(store) is Shape.UNVERSIONED:
        _check_adoptable(store)
    before = current_version(store)
    try:
        with store.engine.begin() as conn:
            if store.is_postgres:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
            command.upgrade(config(conn), "head")
            if append_only_gaps(conn):  # disabled or dropped by hand since: put back
                protection.install(conn)
            if app_role is not None:
                tables = set(inspect(conn).get_table_names()) & engine_tables()
                protection.grant_app_role(conn, app_role, sorted(tables), VERSION_TABLE)
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != _INSUFFICIENT_PRIVILEGE:
            raise
        raise ConfigurationError(
            f"this role may not change the schema of store {store.masked_url()} "
            f"({str(exc.orig).splitlines()[0]}): run `care store upgrade` as the schema's "
            "owner (docs/deploy.md)"
        ) from exc
    _catch_up_chain(store)
    _catch_up_current_status(store)
    return before, head()


# Columns that later revisions add to baseline tables: a store from before migrations lacks
# them rightly (0003: the customer's agent and segment; 0006: a touch's variant and test mark).
_ADDED_LATER = frozenset(
    {"customers.agent_id", "customers.segment", "touches.variant", "touches.test"}
)


def _check_adoptable(store: Store) -> None:
    """A store made before migrations is adopted only when it has the core tables and every
    column of the baseline (which then adds only missing tables, indexes and triggers)."""
    with store.engine.execution_options(care_read_only=True).connect() as conn:
        names = present_tables(conn)
        missing = CORE_TABLES - names
        if missing:
            raise ConfigurationError(
                f"store {store.masked_url()} has some Caretouch tables but not "
                f"{', '.join(sorted(missing))}: not a store this version can adopt"
            )
        inspector = inspect(conn)
        lacking = []
        for metadata in (Base.metadata, LedgerBase.metadata):
            for table in metadata.sorted_tables:
                if table.name not in names:
                    continue
                present = {c["name"] for c in inspector.get_columns(table.name)}
                lacking += [
                    f"{table.name}.{c.name}"
                    for c in table.columns
                    if c.name not in present and f"{table.name}.{c.name}" not in _ADDED_LATER
                ]
    if lacking:
        raise ConfigurationError(
            f"store {store.masked_url()} was created by an older Caretouch: missing column(s) "
            f"{', '.join(lacking)}; add them (docs/store.md, 'Upgrading') or start a new store"
        )


def _catch_up_chain(store: Store) -> None:
    """Consent changes of a store from before they were chained are chained, once."""
    with store.session() as session:
        adopted = chain.adopt_unchained_tables(session)
    for table, count in adopted.items():
        log.warning("chained the %d existing %s row(s) of this older store", count, table)


def _catch_up_current_status(store: Store) -> None:
    """A ledger written before ``touch_current`` existed gets it filled once, here."""
    with store.read_session() as session:
        behind = (session.scalar(select(func.max(TouchEvent.id))) or 0) > (
            session.scalar(select(func.max(TouchCurrent.event_id))) or 0
        )
    if behind:
        with store.session() as session:
            chain.lock(session)  # no writer may refresh its own touches meanwhile
            Ledger.refresh_current(session)


def revision(message: str) -> None:
    """Write a new, empty migration into versions/ (for Caretouch developers)."""
    command.revision(config(), message=message)
