"""Twilio webhooks: signatures, status callbacks, replays, inbound STOP/START."""

from __future__ import annotations

from pathlib import Path

import pytest
from webhook_helpers import (
    AUTH_TOKEN,
    DAY,
    INBOUND_URL,
    consent,
    counts,
    new_keys,
    provider_events,
    sent_touch,
    sms_only,
    status_params,
    twilio_post,
)
from webhook_helpers import client as make_client

from caretouch.ledger import Ledger
from caretouch.ledger.audit import verify
from caretouch.plan import plan_day
from caretouch.rules.loader import RuleSet
from caretouch.store.consent import consent_history
from caretouch.store.db import Store
from caretouch.vocab import Decision, SuppressionReason, TouchStatus
from conftest import load_rows

SID = "SM" + "a" * 32


def inbound_params(body: str, sid: str = "SM" + "b" * 32, **extra: str) -> dict[str, str]:
    return {
        "MessageSid": sid,
        "SmsSid": sid,
        "AccountSid": "AC" + "0" * 32,
        "From": "+8613812348000",
        "To": "+15005550006",
        "Body": body,
        "NumMedia": "0",
        "FromCity": "SHANGHAI",
        **extra,
    }


def test_signed_status_callback_records_delivery(store: Store, tmp_path: Path) -> None:
    touch_id, attempt, _ = sent_touch(store, tmp_path, sms_only())
    http = make_client(store, new_keys())
    answer = twilio_post(http, "status", status_params(), query={"attempt": str(attempt.id)})
    assert answer.status_code == 204
    (event,) = provider_events(store)
    assert (event.provider, event.provider_event_id, event.kind) == (
        "twilio",
        f"{SID}:delivered",
        "status",
    )
    assert (event.touch_id, event.attempt_id, event.customer_id) == (touch_id, attempt.id, "C1")
    assert event.status == "delivered"
    # Phone numbers are masked in the ledger's copy of the payload.
    assert event.payload["To"] == "+86 138****8000"
    assert "8613812348000" not in str(event.payload)
    (state,) = Ledger(store).states([touch_id])
    assert state.status is TouchStatus.DELIVERED
    last = Ledger(store).history(touch_id)[-1]
    assert (last.status, last.attempt_id, last.run_id) == (
        "delivered",
        attempt.id,
        "webhook:twilio",
    )
    # The new table is in the hash chain and the chain still verifies.
    assert verify(store).ok


def test_replayed_callback_changes_nothing(store: Store, tmp_path: Path) -> None:
    _, attempt, _ = sent_touch(store, tmp_path, sms_only())
    http = make_client(store, new_keys())
    query = {"attempt": str(attempt.id)}
    assert twilio_post(http, "status", status_params(), query=query).status_code == 204
    before = counts(store)
    for _ in range(3):
        assert twilio_post(http, "status", status_params(), query=query).status_code == 204
    assert counts(store) == before
    assert before["provider_events"] == 1


@pytest.mark.parametrize(
    "how",
    ["unsigned", "garbage", "wrong token", "other url", "tampered status", "tampered attempt"],
)
def test_forged_callback_is_refused_and_writes_nothing(
    sqlite_store: Store, tmp_path: Path, how: str
) -> None:
    touch_id, attempt, _ = sent_touch(sqlite_store, tmp_path, sms_only())
    http = make_client(sqlite_store, new_keys())
    before = counts(sqlite_store)
    query = {"attempt": str(attempt.id)}
    params = status_params()
    if how == "unsigned":
        answer = twilio_post(http, "status", params, query=query, signature="")
    elif how == "garbage":
        answer = twilio_post(http, "status", params, query=query, signature="bm90IGEgc2ln")
    elif how == "wrong token":
        answer = twilio_post(http, "status", params, query=query, token="another-token")
    elif how == "other url":
        answer = twilio_post(
            http, "status", params, query=query, sign_url="https://evil.example.com/x"
        )
    elif how == "tampered status":
        from twilio.request_validator import RequestValidator

        url = f"https://care.example.com/care/hooks/twilio/status?attempt={attempt.id}"
        good = RequestValidator(AUTH_TOKEN).compute_signature(url, status_params(status="sent"))
        answer = twilio_post(http, "status", params, query=query, signature=good)
    else:
        from twilio.request_validator import RequestValidator

        url = "https://care.example.com/care/hooks/twilio/status?attempt=999"
        good = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
        answer = twilio_post(http, "status", params, query=query, signature=good)
    assert answer.status_code == 403
    assert counts(sqlite_store) == before
    (state,) = Ledger(sqlite_store).states([touch_id])
    assert state.status is TouchStatus.SENT


def test_callback_matched_by_message_sid_without_attempt(
    sqlite_store: Store, tmp_path: Path
) -> None:
    touch_id, attempt, message_id = sent_touch(sqlite_store, tmp_path, sms_only())
    http = make_client(sqlite_store, new_keys())
    answer = twilio_post(
        http, "status", status_params(message_id, "undelivered", ErrorCode="30003")
    )
    assert answer.status_code == 204
    (event,) = provider_events(sqlite_store)
    assert (event.touch_id, event.attempt_id) == (touch_id, attempt.id)
    (state,) = Ledger(sqlite_store).states([touch_id])
    assert state.status is TouchStatus.UNDELIVERED
    assert Ledger(sqlite_store).history(touch_id)[-1].detail["error_code"] == "30003"


def test_unknown_message_is_kept_unmatched(sqlite_store: Store, tmp_path: Path) -> None:
    sent_touch(sqlite_store, tmp_path, sms_only())
    events_before = counts(sqlite_store)["touch_events"]
    http = make_client(sqlite_store, new_keys())
    answer = twilio_post(
        http, "status", status_params("SM" + "f" * 32), query={"attempt": "999999"}
    )
    assert answer.status_code == 204  # never an error that makes Twilio retry forever
    (event,) = provider_events(sqlite_store)
    assert event.touch_id is None and event.attempt_id is None
    assert counts(sqlite_store)["touch_events"] == events_before


def test_intermediate_statuses_are_provider_events_only(
    sqlite_store: Store, tmp_path: Path
) -> None:
    _, attempt, _ = sent_touch(sqlite_store, tmp_path, sms_only())
    http = make_client(sqlite_store, new_keys())
    before = counts(sqlite_store)["touch_events"]
    for status in ("queued", "sending", "sent"):
        answer = twilio_post(
            http, "status", status_params(status=status), query={"attempt": str(attempt.id)}
        )
        assert answer.status_code == 204
    assert len(provider_events(sqlite_store)) == 3
    assert counts(sqlite_store)["touch_events"] == before


def test_status_failed_with_21610_withdraws_sms_consent(
    sqlite_store: Store, tmp_path: Path
) -> None:
    touch_id, attempt, _ = sent_touch(sqlite_store, tmp_path, sms_only())
    http = make_client(sqlite_store, new_keys())
    answer = twilio_post(
        http,
        "status",
        status_params(status="failed", ErrorCode="21610"),
        query={"attempt": str(attempt.id)},
    )
    assert answer.status_code == 204
    assert consent(sqlite_store, "C1")["sms"] is False
    assert consent_history(sqlite_store, "C1")[-1].source == "twilio-21610"
    (state,) = Ledger(sqlite_store).states([touch_id])
    assert (state.status, state.reason) == (TouchStatus.FAILED, "delivery_failed")


def _birthday(
    store: Store, ruleset: RuleSet
) -> tuple[Decision, SuppressionReason | None, str | None]:
    (touch,) = [t for t in plan_day(store, ruleset, DAY) if t.rule.id == "birthday"]
    return touch.decision, touch.reason, touch.channel.value if touch.channel else None


def test_stop_then_start(store: Store, shipped_rules: RuleSet) -> None:
    load_rows(store, customers=[sms_only()])
    http = make_client(store, new_keys())
    assert _birthday(store, shipped_rules) == (Decision.SEND, None, "sms")

    stop = twilio_post(http, "inbound", inbound_params("Stop", sid="SM" + "1" * 32))
    assert stop.status_code == 200
    assert stop.headers["content-type"].startswith("text/xml")
    assert "<Response/>" in stop.text
    assert consent(store, "C1")["sms"] is False
    assert _birthday(store, shipped_rules) == (Decision.SUPPRESS, SuppressionReason.OPTED_OUT, None)

    start = twilio_post(http, "inbound", inbound_params("START", sid="SM" + "2" * 32))
    assert start.status_code == 200
    assert consent(store, "C1")["sms"] is True
    assert _birthday(store, shipped_rules) == (Decision.SEND, None, "sms")

    history = consent_history(store, "C1")
    assert [(e.purpose, e.granted, e.source) for e in history[-2:]] == [
        ("sms", False, "twilio-inbound"),
        ("sms", True, "twilio-inbound"),
    ]
    # A replay of the old STOP (Twilio retrying it late) does not undo the START.
    replay = twilio_post(http, "inbound", inbound_params("Stop", sid="SM" + "1" * 32))
    assert replay.status_code == 200
    assert consent(store, "C1")["sms"] is True
    kinds = [(e.kind, e.provider_status, e.customer_id) for e in provider_events(store)]
    assert kinds == [("inbound", "stop", "C1"), ("inbound", "start", "C1")]
    # The inbound message's location fields are not kept.
    assert all("FromCity" not in e.payload for e in provider_events(store))


@pytest.mark.parametrize("word", ["STOP", " stop. ", "退订", "TD", "unsubscribe", "Cancel", "quit"])
def test_stop_words(sqlite_store: Store, word: str) -> None:
    load_rows(sqlite_store, customers=[sms_only()])
    http = make_client(sqlite_store, new_keys())
    assert twilio_post(http, "inbound", inbound_params(word)).status_code == 200
    assert consent(sqlite_store, "C1")["sms"] is False


def test_advanced_opt_out_type_is_honoured(sqlite_store: Store) -> None:
    load_rows(sqlite_store, customers=[sms_only()])
    http = make_client(sqlite_store, new_keys())
    answer = twilio_post(http, "inbound", inbound_params("arret", OptOutType="STOP"))
    assert answer.status_code == 200
    assert consent(sqlite_store, "C1")["sms"] is False


def test_other_messages_and_start_without_opt_out_change_nothing(sqlite_store: Store) -> None:
    load_rows(
        sqlite_store,
        customers=[sms_only(), sms_only("C2", phone="+8613912348000", consent_sms="false")],
    )
    http = make_client(sqlite_store, new_keys())
    assert twilio_post(http, "inbound", inbound_params("please stop calling me")).status_code == 200
    assert (
        twilio_post(http, "inbound", inbound_params("yes", sid="SM" + "3" * 32)).status_code == 200
    )
    # C2 never gave SMS consent: START does not give it for them.
    c2 = inbound_params("START", sid="SM" + "4" * 32, From="+8613912348000")
    assert twilio_post(http, "inbound", c2).status_code == 200
    assert consent(sqlite_store, "C1")["sms"] is True
    assert consent(sqlite_store, "C2")["sms"] is False
    assert counts(sqlite_store)["consent_events"] == 0
    assert len(provider_events(sqlite_store)) == 3


def test_inbound_from_unknown_number_is_recorded(sqlite_store: Store) -> None:
    load_rows(sqlite_store, customers=[sms_only()])
    http = make_client(sqlite_store, new_keys())
    answer = twilio_post(http, "inbound", inbound_params("STOP", From="+14155550199"))
    assert answer.status_code == 200
    (event,) = provider_events(sqlite_store)
    assert event.customer_id is None and event.payload["From"] == "+1 41****0199"
    assert consent(sqlite_store, "C1")["sms"] is True
    assert counts(sqlite_store)["consent_events"] == 0


def test_inbound_stop_for_shared_number_reaches_every_customer(sqlite_store: Store) -> None:
    load_rows(sqlite_store, customers=[sms_only("C1"), sms_only("C2")])
    http = make_client(sqlite_store, new_keys())
    assert twilio_post(http, "inbound", inbound_params("STOP")).status_code == 200
    assert consent(sqlite_store, "C1")["sms"] is False
    assert consent(sqlite_store, "C2")["sms"] is False


def test_forged_inbound_stop_is_refused(sqlite_store: Store) -> None:
    load_rows(sqlite_store, customers=[sms_only()])
    http = make_client(sqlite_store, new_keys())
    answer = twilio_post(http, "inbound", inbound_params("STOP"), sign_url=INBOUND_URL + "?x=1")
    assert answer.status_code == 403
    assert consent(sqlite_store, "C1")["sms"] is True
    assert counts(sqlite_store) == {"provider_events": 0, "touch_events": 0, "consent_events": 0}


def test_not_configured_is_503_and_writes_nothing(sqlite_store: Store) -> None:
    load_rows(sqlite_store, customers=[sms_only()])
    http = make_client(sqlite_store, new_keys(), twilio=False)
    answer = twilio_post(http, "inbound", inbound_params("STOP"))
    assert answer.status_code == 503
    assert consent(sqlite_store, "C1")["sms"] is True
    assert counts(sqlite_store)["provider_events"] == 0


def test_status_url_without_public_url_is_the_request_url(sqlite_store: Store) -> None:
    from fastapi.testclient import TestClient
    from twilio.request_validator import RequestValidator

    from caretouch.channels.credentials import TwilioCredentials
    from caretouch.web.app import create_standalone_app
    from caretouch.web.webhook_context import WebhookSecrets

    creds = TwilioCredentials("AC" + "0" * 32, AUTH_TOKEN, "+15005550006")
    app = create_standalone_app(
        secrets=WebhookSecrets(twilio=lambda: creds), webhook_store=sqlite_store
    )
    http = TestClient(app, base_url="http://hooks.internal:8790")
    params = status_params("SM" + "c" * 32, "sent")
    url = "http://hooks.internal:8790/care/hooks/twilio/status?attempt=7"
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
    answer = twilio_post(http, "status", params, query={"attempt": "7"}, signature=signature)
    assert answer.status_code == 204
    assert len(provider_events(sqlite_store)) == 1


def test_webhook_logs_hold_no_contact_data(
    sqlite_store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    _, attempt, _ = sent_touch(sqlite_store, tmp_path, sms_only())
    http = make_client(sqlite_store, new_keys())
    query = {"attempt": str(attempt.id)}
    twilio_post(http, "status", status_params(status="failed", ErrorCode="21610"), query=query)
    twilio_post(http, "status", status_params(), query=query, signature="forged")
    twilio_post(http, "inbound", inbound_params("STOP", From="+14155550199"))
    twilio_post(http, "inbound", inbound_params("START", sid="SM" + "5" * 32))
    text = caplog.text
    assert "webhook" in text and "refused (403)" in text
    for raw in ("8613812348000", "4155550199", "wang.fang@"):
        assert raw not in text
