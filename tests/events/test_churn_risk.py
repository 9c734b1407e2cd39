"""Early warning of leaving: the churn-risk signals, the retention events the daily run
raises, the shipped retention-call rule, and ``care customer show`` / ``at-risk``."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from agent_tasks import add_agents
from sqlalchemy import func, select, update

from caretouch.events.churn import EVENT_TYPE, period_of, raise_retention_events
from caretouch.ledger.consent import record_consent
from caretouch.ledger.models import TouchRow
from caretouch.rules.event_types import load_event_types
from caretouch.schema.migrate import upgrade
from caretouch.signals.churn import assess, open_complaints
from caretouch.store.consent import Purpose
from caretouch.store.db import Store, open_store
from caretouch.store.models import Event, InsurancePolicy
from caretouch.vocab import ChurnSignal, RiskLevel
from conftest import RULES_DIR, Care, customer_row, event_row, load_rows, policy_row, utc

DAY = dt.date(2026, 12, 1)
NOW = utc(2026, 12, 1, 1, 0)


def _complaint(event_id: str, customer: str, type_: str, case: str, at: str) -> dict[str, str]:
    return event_row(
        event_id,
        customer,
        type=type_,
        occurred_at=at,
        payload=json.dumps({"case_id": case}),
    )


def fill(store: Store) -> None:
    """C1: a premium overdue (28 days: no premium reminder falls on 1 December, which would
    take the day's cap) and an open complaint (high). C2: a complaint resolved, its
    premium paid (none). C3: answered unsatisfied and withdrew SMS consent (high). C4: tier
    A, never contacted (out of cadence only: low). C5: inactive, premium overdue (left out
    of the store-wide list)."""
    load_rows(
        store,
        customers=[
            customer_row("C1", tier="C", agent_id="A1"),
            customer_row("C2", tier="C", agent_id="A1"),
            customer_row("C3", tier="D", agent_id="A2"),
            customer_row("C4", tier="A", agent_id="A2"),
            customer_row("C5", tier="C", status="inactive"),
        ],
        policies=[
            policy_row("P1", "C1"),
            policy_row("P2", "C2"),
            policy_row("P5", "C5"),
        ],
        events=[
            _complaint("K1", "C1", "complaint_received", "CS1", "2026-11-20T10:00:00+08:00"),
            _complaint("K2", "C2", "complaint_received", "CS2", "2026-11-10T10:00:00+08:00"),
            _complaint("K3", "C2", "complaint_resolved", "CS2", "2026-11-12T10:00:00+08:00"),
            event_row(
                "R1",
                "C3",
                type="reply_unsatisfied",
                occurred_at="2026-11-28T10:00:00+08:00",
                payload=json.dumps({"score": 2}),
            ),
        ],
    )
    with store.session() as session:
        for policy_id, paid in (("P1", dt.date(2026, 10, 31)), ("P2", dt.date(2027, 10, 31))):
            session.execute(
                update(InsurancePolicy)
                .where(InsurancePolicy.policy_id == policy_id)
                .values(
                    premium_due_date=dt.date(2026, 11, 3)
                    if policy_id == "P1"
                    else dt.date(2027, 11, 1),
                    payment_frequency="annual",
                    paid_through=paid,
                )
            )
        session.execute(
            update(InsurancePolicy)
            .where(InsurancePolicy.policy_id == "P5")
            .values(premium_due_date=dt.date(2026, 11, 1), payment_frequency="annual")
        )
    record_consent(store, "C3", {Purpose.SMS: False}, source="test", at=utc(2026, 11, 29))


@pytest.fixture
def filled(store: Store) -> Store:
    """``fill`` on SQLite and on PostgreSQL."""
    fill(store)
    return store


def test_the_signals_of_each_customer(filled: Store, shipped_rules) -> None:
    risks = assess(filled, shipped_rules.policy, DAY)
    assert sorted(risks) == ["C1", "C3"]  # strong signals only; C5 is inactive
    c1, c3 = risks["C1"], risks["C3"]
    # Tier C's level (basic) has a cadence of 180 days, and C1 was never contacted.
    assert set(c1.signals) == {
        ChurnSignal.PREMIUM_OVERDUE,
        ChurnSignal.OPEN_COMPLAINT,
        ChurnSignal.OUT_OF_CADENCE,
    }
    assert c1.score == 7 and c1.level is RiskLevel.HIGH and c1.agent_id == "A1"
    assert "policy P1: premium due 2026-11-03, 28 day(s) unpaid" in c1.signals.values()
    assert c1.signals[ChurnSignal.OPEN_COMPLAINT] == "open case(s) CS1"
    # Tier D's level (minimal) has no cadence.
    assert set(c3.signals) == {ChurnSignal.UNSATISFIED, ChurnSignal.OPTED_OUT}
    assert c3.score == 4 and c3.level is RiskLevel.HIGH

    # Asked about them by name, every customer is assessed, with the cadence signal.
    named = assess(filled, shipped_rules.policy, DAY, ["C2", "C4", "C5"])
    assert set(named["C2"].signals) == {ChurnSignal.OUT_OF_CADENCE}
    assert named["C2"].level is RiskLevel.LOW
    assert set(named["C4"].signals) == {ChurnSignal.OUT_OF_CADENCE}
    assert named["C4"].level is RiskLevel.LOW
    assert "never contacted" in named["C4"].signals[ChurnSignal.OUT_OF_CADENCE]
    assert ChurnSignal.PREMIUM_OVERDUE in named["C5"].signals


def test_a_complaint_is_open_until_resolved_and_open_again_when_reopened(filled: Store) -> None:
    assert open_complaints(filled, DAY) == {"C1": ["CS1"]}
    # Between its receipt and its resolution CS2 was open, CS1 not yet received.
    assert open_complaints(filled, dt.date(2026, 11, 11)) == {"C2": ["CS2"]}
    assert open_complaints(filled, dt.date(2026, 11, 9)) == {}
    load_rows(
        filled,
        events=[_complaint("K4", "C2", "complaint_reopened", "CS2", "2026-11-30T10:00:00+08:00")],
    )
    assert open_complaints(filled, DAY) == {"C1": ["CS1"], "C2": ["CS2"]}


def test_retention_events_once_per_customer_and_period(filled: Store, shipped_rules) -> None:
    types, errors = load_event_types(RULES_DIR)
    assert errors == []
    first = raise_retention_events(filled, shipped_rules.policy, types, DAY, now=NOW)
    period = period_of(DAY)
    assert sorted(first.accepted) == [
        f"{EVENT_TYPE}:C1:{period}",
        f"{EVENT_TYPE}:C3:{period}",
    ]
    again = raise_retention_events(
        filled, shipped_rules.policy, types, DAY, now=NOW + dt.timedelta(hours=3)
    )
    assert again.accepted == [] and first.dead == again.dead == []
    with filled.read_session() as session:
        payloads = dict(
            session.execute(
                select(Event.customer_id, Event.payload).where(Event.type == EVENT_TYPE)
            ).all()
        )
    assert payloads["C1"] == {
        "score": 7,
        "signals": "premium_overdue,open_complaint,out_of_cadence",
    }
    # The next period, still at risk: asked again.
    later = DAY + dt.timedelta(days=30)
    assert period_of(later) == period + 1
    third = raise_retention_events(
        filled, shipped_rules.policy, types, later, now=NOW + dt.timedelta(days=30)
    )
    assert sorted(third.accepted) == [
        f"{EVENT_TYPE}:C1:{period + 1}",
        f"{EVENT_TYPE}:C3:{period + 1}",
    ]


@pytest.fixture
def care_filled(tmp_path: Path) -> Care:
    care = Care(tmp_path)
    store = open_store(care.store_url)
    upgrade(store)
    add_agents(store, "A1", "A2")
    fill(store)
    store.dispose()
    return care


def test_care_run_gives_the_agent_a_retention_call(care_filled: Care) -> None:
    result = care_filled("run", "--date", "2026-12-01", "--now", "2026-12-01T02:00:00Z")
    assert result.exit_code == 0, result.output
    tasks = json.loads(care_filled("task", "list", "--format", "json").output)
    retention = [t for t in tasks if t["rule_id"] == "retention-call"]
    # C3 withdrew SMS consent: no call (a call needs phone consent), no_contact.
    assert [(t["customer_id"], t["agent_id"]) for t in retention] == [("C1", "A1")]
    assert "保费逾期未缴、投诉未结" in next(
        t["brief"] for t in retention if t["customer_id"] == "C1"
    )
    # A second run the same day raises nothing new and assigns nothing twice.
    care_filled("run", "--date", "2026-12-01", "--now", "2026-12-01T05:00:00Z")
    store = open_store(care_filled.store_url)
    with store.read_session() as session:
        count = session.scalar(
            select(func.count()).select_from(TouchRow).where(TouchRow.rule_id == "retention-call")
        )
        customers = session.scalars(
            select(TouchRow.customer_id).where(TouchRow.rule_id == "retention-call")
        ).all()
    store.dispose()
    assert count == 2 and sorted(customers) == ["C1", "C3"]


def test_customer_show_and_at_risk(care_filled: Care) -> None:
    shown = care_filled("customer", "show", "C1", "--date", "2026-12-01")
    assert shown.exit_code == 0, shown.output
    assert "churn risk on 2026-12-01: high (score 7)" in shown.output
    assert "premium_overdue: policy P1: premium due 2026-11-03" in shown.output
    assert "+8613812348000" not in shown.output and "wang.fang@example.com" not in shown.output
    data = json.loads(
        care_filled("customer", "show", "C4", "--date", "2026-12-01", "--json").output
    )
    assert data["level"] == "premium" and data["churn_risk"]["level"] == "low"
    assert list(data["churn_risk"]["signals"]) == ["out_of_cadence"]

    listed = care_filled("customer", "at-risk", "--date", "2026-12-01")
    assert listed.exit_code == 0, listed.output
    assert "agent A1: 1 customer(s)" in listed.output and "agent A2: 1 customer(s)" in listed.output
    assert listed.output.strip().endswith("2 customer(s) at medium risk or above on 2026-12-01.")
    mine = json.loads(
        care_filled("customer", "at-risk", "--agent", "A2", "--date", "2026-12-01", "--json").output
    )
    assert [c["customer_id"] for c in mine["customers"]] == ["C3"]
    unknown = care_filled("customer", "show", "NOPE", "--date", "2026-12-01")
    assert unknown.exit_code != 0 and "unknown customer 'NOPE'" in unknown.output
