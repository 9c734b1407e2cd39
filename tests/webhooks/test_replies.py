"""Customers' replies heard (issue 16): an inbound SMS that is not a keyword is recorded against
the touch it answers, becomes a score or a message, and reaches the agent as a task; through
the real app, signed as Twilio signs."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from agent_tasks import add_agents
from fastapi.testclient import TestClient
from sqlalchemy import select
from webhook_helpers import (
    LATER,
    NOON,
    new_keys,
    provider_events,
    sent_touch,
    sms_only,
    sources,
    twilio_post,
)

from caretouch.config import CareConfig
from caretouch.events.inbox import Incoming, submit
from caretouch.events.planning import plan_new_events
from caretouch.ledger import Ledger
from caretouch.ledger.audit import verify
from caretouch.ledger.replies import latest_scores, replies_between, touch_scores
from caretouch.ledger.tasks import tasks
from caretouch.run.day import dispatch, run_day
from caretouch.run.engine import CareEngine, open_engine
from caretouch.store.db import Store
from caretouch.store.models import Event, EventDeadLetter
from caretouch.vocab import ReplyKind, TouchStatus
from caretouch.web.app import create_standalone_app
from caretouch.web.auth import AuditAuth, AuditTokens
from conftest import RULES_DIR, TEMPLATES_DIR, Care, load_rows, utc

PHONE = "+8613812348000"
OTHER = "+8613912345678"
AUDITOR = "auditor-token-0123456789abcdef"
NEXT_DAY = dt.date(2026, 11, 24)
NEXT_MORNING = utc(2026, 11, 24, 1, 5)  # 09:05 in Shanghai


@pytest.fixture(autouse=True)
def _shipped_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    # The webhooks read events.yaml (CARE_RULES_DIR) to check the events they submit.
    monkeypatch.setenv("CARE_RULES_DIR", str(RULES_DIR))
    monkeypatch.delenv("CARE_REPLY_WINDOW_DAYS", raising=False)


def app_at(store: Store, when: dt.datetime = LATER) -> TestClient:
    app = create_standalone_app(
        secrets=sources(new_keys()), webhook_store=store, clock=lambda: when
    )
    return TestClient(app, base_url="http://testserver")


def reply(http: TestClient, body: str, *, sid: str = "SM" + "c" * 32, sender: str = PHONE) -> Any:
    params = {
        "MessageSid": sid,
        "SmsSid": sid,
        "AccountSid": "AC" + "0" * 32,
        "From": sender,
        "To": "+15005550006",
        "Body": body,
        "NumMedia": "0",
    }
    return twilio_post(http, "inbound", params)


def events(store: Store) -> list[Event]:
    with store.read_session() as session:
        return list(session.scalars(select(Event).order_by(Event.id)))


def dead_letters(store: Store) -> list[EventDeadLetter]:
    with store.read_session() as session:
        return list(session.scalars(select(EventDeadLetter)))


def tier_c(customer_id: str = "C1", **kw: Any) -> dict[str, str]:
    # Tier C: no check-in call on the day, so the birthday SMS is the one touch sent.
    return sms_only(customer_id, tier="C", **kw)


def test_a_score_is_recorded_against_the_touch_it_answers(store: Store, tmp_path: Path) -> None:
    touch_id, attempt, _ = sent_touch(store, tmp_path, tier_c())
    answer = reply(app_at(store), "５分")
    assert answer.status_code == 200
    (event,) = provider_events(store)
    assert (event.kind, event.provider_status) == ("inbound", "satisfied")
    assert (event.touch_id, event.attempt_id, event.customer_id) == (touch_id, attempt.id, "C1")
    assert event.payload["reply"] == {"kind": "satisfied", "score": 5}
    assert event.payload["From"] == "+86 138****8000"
    # The business event, through the inbox, as the API would submit it.
    (business,) = events(store)
    assert (business.type, business.customer_id) == ("reply_satisfied", "C1")
    assert business.payload == {"score": 5, "touch_id": touch_id, "rule_id": "birthday"}
    assert business.event_id == "reply:twilio:" + "SM" + "c" * 32 + ":C1"
    # In the chain, and read back as a score of the touch and of the customer.
    assert verify(store).ok
    (heard,) = replies_between(store, NOON, LATER + dt.timedelta(seconds=1))
    assert (heard.touch_id, heard.customer_id, heard.rule_id) == (touch_id, "C1", "birthday")
    assert (heard.kind, heard.score, heard.received_at) == (ReplyKind.SATISFIED, 5, LATER)
    assert latest_scores(store, ["C1", "C2"]) == {"C1": heard}
    assert touch_scores(store, [touch_id]) == {touch_id: heard}
    assert replies_between(store, NOON, LATER) == []  # the end is not included


def test_a_replayed_reply_changes_nothing(sqlite_store: Store, tmp_path: Path) -> None:
    sent_touch(sqlite_store, tmp_path, tier_c())
    http = app_at(sqlite_store)
    for _ in range(3):
        assert reply(http, "2").status_code == 200
    assert len(provider_events(sqlite_store)) == 1
    assert [e.type for e in events(sqlite_store)] == ["reply_unsatisfied"]
    assert dead_letters(sqlite_store) == []


@pytest.mark.parametrize(
    ("after", "window", "matched"),
    [
        (dt.timedelta(days=6, hours=23), None, True),
        (dt.timedelta(days=7, minutes=1), None, False),
        (dt.timedelta(days=9), "10", True),
        (dt.timedelta(hours=2), "1", True),
        (dt.timedelta(days=1, minutes=1), "1", False),
    ],
)
def test_a_reply_answers_a_touch_sent_within_the_window(
    sqlite_store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    after: dt.timedelta,
    window: str | None,
    matched: bool,
) -> None:
    if window:
        monkeypatch.setenv("CARE_REPLY_WINDOW_DAYS", window)
    touch_id, _, _ = sent_touch(sqlite_store, tmp_path, tier_c())
    assert reply(app_at(sqlite_store, NOON + after), "4").status_code == 200
    (event,) = provider_events(sqlite_store)
    (business,) = events(sqlite_store)
    assert event.customer_id == "C1"
    if matched:
        assert (event.touch_id, event.provider_status) == (touch_id, "satisfied")
        assert business.type == "reply_satisfied"
    else:
        # A score answers a touch: with none in the window, the agent reads it as a message.
        assert (event.touch_id, event.provider_status) == (None, "message")
        assert event.payload["reply"] == {"kind": "message", "no_touch": True}
        assert (business.type, business.payload) == ("reply_message", {"text": "4"})


def test_a_reply_from_an_unknown_number_is_recorded_with_no_customer(
    sqlite_store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sent_touch(sqlite_store, tmp_path, tier_c())
    caplog.set_level(logging.DEBUG)
    assert reply(app_at(sqlite_store), "5", sender=OTHER).status_code == 200
    (event,) = provider_events(sqlite_store)
    # A score answers a touch; from an unknown number there is none: kept as a message.
    assert (event.customer_id, event.touch_id, event.provider_status) == (None, None, "message")
    assert events(sqlite_store) == [] and dead_letters(sqlite_store) == []
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "unknown number +86 139****5678" in logged
    assert OTHER not in logged


@pytest.mark.parametrize("body", ["0", "6", "10", "-1"])
def test_a_score_out_of_range_is_a_message_recorded_out_of_range(
    sqlite_store: Store, tmp_path: Path, body: str
) -> None:
    touch_id, _, _ = sent_touch(sqlite_store, tmp_path, tier_c())
    assert reply(app_at(sqlite_store), body).status_code == 200
    (event,) = provider_events(sqlite_store)
    assert (event.touch_id, event.provider_status) == (touch_id, "out-of-range")
    (business,) = events(sqlite_store)
    assert business.type == "reply_message"
    assert business.payload == {"text": body, "touch_id": touch_id, "rule_id": "birthday"}
    (heard,) = replies_between(sqlite_store, NOON, LATER + dt.timedelta(seconds=1))
    assert (heard.kind, heard.score) == (ReplyKind.MESSAGE, None)
    assert latest_scores(sqlite_store, ["C1"]) == {}


def engine_at(store: Store, tmp_path: Path) -> CareEngine:
    config = CareConfig(
        store.url,
        RULES_DIR,
        TEMPLATES_DIR,
        tmp_path / "outbox",
        anchor_file=tmp_path / "anchors.jsonl",
    )
    return open_engine(config, store=store)


def assigned(store: Store, tmp_path: Path) -> list[Any]:
    """Plan the inbox's new events (the reply came on the day of the touch it answers, whose
    daily cap it took: the task is deferred) and run the next day: the tasks assigned."""
    engine = engine_at(store, tmp_path)
    planned = plan_new_events(engine, run_id="t-events", now=LATER + dt.timedelta(minutes=1))
    assert planned.events >= 1
    run_day(engine, NEXT_DAY, run_id="t-next", now=NEXT_MORNING)
    return tasks(store)


def test_an_unsatisfied_answer_gives_the_agent_a_call_back(store: Store, tmp_path: Path) -> None:
    add_agents(store, "A1")
    touch_id, _, _ = sent_touch(store, tmp_path, tier_c(agent_id="A1"))
    assert reply(app_at(store), "N").status_code == 200
    (business,) = events(store)
    assert business.type == "reply_unsatisfied"
    assert business.payload == {"score": 1, "touch_id": touch_id, "rule_id": "birthday"}
    (task,) = assigned(store, tmp_path)
    assert (task.rule_id, task.agent_id, task.customer_id, task.kind) == (
        "unsatisfied-call-back",
        "A1",
        "C1",
        "call",
    )
    # The brief (zh-CN, the customer's locale) shows the score and the rule answered.
    assert "回复了1分" in task.brief and "birthday" in task.brief
    assert (task.expires - task.due).days == 2


def test_a_satisfied_answer_gives_no_task(sqlite_store: Store, tmp_path: Path) -> None:
    add_agents(sqlite_store, "A1")
    sent_touch(sqlite_store, tmp_path, tier_c(agent_id="A1"))
    assert reply(app_at(sqlite_store), "满意").status_code == 200
    assert [e.type for e in events(sqlite_store)] == ["reply_satisfied"]
    assert assigned(sqlite_store, tmp_path) == []


def test_a_message_goes_to_the_agent_and_never_to_the_log(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    add_agents(store, "A1")
    touch_id, _, _ = sent_touch(store, tmp_path, tier_c(agent_id="A1"))
    text = "请问我的保单什么时候到期？我的新号码是13700001111"
    caplog.set_level(logging.DEBUG)
    assert reply(app_at(store), text).status_code == 200
    (business,) = events(store)
    assert business.type == "reply_message"
    assert business.payload == {"text": text, "touch_id": touch_id, "rule_id": "birthday"}
    (event,) = provider_events(store)
    assert (event.touch_id, event.provider_status) == (touch_id, "message")
    (task,) = assigned(store, tmp_path)
    assert task.rule_id == "customer-wrote" and task.agent_id == "A1"
    assert text in task.brief
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (text, "保单什么时候", PHONE, "13812348000", "13700001111"):
        assert secret not in logged


def test_without_an_agent_the_reply_is_kept_and_the_task_is_no_contact(
    sqlite_store: Store, tmp_path: Path
) -> None:
    touch_id, _, _ = sent_touch(sqlite_store, tmp_path, tier_c())
    assert reply(app_at(sqlite_store), "3").status_code == 200
    engine = engine_at(sqlite_store, tmp_path)
    report = plan_new_events(engine, run_id="t-events", now=LATER + dt.timedelta(minutes=1))
    assert report.suppressed == 1
    ledger = Ledger(sqlite_store)
    (call,) = [
        s
        for s in ledger.states(ledger.touch_ids_in_status(set(TouchStatus)))
        if s.row.rule_id == "unsatisfied-call-back"
    ]
    assert (call.status, call.reason) == (TouchStatus.SUPPRESSED, "no_contact")
    assert tasks(sqlite_store) == []
    # The reply itself stays counted.
    assert latest_scores(sqlite_store, ["C1"])["C1"].score == 3
    assert touch_scores(sqlite_store, [touch_id])[touch_id].kind is ReplyKind.UNSATISFIED


def test_unsatisfied_about_a_complaint_reopens_the_case(store: Store, tmp_path: Path) -> None:
    load_rows(store, customers=[tier_c()])
    engine = engine_at(store, tmp_path)
    resolved = {
        "event_id": "CR1",
        "type": "complaint_resolved",
        "customer_id": "C1",
        "occurred_at": "2026-11-20T10:00:00+08:00",
        "payload": {"case_id": "CS-7", "category": "billing", "severity": "high"},
    }
    assert submit(store, [Incoming(resolved)], source="cli", now=utc(2026, 11, 20, 3)).accepted
    plan_new_events(engine, run_id="t-plan", now=utc(2026, 11, 20, 3))
    # The follow-up goes on the 23rd at 10:00 in Shanghai.
    assert dispatch(engine, run_id="t-send", now=utc(2026, 11, 23, 2, 5)).sent == 1
    assert reply(app_at(store), "不满意").status_code == 200
    new = [e for e in events(store) if e.event_id != "CR1"]
    assert [(e.type, e.customer_id) for e in new] == [
        ("reply_unsatisfied", "C1"),
        ("complaint_reopened", "C1"),
    ]
    assert new[0].payload["case_id"] == "CS-7"
    assert new[0].payload["rule_id"] == "complaint-follow-up"
    assert new[1].payload == {"case_id": "CS-7", "category": "billing", "severity": "high"}
    assert new[1].event_id.startswith("reopen:twilio:")
    # A satisfied answer to it reopens nothing.
    assert reply(app_at(store), "5", sid="SM" + "d" * 32).status_code == 200
    assert [e.type for e in events(store)][-1] == "reply_satisfied"
    assert sum(e.type == "complaint_reopened" for e in events(store)) == 1


def test_several_customers_on_one_number(sqlite_store: Store, tmp_path: Path) -> None:
    # C2 shares C1's phone; only C1 has a birthday today, so only C1 was sent a touch.
    load_rows(sqlite_store, customers=[tier_c("C2", birth_date="1980-05-05")])
    touch_id, _, _ = sent_touch(sqlite_store, tmp_path, tier_c())
    http = app_at(sqlite_store)
    assert reply(http, "1").status_code == 200
    (event,) = provider_events(sqlite_store)
    assert (event.customer_id, event.touch_id) == ("C1", touch_id)
    assert [(e.type, e.customer_id) for e in events(sqlite_store)] == [("reply_unsatisfied", "C1")]
    # With no touch in the window, a message goes to each of them (their agents read it).
    late = app_at(sqlite_store, NOON + dt.timedelta(days=30))
    assert reply(late, "你好", sid="SM" + "e" * 32).status_code == 200
    last = provider_events(sqlite_store)[-1]
    assert (last.customer_id, last.touch_id) == (None, None)
    assert [(e.type, e.customer_id) for e in events(sqlite_store)][1:] == [
        ("reply_message", "C1"),
        ("reply_message", "C2"),
    ]


def test_keywords_are_not_replies(sqlite_store: Store, tmp_path: Path) -> None:
    sent_touch(sqlite_store, tmp_path, tier_c())
    http = app_at(sqlite_store)
    assert reply(http, "ＳＴＯＰ").status_code == 200
    assert reply(http, "YES", sid="SM" + "f" * 32).status_code == 200
    assert [e.provider_status for e in provider_events(sqlite_store)] == ["stop", "start"]
    assert events(sqlite_store) == []
    assert replies_between(sqlite_store, NOON, NOON + dt.timedelta(days=1)) == []


def test_a_possible_stop_also_goes_to_the_agent(sqlite_store: Store, tmp_path: Path) -> None:
    sent_touch(sqlite_store, tmp_path, tier_c())
    assert reply(app_at(sqlite_store), "请退订").status_code == 200
    (event,) = provider_events(sqlite_store)
    assert event.provider_status == "possible-stop"
    (business,) = events(sqlite_store)
    assert (business.type, business.payload["text"]) == ("reply_message", "请退订")


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ("", ""),
        ("   ", ""),
        ("😀" * 3, "😀😀😀"),
        ("x" * 30_000, "x" * 1999 + "…"),
        ("{{ 7 * 7 }} {% raw %}", "{{ 7 * 7 }} {% raw %}"),
    ],
)
def test_any_body_is_recorded_never_an_error(
    sqlite_store: Store, tmp_path: Path, body: str, text: str
) -> None:
    add_agents(sqlite_store, "A1")
    sent_touch(sqlite_store, tmp_path, tier_c(agent_id="A1"))
    assert reply(app_at(sqlite_store), body).status_code == 200
    assert len(provider_events(sqlite_store)) == 1
    (business,) = events(sqlite_store)
    assert business.payload["text"] == text
    assert dead_letters(sqlite_store) == []
    (task,) = assigned(sqlite_store, tmp_path)
    assert (text or "（无文字）") in task.brief


def test_a_body_with_a_nul_is_refused_and_writes_nothing(
    sqlite_store: Store, tmp_path: Path
) -> None:
    sent_touch(sqlite_store, tmp_path, tier_c())
    answer = reply(app_at(sqlite_store), "5\x00")
    assert answer.status_code == 400
    assert provider_events(sqlite_store) == [] and events(sqlite_store) == []


def test_an_event_the_inbox_refuses_is_dead_lettered_with_its_reason(
    sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A deployment whose events.yaml does not declare the reply events: the reply is still
    # recorded, and its event is dead-lettered saying why (never an exception, never lost).
    rules = tmp_path / "rules"
    rules.mkdir()
    declared = (RULES_DIR / "events.yaml").read_text(encoding="utf-8")
    cut = declared.index("  reply_satisfied:")
    (rules / "events.yaml").write_text(declared[:cut], encoding="utf-8")
    monkeypatch.setenv("CARE_RULES_DIR", str(rules))
    sent_touch(sqlite_store, tmp_path, tier_c())
    assert reply(app_at(sqlite_store), "4").status_code == 200
    assert provider_events(sqlite_store)[0].provider_status == "satisfied"
    assert events(sqlite_store) == []
    (letter,) = dead_letters(sqlite_store)
    assert letter.source == "webhook"
    assert "unknown event type 'reply_satisfied'" in letter.reason
    assert json.loads(letter.raw)["type"] == "reply_satisfied"


def test_care_audit_shows_the_replies_and_the_customer_s_satisfaction(
    sqlite_store: Store, tmp_path: Path
) -> None:
    touch_id, _, _ = sent_touch(sqlite_store, tmp_path, tier_c())
    http = app_at(sqlite_store)
    assert reply(http, "2").status_code == 200
    assert reply(http, "我的秘密问题", sid="SM" + "d" * 32).status_code == 200
    shown = Care(tmp_path, store_url=sqlite_store.url)("audit", "show", str(touch_id))
    assert shown.exit_code == 0, shown.output
    assert "satisfaction  2 of 5, the customer's latest answer" in shown.output
    assert "unsatisfied 2  (twilio)" in shown.output
    assert "message  (twilio)" in shown.output
    assert "我的秘密问题" not in shown.output  # the text is the agent's, in their task
    # The audit view's touch page shows them too, to a signed-in auditor.
    web = TestClient(
        create_standalone_app(
            store_url=sqlite_store.url,
            anchor_file=tmp_path / "anchors.jsonl",
            auth=AuditAuth(tokens=AuditTokens({"auditor": AUDITOR})),
            secrets=sources(new_keys()),
            webhook_store=sqlite_store,
            clock=lambda: LATER,
        )
    )
    page = web.get(
        f"/care/audit/touches/{touch_id}", headers={"Authorization": f"Bearer {AUDITOR}"}
    )
    assert page.status_code == 200
    assert "2 of 5, their latest answer" in page.text
    assert "<td>unsatisfied</td><td>2</td>" in page.text
    assert "我的秘密问题" not in page.text
