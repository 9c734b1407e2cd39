"""A complaint's acknowledgement and call-back are service obligations: a capped day defers
them within their window rather than dropping them, and one that cannot go out in time is
``obligation_missed``, flagged in the run summary, for a message and a task alike."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from caretouch.config import CareConfig
from caretouch.events.inbox import Incoming, submit
from caretouch.events.planning import plan_new_events
from caretouch.ledger import Ledger
from caretouch.reports.run_summary import RunSummary
from caretouch.run.day import dispatch
from caretouch.run.engine import CareEngine, open_engine
from caretouch.store.db import Store
from caretouch.vocab import TouchStatus
from conftest import (
    RULES_DIR,
    TEMPLATES_DIR,
    customer_row,
    insert_agents_and_relations,
    load_rows,
    utc,
)


@pytest.fixture
def engine(store: Store, tmp_path: Path) -> CareEngine:
    insert_agents_and_relations(store, agents=[{"agent_id": "A1", "name": "李娜"}])
    load_rows(store, customers=[customer_row("C1", agent_id="A1", birth_date="")])
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


def emit(engine: CareEngine, now: dt.datetime, event: dict[str, Any]) -> None:
    report = submit(
        engine.store,
        [Incoming(event)],
        source="api",
        now=now,
        event_types=engine.ruleset.event_types,
    )
    assert report.dead == []
    plan_new_events(engine, run_id=f"events:{event['event_id']}", now=now)


def claim(day: int) -> dict[str, Any]:
    return {
        "event_id": f"CLAIM{day}",
        "type": "claim_settled",
        "customer_id": "C1",
        "occurred_at": f"2026-11-{day}T08:00:00+08:00",
        "payload": {"claim_id": f"CL-{day}"},
    }


RECEIVED = {
    "event_id": "K1",
    "type": "complaint_received",
    "customer_id": "C1",
    "occurred_at": "2026-11-20T12:00:00+08:00",
    "payload": {"case_id": "CS-7", "category": "refund", "severity": "medium"},
}


def by_rule(engine: CareEngine) -> dict[str, Any]:
    ledger = Ledger(engine.store)
    return {s.row.rule_id: s for s in ledger.states(ledger.touch_ids_in_status(set(TouchStatus)))}


def test_a_capped_day_defers_the_acknowledgement_to_the_next_day(engine: CareEngine) -> None:
    # The day's one contact (caps.per_day) went to a claim message in the morning.
    emit(engine, utc(2026, 11, 20, 0, 30), claim(20))
    assert dispatch(engine, run_id="d20", now=utc(2026, 11, 20, 1, 5)).sent == 1
    emit(engine, utc(2026, 11, 20, 4, 30), RECEIVED)
    ack = by_rule(engine)["complaint-acknowledge"]
    assert (ack.status, ack.reason) == (TouchStatus.SUPPRESSED, "deferred")
    # The next day it competes again, first, and goes out.
    dispatch(engine, run_id="d21", now=utc(2026, 11, 21, 1, 5))
    ack = by_rule(engine)["complaint-acknowledge"]
    assert ack.status is TouchStatus.SENT
    assert ack.row.occurrence == dt.date(2026, 11, 20)  # the same touch, a day late


def test_an_obligation_held_back_for_its_whole_window_is_missed_and_flagged(
    engine: CareEngine,
) -> None:
    # Three messages on the 17th to the 19th fill caps.per_7_days (3) until the 23rd: the
    # acknowledgement and the call-back (window: the 20th to the 22nd) cannot go out.
    for day in (17, 18, 19):
        emit(engine, utc(2026, 11, day, 0, 30), claim(day))
        assert dispatch(engine, run_id=f"d{day}", now=utc(2026, 11, day, 1, 5)).sent == 1
    emit(engine, utc(2026, 11, 20, 4, 30), RECEIVED)
    for day in (20, 21):
        dispatch(engine, run_id=f"d{day}", now=utc(2026, 11, day, 1, 5))
        for rule_id in ("complaint-acknowledge", "complaint-call-back"):
            assert by_rule(engine)[rule_id].reason == "deferred", (day, rule_id)
    dispatch(engine, run_id="d22", now=utc(2026, 11, 22, 1, 5))
    touches = by_rule(engine)
    for rule_id in ("complaint-acknowledge", "complaint-call-back"):
        assert (touches[rule_id].status, touches[rule_id].reason) == (
            TouchStatus.SUPPRESSED,
            "obligation_missed",
        )
    summary = RunSummary.from_ledger(
        Ledger(engine.store),
        run_id="d22",
        kind="care_dispatch",
        day=dt.date(2026, 11, 22),
        finished_at=utc(2026, 11, 22, 1, 6),
        this_run={},
    )
    assert sorted(m["rule_id"] for m in summary.obligations_missed) == [
        "complaint-acknowledge",
        "complaint-call-back",
    ]
    text = summary.render()
    assert "SERVICE OBLIGATIONS MISSED: 2" in text
    assert "complaint-acknowledge|event:K1|2026-11-20" in text
    assert "complaint-call-back|event:K1|2026-11-20" in text
