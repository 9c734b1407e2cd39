"""Family dates and the customer's agent through the real planner, ledger and outbox (issue
15), on SQLite and PostgreSQL: a relation's birthday is a touch about the relation
(``rule|relation:R|date``) sent to its customer, on the day, in the calendar the relation
keeps; templates see the customer's agent, read once for the day's touches and frozen in
the plan."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from pathlib import Path

import pytest
from sqlalchemy import event, update
from test_contact_policy import at_11_shanghai, make_rules, state_of

from caretouch.config import CareConfig
from caretouch.ledger import Ledger
from caretouch.ledger.consent import record_consent
from caretouch.plan import plan_day
from caretouch.plan.touch import Touch
from caretouch.render.templates import TemplateStore
from caretouch.rules.loader import load_rules
from caretouch.run.day import run_day
from caretouch.run.engine import CareEngine, open_engine
from caretouch.store.consent import Purpose
from caretouch.store.db import Store
from caretouch.store.models import Agent
from caretouch.vocab import Decision, SubjectKind, SuppressionReason, TouchStatus
from conftest import TEMPLATES_DIR, customer_row, insert_agents_and_relations, load_rows, utc

D = dt.date
NOT_A_BIRTHDAY = "1990-06-15"
NO_CAPS = "version: 1\n"
PER_DAY_1 = "version: 1\ncaps:\n  per_day: 1\n"
AGENT = {"agent_id": "AG1", "name": "李娜", "phone": "+8613900001111", "email": "li@example.com"}

CHILD_TEXT = (
    "{{ customer.name }}, happy {{ years }} to {{ relation.name }} ({{ relation.kind }}, "
    "{{ relation.birth_date }})!{% if agent %} {{ agent.name }} {{ agent.phone or '' }}{% endif %}"
)


def child_rule(
    *,
    leap_day: str = "feb28",
    priority: int = 20,
    defer_days: int = 0,
    tiers: str = "[A]",
    kind: str = "child",
) -> str:
    return f"""\
version: 1
rules:
  - id: child-birthday
    description: A card on the birthday of a premium customer's child.
    trigger:
      kind: anniversary
      field: relation.birth_date
      leap_day: {leap_day}
    audience:
      all:
        - relation.kind: {kind}
        - customer.status: active
    tiers: {tiers}
    channels: [sms]
    template: child_birthday
    category: care
    priority: {priority}
    defer_days: {defer_days}
"""


@pytest.fixture
def templates_dir(tmp_path: Path) -> Path:
    d = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, d)
    (d / "child_birthday").mkdir()
    for locale in ("en", "zh-CN", "zh-TW"):
        (d / "child_birthday" / f"sms.{locale}.txt").write_text(CHILD_TEXT, encoding="utf-8")
    return d


def rules_with(
    tmp_path: Path, rule: str, policy: str = NO_CAPS, shipped: tuple[str, ...] = ()
) -> Path:
    return make_rules(tmp_path, policy, {"child-birthday.yaml": rule}, shipped=shipped)


def plan(store: Store, rules: Path, templates: Path, day: dt.date) -> list[Touch]:
    ruleset = load_rules(rules, TemplateStore(templates))
    assert [str(e) for e in ruleset.errors] == []
    return plan_day(store, ruleset, day, history=Ledger(store))


def engine_for(store: Store, rules: Path, templates: Path, tmp_path: Path) -> CareEngine:
    config = CareConfig(
        store.url, rules, templates, tmp_path / "outbox", anchor_file=tmp_path / "anchors.jsonl"
    )
    engine = open_engine(config, store=store)
    assert [str(e) for e in engine.ruleset.errors] == []
    return engine


def outbox_text(tmp_path: Path) -> str:
    return "\n".join(
        p.read_text(encoding="utf-8")
        for p in sorted((tmp_path / "outbox").rglob("*"))
        if p.is_file()
    )


def relation(relation_id: str, birth: str, customer_id: str = "C1", **more: str) -> dict:
    return {
        "relation_id": relation_id,
        "customer_id": customer_id,
        "name": f"小{relation_id}",
        "birth_date": D.fromisoformat(birth),
        **more,
    }


def children(touches: list[Touch]) -> list[Touch]:
    return [t for t in touches if t.rule.id == "child-birthday"]


# --- the day a relation's birthday is due ------------------------------------------------------


def test_a_childs_birthday_on_a_premium_customer_fires_on_its_day(
    store: Store, tmp_path: Path, templates_dir: Path
) -> None:
    load_rows(
        store,
        customers=[
            customer_row("C1", tier="A", birth_date=NOT_A_BIRTHDAY),
            customer_row("C2", tier="B", birth_date=NOT_A_BIRTHDAY),  # not premium
        ],
    )
    insert_agents_and_relations(
        store,
        relations=[
            relation("R1", "2019-03-05"),
            relation("R2", "2019-03-05", customer_id="C2"),
            relation("R3", "1960-03-05", kind="parent"),  # not a child
        ],
    )
    rules = rules_with(tmp_path, child_rule())
    for day in (D(2027, 3, 4), D(2027, 3, 6)):
        assert children(plan(store, rules, templates_dir, day)) == [], day
    (touch,) = children(plan(store, rules, templates_dir, D(2027, 3, 5)))
    assert touch.key == "child-birthday|relation:R1|2027-03-05"
    assert (touch.subject, touch.subject_id, touch.customer_id) == (
        SubjectKind.RELATION,
        "R1",
        "C1",
    )
    assert touch.send_at == utc(2027, 3, 5, 1, 0)  # 09:00 in the customer's zone
    assert (touch.decision, touch.channel.value if touch.channel else None) == (
        Decision.SEND,
        "sms",
    )
    assert touch.years == 8
    assert (touch.as_json()["relation_id"], touch.as_json()["customer_id"]) == ("R1", "C1")
    assert (
        "relation R1 (child): relation.birth_date 2019-03-05 -> anniversary, year 8"
        in touch.explain
    )
    context = touch.template_context()
    assert context["relation"] == {
        "relation_id": "R1",
        "kind": "child",
        "name": "小R1",
        "birth_date": D(2019, 3, 5),
        "birthday_calendar": "gregorian",
    }
    assert (context["years"], context["customer"]["customer_id"]) == (8, "C1")


def test_a_relation_born_later_than_the_day_is_not_greeted(
    store: Store, tmp_path: Path, templates_dir: Path
) -> None:
    load_rows(store, customers=[customer_row("C1", tier="A", birth_date=NOT_A_BIRTHDAY)])
    insert_agents_and_relations(store, relations=[relation("R1", "2028-03-05")])
    rules = rules_with(tmp_path, child_rule())
    assert children(plan(store, rules, templates_dir, D(2027, 3, 5))) == []


def test_a_lunar_relation_birthday_falls_on_its_lunar_day(
    store: Store, tmp_path: Path, templates_dir: Path
) -> None:
    # Born 2016-11-06 = lunar 10/7; lunar 10/7 of 2026 is 15 November 2026.
    load_rows(store, customers=[customer_row("C1", tier="A", birth_date=NOT_A_BIRTHDAY)])
    insert_agents_and_relations(
        store, relations=[relation("R1", "2016-11-06", birthday_calendar="lunar")]
    )
    rules = rules_with(tmp_path, child_rule())
    assert children(plan(store, rules, templates_dir, D(2026, 11, 6))) == []  # Gregorian day
    (touch,) = children(plan(store, rules, templates_dir, D(2026, 11, 15)))
    assert touch.key == "child-birthday|relation:R1|2026-11-15"
    assert touch.years == 10
    assert any("lunar anniversary (lunar month-day 1007)" in why for why in touch.explain)


@pytest.mark.parametrize(
    ("leap_day", "due", "not_due"),
    [("feb28", D(2027, 2, 28), D(2027, 3, 1)), ("mar1", D(2027, 3, 1), D(2027, 2, 28))],
)
def test_a_feb29_relation_follows_the_rules_leap_day_policy(
    store: Store,
    tmp_path: Path,
    templates_dir: Path,
    leap_day: str,
    due: dt.date,
    not_due: dt.date,
) -> None:
    load_rows(store, customers=[customer_row("C1", tier="A", birth_date=NOT_A_BIRTHDAY)])
    insert_agents_and_relations(store, relations=[relation("R1", "2016-02-29")])
    rules = rules_with(tmp_path, child_rule(leap_day=leap_day))
    assert children(plan(store, rules, templates_dir, not_due)) == []
    (touch,) = children(plan(store, rules, templates_dir, due))
    assert (touch.key, touch.years) == (f"child-birthday|relation:R1|{due}", 11)
    # In a leap year, on the day itself.
    (leap,) = children(plan(store, rules, templates_dir, D(2028, 2, 29)))
    assert leap.key == "child-birthday|relation:R1|2028-02-29"


def test_two_children_born_the_same_day_are_two_touches(
    store: Store, tmp_path: Path, templates_dir: Path
) -> None:
    load_rows(store, customers=[customer_row("C1", tier="A", birth_date=NOT_A_BIRTHDAY)])
    insert_agents_and_relations(
        store, relations=[relation("R1", "2019-03-05"), relation("R2", "2019-03-05")]
    )
    rules = rules_with(tmp_path, child_rule())
    engine = engine_for(store, rules, templates_dir, tmp_path)
    touches = children(plan(store, rules, templates_dir, D(2027, 3, 5)))
    assert sorted(t.key for t in touches) == [
        "child-birthday|relation:R1|2027-03-05",
        "child-birthday|relation:R2|2027-03-05",
    ]
    assert {t.decision for t in touches} == {Decision.SEND}
    assert run_day(engine, D(2027, 3, 5), run_id="r1", now=at_11_shanghai(D(2027, 3, 5))).sent == 2
    sent = outbox_text(tmp_path)
    assert "小R1" in sent and "小R2" in sent
    # Run again: idempotent per relation, nothing sent twice.
    assert run_day(engine, D(2027, 3, 5), run_id="r2", now=at_11_shanghai(D(2027, 3, 5))).sent == 0


def test_a_customer_who_opted_out_is_not_sent_their_childs_greeting(
    store: Store, tmp_path: Path, templates_dir: Path
) -> None:
    load_rows(
        store,
        customers=[customer_row("C1", tier="A", birth_date=NOT_A_BIRTHDAY, email="")],
    )
    insert_agents_and_relations(store, relations=[relation("R1", "2019-03-05")])
    record_consent(store, "C1", {Purpose.SMS: False}, source="cli", at=utc(2027, 3, 1))
    rules = rules_with(tmp_path, child_rule())
    (touch,) = children(plan(store, rules, templates_dir, D(2027, 3, 5)))
    assert (touch.decision, touch.reason) == (Decision.SUPPRESS, SuppressionReason.OPTED_OUT)
    assert any("sms: consent withdrawn" in why for why in touch.explain)
    engine = engine_for(store, rules, templates_dir, tmp_path)
    assert run_day(engine, D(2027, 3, 5), run_id="r1", now=at_11_shanghai(D(2027, 3, 5))).sent == 0
    state = state_of(store, touch.key, D(2027, 3, 5))
    assert (state.status, state.reason, state.row.customer_id) == (
        TouchStatus.SUPPRESSED,
        "opted_out",
        "C1",
    )


def test_a_deferred_relation_touch_keeps_its_key_and_context(
    store: Store, tmp_path: Path, templates_dir: Path
) -> None:
    """Held back by the cap on the customer's own birthday, the child's greeting competes
    the next day as the same touch, with the facts (and agent) it was first planned with."""
    day, nxt = D(2027, 3, 5), D(2027, 3, 6)
    load_rows(
        store, customers=[customer_row("C1", tier="A", birth_date="1990-03-05", agent_id="AG1")]
    )
    insert_agents_and_relations(store, agents=[AGENT], relations=[relation("R1", "2019-03-05")])
    rules = rules_with(
        tmp_path, child_rule(priority=20, defer_days=2), policy=PER_DAY_1, shipped=("birthday",)
    )
    engine = engine_for(store, rules, templates_dir, tmp_path)
    key = "child-birthday|relation:R1|2027-03-05"
    first = {t.key: t for t in plan(store, rules, templates_dir, day)}
    assert first[key].reason is SuppressionReason.DEFERRED
    assert first["birthday|customer:C1|2027-03-05"].decision is Decision.SEND
    run_day(engine, day, run_id="r1", now=at_11_shanghai(day))
    recorded = state_of(store, key, day)
    assert recorded.row.subject_kind == "relation" and recorded.row.subject_id == "R1"
    assert recorded.context["relation"]["name"] == "小R1"
    assert recorded.context["agent"] == {k: AGENT[k] for k in ("name", "phone", "email")}
    # The store changes overnight: the plan keeps what the touch was planned with.
    with store.session() as session:
        session.execute(update(Agent).values(name="王强", phone="+8613900002222"))
    (again,) = [t for t in plan(store, rules, templates_dir, nxt) if t.key == key]
    assert (again.occurrence, again.subject_id, again.decision) == (day, "R1", Decision.SEND)
    assert again.template_context() == recorded.context
    assert "relation R1 (child)" in again.explain
    assert run_day(engine, nxt, run_id="r2", now=at_11_shanghai(nxt)).sent == 1
    assert state_of(store, key, day).status is TouchStatus.SENT
    sent = outbox_text(tmp_path)
    assert "小R1" in sent and "李娜 +8613900001111" in sent and "王强" not in sent


# --- the agent -----------------------------------------------------------------------------------


def test_templates_see_the_customers_agent_or_none(
    store: Store, tmp_path: Path, templates_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    load_rows(
        store,
        customers=[
            customer_row("C1", tier="A", birth_date=NOT_A_BIRTHDAY, agent_id="AG1"),
            customer_row("C2", tier="A", birth_date=NOT_A_BIRTHDAY),  # no agent
            customer_row("C3", tier="A", birth_date=NOT_A_BIRTHDAY, agent_id="GONE"),
        ],
    )
    insert_agents_and_relations(
        store,
        agents=[AGENT, {"agent_id": "AG2", "name": "张伟"}],
        relations=[relation(f"R{i}", "2019-03-05", customer_id=f"C{i}") for i in (1, 2, 3)],
    )
    rules = rules_with(tmp_path, child_rule())
    touches = {t.customer_id: t for t in children(plan(store, rules, templates_dir, D(2027, 3, 5)))}
    assert touches["C1"].template_context()["agent"] == {
        "name": "李娜",
        "phone": "+8613900001111",
        "email": "li@example.com",
    }
    assert touches["C2"].template_context()["agent"] is None
    assert touches["C3"].template_context()["agent"] is None  # an agent the store lacks
    engine = engine_for(store, rules, templates_dir, tmp_path)
    with caplog.at_level(logging.DEBUG):
        assert (
            run_day(engine, D(2027, 3, 5), run_id="r1", now=at_11_shanghai(D(2027, 3, 5))).sent == 3
        )
    sent = outbox_text(tmp_path)
    # The agent's own phone is given to the customer as it is: not masked ...
    assert "李娜 +8613900001111" in sent
    assert "张伟" not in sent
    # ... and never logged.
    assert "+8613900001111" not in caplog.text and "李娜" not in caplog.text


def test_the_days_agents_are_read_in_one_query(
    store: Store, tmp_path: Path, templates_dir: Path
) -> None:
    customers = [
        customer_row(f"C{i}", tier="A", birth_date=NOT_A_BIRTHDAY, agent_id=f"AG{i % 3}")
        for i in range(12)
    ]
    load_rows(store, customers=customers)
    insert_agents_and_relations(
        store,
        agents=[{"agent_id": f"AG{i}", "name": f"agent {i}"} for i in range(3)],
        relations=[relation(f"R{i}", "2019-03-05", customer_id=f"C{i}") for i in range(12)],
    )
    rules = rules_with(tmp_path, child_rule())
    statements: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append(statement)

    event.listen(store.engine, "before_cursor_execute", seen)
    try:
        touches = children(plan(store, rules, templates_dir, D(2027, 3, 5)))
    finally:
        event.remove(store.engine, "before_cursor_execute", seen)
    assert len(touches) == 12
    assert {t.template_context()["agent"]["name"] for t in touches} == {
        "agent 0",
        "agent 1",
        "agent 2",
    }
    assert len([s for s in statements if "FROM agents" in s]) == 1


def test_a_touch_planned_before_agents_renders_as_without_an_agent(
    store: Store, tmp_path: Path, templates_dir: Path
) -> None:
    """A touch whose recorded context has no ``agent`` (planned by a version without agents)
    is sent from that context, with ``agent`` none, not failed as a render error."""
    from dataclasses import replace

    from caretouch.run.day import pending_ids
    from caretouch.run.records import planned_touches
    from caretouch.run.send import send_touches

    day = D(2027, 3, 5)
    load_rows(
        store, customers=[customer_row("C1", tier="A", birth_date=NOT_A_BIRTHDAY, agent_id="AG1")]
    )
    insert_agents_and_relations(store, agents=[AGENT], relations=[relation("R1", "2019-03-05")])
    rules = rules_with(tmp_path, child_rule())
    engine = engine_for(store, rules, templates_dir, tmp_path)
    records = planned_touches(plan(store, rules, templates_dir, day))
    old = [
        replace(r, context={k: v for k, v in r.context.items() if k != "agent"}) for r in records
    ]
    assert all("agent" in r.context for r in records) and all("agent" not in r.context for r in old)
    engine.ledger.record_plan(old, run_id="old", now=utc(2027, 3, 4, 12))
    report = send_touches(engine, pending_ids(engine), run_id="send", now=at_11_shanghai(day))
    assert (report.sent, report.failed) == (1, 0)
    assert state_of(store, "child-birthday|relation:R1|2027-03-05", day).status is TouchStatus.SENT
    sent = outbox_text(tmp_path)
    assert "小R1" in sent and "李娜" not in sent
