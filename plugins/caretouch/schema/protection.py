"""The ledger's protection on PostgreSQL, and the application role's grants.

The ledger refuses UPDATE, DELETE and TRUNCATE at the database level, for everyone, the
application included. The one exception is retention: erasing an attempt's message content
(subject, body, html -> NULL) while every other column, and so the hash chain, stays as it
was. On SQLite the hash chain detects what the database cannot prevent. The triggers and
their function belong to the role that runs `care store init` (the schema's owner); the
application connects as another role (``--app-role``), which may only SELECT and INSERT
here, so it can neither disable nor replace them (docs/deploy.md).

``install`` is the current definition and is idempotent: the baseline migration runs it, and
``upgrade`` runs it again when a trigger is missing or disabled. A migration that changes the
protection edits ``install`` and calls it again.
"""

from __future__ import annotations

import re

from sqlalchemy import Connection, text

from ..errors import ConfigurationError
from ..store.db import DRAINED_TABLES, LEDGER_TABLES

_ROLE_RX = re.compile(r"[A-Za-z_][A-Za-z0-9_$-]{0,62}")

_FUNCTION = """
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
    """


def install(conn: Connection) -> None:
    """(Re)create the append-only function and its triggers on every ledger table."""
    if conn.dialect.name != "postgresql":
        return
    conn.execute(text(_FUNCTION))
    for table in LEDGER_TABLES:
        for statement in (
            f"DROP TRIGGER IF EXISTS care_append_only ON {table}",
            f"CREATE TRIGGER care_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION care_ledger_append_only()",
            f"DROP TRIGGER IF EXISTS care_no_truncate ON {table}",
            f"CREATE TRIGGER care_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION care_ledger_append_only()",
        ):
            conn.execute(text(statement))


def grant_app_role(conn: Connection, role: str, tables: list[str], version_table: str) -> None:
    """Let ``role`` run the application and nothing more (see LEDGER_TABLES); ``tables``:
    the engine's tables that are tables here (a deployment's views are its own business);
    ``version_table``: read at every start to check the schema version."""
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
    for table in [*ledger, *others, version_table]:
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
    # A callback's intake row is deleted by the ledger transaction that records it.
    statements += [f"GRANT DELETE ON {q(t)} TO {r}" for t in DRAINED_TABLES if t in others]
    # The start-up check reads the schema version; only `care store upgrade` changes it.
    statements.append(f"GRANT SELECT ON {q(version_table)} TO {r}")
    statements.append(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {r}")
    for statement in statements:
        conn.execute(text(statement))
