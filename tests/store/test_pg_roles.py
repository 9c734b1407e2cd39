"""PostgreSQL roles: the schema's owner runs ``care store init --app-role``; the application
role then runs everything (plan, send, webhooks, consent, retention, verify) but can neither
edit the ledger nor disable or replace the append-only protection, and its start-up check
issues no DDL.

Real PostgreSQL; both roles are made with a unique name for the test and dropped after it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from caretouch.config import CareConfig
from caretouch.errors import ConfigurationError
from caretouch.ledger import Ledger, ProviderEvent
from caretouch.ledger.audit import erase_content, verify
from caretouch.ledger.consent import record_consent
from caretouch.run.day import run_day
from caretouch.run.engine import open_engine
from caretouch.schema import require_current_schema
from caretouch.schema.migrate import upgrade
from caretouch.store.consent import Purpose
from caretouch.store.db import Store, append_only_gaps, open_store
from caretouch.vocab import TouchStatus
from conftest import (
    PG_URL,
    RULES_DIR,
    TEMPLATES_DIR,
    customer_row,
    load_rows,
    require_postgres,
    utc,
)

DAY = dt.date(2026, 11, 23)
NOON = utc(2026, 11, 23, 12)
KEY = b"pg-roles-anchor-key"


@dataclass
class Roles:
    owner: Store
    app: Store
    app_role: str
    schema: str
    url: str


def _store_as(role: str, schema: str) -> Store:
    url = make_url(PG_URL).set(username=role, password=None)
    return open_store(
        url.render_as_string(hide_password=False),
        connect_args={"options": f"-csearch_path={schema}"},
    )


@pytest.fixture
def roles() -> Iterator[Roles]:
    require_postgres()
    tag = uuid.uuid4().hex[:10]
    owner_role, app_role, schema = f"care_own_{tag}", f"care_app_{tag}", f"care_roles_{tag}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE ROLE {owner_role} LOGIN NOSUPERUSER"))
        conn.execute(text(f"CREATE ROLE {app_role} LOGIN NOSUPERUSER"))
        conn.execute(text(f"CREATE SCHEMA {schema} AUTHORIZATION {owner_role}"))
    owner = _store_as(owner_role, schema)
    app = _store_as(app_role, schema)
    try:
        upgrade(owner, app_role=app_role)
        yield Roles(owner, app, app_role, schema, app.url)
    finally:
        owner.dispose()
        app.dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            for role in (app_role, owner_role):
                conn.execute(text(f"DROP OWNED BY {role}"))
                conn.execute(text(f"DROP ROLE {role}"))
        admin.dispose()


def _ddl_issued(store: Store) -> list[str]:
    """Start recording the statements ``store`` sends that change the schema."""
    seen: list[str] = []

    def record(*args: Any) -> None:  # conn, cursor, statement, parameters, context, many
        word = str(args[2]).lstrip().split(" ", 1)[0].upper()
        if word in {"CREATE", "ALTER", "DROP", "GRANT", "REVOKE", "COMMENT"}:
            seen.append(str(args[2]))

    event.listen(store.engine, "before_cursor_execute", record)
    return seen


def _as_app(roles: Roles, sql: str) -> None:
    with roles.app.engine.begin() as conn:
        conn.exec_driver_sql(sql)


def test_app_role_runs_everything_without_ddl(roles: Roles, tmp_path: Path) -> None:
    ddl = _ddl_issued(roles.app)
    require_current_schema(roles.app)  # the start-up check every command and task makes
    load_rows(
        roles.app,
        customers=[customer_row(f"C{i}", phone=f"+86138{i:08d}") for i in range(3)],
    )
    config = CareConfig(
        roles.url, RULES_DIR, TEMPLATES_DIR, tmp_path / "outbox", tmp_path / "anchors.jsonl"
    )
    engine = open_engine(config, store=roles.app)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CARE_ANCHOR_KEY", KEY.decode())
        report = run_day(engine, DAY, run_id="app-role", now=NOON)  # plan, claim, send, anchor
    assert report.sent == 3
    ledger = Ledger(roles.app)
    (state, *_) = ledger.states_for_day(DAY)
    attempt = ledger.attempts(state.id)[-1]
    (new,) = ledger.record_provider_events(
        [
            ProviderEvent(
                provider="twilio",
                provider_event_id="SM1:delivered",
                kind="status",
                payload={"MessageStatus": "delivered"},
                touch_id=state.id,
                attempt_id=attempt.id,
                status=TouchStatus.DELIVERED,
            )
        ],
        now=NOON + dt.timedelta(minutes=5),
    )  # what a delivery webhook records
    assert new.provider_event_id == "SM1:delivered"
    # A status callback accepted into the intake, then recorded by a drain, which deletes it.
    from caretouch.webhooks import intake

    intake.accept_status(
        roles.app,
        {"MessageSid": "SM2", "MessageStatus": "delivered"},
        attempt=str(attempt.id),
        now=NOON + dt.timedelta(minutes=6),
    )
    done = intake.drain_all(roles.app, now=NOON + dt.timedelta(minutes=6))
    assert (len(done.settled), done.new, done.set_aside) == (1, 1, 0)
    changed = record_consent(
        roles.app, "C1", {Purpose.SMS: False}, source="test", at=NOON + dt.timedelta(hours=1)
    )
    assert changed == {Purpose.SMS: (True, False)}
    assert erase_content(roles.app, NOON + dt.timedelta(days=1)) == 3  # retention
    result = verify(roles.app, anchor_file=tmp_path / "anchors.jsonl", key=KEY)
    assert result.ok, result.problem
    assert result.anchors == 1
    assert ddl == [], ddl


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE touches SET customer_id = 'X'",
        "UPDATE touch_attempts SET recipient = '+10000000000'",
        "DELETE FROM touch_events",
        "DELETE FROM consent_events",
        "DELETE FROM ledger_chain",
        "DELETE FROM ledger_anchors",
        "UPDATE consent_events SET granted = true",
        "TRUNCATE touch_events CASCADE",
        "TRUNCATE ledger_chain",
        "ALTER TABLE touches DISABLE TRIGGER care_append_only",
        "ALTER TABLE consent_events DISABLE TRIGGER ALL",
        "DROP TRIGGER care_append_only ON touch_events",
        "DROP TRIGGER care_no_truncate ON ledger_chain",
        "CREATE OR REPLACE FUNCTION care_ledger_append_only() RETURNS trigger "
        "LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
        "DROP FUNCTION care_ledger_append_only() CASCADE",
        "ALTER FUNCTION care_ledger_append_only() RENAME TO gone",
        "DROP TABLE touch_events CASCADE",
        "ALTER TABLE touch_events ADD COLUMN x int",
        "CREATE TABLE sneaky (id int)",
        "SET session_replication_role = replica",
    ],
)
def test_app_role_cannot_edit_the_ledger_or_its_protection(roles: Roles, sql: str) -> None:
    load_rows(roles.app, customers=[customer_row("C1")])
    record_consent(roles.app, "C1", {Purpose.SMS: False}, source="test", at=NOON)
    with pytest.raises(DBAPIError) as refused:
        _as_app(roles, sql)
    assert refused.value.orig is not None
    # The protection is still in place for everyone, the owner included.
    with pytest.raises(DBAPIError, match="append-only"), roles.owner.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE consent_events SET granted = true")
    assert verify(roles.app).ok


def test_app_role_cannot_upgrade_and_says_who_can(roles: Roles) -> None:
    with roles.owner.engine.begin() as conn:  # as if made by an older Caretouch
        conn.exec_driver_sql("DROP TABLE alembic_version")
    with pytest.raises(ConfigurationError, match="run `care store upgrade` as the schema's owner"):
        require_current_schema(roles.app)
    with pytest.raises(ConfigurationError, match="may not change the schema"):
        upgrade(roles.app)
    upgrade(roles.owner)  # adopts it; the new version table is not granted yet
    with pytest.raises(ConfigurationError, match=r"cannot read the schema version.*--app-role"):
        require_current_schema(roles.app)
    upgrade(roles.owner, app_role=roles.app_role)  # lets the app read the version
    require_current_schema(roles.app)


def test_owner_upgrade_puts_back_a_disabled_trigger(roles: Roles) -> None:
    with roles.owner.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE touches DISABLE TRIGGER care_append_only")
    require_current_schema(roles.app)  # reads the version only
    with roles.owner.engine.connect() as conn:
        assert append_only_gaps(conn) == ["trigger care_append_only on touches (disabled)"]
    upgrade(roles.owner)
    with roles.owner.engine.connect() as conn:
        assert append_only_gaps(conn) == []


def test_init_refuses_the_owner_as_app_role(roles: Roles) -> None:
    owner = str(make_url(roles.owner.url).username)
    with pytest.raises(ConfigurationError, match="must not"):
        upgrade(roles.owner, app_role=owner)
    with pytest.raises(ConfigurationError, match="no PostgreSQL role"):
        upgrade(roles.owner, app_role="care_nobody_" + uuid.uuid4().hex[:8])
