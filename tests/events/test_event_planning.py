"""Event touches: planned as events arrive, sent by care_dispatch when due, never twice."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from caretouch.config import CareConfig
from caretouch.events.inbox import Incoming, submit
from caretouch.events.planning import plan_new_events
from caretouch.ledger import Ledger
from caretouch.run.day import dispatch, plan_and_record, run_day
from caretouch.run.engine import CareEngine, open_engine
from caretouch.store.db import Store
from caretouch.vocab import TouchStatus
from conftest import RULES_DIR, TEMPLATES_DIR, customer_row, load_rows, policy_row, utc

LA = "America/Los_Angeles"
SH = "Asia/Shanghai"


def engine_for(store: Store, tmp_path: Path) -> CareEngine:
    config = CareConfig(
        store.url,
        RULES_DIR,
        TEMPLATES_DIR,
        tmp_path / "outbox",
        anchor_file=tmp_path / "anchors.jsonl",
    )
    engine = open_engine(config, store=store)
    return engine


@pytest.fixture
def engine(store: Store, tmp_path: Path) -> CareEngine:
    load_rows(
        store,
        customers=[
            # No birthdays here: only event touches compete.
            customer_row("C1", timezone=SH, birth_date=""),
            customer_row("C2", timezone=LA, locale="en", phone="+14155550123", birth_date=""),
            customer_row("C3", status="inactive", birth_date=""),
            customer_row("C4", timezone=SH, locale="zh-TW", phone="+8613812348004", birth_date=""),
        ],
        policies=[policy_row("P1", "C1"), policy_row("P2", "C2", product="Home Cover")],
    )
    return engine_for(store, tmp_path)


def emit(engine: CareEngine, now: dt.datetime, *events: dict[str, Any]) -> Any:
    report = submit(engine.store, [Incoming(e) for e in events], source="cli", now=now)
    assert report.dead == []
    return plan_new_events(engine, run_id="test:events", now=now)


def ev(event_id: str, kind: str, customer: str, at: str, **extra: Any) -> dict[str, Any]:
    return {"event_id": event_id, "type": kind, "customer_id": customer, "occurred_at": at, **extra}


def states(engine: CareEngine) -> dict[str, Any]:
    ledger = Ledger(engine.store)
    ids = ledger.touch_ids_in_status(set(TouchStatus))
    return {s.row.touch_key: s for s in ledger.states(ids)}


def outbox(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "outbox").rglob("*.json"))


def test_thank_you_is_planned_at_once_and_sent_on_the_next_local_day(
    engine: CareEngine, tmp_path: Path
) -> None:
    # Bought at 10:00 in Shanghai on the 22nd; the thank-you is due at 10:00 local on the 23rd.
    received = utc(2026, 11, 22, 2, 0, 5)
    report = emit(
        engine,
        received,
        ev("E1", "policy_purchased", "C1", "2026-11-22T10:00:00+08:00", policy_id="P1"),
    )
    assert report.as_dict() == {
        "events": 1,
        "planned": 1,
        "suppressed": 0,
        "unchanged": 0,
        "without_touch": 0,
        "late": 0,
        "dead_lettered": 0,
    }
    [(key, state)] = states(engine).items()
    assert key == "thank-you|event:E1|2026-11-23"
    assert state.status is TouchStatus.PLANNED
    assert state.send_at == utc(2026, 11, 23, 2, 0)

    # care_dispatch before the send time: nothing goes out.
    early = dispatch(engine, run_id="test:d1", now=utc(2026, 11, 23, 1, 45))
    assert early.sent == 0
    assert outbox(tmp_path) == []
    due = dispatch(engine, run_id="test:d2", now=utc(2026, 11, 23, 2, 0))
    assert due.sent == 1
    assert states(engine)[key].status is TouchStatus.SENT
    assert len(outbox(tmp_path)) == 1

    # The event again (any path), planning again, dispatch again, a backfill of the day:
    # nothing more is sent.
    emit(
        engine,
        utc(2026, 11, 23, 3),
        ev("E1", "policy_purchased", "C1", "2026-11-22T10:00:00+08:00", policy_id="P1"),
    )
    assert dispatch(engine, run_id="test:d3", now=utc(2026, 11, 23, 3)).sent == 0
    backfill = run_day(
        engine, dt.date(2026, 11, 23), run_id="test:backfill", now=utc(2026, 11, 23, 4)
    )
    assert backfill.sent == 0
    assert len(outbox(tmp_path)) == 1
    assert list(states(engine)) == [key]


def test_complaint_follow_up_waits_three_local_days_in_the_ledger(
    engine: CareEngine, tmp_path: Path
) -> None:
    received = utc(2026, 11, 20, 8)
    report = emit(
        engine,
        received,
        ev(
            "K1",
            "complaint_resolved",
            "C1",
            "2026-11-20T15:30:00+08:00",
            payload={"case_id": "CS-88"},
        ),
    )
    assert report.planned == 1
    [(key, state)] = states(engine).items()
    assert key == "complaint-follow-up|event:K1|2026-11-23"
    assert state.send_at == utc(2026, 11, 23, 2)  # 10:00 in Shanghai
    for day in (21, 22):
        assert dispatch(engine, run_id=f"test:{day}", now=utc(2026, 11, day, 3)).sent == 0
    assert dispatch(engine, run_id="test:23", now=utc(2026, 11, 23, 2, 15)).sent == 1
    [message] = outbox(tmp_path)
    body = message.read_text(encoding="utf-8")
    assert "CS-88" in body
    assert "已处理完毕" in body


def test_claim_settled_goes_out_the_same_day_even_after_its_send_time(
    engine: CareEngine, tmp_path: Path
) -> None:
    # Settled at 15:00 in Shanghai: the 09:00 send time has passed, the window has not.
    now = utc(2026, 11, 23, 7, 0, 3)
    report = emit(
        engine,
        now,
        ev("S1", "claim_settled", "C4", "2026-11-23T15:00:00+08:00", payload={"claim_id": "CL-7"}),
    )
    assert (report.planned, report.late) == (1, 1)
    sent = dispatch(engine, run_id="test:d", now=utc(2026, 11, 23, 7, 5))
    assert sent.sent == 1
    [message] = outbox(tmp_path)
    body = message.read_text(encoding="utf-8")
    assert "CL-7" in body and "已結案" in body  # zh-TW


def test_a_late_event_inside_the_window_waits_for_the_end_of_quiet_hours(
    engine: CareEngine, tmp_path: Path
) -> None:
    # Bought at 23:00 on the 22nd in Shanghai, but received at 23:30 local on the 23rd:
    # the 10:00 send time has passed and it is quiet hours. 08:00 on the 24th is within 24 h
    # of the send time, so it goes then.
    now = utc(2026, 11, 23, 15, 30)
    report = emit(engine, now, ev("E2", "policy_purchased", "C1", "2026-11-22T23:00:00+08:00"))
    assert report.late == 1
    assert dispatch(engine, run_id="test:night", now=utc(2026, 11, 23, 15, 45)).sent == 0
    assert outbox(tmp_path) == []
    assert dispatch(engine, run_id="test:morning", now=utc(2026, 11, 24, 0, 0)).sent == 1
    assert states(engine)["thank-you|event:E2|2026-11-23"].status is TouchStatus.SENT


def test_a_late_event_past_the_window_is_suppressed_too_late(
    engine: CareEngine, tmp_path: Path
) -> None:
    # Bought on the 20th, received on the 23rd: the thank-you was due on the 21st at 10:00;
    # the 24-hour sending window closed on the 22nd.
    now = utc(2026, 11, 23, 3)
    report = emit(engine, now, ev("E3", "policy_purchased", "C1", "2026-11-20T12:00:00+08:00"))
    assert (report.planned, report.late) == (1, 1)
    result = dispatch(engine, run_id="test:d", now=utc(2026, 11, 23, 3, 5))
    assert (result.sent, result.suppressed) == (0, 1)
    state = states(engine)["thank-you|event:E3|2026-11-21"]
    assert (state.status, state.reason) == (TouchStatus.SUPPRESSED, "too_late")
    assert outbox(tmp_path) == []
    # And it stays so: dispatch again, plan again.
    emit(
        engine,
        utc(2026, 11, 23, 4),
        ev("E3", "policy_purchased", "C1", "2026-11-20T12:00:00+08:00"),
    )
    dispatch(engine, run_id="test:d2", now=utc(2026, 11, 23, 4))
    assert states(engine)["thank-you|event:E3|2026-11-21"].reason == "too_late"


@pytest.mark.parametrize(
    ("customer", "occurred", "occurrence", "send_at"),
    [
        # One minute before midnight in Shanghai (15:59 UTC): due the next local day...
        ("C1", "2026-11-22T15:59:00Z", "2026-11-23", utc(2026, 11, 23, 2)),
        # ... and two minutes later it is already the 23rd there: due on the 24th.
        ("C1", "2026-11-22T16:01:00Z", "2026-11-24", utc(2026, 11, 24, 2)),
        # One minute before midnight in Los Angeles (07:59 UTC on the 23rd): local date is the
        # 22nd, so due on the 23rd at 10:00 PST (18:00 UTC), not on the 24th.
        ("C2", "2026-11-23T07:59:00Z", "2026-11-23", utc(2026, 11, 23, 18)),
        ("C2", "2026-11-23T08:01:00Z", "2026-11-24", utc(2026, 11, 24, 18)),
    ],
)
def test_the_next_local_day_is_the_customers(
    engine: CareEngine, customer: str, occurred: str, occurrence: str, send_at: dt.datetime
) -> None:
    emit(engine, utc(2026, 11, 23, 8, 30), ev("TZ", "policy_purchased", customer, occurred))
    [(key, state)] = states(engine).items()
    assert key == f"thank-you|event:TZ|{occurrence}"
    assert state.send_at == send_at
    assert state.status is TouchStatus.PLANNED


def test_events_of_an_inactive_customer_or_of_no_rule_plan_nothing(engine: CareEngine) -> None:
    report = emit(
        engine,
        utc(2026, 11, 23, 3),
        ev("I1", "policy_purchased", "C3", "2026-11-22T10:00:00+08:00"),
        ev("X1", "address_changed", "C1", "2026-11-22T10:00:00+08:00"),
    )
    assert (report.events, report.without_touch, report.planned) == (2, 2, 0)
    assert states(engine) == {}
    # They count as planned: the next call has nothing to do.
    assert plan_new_events(engine, run_id="t", now=utc(2026, 11, 23, 4)).events == 0


def test_event_touches_obey_the_daily_cap(engine: CareEngine) -> None:
    # caps.per_day is 1: of two event touches due on the same local day, the higher priority
    # goes and the other is suppressed, as for any other rule.
    report = emit(
        engine,
        utc(2026, 11, 22, 5),
        ev("A", "policy_purchased", "C1", "2026-11-22T10:00:00+08:00"),
        ev("B", "claim_settled", "C1", "2026-11-22T12:00:00+08:00"),
        ev("C", "complaint_resolved", "C1", "2026-11-19T12:00:00+08:00"),
    )
    assert report.events == 3
    decided = Counter((s.row.occurrence.isoformat(), s.status) for s in states(engine).values())
    # Due on the 22nd: claim-settled (same day) and complaint-follow-up (resolved on the 19th,
    # three days later); due on the 23rd: thank-you.
    assert decided[("2026-11-22", TouchStatus.PLANNED)] == 1
    assert decided[("2026-11-22", TouchStatus.SUPPRESSED)] == 1
    by_rule = {s.row.rule_id: s for s in states(engine).values()}
    assert by_rule["claim-settled"].status is TouchStatus.PLANNED  # priority 85
    # The follow-up (80) is a service obligation: deferred, not dropped. On the 23rd it
    # competes again and takes the day's place from the thank-you (70).
    assert by_rule["complaint-follow-up"].reason == "deferred"
    assert by_rule["thank-you"].reason == "frequency_cap"
    # The plan of the 23rd (care_dispatch plans the dates in effect) records it for that day.
    plan_and_record(engine, dt.date(2026, 11, 23), run_id="dispatch", now=utc(2026, 11, 22, 6))
    follow_up = states(engine)["complaint-follow-up|event:C|2026-11-22"]
    assert (follow_up.status, follow_up.send_at) == (TouchStatus.PLANNED, utc(2026, 11, 23, 2))


def test_planning_an_event_records_only_its_touch_but_competes_with_the_day(
    store: Store, tmp_path: Path
) -> None:
    # C1's birthday and thank-you fall on the same day: the thank-you (70) beats the birthday
    # (30) under caps.per_day=1. C9's birthday that day is none of this event's business: it is
    # left for the day's plan, not recorded now.
    load_rows(
        store,
        customers=[
            customer_row("C1", timezone=SH, birth_date="1990-11-23"),
            customer_row("C9", timezone=SH, birth_date="1985-11-23", phone="+8613812348009"),
        ],
    )
    engine = engine_for(store, tmp_path)
    report = emit(
        engine,
        utc(2026, 11, 22, 3),
        ev("E1", "policy_purchased", "C1", "2026-11-22T10:00:00+08:00"),
    )
    assert report.planned == 1
    assert list(states(engine)) == ["thank-you|event:E1|2026-11-23"]
    # The day's full plan then agrees: the thank-you goes, C1's birthday gives way, C9's goes.
    result = dispatch(engine, run_id="test:d", now=utc(2026, 11, 23, 2, 5))
    decided = {k: (s.status, s.reason) for k, s in states(engine).items()}
    assert decided["thank-you|event:E1|2026-11-23"] == (TouchStatus.SENT, None)
    assert decided["birthday|customer:C1|2026-11-23"][1] == "frequency_cap"
    assert decided["birthday|customer:C9|2026-11-23"][0] is TouchStatus.SENT
    assert result.sent == 2
