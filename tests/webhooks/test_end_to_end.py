"""The real send path (Twilio and SendGrid SDKs against the simulator), then the providers'
webhooks as they would come back: correlation by the ids our channels actually send, and a
delivery report that arrives before the sender records ``sent``."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from twilio.request_validator import RequestValidator
from webhook_helpers import (
    DAY,
    NOON,
    PUBLIC,
    UNSUBSCRIBE_KEY,
    email_only,
    engine_for,
    new_keys,
    sms_only,
)

from caretouch.channels.base import OutboundMessage, SendResult
from caretouch.channels.credentials import SendGridCredentials, TwilioCredentials
from caretouch.channels.registry import build_transports
from caretouch.ledger import Ledger
from caretouch.run.day import run_day
from caretouch.store.db import Store
from caretouch.vocab import Channel, TouchStatus
from caretouch.web.app import create_standalone_app
from caretouch.web.webhook_context import WebhookSecrets
from conftest import load_rows

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from provider_sim import (
    SENDGRID_API_KEY,
    TWILIO_ACCOUNT_SID,
    TWILIO_AUTH_TOKEN,
    ProviderSim,
)


def test_reports_for_real_sends_arrive_before_sent(
    sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The email channel signs unsubscribe links with it; the webhooks check them with it.
    monkeypatch.setenv("CARE_UNSUBSCRIBE_KEY", UNSUBSCRIBE_KEY.decode())
    load_rows(sqlite_store, customers=[sms_only("S1"), email_only("E1")])
    keys = new_keys()
    with ProviderSim() as sim:
        twilio = TwilioCredentials(
            TWILIO_ACCOUNT_SID,
            TWILIO_AUTH_TOKEN,
            "+15005550006",
            api_base=sim.url,
            public_url=PUBLIC,
        )
        sendgrid = SendGridCredentials(
            SENDGRID_API_KEY,
            "care@example.com",
            api_base=sim.url,
            public_url=PUBLIC,
            webhook_public_key=keys.public_b64,
        )
        http = TestClient(
            create_standalone_app(
                secrets=WebhookSecrets(
                    twilio=lambda: twilio,
                    sendgrid=lambda: sendgrid,
                    unsubscribe_key=lambda: UNSUBSCRIBE_KEY,
                ),
                webhook_store=sqlite_store,
            )
        )
        transports = build_transports(tmp_path / "outbox", twilio=twilio, sendgrid=sendgrid)
        sms = transports[Channel.SMS]
        inner = sms.send_many
        callbacks: list[int] = []

        def send_then_report(messages: Sequence[OutboundMessage]) -> list[SendResult]:
            """Twilio reports delivery before our sender has recorded its answer."""
            results = inner(messages)
            for message in sim.accepted("twilio"):
                assert message.status_callback is not None
                parts = urlsplit(message.status_callback)
                assert f"{parts.scheme}://{parts.netloc}" == PUBLIC
                params = {"MessageSid": message.id, "MessageStatus": "delivered", "To": message.to}
                signature = RequestValidator(TWILIO_AUTH_TOKEN).compute_signature(
                    message.status_callback, params
                )
                answer = http.post(
                    f"{parts.path}?{parts.query}",
                    content=urlencode(params),
                    headers={
                        "Content-Type": "application/x-www-form-urlencoded",
                        "X-Twilio-Signature": signature,
                    },
                )
                callbacks.append(answer.status_code)
            return results

        sms.send_many = send_then_report  # type: ignore[method-assign]
        engine = replace(engine_for(sqlite_store, tmp_path), transports=transports)
        report = run_day(engine, DAY, run_id="t-real", now=NOON)
        assert (report.sent, report.failed) == (2, 0)
        assert callbacks == [204]
        (email,) = sim.accepted("sendgrid")

    ledger = Ledger(sqlite_store)
    states = {s.row.customer_id: s for s in ledger.states_for_day(DAY)}
    sms_touch = states["S1"]
    assert sms_touch.status is TouchStatus.DELIVERED
    assert [e.status for e in ledger.history(sms_touch.id)] == [
        "planned",
        "sending",
        "delivered",
        "sent",
    ]
    # SendGrid: the event carries our custom_args and an sg_message_id built on X-Message-Id.
    assert email.custom_args.get("care_attempt")
    event = {
        "email": email.to,
        "event": "delivered",
        "sg_event_id": "e2e-delivered-1",
        "sg_message_id": f"{email.id}.filter0001.12345.0",
        "timestamp": 1795435200,
        **email.custom_args,
    }
    payload = json.dumps([event])
    signature = base64.b64encode(
        keys.private.sign(("1795435200" + payload).encode(), ec.ECDSA(hashes.SHA256()))
    ).decode()
    answer = http.post(
        "/care/hooks/sendgrid/events",
        content=payload,
        headers={
            "X-Twilio-Email-Event-Webhook-Signature": signature,
            "X-Twilio-Email-Event-Webhook-Timestamp": "1795435200",
        },
    )
    assert answer.status_code == 200 and answer.json()["new"] == 1
    assert ledger.states([states["E1"].id])[0].status is TouchStatus.DELIVERED
