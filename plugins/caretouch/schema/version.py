"""The store's schema version and the one this Caretouch needs, read without changing
anything. Alembic is configured here, in code (env.py and versions/ ship in the package)."""

from __future__ import annotations

import enum
import functools
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from ..store.db import LEDGER_TABLES, Store
from ..store.models import Base

VERSION_TABLE = "alembic_version"
# The tables whose presence marks a store made by Caretouch (or mapped onto it by views).
CORE_TABLES = frozenset({"customers", "policies", "events"})
_HERE = Path(__file__).parent


def config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, made in code; ``connection``: where to migrate."""
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", str(_HERE / "versions"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(config())


def head() -> str:
    """The schema version this Caretouch needs."""
    current = _script().get_current_head()
    assert current is not None  # versions/ always holds the baseline
    return current


def is_known(version: str) -> bool:
    """Whether ``version`` is one of this Caretouch's revisions (older or head)."""
    return version in {s.revision for s in _script().walk_revisions()}


def _reader(store: Store) -> Connection:
    # A read-only connection: on SQLite it does not take the write lock (store.db).
    return store.engine.execution_options(care_read_only=True).connect()


def current_version(store: Store) -> str | None:
    """The store's schema version; None when it has none (empty, or made before migrations).
    One catalogue look-up and one SELECT, as Alembic's MigrationContext would make."""
    with _reader(store) as conn:
        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


class Shape(enum.Enum):
    """What a store holds, as ``upgrade`` sees it."""

    EMPTY = "empty"  # none of the engine's tables
    UNVERSIONED = "unversioned"  # made by a Caretouch from before migrations
    VERSIONED = "versioned"


def engine_tables() -> set[str]:
    """The names of the tables the engine creates (store and ledger)."""
    return {t.name for t in Base.metadata.sorted_tables} | set(LEDGER_TABLES) | {"touch_current"}


def present_tables(conn: Connection) -> set[str]:
    """The tables and views of the store's schema (a deployment may map tables as views)."""
    inspector = inspect(conn)
    return set(inspector.get_table_names()) | set(inspector.get_view_names())


def shape(store: Store) -> Shape:
    """Whether the store is empty, unversioned (older Caretouch) or versioned. Reads only."""
    with _reader(store) as conn:
        names = present_tables(conn)
    if VERSION_TABLE in names:
        return Shape.VERSIONED
    return Shape.UNVERSIONED if names & engine_tables() else Shape.EMPTY
