"""Audience filters run in the database: each operator, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from caretouch.rules.model import FIELDS, AllOf, AnyOf, Compare, Not, Op
from caretouch.rules.sql import TABLES, compile_condition
from caretouch.store.db import Store
from conftest import customer_row, event_row, load_rows, policy_row

CUSTOMERS = [
    customer_row("A1", tier="A", birth_date="1980-01-01"),
    customer_row("B1", tier="B", birth_date="1990-06-15", timezone=""),
    customer_row("C1", tier="C", birth_date="", status="inactive"),
    customer_row("D1", tier="D", birth_date="2000-12-31", consent_marketing="true"),
]


def ids(store: Store, cond) -> set[str]:  # type: ignore[no-untyped-def]
    customers = TABLES["customer"]
    with store.read_session() as session:
        return set(session.scalars(select(customers.c.customer_id).where(compile_condition(cond))))


def c(field: str, op: Op, value: object) -> Compare:
    return Compare(FIELDS[field], op, value)


@pytest.mark.parametrize(
    ("cond", "expected"),
    [
        (c("customer.tier", Op.EQ, "A"), {"A1"}),
        (c("customer.tier", Op.NE, "A"), {"B1", "C1", "D1"}),
        (c("customer.tier", Op.IN, ("A", "B")), {"A1", "B1"}),
        (c("customer.tier", Op.NOT_IN, ("A", "B")), {"C1", "D1"}),
        (c("customer.birth_date", Op.LT, dt.date(1990, 6, 15)), {"A1"}),
        (c("customer.birth_date", Op.LE, dt.date(1990, 6, 15)), {"A1", "B1"}),
        (c("customer.birth_date", Op.GT, dt.date(1990, 6, 15)), {"D1"}),
        (c("customer.birth_date", Op.GE, dt.date(1990, 6, 15)), {"B1", "D1"}),
        (c("customer.birth_date", Op.IS_NULL, True), {"C1"}),
        (c("customer.timezone", Op.IS_NULL, True), {"B1"}),
        (c("customer.consent_marketing", Op.EQ, True), {"D1"}),
        (
            AllOf((c("customer.status", Op.EQ, "active"), c("customer.tier", Op.IN, ("A", "C")))),
            {"A1"},
        ),
        (
            AnyOf((c("customer.tier", Op.EQ, "A"), c("customer.status", Op.EQ, "inactive"))),
            {"A1", "C1"},
        ),
        (Not(c("customer.tier", Op.IN, ("A", "B"))), {"C1", "D1"}),
        # NOT of a comparison with an empty field is true, as for `ne`.
        (Not(c("customer.timezone", Op.EQ, "Asia/Shanghai")), {"B1"}),
        (c("customer.timezone", Op.NE, "Asia/Shanghai"), {"B1"}),
    ],
)
def test_operators(store: Store, cond, expected: set[str]) -> None:  # type: ignore[no-untyped-def]
    load_rows(store, customers=CUSTOMERS)
    assert ids(store, cond) == expected


def test_empty_event_payload_is_sql_null(store: Store) -> None:
    load_rows(
        store,
        customers=[customer_row("C1")],
        policies=[policy_row("P1", "C1")],
        events=[event_row("E1", "C1"), event_row("E2", "C1", payload='{"amount": 5}')],
    )
    events = TABLES["event"]
    with store.read_session() as session:
        found = set(
            session.scalars(
                select(events.c.event_id).where(
                    compile_condition(c("event.payload", Op.IS_NULL, True))
                )
            )
        )
    assert found == {"E1"}
