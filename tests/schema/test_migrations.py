"""The schema is Alembic's: `care store init` migrates an empty store to head, `care store
upgrade` adopts a store made before schema versions, and every start only reads the version
(no DDL), so concurrent starts on PostgreSQL cannot race."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, event, inspect, text

import caretouch.ledger.chain  # noqa: F401  (ledger_chain joins LedgerBase.metadata)
from caretouch.cli import main
from caretouch.errors import ConfigurationError
from caretouch.ledger.models import LedgerBase
from caretouch.schema import (
    Shape,
    check,
    current_version,
    head,
    protection,
    require_current_schema,
    shape,
)
from caretouch.schema.migrate import upgrade
from caretouch.store.consent import Purpose
from caretouch.store.db import Store, append_only_gaps, open_store
from caretouch.store.models import Base, ConsentEvent
from conftest import (
    PG_URL,
    RULES_DIR,
    TEMPLATES_DIR,
    customer_row,
    load_rows,
    pg_schema_store,
    require_postgres,
)

DDL_WORDS = {"CREATE", "ALTER", "DROP", "GRANT", "REVOKE", "COMMENT"}


def old_style_init(store: Store) -> None:
    """What ``Store.init()`` did before migrations: create_all, and the triggers."""
    Base.metadata.create_all(store.engine)
    LedgerBase.metadata.create_all(store.engine)
    with store.engine.begin() as conn:
        protection.install(conn)


def catalogue(store: Store) -> dict[str, Any]:
    """Tables, columns, keys and indexes as the database reports them."""
    inspector = inspect(store.engine)
    out: dict[str, Any] = {}
    for name in sorted(set(inspector.get_table_names()) - {"alembic_version"}):
        out[name] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(name)
            ],
            "pk": inspector.get_pk_constraint(name)["constrained_columns"],
            "unique": sorted(
                (u["name"] or "", tuple(u["column_names"]))
                for u in inspector.get_unique_constraints(name)
            ),
            "fks": sorted(
                (tuple(f["constrained_columns"]), f["referred_table"])
                for f in inspector.get_foreign_keys(name)
            ),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in inspector.get_indexes(name)
            ),
        }
    return out


def triggers(store: Store) -> list[tuple[str, str, str]]:
    if not store.is_postgres:
        return []
    with store.engine.connect() as conn:
        return sorted(
            conn.execute(
                text(
                    "SELECT c.relname, t.tgname, t.tgenabled FROM pg_trigger t "
                    "JOIN pg_class c ON c.oid = t.tgrelid "
                    "WHERE c.relnamespace = current_schema()::regnamespace "
                    "AND NOT t.tgisinternal"
                )
            ).all()
        )


class DDLCounter:
    """Every schema-changing statement any engine sends while it listens."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, *args: Any) -> None:  # conn, cursor, statement, parameters, ...
        if str(args[2]).lstrip().split(" ", 1)[0].upper() in DDL_WORDS:
            self.seen.append(str(args[2]))


@pytest.fixture
def ddl() -> Iterator[DDLCounter]:
    counter = DDLCounter()
    event.listen(Engine, "before_cursor_execute", counter)
    yield counter
    event.remove(Engine, "before_cursor_execute", counter)


def care(store_url: str, *args: str) -> Result:
    base = ["--store", store_url, "--rules", str(RULES_DIR), "--templates", str(TEMPLATES_DIR)]
    return CliRunner().invoke(main, [*base, *args], catch_exceptions=False)


@pytest.fixture(params=["sqlite", "postgres"])
def empty_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "postgres":
        with pg_schema_store(migrate=False) as store:
            yield store
    else:
        store = open_store(f"sqlite:///{tmp_path / 'care.db'}")
        yield store
        store.dispose()


# -- init ------------------------------------------------------------------------------------


def test_init_on_an_empty_store_makes_what_the_old_init_made(
    empty_store: Store, tmp_path: Path
) -> None:
    assert shape(empty_store) is Shape.EMPTY
    assert current_version(empty_store) is None
    assert upgrade(empty_store) == (None, head())
    assert current_version(empty_store) == head()
    require_current_schema(empty_store)
    with empty_store.engine.connect() as conn:
        assert append_only_gaps(conn) == []

    if empty_store.is_postgres:
        with pg_schema_store(migrate=False) as old:
            old_style_init(old)
            assert catalogue(empty_store) == catalogue(old)
            assert triggers(empty_store) == triggers(old)
            assert len(triggers(old)) == 14  # 7 ledger tables x (row, truncate)
    else:
        old = open_store(f"sqlite:///{tmp_path / 'old.db'}")
        old_style_init(old)
        assert catalogue(empty_store) == catalogue(old)
        old.dispose()


def test_init_is_safe_to_repeat(store: Store) -> None:
    before = catalogue(store)
    assert upgrade(store) == (head(), head())
    assert catalogue(store) == before


def test_care_store_init_says_ready(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'care.db'}"
    result = care(url, "store", "init")
    assert result.exit_code == 0, result.output
    assert result.output == f"store ready: {url}\n"
    assert current_version(open_store(url)) == head()


# -- upgrade: adopting a store made before schema versions -----------------------------------


def test_upgrade_adopts_an_old_style_store(store: Store) -> None:
    with store.engine.begin() as conn:  # made by the old init, with data in it
        conn.exec_driver_sql("DROP TABLE alembic_version")
    load_rows(store, customers=[customer_row("C1")])
    before = catalogue(store)
    assert shape(store) is Shape.UNVERSIONED
    with pytest.raises(ConfigurationError, match=r"older Caretouch.*run `care store upgrade`"):
        require_current_schema(store)
    assert upgrade(store) == (None, head())
    require_current_schema(store)
    assert catalogue(store) == before  # stamped: nothing rebuilt
    with store.read_session() as session:
        assert session.execute(text("SELECT customer_id FROM customers")).scalars().all() == ["C1"]


def test_upgrade_fills_what_an_older_store_lacks(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'care.db'}"
    store = open_store(url)
    old_style_init(store)
    with store.engine.begin() as conn:  # a store from before the anchors and an index
        conn.exec_driver_sql("DROP TABLE ledger_anchors")
        conn.exec_driver_sql("DROP INDEX ix_touches_rule_occurrence")
        # A consent change from before consent events were chained.
        conn.execute(
            ConsentEvent.__table__.insert(),
            {
                "customer_id": "C1",
                "purpose": Purpose.SMS.value,
                "granted": False,
                "source": "test",
                "at": dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc),
            },
        )
    result = care(url, "store", "upgrade")
    assert result.exit_code == 0, result.output
    assert "upgraded to schema version" in result.output
    assert "no schema version (older Caretouch)" in result.output
    inspector = inspect(store.engine)
    assert "ledger_anchors" in inspector.get_table_names()
    assert "ix_touches_rule_occurrence" in {i["name"] for i in inspector.get_indexes("touches")}
    with store.read_session() as session:  # chained once, on adoption
        assert session.execute(text("SELECT count(*) FROM ledger_chain")).scalar() == 1
    again = care(url, "store", "upgrade")
    assert again.output == f"store already at schema version {head()}: {url}\n"


def test_upgrade_refuses_an_old_store_missing_columns(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'care.db'}")
    old_style_init(store)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE touch_events DROP COLUMN send_at")
    with pytest.raises(ConfigurationError, match=r"missing column\(s\) touch_events\.send_at"):
        upgrade(store)
    assert current_version(store) is None


def test_upgrade_refuses_a_missing_or_empty_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'care.db'}"
    missing = care(url, "store", "upgrade")
    assert missing.exit_code == 1
    assert "does not exist: run `care store init`" in missing.output
    assert not (tmp_path / "care.db").exists()
    (tmp_path / "care.db").touch()
    empty = care(url, "store", "upgrade")
    assert empty.exit_code == 1
    assert "has no customers, events, policies table(s): run `care store init`" in empty.output


def test_app_role_is_refused_on_sqlite(sqlite_store: Store) -> None:
    with pytest.raises(ConfigurationError, match="needs a PostgreSQL store"):
        upgrade(sqlite_store, app_role="care")


# -- the start-up check: read-only, and says what to run -------------------------------------


def test_check_names_the_command_to_run(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    require_current_schema(store)
    current = check.head()
    monkeypatch.setattr(check, "head", lambda: "9999")
    monkeypatch.setattr(check, "is_known", lambda version: version in {current, "9999"})
    with pytest.raises(
        ConfigurationError,
        match=rf"is at schema version {current}, this Caretouch needs 9999: "
        r"run `care store upgrade`",
    ):
        require_current_schema(store)
    monkeypatch.undo()
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'f00d'")
    with pytest.raises(ConfigurationError, match=r"f00d, unknown to this Caretouch"):
        require_current_schema(store)


def test_check_on_an_empty_store_says_init(empty_store: Store) -> None:
    with empty_store.engine.connect():  # the SQLite file exists, empty
        pass
    with pytest.raises(
        ConfigurationError,
        match=r"has no customers, events, policies table\(s\): run `care store init`",
    ):
        require_current_schema(empty_store)


def test_no_ddl_at_start(store: Store, ddl: DDLCounter) -> None:
    tables = catalogue(store)
    require_current_schema(store)
    assert ddl.seen == []
    assert catalogue(store) == tables


def test_no_ddl_when_a_command_starts(tmp_path: Path, ddl: DDLCounter) -> None:
    url = f"sqlite:///{tmp_path / 'care.db'}"
    store = open_store(url)
    upgrade(store)
    load_rows(store, customers=[customer_row("C1")])
    ddl.seen.clear()
    result = care(url, "plan", "--date", "2026-11-23")
    assert result.exit_code == 0, result.output
    assert ddl.seen == []


# -- concurrent starts on PostgreSQL ---------------------------------------------------------

_START = """
import sys
from caretouch.schema import require_current_schema
from caretouch.store.db import open_store
from sqlalchemy import text
store = open_store(sys.argv[1], connect_args={"options": "-csearch_path=" + sys.argv[2]})
for _ in range(20):
    require_current_schema(store)
    with store.read_session() as session:
        session.execute(text("SELECT count(*) FROM customers")).scalar()
store.dispose()
"""

_INIT = """
import sys
from caretouch.schema.migrate import upgrade
from caretouch.store.db import open_store
store = open_store(sys.argv[1], connect_args={"options": "-csearch_path=" + sys.argv[2]})
upgrade(store)
store.dispose()
"""


def _in_parallel(code: str, schema: str, n: int = 4) -> list[subprocess.CompletedProcess[str]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, PG_URL, schema],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def _schema_of(store: Store) -> str:
    with store.engine.connect() as conn:
        return str(conn.execute(text("SELECT current_schema()")).scalar())


def test_four_processes_start_on_one_postgres_store() -> None:
    require_postgres()
    with pg_schema_store() as store:
        load_rows(store, customers=[customer_row(f"C{i}") for i in range(3)])
        for done in _in_parallel(_START, _schema_of(store)):
            assert done.returncode == 0, done.stderr[-3000:]


def test_four_processes_init_one_postgres_store() -> None:
    require_postgres()
    with pg_schema_store(migrate=False) as store:
        for done in _in_parallel(_INIT, _schema_of(store)):
            assert done.returncode == 0, done.stderr[-3000:]
        assert current_version(store) == head()
        require_current_schema(store)
