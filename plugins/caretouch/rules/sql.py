"""Compiling rules to SQL: triggers and audience filters are evaluated in the database.

Each trigger becomes one or more SELECTs whose WHERE clause starts with a condition on an
indexed column (a month-day key, a renewal date, an event type and time), so the rows read grow
with the touches due on the day, not with the size of the store. The audience filter is ANDed
onto the same SELECT.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, false, func, not_, or_, select, true
from sqlalchemy.sql.schema import Table

from ..dates import anniversary_keys, lunar_anniversary_keys
from ..store.models import Customer, Event, InsurancePolicy, Relation
from ..vocab import BirthdayCalendar
from .model import AllOf, AnyOf, Compare, Condition, Not, Op, Rule, TriggerKind

# Events are stored in UTC; a local calendar day spans at most these hours either side.
_MAX_OFFSET = dt.timedelta(hours=14)

TABLES: dict[str, Table] = {
    "customer": Customer.__table__,  # type: ignore[dict-item]
    "policy": InsurancePolicy.__table__,  # type: ignore[dict-item]
    "event": Event.__table__,  # type: ignore[dict-item]
    "relation": Relation.__table__,  # type: ignore[dict-item]
}
PREFIX = {"customer": "c_", "policy": "p_", "event": "e_", "relation": "r_"}


def compile_condition(cond: Condition) -> ColumnElement[bool]:
    """An audience condition as a SQL boolean expression over the store tables."""
    if isinstance(cond, AllOf):
        return and_(*(compile_condition(c) for c in cond.items))
    if isinstance(cond, AnyOf):
        return or_(*(compile_condition(c) for c in cond.items))
    if isinstance(cond, Not):
        # SQL's NOT of an unknown (a comparison with NULL) is unknown; here it is true, so
        # `not: {customer.tier: A}` matches customers with no tier as `ne` does.
        return not_(func.coalesce(compile_condition(cond.item), false()))
    assert isinstance(cond, Compare)
    col = TABLES[cond.field.table].c[cond.field.column]
    value: Any = cond.value
    if cond.op is Op.IS_NULL:
        return col.is_(None) if value else col.is_not(None)
    ops = {
        Op.EQ: lambda: col == value,
        Op.NE: lambda: or_(col != value, col.is_(None)),
        Op.IN: lambda: col.in_(value),
        Op.NOT_IN: lambda: or_(col.not_in(value), col.is_(None)),
        Op.LT: lambda: col < value,
        Op.LE: lambda: col <= value,
        Op.GT: lambda: col > value,
        Op.GE: lambda: col >= value,
    }
    return ops[cond.op]()


def _columns(tables: tuple[str, ...]) -> list[Any]:
    cols: list[Any] = []
    for name in tables:
        table = TABLES[name]
        cols.extend(c.label(PREFIX[name] + c.name) for c in table.c if c.name != "id")
    return cols


def candidate_selects(rule: Rule, day: dt.date) -> list[Select[Any]]:
    """SELECTs returning every (customer, policy, event, relation) row the rule may touch on
    ``day``.

    They may return a few rows more than are due (e.g. events near the edge of the local
    day); ``plan.candidates`` makes the exact, time-zone-aware decision in Python.
    """
    trig = rule.trigger
    customers = TABLES["customer"]
    policies = TABLES["policy"]
    events = TABLES["event"]
    audience = compile_condition(rule.audience) if rule.audience is not None else true()
    wheres: list[ColumnElement[bool]] = []

    if trig.kind is TriggerKind.EVENT:
        first = day - dt.timedelta(days=trig.delay_days)
        lo = dt.datetime.combine(first, dt.time(), dt.timezone.utc) - _MAX_OFFSET
        hi = (
            dt.datetime.combine(first + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
            + _MAX_OFFSET
        )
        stmt = (
            select(*_columns(("customer", "event", "policy")))
            .select_from(events)
            .join(customers, customers.c.customer_id == events.c.customer_id)
            .outerjoin(policies, policies.c.policy_id == events.c.policy_id)
            .where(events.c.type == trig.event_type)
            .where(events.c.occurred_at >= lo)
            .where(events.c.occurred_at < hi)
            .where(audience)
        )
        return [stmt]

    if trig.kind is TriggerKind.CADENCE:
        # Everyone in the audience; the planner keeps the tiers with a cadence and decides,
        # from the ledger's last contacts, who is due (plan.cadence).
        return [select(*_columns(("customer",))).select_from(customers).where(audience)]

    if trig.kind is TriggerKind.CALENDAR:
        # A greeting day touches everyone in the audience: the due set is the audience.
        if not trig.calendar_match(day)[0]:
            return []
        return [select(*_columns(("customer",))).select_from(customers).where(audience)]

    assert trig.field is not None
    field = trig.field
    if field.table == "policy":
        base = (
            select(*_columns(("customer", "policy")))
            .select_from(policies)
            .join(customers, customers.c.customer_id == policies.c.customer_id)
        )
    elif field.table == "relation":
        # One row per family member whose date it is, with their customer (the recipient).
        relations = TABLES["relation"]
        base = (
            select(*_columns(("customer", "relation")))
            .select_from(relations)
            .join(customers, customers.c.customer_id == relations.c.customer_id)
        )
    else:
        base = select(*_columns(("customer",))).select_from(customers)

    owner = TABLES[field.table]
    col = owner.c[field.column]
    if trig.kind is TriggerKind.ANNIVERSARY:
        keys = anniversary_keys(day, trig.leap_day)
        if field.column == "birth_date":
            # A customer's or a relation's birthday: Gregorian by the month-day key, lunar by
            # the lunar one; both keys are indexed on either table.
            wheres.append(
                and_(
                    owner.c.birth_md.in_(keys),
                    owner.c.birthday_calendar == BirthdayCalendar.GREGORIAN.value,
                )
            )
            lunar_keys = lunar_anniversary_keys(day)
            selects = [base.where(*wheres, col <= day, audience)]
            if lunar_keys:
                selects.append(
                    base.where(
                        owner.c.birth_lunar_md.in_(lunar_keys),
                        owner.c.birthday_calendar == BirthdayCalendar.LUNAR.value,
                        col <= day,
                        audience,
                    )
                )
            return selects
        # policy.start_date: the loader allows no other anniversary field.
        return [base.where(policies.c.start_md.in_(keys), col <= day, audience)]

    sign = 1 if trig.kind is TriggerKind.DAYS_BEFORE else -1
    dates = [day + dt.timedelta(days=sign * o) for o in trig.offsets]
    if field.name == PREMIUM_DUE_FIELD:
        # A premium reminder is owed only for a premium not yet paid (premiums.unpaid).
        return [base.where(col.in_(dates), premium_unpaid(), audience)]
    return [base.where(col.in_(dates), audience)]


PREMIUM_DUE_FIELD = "policy.premium_due_date"
"""The trigger field of premium reminders: they plan, and go out, only while it is unpaid."""


def premium_unpaid() -> ColumnElement[bool]:
    """The policies whose premium due on ``premium_due_date`` is unpaid: nothing paid, or
    paid through a day before it (``premiums.unpaid`` in SQL)."""
    policies = TABLES["policy"]
    return or_(
        policies.c.paid_through.is_(None),
        policies.c.paid_through < policies.c.premium_due_date,
    )


def row_splitter(
    keys: Sequence[str],
) -> Callable[[Sequence[Any]], dict[str, dict[str, Any] | None]]:
    """A function that splits result rows of these column ``keys`` into tables.

    It returns ``{"customer": {...}, "policy": {...} | None, "event": {...} | None,
    "relation": {...} | None}``; a
    table whose id is NULL (an outer join that found nothing) is None. The column layout is
    worked out once per statement, not once per row.
    """
    layout: dict[str, list[tuple[int, str]]] = {name: [] for name in PREFIX}
    for index, key in enumerate(keys):
        for name, prefix in PREFIX.items():
            if key.startswith(prefix):
                layout[name].append((index, key[len(prefix) :]))
    id_index = {
        name: next((i for i, col in cols if col == ID_KEYS[name]), None)
        for name, cols in layout.items()
    }

    def split(row: Sequence[Any]) -> dict[str, dict[str, Any] | None]:
        out: dict[str, dict[str, Any] | None] = {}
        for name, cols in layout.items():
            idx = id_index[name]
            out[name] = (
                {col: row[i] for i, col in cols}
                if idx is not None and row[idx] is not None
                else None
            )
        return out

    return split


ID_KEYS = {
    "customer": "customer_id",
    "policy": "policy_id",
    "event": "event_id",
    "relation": "relation_id",
}
