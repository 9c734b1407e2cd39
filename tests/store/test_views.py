"""A deployment's own tables mapped onto the store through views (docs/store.md, "Mapping
your own tables with views"): the store checks accept them, `care store init` leaves them
alone, and a day plans exactly as on the canonical tables."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import inspect, text

from caretouch.plan import plan_day
from caretouch.schema import require_current_schema
from caretouch.schema.migrate import upgrade
from caretouch.store.demo import demo_rows
from conftest import load_rows

DAY = dt.date(2026, 11, 23)


def _decisions(store, ruleset) -> list[tuple[str, str, str | None]]:
    return sorted(
        (t.key, t.decision.value, t.reason.value if t.reason else None)
        for t in plan_day(store, ruleset, DAY)
    )


def test_customers_and_policies_as_views_plan_the_same_day(store, shipped_rules) -> None:
    rows = demo_rows(DAY, customers=80)
    load_rows(store, rows["customers"], rows["policies"], rows["events"])
    on_tables = _decisions(store, shipped_rules)
    assert any(decision == "send" for _, decision, _ in on_tables)

    with store.engine.begin() as conn:  # the deployment's own tables, and views over them
        conn.execute(text("ALTER TABLE customers RENAME TO crm_client"))
        conn.execute(text("CREATE VIEW customers AS SELECT * FROM crm_client"))
        conn.execute(text("ALTER TABLE policies RENAME TO crm_contract"))
        conn.execute(text("CREATE VIEW policies AS SELECT * FROM crm_contract"))

    require_current_schema(store)  # what every command and task runs first: no refusal
    upgrade(store)  # safe to repeat: the views stay views, no table is made beside them
    views = set(inspect(store.engine).get_view_names())
    tables = set(inspect(store.engine).get_table_names())
    assert {"customers", "policies"} <= views
    assert not {"customers", "policies"} & tables
    assert _decisions(store, shipped_rules) == on_tables
