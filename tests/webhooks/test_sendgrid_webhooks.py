"""SendGrid's signed Event Webhook: signatures, delivery, bounces, opt-outs, replays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from webhook_helpers import (
    DAY,
    consent,
    counts,
    email_only,
    new_keys,
    provider_events,
    sendgrid_post,
    sent_touch,
)
from webhook_helpers import client as make_client

from caretouch.ledger import Ledger
from caretouch.plan import plan_day
from caretouch.rules.loader import RuleSet
from caretouch.store.consent import consent_history
from caretouch.store.db import Store
from caretouch.vocab import Decision, SuppressionReason, TouchStatus
from conftest import load_rows


def sg_event(kind: str, event_id: str, attempt: int | None = None, **extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "email": "wang.fang@example.com",
        "timestamp": 1795435200,
        "event": kind,
        "sg_event_id": event_id,
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
        "ip": "203.0.113.7",
        "useragent": "Mozilla/5.0",
        "category": ["care"],
        **extra,
    }
    if attempt is not None:
        event["care_attempt"] = str(attempt)
        event["care_touch"] = "birthday|customer:C1|2026-11-23"
    return event


def test_signed_batch_records_each_event_once(store: Store, tmp_path: Path) -> None:
    touch_id, attempt, _ = sent_touch(store, tmp_path, email_only())
    keys = new_keys()
    http = make_client(store, keys)
    batch = [
        sg_event("processed", "ev-1", attempt.id),
        sg_event("delivered", "ev-2", attempt.id, response="250 OK"),
        sg_event("open", "ev-3", attempt.id),
    ]
    answer = sendgrid_post(http, batch, keys)
    assert answer.status_code == 200
    assert answer.json() == {"received": 3, "new": 3}
    events = provider_events(store)
    assert [(e.kind, e.status, e.touch_id) for e in events] == [
        ("processed", None, touch_id),
        ("delivered", "delivered", touch_id),
        ("open", None, touch_id),
    ]
    assert events[1].payload["email"] == "w***@example.com"
    assert "ip" not in events[1].payload and "useragent" not in events[1].payload
    (state,) = Ledger(store).states([touch_id])
    assert state.status is TouchStatus.DELIVERED
    # Replayed (SendGrid retries a batch it thinks failed): nothing new.
    before = counts(store)
    again = sendgrid_post(http, batch, keys)
    assert again.status_code == 200 and again.json() == {"received": 3, "new": 0}
    assert counts(store) == before


def test_event_matched_by_message_id_prefix(sqlite_store: Store, tmp_path: Path) -> None:
    touch_id, attempt, message_id = sent_touch(sqlite_store, tmp_path, email_only())
    keys = new_keys()
    http = make_client(sqlite_store, keys)
    event = sg_event("delivered", "ev-9", sg_message_id=f"{message_id}.filter0123.4567.0")
    assert sendgrid_post(http, [event], keys).status_code == 200
    (row,) = provider_events(sqlite_store)
    assert (row.touch_id, row.attempt_id) == (touch_id, attempt.id)


def _birthday(store: Store, ruleset: RuleSet) -> tuple[Decision, SuppressionReason | None]:
    (touch,) = [t for t in plan_day(store, ruleset, DAY) if t.rule.id == "birthday"]
    return touch.decision, touch.reason


@pytest.mark.parametrize(
    ("kind", "extra"),
    [
        ("bounce", {"type": "bounce", "reason": "550 5.1.1 wang.fang@example.com unknown"}),
        ("dropped", {"reason": "Bounced Address"}),
        ("spamreport", {}),
        ("unsubscribe", {}),
        ("group_unsubscribe", {"asm_group_id": 42}),
    ],
)
def test_opt_out_events_withdraw_email_consent(
    sqlite_store: Store, tmp_path: Path, shipped_rules: RuleSet, kind: str, extra: dict[str, Any]
) -> None:
    touch_id, attempt, _ = sent_touch(sqlite_store, tmp_path, email_only())
    keys = new_keys()
    http = make_client(sqlite_store, keys)
    answer = sendgrid_post(http, [sg_event(kind, f"ev-{kind}", attempt.id, **extra)], keys)
    assert answer.status_code == 200
    assert consent(sqlite_store, "C1")["email"] is False
    assert consent_history(sqlite_store, "C1")[-1].source == f"sendgrid-{kind}"
    # The customer is not emailed again: the next plan says opted_out.
    assert _birthday(sqlite_store, shipped_rules) == (
        Decision.SUPPRESS,
        SuppressionReason.OPTED_OUT,
    )
    expected = {"bounce": TouchStatus.BOUNCED, "dropped": TouchStatus.FAILED}.get(
        kind, TouchStatus.SENT
    )
    assert Ledger(sqlite_store).states([touch_id])[0].status is expected
    # The bounce reason kept in the ledger has the address masked.
    if kind == "bounce":
        detail = Ledger(sqlite_store).history(touch_id)[-1].detail
        assert "wang.fang@" not in str(detail) and "w***@example.com" in detail["reason"]


def test_blocked_bounce_and_other_drops_keep_consent(sqlite_store: Store, tmp_path: Path) -> None:
    touch_id, attempt, _ = sent_touch(sqlite_store, tmp_path, email_only())
    keys = new_keys()
    http = make_client(sqlite_store, keys)
    batch = [
        sg_event("bounce", "ev-b", attempt.id, type="blocked", reason="IP blocklisted"),
        sg_event("deferred", "ev-d", attempt.id, response="421 try later"),
    ]
    assert sendgrid_post(http, batch, keys).status_code == 200
    assert consent(sqlite_store, "C1")["email"] is True
    assert Ledger(sqlite_store).states([touch_id])[0].status is TouchStatus.UNDELIVERED


def test_bounce_of_an_unknown_message_finds_the_customer_by_address(sqlite_store: Store) -> None:
    load_rows(sqlite_store, customers=[email_only(email="Wang.Fang@Example.com")])
    keys = new_keys()
    http = make_client(sqlite_store, keys)
    event = sg_event("bounce", "ev-x", sg_message_id="unknown.filter1", type="bounce")
    assert sendgrid_post(http, [event], keys).status_code == 200
    (row,) = provider_events(sqlite_store)
    assert row.touch_id is None
    assert consent(sqlite_store, "C1")["email"] is False


@pytest.mark.parametrize("how", ["unsigned", "other key", "tampered", "garbage", "bad base64"])
def test_forged_batch_is_refused_and_writes_nothing(store: Store, tmp_path: Path, how: str) -> None:
    touch_id, attempt, _ = sent_touch(store, tmp_path, email_only())
    keys = new_keys()
    http = make_client(store, keys)
    batch = [sg_event("delivered", "ev-f", attempt.id)]
    before = counts(store)
    if how == "unsigned":
        answer = sendgrid_post(http, batch, keys, signature="")
    elif how == "other key":
        answer = sendgrid_post(http, batch, new_keys())
    elif how == "tampered":
        answer = sendgrid_post(http, batch, keys, tamper=True)
    elif how == "garbage":
        answer = sendgrid_post(http, batch, keys, signature="MEUCIQDnotasignatureatall==")
    else:
        answer = sendgrid_post(http, batch, keys, signature="%%%not base64%%%")
    assert answer.status_code == 403
    assert counts(store) == before
    assert consent(store, "C1")["email"] is True
    assert Ledger(store).states([touch_id])[0].status is TouchStatus.SENT


def test_changed_timestamp_is_refused(sqlite_store: Store) -> None:
    keys = new_keys()
    http = make_client(sqlite_store, keys)
    good = sendgrid_post(http, [sg_event("open", "ev-t")], keys, timestamp="1795435200")
    assert good.status_code == 200
    import base64

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    payload = '[{"event":"open","sg_event_id":"ev-t2"}]'
    signature = base64.b64encode(
        keys.private.sign(("1795435200" + payload).encode(), ec.ECDSA(hashes.SHA256()))
    ).decode()
    answer = http.post(
        "/care/hooks/sendgrid/events",
        content=payload,
        headers={
            "X-Twilio-Email-Event-Webhook-Signature": signature,
            "X-Twilio-Email-Event-Webhook-Timestamp": "1795435201",
        },
    )
    assert answer.status_code == 403
    assert len(provider_events(sqlite_store)) == 1


def test_signed_but_malformed_batch_is_400(sqlite_store: Store) -> None:
    keys = new_keys()
    http = make_client(sqlite_store, keys)
    assert sendgrid_post(http, ["not an object"], keys).status_code == 400  # type: ignore[list-item]
    assert counts(sqlite_store)["provider_events"] == 0


def test_without_verification_key_nothing_is_accepted(sqlite_store: Store) -> None:
    keys = new_keys()
    http = make_client(sqlite_store, keys, sendgrid=False)
    answer = sendgrid_post(http, [sg_event("delivered", "ev-n")], keys)
    assert answer.status_code == 503
    assert counts(sqlite_store)["provider_events"] == 0


def test_long_message_id_is_kept_not_refused(store: Store, tmp_path: Path) -> None:
    touch_id, attempt, _ = sent_touch(store, tmp_path, email_only())
    keys = new_keys()
    http = make_client(store, keys)
    long_id = "x" * 150 + ".filter0001.16648.5515E0B88.0"
    event = sg_event("delivered", "ev-long", attempt.id, sg_message_id=long_id)
    assert sendgrid_post(http, [event], keys).status_code == 200
    (row,) = provider_events(store)
    assert row.provider_message_id == long_id
    assert Ledger(store).states([touch_id])[0].status is TouchStatus.DELIVERED
