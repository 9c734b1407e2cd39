"""The planner reads a rule's candidates in batches (``planner.CANDIDATE_BATCH``): on
PostgreSQL through a server-side cursor, so a festival's million candidates are never
fetched into memory at once; every candidate is planned whatever the batch size."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import event

from caretouch.ledger import Ledger
from caretouch.plan import planner
from caretouch.render.templates import TemplateStore
from caretouch.rules.loader import load_rules
from caretouch.store.db import Store
from conftest import RULES_DIR, TEMPLATES_DIR, customer_row, load_rows

DAY = dt.date(2026, 11, 23)


def test_candidates_are_read_in_batches(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    load_rows(store, customers=[customer_row(f"C{i}", phone=f"+86138{i:08d}") for i in range(7)])
    monkeypatch.setattr(planner, "CANDIDATE_BATCH", 2)
    cursors: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "customers" in statement and "birth" in statement:
            cursors.append(type(cursor).__name__)

    event.listen(store.engine, "before_cursor_execute", note)
    try:
        ruleset = load_rules(RULES_DIR, TemplateStore(TEMPLATES_DIR))
        touches = planner.plan_day(store, ruleset, DAY, history=Ledger(store))
    finally:
        event.remove(store.engine, "before_cursor_execute", note)
    birthdays = sorted(t.customer_id for t in touches if t.rule.id == "birthday")
    assert birthdays == [f"C{i}" for i in range(7)]
    assert cursors, "the birthday rule's candidate query was not seen"
    if store.is_postgres:
        # psycopg's named (server-side) cursor, not the client-side one that fetches all.
        assert set(cursors) == {"ServerCursor"}, cursors
