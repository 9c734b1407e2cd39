"""The complaint lifecycle with the shipped rules: received → acknowledged the same local day,
the agent's call-back within three days, the agent's manager after five days while the case
is open (``trigger.until``), resolved → the second follow-up, reopened → a call-back again."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete

from caretouch.config import CareConfig
from caretouch.events.inbox import Incoming, submit
from caretouch.events.planning import plan_new_events
from caretouch.ledger import Ledger
from caretouch.ledger.tasks import tasks
from caretouch.run.day import dispatch
from caretouch.run.digest import run_digests
from caretouch.run.engine import CareEngine, open_engine
from caretouch.run.send import send_touches
from caretouch.run.tasks import open_tasks
from caretouch.store.db import Store
from caretouch.store.models import Agent, EventDeadLetter
from caretouch.vocab import TouchStatus
from conftest import (
    RULES_DIR,
    TEMPLATES_DIR,
    customer_row,
    insert_agents_and_relations,
    load_rows,
    utc,
)

RECEIVED_AT = "2026-11-20T08:30:00+08:00"  # before the 09:00 send time, local day the 20th
NOW = utc(2026, 11, 20, 0, 35)
CASE = {"case_id": "CS-42", "category": "billing", "severity": "high", "channel": "hotline"}


def engine_for(store: Store, tmp_path: Path) -> CareEngine:
    config = CareConfig(
        store.url,
        RULES_DIR,
        TEMPLATES_DIR,
        tmp_path / "outbox",
        anchor_file=tmp_path / "anchors.jsonl",
    )
    engine = open_engine(config, store=store)
    assert engine.ruleset.errors == []
    return engine


@pytest.fixture
def engine(store: Store, tmp_path: Path) -> CareEngine:
    insert_agents_and_relations(
        store,
        agents=[
            {"agent_id": "A1", "name": "李娜", "phone": "+8613900000001", "manager_id": "M1"},
            {
                "agent_id": "M1",
                "name": "张伟",
                "phone": "+8613900000009",
                "email": "zhang.wei@agency.example",
            },
            {"agent_id": "A2", "name": "王强", "phone": "+8613900000002"},  # no manager
            {"agent_id": "A3", "name": "赵敏", "manager_id": "M9"},  # M9 is not in the store
        ],
    )
    load_rows(
        store,
        customers=[
            customer_row("C1", agent_id="A1", birth_date=""),
            customer_row("C2", agent_id="A2", birth_date="", phone="+8613812348002"),
            customer_row("C3", agent_id="A3", birth_date="", phone="+8613812348003"),
            customer_row("C4", birth_date="", phone="+8613812348004"),  # no agent
        ],
    )
    return engine_for(store, tmp_path)


def ev(event_id: str, kind: str, customer: str, at: str, **payload: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": kind,
        "customer_id": customer,
        "occurred_at": at,
        "payload": payload or None,
    }


def emit(engine: CareEngine, now: dt.datetime, *events: dict[str, Any]) -> Any:
    """Through the real intake, checked against the declared event types."""
    report = submit(
        engine.store,
        [Incoming(e) for e in events],
        source="api",
        now=now,
        event_types=engine.ruleset.event_types,
    )
    assert report.dead == []
    return plan_new_events(engine, run_id="test:events", now=now)


def by_rule(engine: CareEngine, customer: str = "C1") -> dict[str, Any]:
    ledger = Ledger(engine.store)
    ids = ledger.touch_ids_in_status(set(TouchStatus))
    return {s.row.rule_id: s for s in ledger.states(ids) if s.row.customer_id == customer}


def last_explain(engine: CareEngine, touch_id: int) -> list[str]:
    return Ledger(engine.store).history(touch_id)[-1].detail["explain"]


def outbox(tmp_path: Path) -> list[str]:
    return [p.read_text(encoding="utf-8") for p in sorted((tmp_path / "outbox").rglob("*.json"))]


def test_received_is_acknowledged_the_same_day_and_called_back_within_three_days(
    engine: CareEngine, tmp_path: Path
) -> None:
    emit(engine, NOW, ev("K1", "complaint_received", "C1", RECEIVED_AT, **CASE))
    touches = by_rule(engine)
    ack = touches["complaint-acknowledge"]
    assert ack.row.touch_key == "complaint-acknowledge|event:K1|2026-11-20"
    assert (ack.status, ack.send_at, ack.channel) == (
        TouchStatus.PLANNED,
        utc(2026, 11, 20, 1),  # 09:00 in Shanghai, the day of receipt
        "sms",
    )
    # The day's one contact (caps.per_day) goes to the acknowledgement (priority 95); the
    # call-back (90) is a service obligation: deferred to the next day, not dropped.
    call = touches["complaint-call-back"]
    assert (call.status, call.reason) == (TouchStatus.SUPPRESSED, "deferred")

    assert dispatch(engine, run_id="d20", now=utc(2026, 11, 20, 1, 5)).sent == 1
    [sms] = outbox(tmp_path)
    assert "CS-42" in sms and "李娜将在3天内致电您" in sms

    report = dispatch(engine, run_id="d21", now=utc(2026, 11, 21, 1, 5))
    assert report.assigned == 1
    [task] = tasks(engine.store)
    assert (task.rule_id, task.agent_id, task.kind) == ("complaint-call-back", "A1", "call")
    # Due within three days of receipt (the 20th); expires three days after its due day.
    assert task.due == dt.date(2026, 11, 21)
    assert task.due - dt.date(2026, 11, 20) <= dt.timedelta(days=3)
    assert task.expires == task.due + dt.timedelta(days=3)
    for shown in ("CS-42", "billing", "high", "hotline"):
        assert shown in task.brief


def test_a_customer_without_an_agent_is_acknowledged_and_told_the_service_team_calls(
    engine: CareEngine, tmp_path: Path
) -> None:
    emit(engine, NOW, ev("K4", "complaint_received", "C4", RECEIVED_AT, case_id="CS-4"))
    assert set(by_rule(engine, "C4")) == {"complaint-acknowledge"}  # no task: no agent
    assert dispatch(engine, run_id="d20", now=utc(2026, 11, 20, 1, 5)).sent == 1
    [sms] = outbox(tmp_path)
    assert "CS-4" in sms and "客服人员将在3天内与您联系" in sms


def test_the_escalation_goes_to_the_agents_manager_while_the_case_is_open(
    engine: CareEngine, tmp_path: Path
) -> None:
    emit(engine, NOW, ev("K1", "complaint_received", "C1", RECEIVED_AT, **CASE))
    escalation = by_rule(engine)["complaint-escalation"]
    assert escalation.row.touch_key == "complaint-escalation|event:K1|2026-11-25"
    assert escalation.status is TouchStatus.PLANNED
    # Still open on the 25th (five local days after receipt): the manager gets the task.
    report = dispatch(engine, run_id="d25", now=utc(2026, 11, 25, 1, 5))
    assert report.assigned == 1
    [task] = open_tasks(engine.store, dt.date(2026, 11, 25), agent_id="M1")
    assert (task["rule_id"], task["customer_id"], task["agent_id"]) == (
        "complaint-escalation",
        "C1",
        "M1",
    )
    assert "CS-42" in task["brief"] and "李娜" in task["brief"]  # the case and the agent
    assert open_tasks(engine.store, dt.date(2026, 11, 25), agent_id="A1") == []
    # The manager's daily digest lists it among their own open tasks.
    summary = run_digests(engine, dt.date(2026, 11, 25), run_id="g25", now=utc(2026, 11, 25, 2))
    assert summary.ok, summary.lines()
    [mail] = [
        json.loads(p.read_text(encoding="utf-8"))
        for p in sorted((tmp_path / "outbox").rglob("digest_*.json"))
    ]
    assert mail["to"] == "zhang.wei@agency.example"
    assert f"#{task['task']} " in mail["body"] and "CS-42" in mail["body"]


@pytest.mark.parametrize("closing", ["complaint_resolved", "complaint_closed"])
def test_an_escalation_is_not_owed_once_the_case_is_resolved_or_closed_before_planning(
    engine: CareEngine, closing: str
) -> None:
    emit(
        engine,
        utc(2026, 11, 22, 3),
        ev("K1", "complaint_received", "C1", RECEIVED_AT, **CASE),
        ev("R1", closing, "C1", "2026-11-22T10:00:00+08:00", case_id="CS-42"),
    )
    escalation = by_rule(engine)["complaint-escalation"]
    assert (escalation.status, escalation.reason) == (TouchStatus.SUPPRESSED, "case_closed")
    [why] = [line for line in last_explain(engine, escalation.id) if "case_closed" in line]
    assert f"case CS-42 is no longer open: {closing} R1 at 2026-11-22 02:00Z" in why
    assert dispatch(engine, run_id="d25", now=utc(2026, 11, 25, 1, 5)).assigned == 0
    assert by_rule(engine)["complaint-escalation"].reason == "case_closed"


def test_only_the_same_case_closed_since_the_receipt_stops_the_escalation(
    engine: CareEngine,
) -> None:
    emit(
        engine,
        utc(2026, 11, 22, 3),
        # Another case of the same customer closed, and this case number closed before this
        # receipt (an earlier round): neither closes the case received on the 20th.
        ev("R0", "complaint_closed", "C1", "2026-11-01T10:00:00+08:00", case_id="CS-42"),
        ev("K1", "complaint_received", "C1", RECEIVED_AT, **CASE),
        ev("R2", "complaint_resolved", "C1", "2026-11-22T10:00:00+08:00", case_id="CS-99"),
        # The same case number, but another customer's event.
        ev("R3", "complaint_closed", "C2", "2026-11-22T10:00:00+08:00", case_id="CS-42"),
    )
    assert by_rule(engine)["complaint-escalation"].status is TouchStatus.PLANNED
    assert dispatch(engine, run_id="d25", now=utc(2026, 11, 25, 1, 5)).assigned == 1


def test_a_planned_escalation_is_stopped_at_send_time_when_the_case_closes(
    engine: CareEngine,
) -> None:
    emit(engine, NOW, ev("K1", "complaint_received", "C1", RECEIVED_AT, **CASE))
    escalation = by_rule(engine)["complaint-escalation"]
    assert escalation.status is TouchStatus.PLANNED
    # Resolved on the 24th: recorded in the store, not planned again before the send step.
    submit(
        engine.store,
        [Incoming(ev("R1", "complaint_resolved", "C1", "2026-11-24T16:00:00+08:00", **CASE))],
        source="api",
        now=utc(2026, 11, 24, 8),
        event_types=engine.ruleset.event_types,
    )
    report = send_touches(engine, [escalation.id], run_id="send25", now=utc(2026, 11, 25, 1, 5))
    assert (report.assigned, report.suppressed) == (0, 1)
    state = by_rule(engine)["complaint-escalation"]
    assert (state.status, state.reason) == (TouchStatus.SUPPRESSED, "case_closed")
    last = Ledger(engine.store).history(state.id)[-1]
    assert last.detail["final"] is True
    assert "complaint_resolved R1" in last.detail["explain"][0]
    # Final: the plans of the day that follow keep it so.
    assert dispatch(engine, run_id="d25", now=utc(2026, 11, 25, 1, 10)).assigned == 0
    assert by_rule(engine)["complaint-escalation"].reason == "case_closed"


def test_a_reopened_case_is_called_back_again(engine: CareEngine) -> None:
    emit(
        engine,
        utc(2026, 11, 30, 0, 35),
        ev("O1", "complaint_reopened", "C1", "2026-11-30T08:00:00+08:00", case_id="CS-42"),
    )
    assert by_rule(engine)["complaint-reopened-call-back"].status is TouchStatus.PLANNED
    assert dispatch(engine, run_id="d30", now=utc(2026, 11, 30, 1, 5)).assigned == 1
    [task] = tasks(engine.store)
    assert (task.rule_id, task.agent_id, task.due, task.expires) == (
        "complaint-reopened-call-back",
        "A1",
        dt.date(2026, 11, 30),
        dt.date(2026, 12, 3),
    )
    assert "CS-42" in task.brief and "重新打开" in task.brief


@pytest.mark.parametrize(
    ("customer", "why"),
    [
        ("C2", "task.assignee manager: agent A2 has no manager (agents.manager_id)"),
        ("C3", "task.assignee manager: M9, the manager of agent A3, is not in the store"),
    ],
)
def test_an_escalation_without_a_manager_is_no_contact_with_the_reason(
    engine: CareEngine, customer: str, why: str
) -> None:
    emit(engine, NOW, ev("K", "complaint_received", customer, RECEIVED_AT, case_id="CS-1"))
    escalation = by_rule(engine, customer)["complaint-escalation"]
    assert (escalation.status, escalation.reason) == (TouchStatus.SUPPRESSED, "no_contact")
    assert any(why in line for line in last_explain(engine, escalation.id))


def test_a_manager_gone_by_send_time_makes_the_escalation_no_contact(engine: CareEngine) -> None:
    emit(engine, NOW, ev("K1", "complaint_received", "C1", RECEIVED_AT, **CASE))
    escalation = by_rule(engine)["complaint-escalation"]
    assert escalation.status is TouchStatus.PLANNED
    with engine.store.session() as session:
        session.execute(delete(Agent).where(Agent.agent_id == "M1"))
    report = send_touches(engine, [escalation.id], run_id="send25", now=utc(2026, 11, 25, 1, 5))
    assert (report.assigned, report.suppressed) == (0, 1)
    state = by_rule(engine)["complaint-escalation"]
    assert (state.status, state.reason) == (TouchStatus.SUPPRESSED, "no_contact")
    assert last_explain(engine, state.id) == [
        "task.assignee manager: M1, the manager of agent A1, is not in the store"
    ]


def test_a_lifecycle_event_without_a_case_number_is_dead_lettered_with_the_reason(
    engine: CareEngine,
) -> None:
    report = submit(
        engine.store,
        [
            Incoming(ev("BAD", "complaint_received", "C1", RECEIVED_AT, category="billing")),
            Incoming(ev("GOOD", "complaint_received", "C4", RECEIVED_AT, case_id="CS-4")),
        ],
        source="api",
        now=NOW,
        event_types=engine.ruleset.event_types,
    )
    [(_, reason)] = report.dead
    assert "payload field 'case_id' is required for complaint_received" in reason
    planned = plan_new_events(engine, run_id="test:events", now=NOW)
    assert planned.events == 1  # the good one goes on
    assert set(by_rule(engine, "C4")) == {"complaint-acknowledge"}
    assert by_rule(engine, "C1") == {}
    with engine.store.read_session() as session:
        [letter] = session.query(EventDeadLetter).all()
    assert letter.event_id == "BAD"
    assert "payload field 'case_id' is required for complaint_received" in letter.reason


@pytest.mark.parametrize(
    ("payload", "shown"),
    [
        ({"case_id": "CS-42", "category": "refund", "severity": "low"}, "，refund）"),
        ({"case_id": "CS-42", "topic": "billing"}, "，billing）"),  # the earlier name
        ({"case_id": "CS-42", "category": "refund", "topic": "billing"}, "，refund）"),
    ],
)
def test_the_second_follow_up_call_shows_the_category_or_the_topic(
    engine: CareEngine, payload: dict[str, str], shown: str
) -> None:
    emit(
        engine,
        utc(2026, 11, 20, 3),
        ev("R1", "complaint_resolved", "C1", "2026-11-20T10:00:00+08:00", **payload),
    )
    # Three local days later, C1 (tier B, with an agent) is called by their agent.
    assert dispatch(engine, run_id="d23", now=utc(2026, 11, 23, 2, 5)).assigned == 1
    [task] = tasks(engine.store)
    assert (task.rule_id, task.agent_id) == ("complaint-follow-up-call", "A1")
    assert f"（工单号CS-42{shown}" in task.brief
