"""A delivery receipt that arrives before the sender records ``sent`` is not undone by it."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import delete
from webhook_helpers import (
    NOON,
    claimed_touch,
    email_only,
    new_keys,
    provider_events,
    sendgrid_post,
    sms_only,
    twilio_post,
)
from webhook_helpers import client as make_client

from caretouch.ledger import Claim, Ledger, StatusChange
from caretouch.ledger.audit import Filters, touch_detail, touches, verify
from caretouch.ledger.models import TouchCurrent
from caretouch.render.templates import RenderedMessage
from caretouch.store.db import Store
from caretouch.vocab import Channel, TouchStatus

SID = "SM" + "d" * 32


def _everyone_agrees(store: Store, touch_id: int, status: TouchStatus) -> None:
    """The ledger's readers, the audit view and a rebuilt touch_current all say ``status``."""
    ledger = Ledger(store)
    (state,) = ledger.states([touch_id])
    assert state.status is status
    assert touch_id in ledger.touch_ids_in_status({status})
    assert touch_id not in ledger.touch_ids_in_status(set(TouchStatus) - {status})
    (row,) = touches(store, Filters(status=status.value))
    assert row["touch_id"] == touch_id
    assert touch_detail(store, touch_id)["status"] == status.value
    # touch_current is derived: rebuilt from the events alone, it says the same.
    with store.session() as session:
        session.execute(delete(TouchCurrent))
    with store.session() as session:
        Ledger.refresh_current(session)
    (again,) = ledger.states([touch_id])
    assert again.status is status


def test_delivered_before_sent(store: Store, tmp_path: Path) -> None:
    touch_id, attempt = claimed_touch(store, tmp_path, sms_only())
    ledger = Ledger(store)
    assert ledger.states([touch_id])[0].status is TouchStatus.SENDING
    http = make_client(store, new_keys())
    # Twilio calls back "delivered" while the sender has not recorded its answer yet.
    answer = twilio_post(
        http,
        "status",
        {"MessageSid": SID, "MessageStatus": "delivered", "To": "+8613812348000"},
        query={"attempt": str(attempt.id)},
    )
    assert answer.status_code == 204
    assert ledger.states([touch_id])[0].status is TouchStatus.DELIVERED
    # Then the sender's batch records "sent" with the provider's id.
    ledger.append_many(
        [
            StatusChange(
                touch_id,
                TouchStatus.SENT,
                attempt_id=attempt.id,
                provider_message_id=SID,
                expected=TouchStatus.SENDING,
            )
        ],
        run_id="t-sender",
        now=NOON,
    )
    history = [e.status for e in ledger.history(touch_id)]
    assert history == ["planned", "sending", "delivered", "sent"]
    _everyone_agrees(store, touch_id, TouchStatus.DELIVERED)
    # The touch is handled: a rerun does not plan or claim it again.
    assert ledger.final_keys([ledger.states([touch_id])[0].row.touch_key])
    assert verify(store).ok


def test_bounce_before_sent_then_unknown(sqlite_store: Store, tmp_path: Path) -> None:
    touch_id, attempt = claimed_touch(sqlite_store, tmp_path, email_only())
    http = make_client(sqlite_store, keys := new_keys())
    event = {
        "email": "wang.fang@example.com",
        "event": "bounce",
        "type": "bounce",
        "reason": "550 5.1.1 user unknown",
        "sg_event_id": "ev-bounce-1",
        "sg_message_id": "msg1.filter0001.1.0",
        "care_attempt": str(attempt.id),
        "timestamp": 1795435200,
    }
    assert sendgrid_post(http, [event], keys).status_code == 200
    ledger = Ledger(sqlite_store)
    # The sender timed out waiting for SendGrid: "unknown" does not hide the bounce either.
    ledger.append_many(
        [
            StatusChange(
                touch_id, TouchStatus.UNKNOWN, "unknown", attempt.id, expected=TouchStatus.SENDING
            )
        ],
        run_id="t-sender",
        now=NOON,
    )
    _everyone_agrees(sqlite_store, touch_id, TouchStatus.BOUNCED)
    assert provider_events(sqlite_store)[0].occurred_at is not None


def test_a_new_attempt_moves_the_status_on(store: Store, tmp_path: Path) -> None:
    touch_id, attempt = claimed_touch(store, tmp_path, sms_only())
    http = make_client(store, new_keys())
    answer = twilio_post(
        http,
        "status",
        {"MessageSid": SID, "MessageStatus": "undelivered", "ErrorCode": "30003"},
        query={"attempt": str(attempt.id)},
    )
    assert answer.status_code == 204
    ledger = Ledger(store)
    assert ledger.states([touch_id])[0].status is TouchStatus.UNDELIVERED
    # An operator (or a future resend rule) plans the touch again: a status event without
    # an attempt replaces the receipt, and attempt 2 goes through the usual states.
    ledger.append(
        touch_id,
        TouchStatus.PLANNED,
        expected=TouchStatus.UNDELIVERED,
        reason="resend",
        run_id="t-op",
        now=NOON,
    )
    (state,) = ledger.states([touch_id])
    assert state.status is TouchStatus.PLANNED
    won = ledger.claim_many(
        [
            Claim(
                state,
                "sms",
                "twilio",
                "+8613812348000",
                "0" * 64,
                RenderedMessage(Channel.SMS, "生日快乐"),
            )
        ],
        run_id="t-claim-2",
        now=NOON,
    )
    second = won[touch_id]
    assert second.attempt_no == 2
    assert ledger.states([touch_id])[0].status is TouchStatus.SENDING
    ledger.append_many(
        [
            StatusChange(
                touch_id,
                TouchStatus.SENT,
                attempt_id=second.id,
                provider_message_id="SM2",
                expected=TouchStatus.SENDING,
            )
        ],
        run_id="t-sender",
        now=NOON,
    )
    _everyone_agrees(store, touch_id, TouchStatus.SENT)


def test_sender_failure_after_a_receipt_of_another_attempt_counts(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """Precedence is per attempt: a receipt of attempt 1 does not mask attempt 2's events."""
    touch_id, attempt = claimed_touch(sqlite_store, tmp_path, sms_only())
    ledger = Ledger(sqlite_store)
    ledger.append_many(
        [
            StatusChange(
                touch_id, TouchStatus.PLANNED, "retry", attempt.id, expected=TouchStatus.SENDING
            )
        ],
        run_id="t-sender",
        now=NOON,
    )
    http = make_client(sqlite_store, new_keys())
    # A late "failed" receipt for attempt 1: the touch stays failed, not retried.
    answer = twilio_post(
        http,
        "status",
        {"MessageSid": SID, "MessageStatus": "failed", "ErrorCode": "30008"},
        query={"attempt": str(attempt.id)},
    )
    assert answer.status_code == 204
    _everyone_agrees(sqlite_store, touch_id, TouchStatus.FAILED)
