"""``plan.touch.Touch.template_context``: the templates see a table's fields, in the customer's
zone, and nothing else: not the personal contact data, nor the store's own columns."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from caretouch.ledger import Ledger
from caretouch.plan import plan_day
from caretouch.rules.loader import RuleSet
from caretouch.store.db import Store
from conftest import customer_row, load_rows, policy_row

DAY = dt.date(2026, 11, 23)  # C1's birthday; P1 renews 7 days later


def test_the_context_holds_the_template_fields_only(store: Store, shipped_rules: RuleSet) -> None:
    load_rows(
        store,
        customers=[customer_row("C1")],
        policies=[policy_row("P1", "C1", renewal_date="2026-11-30")],
    )
    touches = {t.rule.id: t for t in plan_day(store, shipped_rules, DAY, history=Ledger(store))}
    customer = {
        "customer_id": "C1",
        "name": "王芳",
        "birth_date": dt.date(1990, 11, 23),
        "birthday_calendar": "gregorian",
        "locale": "zh-CN",
        "timezone": "Asia/Shanghai",
        "tier": "B",
        "status": "active",
    }
    birthday = touches["birthday"].template_context()
    assert birthday["customer"] == customer  # no phone, email, consents, birth_md, ...
    assert birthday["years"] == 36
    renewal = touches["renewal-reminder"].template_context()
    assert renewal["customer"] == customer
    assert renewal["policy"] == {  # no start_md
        "policy_id": "P1",
        "customer_id": "C1",
        "product": "安心医疗险",
        "start_date": dt.date(2020, 1, 15),
        "renewal_date": dt.date(2026, 11, 30),
        "status": "active",
        "premium": Decimal("1200.00"),
        "premium_due_date": None,
        "payment_frequency": None,
        "paid_through": None,
    }
    # The touch's own rows keep every column: only the context leaves some out.
    assert {"phone", "email", "birth_md"} <= set(touches["birthday"].customer)


def test_explanations_that_repeat_are_one_string(store: Store, shipped_rules: RuleSet) -> None:
    """A festival day tells many customers the same things: the touches (then their records)
    share one string for each, not a copy per customer."""
    none = {"consent_sms": "false", "consent_email": "false"}
    load_rows(
        store,
        customers=[
            customer_row("C1"),
            customer_row("C2"),
            customer_row("C3", **none),
            customer_row("C4", **none),
        ],
    )
    touches = {
        t.customer_id: t
        for t in plan_day(store, shipped_rules, DAY, history=Ledger(store))
        if t.rule.id == "birthday"
    }
    assert len(touches) == 4
    for start in ("channel sms: first usable of", "tier B: service level value_added"):
        lines = [
            next(line for line in t.explain if line.startswith(start))
            for t in (touches["C1"], touches["C2"])
        ]
        assert lines[0] is lines[1], start
    suppressed = [t.explain[-1] for t in (touches["C3"], touches["C4"])]
    assert suppressed[0].startswith("suppressed (no_contact): ")
    assert suppressed[0] is suppressed[1]
