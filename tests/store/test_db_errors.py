"""A database error never carries personal data into a message, a traceback or a log.

SQLAlchemy prints a failed statement's parameters (the row: phone, email, name) unless the
engine hides them, and PostgreSQL adds the row's values to a constraint error's DETAIL.
"""

from __future__ import annotations

import logging
import traceback

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DataError, IntegrityError, StatementError

from caretouch.store.db import Store
from caretouch.store.models import Customer
from caretouch.store.write import bulk_upsert, upsert
from conftest import customer_row, load_rows

PHONE = "+85297622077"
EMAIL = "wang.fang@example.com"
NAME = "王芳芳"


def _row(**overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "customer_id": "C1",
        "name": NAME,
        "phone": PHONE,
        "email": EMAIL,
        "locale": "zh-CN",
        "tier": "B",
        "status": "active",
        "birthday_calendar": "gregorian",
        "consent_sms": True,
        "consent_email": True,
        "consent_marketing": False,
    }
    row.update(overrides)
    return row


def _told(exc: BaseException, caplog: pytest.LogCaptureFixture) -> str:
    """Everything the error shows: its message, its traceback (with the driver's exception it
    chains), and what logging it prints."""
    logging.getLogger("caretouch.test").error("store write failed", exc_info=exc)
    return str(exc) + "".join(traceback.format_exception(exc)) + caplog.text


def _assert_no_personal_data(told: str) -> None:
    for value in (PHONE, PHONE[1:], PHONE[-8:], EMAIL, NAME):
        assert value not in told, value


def test_engines_hide_parameters(store: Store) -> None:
    assert store.engine.hide_parameters is True


def test_not_null_violation(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    # PostgreSQL: "null value in column "name" ... DETAIL: Failing row contains (…)".
    with pytest.raises(IntegrityError) as caught, store.session() as session:
        upsert(session, Customer, "customer_id", [_row(name=None)])
    told = _told(caught.value, caplog)
    assert "name" in told and "parameters hidden" in told
    _assert_no_personal_data(told)


def test_not_null_violation_in_a_bulk_write(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    # The import's bulk path: on PostgreSQL a COPY, which runs outside SQLAlchemy's handling.
    with pytest.raises(Exception) as caught, store.session() as session:
        bulk_upsert(session, Customer, "customer_id", [_row(customer_id="C0"), _row(name=None)])
    told = _told(caught.value, caplog)
    assert "name" in told
    _assert_no_personal_data(told)


def test_unique_violation_names_no_key(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    # PostgreSQL: "duplicate key value ... DETAIL: Key (email)=(wang.fang@…) already exists".
    with store.engine.begin() as conn:
        conn.execute(text("CREATE TABLE contact_copy (email VARCHAR(320) UNIQUE)"))
    try:
        with pytest.raises(IntegrityError) as caught, store.engine.begin() as conn:
            for _ in range(2):
                conn.execute(text("INSERT INTO contact_copy VALUES (:e)"), {"e": EMAIL})
        told = _told(caught.value, caplog)
        assert "contact_copy" in told or "unique" in told.lower()
        _assert_no_personal_data(told)
    finally:
        with store.engine.begin() as conn:
            conn.execute(text("DROP TABLE contact_copy"))


def test_nul_reaching_postgres_prints_no_row(
    pg_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    # What the field test saw: a NUL in a CSV row, written past the importer's checks.
    load_rows(pg_store, customers=[customer_row("C0")])
    with pytest.raises(DataError) as caught, pg_store.session() as session:
        upsert(session, Customer, "customer_id", [_row(name="王\x00芳")])
    told = _told(caught.value, caplog)
    assert "NUL" in told
    _assert_no_personal_data(told)


def test_check_violation_detail_is_dropped(
    pg_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    # "new row ... violates check constraint ... DETAIL: Failing row contains (…)".
    with pg_store.engine.begin() as conn:
        conn.execute(
            text("CREATE TABLE checked (phone TEXT, email TEXT CHECK (email LIKE '%.org'))")
        )
    with pytest.raises(StatementError) as caught, pg_store.engine.begin() as conn:
        conn.execute(text("INSERT INTO checked VALUES (:p, :e)"), {"p": PHONE, "e": EMAIL})
    told = _told(caught.value, caplog)
    assert "checked_email_check" in told
    _assert_no_personal_data(told)
    # The diagnostics stay on the driver's exception for code that needs them.
    assert caught.value.orig.diag.constraint_name == "checked_email_check"  # type: ignore[union-attr]


def test_every_engine_is_created_hiding_parameters() -> None:
    """Engines are made by ``open_store``; any other ``create_engine`` in the engine or the
    benchmarks must pass ``hide_parameters=True`` itself."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    calls = []
    for path in [*root.glob("plugins/**/*.py"), *root.glob("bench/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "create_engine":
                hides = any(
                    k.arg == "hide_parameters" and getattr(k.value, "value", None) is True
                    for k in node.keywords
                )
                calls.append((str(path.relative_to(root)), node.lineno, hides))
    assert any(p == "plugins/caretouch/store/db.py" for p, _, _ in calls)
    unhidden = [
        (p, n) for p, n, hides in calls if not hides and p != "plugins/caretouch/store/db.py"
    ]
    assert unhidden == []
