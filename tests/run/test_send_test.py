"""Test sends (`care send-test`): the customer's message, sent to an allow-listed internal
address through the real channel, recorded as a test touch that never counts as a contact
and never stands in the way of the customer's own touch."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest

from caretouch.channels.base import OutboundMessage, SendResult
from caretouch.config import CareConfig
from caretouch.errors import CareError
from caretouch.ledger import Ledger
from caretouch.ledger.audit import touch_detail, touches
from caretouch.ledger.audit.search import Filters
from caretouch.ledger.models import TouchRow
from caretouch.ledger.queue import Due
from caretouch.ledger.testsend import record_test_touch
from caretouch.reports.figures import Period, compute
from caretouch.run.day import pending_ids, run_day
from caretouch.run.engine import CareEngine, open_engine
from caretouch.run.records import planned_touch
from caretouch.run.send import send_due
from caretouch.run.test_send import customer_touch, recipient_channel, send_test
from caretouch.store.db import Store
from caretouch.vocab import Channel, Outcome, TouchStatus
from conftest import RULES_DIR, TEMPLATES_DIR, customer_row, load_rows, utc

DAY = dt.date(2026, 11, 23)  # C1's birthday (customer_row): the birthday rule sends an SMS
NOON = utc(2026, 11, 23, 12, 0)  # 20:00 in Shanghai: outside quiet hours
TESTER_PHONE = "+8613900001234"
TESTER_EMAIL = "qa.team@example.com"


def rules_with_testers(tmp_path: Path) -> Path:
    """The shipped rules, their policy with two test recipients (and its caps: per_day 1)."""
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    policy = rules / "policy.yaml"
    policy.write_text(
        policy.read_text(encoding="utf-8")
        + f'\ntest_recipients: ["{TESTER_PHONE}", "{TESTER_EMAIL}"]\n',
        encoding="utf-8",
    )
    return rules


def engine_for(store: Store, tmp_path: Path, **kw: object) -> CareEngine:
    config = CareConfig(
        store.url,
        rules_with_testers(tmp_path),
        TEMPLATES_DIR,
        tmp_path / "outbox",
        tmp_path / "anchors.jsonl",
    )
    return open_engine(config, store=store, **kw)  # type: ignore[arg-type]


def outbox(tmp_path: Path) -> list[dict[str, object]]:
    return [
        json.loads(p.read_text(encoding="utf-8"))
        for p in sorted((tmp_path / "outbox").rglob("*.json"))
    ]


def test_an_address_off_the_list_is_refused_and_nothing_is_written(
    store: Store, tmp_path: Path
) -> None:
    load_rows(store, customers=[customer_row("C1")])
    engine = engine_for(store, tmp_path)
    with pytest.raises(CareError, match="not in test_recipients of the contact policy"):
        send_test(engine, "birthday", "C1", DAY, "+8613900009999", run_id="t", now=NOON)
    # The customer's own address is not an internal one either.
    with pytest.raises(CareError, match="test_recipients"):
        send_test(engine, "birthday", "C1", DAY, "+8613812348000", run_id="t", now=NOON)
    with store.read_session() as session:
        assert session.query(TouchRow).count() == 0
    assert outbox(tmp_path) == []


def test_the_channel_follows_from_the_address(tmp_path: Path, sqlite_store: Store) -> None:
    policy = engine_for(sqlite_store, tmp_path).policy
    assert recipient_channel(policy, TESTER_PHONE, None) is Channel.SMS
    assert recipient_channel(policy, "QA.Team@Example.com", None) is Channel.EMAIL
    assert recipient_channel(policy, TESTER_EMAIL, Channel.EMAIL) is Channel.EMAIL
    with pytest.raises(CareError, match="not an address of the email channel"):
        recipient_channel(policy, TESTER_PHONE, Channel.EMAIL)


def test_a_test_send_goes_to_the_tester_and_leaves_the_real_touch_alone(
    store: Store, tmp_path: Path
) -> None:
    load_rows(store, customers=[customer_row("C1")])
    engine = engine_for(store, tmp_path)
    done = send_test(engine, "birthday", "C1", DAY, TESTER_PHONE, run_id="test-1", now=NOON)
    assert done.status is TouchStatus.SENT and done.channel is Channel.SMS
    (sent,) = outbox(tmp_path)
    assert sent["to"] == TESTER_PHONE
    # Exactly the message the customer would get.
    real = customer_touch(engine, "birthday", "C1", DAY)
    expected = engine.templates.render("birthday", Channel.SMS, "zh-CN", real.template_context())
    assert sent["body"] == expected.body == done.message.body
    # Recorded as a test touch: its own key, its attempt to the tester, its status events.
    ledger = Ledger(store)
    with store.read_session() as session:
        row = session.get(TouchRow, done.touch_id)
        assert row is not None and row.test is True
        assert row.touch_key.startswith("test:birthday|") and row.touch_key != real.key
        assert row.customer_id == "C1" and row.occurrence == DAY
    (attempt,) = ledger.attempts(done.touch_id)
    assert attempt.recipient == TESTER_PHONE and attempt.body == expected.body
    assert [e.status for e in ledger.history(done.touch_id)] == ["planned", "sending", "sent"]
    # Not a contact: no cap, cadence or occasion counts it.
    assert ledger.contacts(["C1"], DAY, DAY) == []
    assert ledger.last_contacts(["C1"], DAY) == {}
    assert ledger.occasion_contacts(["C1"], ["birthday"], DAY, DAY) == []
    assert pending_ids(engine) == []
    # The same day, the customer's own birthday SMS is planned and sent (caps: per_day 1).
    report = run_day(engine, DAY, run_id="run-1", now=NOON)
    assert (report.sent, report.suppressed) == (1, 0)
    assert sorted(m["to"] for m in outbox(tmp_path)) == ["+8613812348000", TESTER_PHONE]
    (state,) = ledger.states_for_day(DAY)  # the day's touches: the test is not among them
    assert state.row.touch_key == real.key and state.status is TouchStatus.SENT
    assert [c.key for c in ledger.contacts(["C1"], DAY, DAY)] == [real.key]


def test_a_second_test_send_gets_a_key_of_its_own(store: Store, tmp_path: Path) -> None:
    load_rows(store, customers=[customer_row("C1")])
    engine = engine_for(store, tmp_path)
    one = send_test(engine, "birthday", "C1", DAY, TESTER_PHONE, run_id="t1", now=NOON)
    two = send_test(engine, "birthday", "C1", DAY, TESTER_EMAIL, run_id="t2", now=NOON)
    assert one.key != two.key and two.channel is Channel.EMAIL
    assert two.status is TouchStatus.SENT and two.message.subject
    assert sorted(m["to"] for m in outbox(tmp_path)) == [TESTER_PHONE, TESTER_EMAIL]


def test_a_test_send_after_the_real_touch_does_not_change_it(store: Store, tmp_path: Path) -> None:
    """A customer whose birthday SMS went out (per_day cap used) can still be tested."""
    load_rows(store, customers=[customer_row("C1")])
    engine = engine_for(store, tmp_path)
    assert run_day(engine, DAY, run_id="run-1", now=NOON).sent == 1
    done = send_test(engine, "birthday", "C1", DAY, TESTER_PHONE, run_id="t", now=NOON)
    assert done.status is TouchStatus.SENT
    assert done.touch.reason is not None and done.touch.reason.value == "already_sent"
    assert run_day(engine, DAY, run_id="run-2", now=NOON).sent == 0  # nothing sent twice


def test_no_sender_ever_takes_a_test_touch(store: Store, tmp_path: Path) -> None:
    """A test touch left planned (say, by recovery) is never sent to the customer."""
    load_rows(store, customers=[customer_row("C1")])
    engine = engine_for(store, tmp_path)
    real = customer_touch(engine, "birthday", "C1", DAY)
    record = planned_touch(real)
    import dataclasses

    test_id = record_test_touch(
        store, dataclasses.replace(record, key="test:" + real.key + ":x"), run_id="t", now=NOON
    )
    assert Ledger(store).states([test_id])[0].status is TouchStatus.PLANNED
    assert pending_ids(engine) == [] and pending_ids(engine, DAY) == []
    report = send_due(engine, Due(), run_id="d", now=NOON)
    assert report.sent == 0 and outbox(tmp_path) == []
    assert Ledger(store).touch_ids_in_status({TouchStatus.PLANNED}, tests=True) == [test_id]
    with pytest.raises(ValueError, match="test:"):
        record_test_touch(store, record, run_id="t", now=NOON)


class Retryable:
    """A transport that answers every message with a retryable failure."""

    name = "flaky"
    rate = None

    def send_many(self, messages: list[OutboundMessage]) -> list[SendResult]:
        return [SendResult(Outcome.RETRYABLE_FAILURE, detail="try later") for _ in messages]


def test_a_failed_test_send_is_final(store: Store, tmp_path: Path) -> None:
    load_rows(store, customers=[customer_row("C1")])
    engine = engine_for(store, tmp_path, transports={Channel.SMS: Retryable()})
    done = send_test(engine, "birthday", "C1", DAY, TESTER_PHONE, run_id="t", now=NOON)
    assert done.status is TouchStatus.FAILED and "try later" in done.detail
    assert Ledger(store).states([done.touch_id])[0].status is TouchStatus.FAILED
    assert pending_ids(engine) == []


def test_reports_and_the_audit_view(store: Store, tmp_path: Path) -> None:
    load_rows(store, customers=[customer_row("C1")])
    engine = engine_for(store, tmp_path)
    done = send_test(engine, "birthday", "C1", DAY, TESTER_PHONE, run_id="t", now=NOON)
    figures = compute(store, Period("week", "2026-W48", DAY, DAY), engine.ruleset)
    assert sum(figures.touches.values()) == 0 and sum(figures.sent_per_day.values()) == 0
    run_day(engine, DAY, run_id="run-1", now=NOON)
    figures = compute(store, Period("week", "2026-W48", DAY, DAY), engine.ruleset)
    assert sum(figures.touches.values()) == 1 and sum(figures.sent_per_day.values()) == 1
    listed = {r["touch_id"]: r for r in touches(store, Filters(customer_id="C1"))}
    assert listed[done.touch_id]["test"] is True
    assert [r["test"] for i, r in listed.items() if i != done.touch_id] == [False]
    assert listed[done.touch_id]["recipient"] != TESTER_PHONE  # masked
    detail = touch_detail(store, done.touch_id)
    assert detail is not None and detail["test"] is True


def test_the_web_audit_view_marks_a_test_send(
    sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from caretouch.web.app import create_audit_app

    token = "carol-audit-token-0123456789"
    monkeypatch.setenv("CARE_AUDIT_TOKENS", f"carol:{token}")
    load_rows(sqlite_store, customers=[customer_row("C1")])
    engine = engine_for(sqlite_store, tmp_path)
    done = send_test(engine, "birthday", "C1", DAY, TESTER_PHONE, run_id="t", now=NOON)
    run_day(engine, DAY, run_id="run-1", now=NOON)
    bearer = {"Authorization": f"Bearer {token}"}
    with TestClient(create_audit_app(sqlite_store.url, tmp_path / "anchors.jsonl")) as client:
        page = client.get(f"/audit/touches/{done.touch_id}", headers=bearer)
        assert page.status_code == 200 and "test send" in page.text
        assert TESTER_PHONE not in page.text  # masked
        real = client.get(f"/audit/touches/{done.touch_id + 1}", headers=bearer)
        assert real.status_code == 200 and "test send" not in real.text
        listing = client.get("/audit", headers=bearer).text
        assert listing.count('<span class="test"') == 1


def test_through_twilio_and_sendgrid(sqlite_store: Store, tmp_path: Path, provider_sim) -> None:  # type: ignore[no-untyped-def]
    """The real channel: the official SDKs against the provider simulator."""
    from provider_sim import SENDGRID, TWILIO
    from sim_channels import UNSUBSCRIBE_SECRET, fast_backoff, sendgrid_transport, twilio_transport

    load_rows(sqlite_store, customers=[customer_row("C1")])
    transports = {
        Channel.SMS: twilio_transport(provider_sim, backoff=fast_backoff()),
        Channel.EMAIL: sendgrid_transport(provider_sim, backoff=fast_backoff()),
    }
    engine = engine_for(
        sqlite_store, tmp_path, transports=transports, unsubscribe_key=UNSUBSCRIBE_SECRET
    )
    sms = send_test(engine, "birthday", "C1", DAY, TESTER_PHONE, run_id="t1", now=NOON)
    mail = send_test(engine, "birthday", "C1", DAY, TESTER_EMAIL, run_id="t2", now=NOON)
    assert (sms.status, mail.status) == (TouchStatus.SENT, TouchStatus.SENT)
    assert (sms.transport, mail.transport) == ("twilio", "sendgrid")
    assert [m.to for m in provider_sim.accepted(TWILIO)] == [TESTER_PHONE]
    assert [m.to for m in provider_sim.accepted(SENDGRID)] == [TESTER_EMAIL]
    sent = [e for e in Ledger(sqlite_store).history(sms.touch_id) if e.status == "sent"]
    assert sent[0].provider_message_id == provider_sim.accepted(TWILIO)[0].id
    # The customer's own SMS goes out too, through the same provider.
    assert run_day(engine, DAY, run_id="run-1", now=NOON).sent == 1
    assert sorted(m.to for m in provider_sim.accepted(TWILIO)) == ["+8613812348000", TESTER_PHONE]
