"""Shared set-up of the webhook tests: signed requests as Twilio and SendGrid make them."""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from caretouch.channels.credentials import SendGridCredentials, TwilioCredentials
from caretouch.config import CareConfig
from caretouch.ledger import Claim, Ledger
from caretouch.ledger.models import Attempt, ProviderEventRow, TouchEvent
from caretouch.render.templates import RenderedMessage
from caretouch.run.day import plan_and_record, run_day
from caretouch.run.engine import CareEngine, open_engine
from caretouch.store.db import Store
from caretouch.store.models import ConsentEvent
from caretouch.vocab import Channel
from caretouch.web.app import create_standalone_app
from caretouch.web.webhook_context import WebhookSecrets
from conftest import RULES_DIR, TEMPLATES_DIR, customer_row, load_rows, utc

DAY = dt.date(2026, 11, 23)
NOON = utc(2026, 11, 23, 12)
LATER = utc(2026, 11, 23, 12, 5)
PUBLIC = "https://care.example.com"
AUTH_TOKEN = "twilio-auth-token-for-tests"
UNSUBSCRIBE_KEY = b"unsubscribe-key-for-tests-0123456789"
STATUS_URL = PUBLIC + "/care/hooks/twilio/status"
INBOUND_URL = PUBLIC + "/care/hooks/twilio/inbound"


@dataclass
class Keys:
    private: ec.EllipticCurvePrivateKey
    public_b64: str  # as SendGrid shows it: base64 of the DER SubjectPublicKeyInfo


def new_keys() -> Keys:
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Keys(private, base64.b64encode(der).decode())


def sources(keys: Keys, *, twilio: bool = True, sendgrid: bool = True) -> WebhookSecrets:
    return WebhookSecrets(
        twilio=lambda: (
            TwilioCredentials("AC" + "0" * 32, AUTH_TOKEN, "+15005550006", public_url=PUBLIC)
            if twilio
            else None
        ),
        sendgrid=lambda: (
            SendGridCredentials(
                "SG.key", "care@example.com", public_url=PUBLIC, webhook_public_key=keys.public_b64
            )
            if sendgrid
            else None
        ),
        unsubscribe_key=lambda: UNSUBSCRIBE_KEY,
    )


def client(store: Store, keys: Keys, **kw: Any) -> TestClient:
    app = create_standalone_app(
        secrets=sources(keys, **kw), webhook_store=store, clock=lambda: LATER
    )
    return TestClient(app, base_url="http://testserver")


def status_params(
    sid: str = "SM" + "a" * 32, status: str = "delivered", **extra: str
) -> dict[str, str]:
    """A Twilio status callback's form."""
    return {
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": status,
        "SmsStatus": status,
        "AccountSid": "AC" + "0" * 32,
        "To": "+8613812348000",
        "From": "+15005550006",
        "ApiVersion": "2010-04-01",
        **extra,
    }


def twilio_post(
    http: TestClient,
    route: str,
    params: dict[str, str],
    *,
    query: dict[str, str] | None = None,
    token: str = AUTH_TOKEN,
    signature: str | None = None,
    sign_url: str | None = None,
) -> Any:
    """POST as Twilio does: a form, signed over the public URL and the parameters."""
    suffix = ("?" + urlencode(query)) if query else ""
    url = PUBLIC + "/care/hooks/twilio/" + route + suffix
    if signature is None:
        signature = RequestValidator(token).compute_signature(sign_url or url, params)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signature:
        headers["X-Twilio-Signature"] = signature
    return http.post(
        "/care/hooks/twilio/" + route + suffix, content=urlencode(params), headers=headers
    )


def sendgrid_post(
    http: TestClient,
    events: list[dict[str, Any]],
    keys: Keys,
    *,
    timestamp: str = "1795435200",
    tamper: bool = False,
    signature: str | None = None,
) -> Any:
    payload = json.dumps(events, ensure_ascii=False, separators=(",", ":"))
    if signature is None:
        raw = keys.private.sign((timestamp + payload).encode(), ec.ECDSA(hashes.SHA256()))
        signature = base64.b64encode(raw).decode()
    if tamper:
        payload = payload.replace("delivered", "bounce")
    headers = {"Content-Type": "application/json"}
    if signature:
        headers["X-Twilio-Email-Event-Webhook-Signature"] = signature
        headers["X-Twilio-Email-Event-Webhook-Timestamp"] = timestamp
    return http.post("/care/hooks/sendgrid/events", content=payload.encode(), headers=headers)


def engine_for(store: Store, tmp_path: Path) -> CareEngine:
    config = CareConfig(store.url, RULES_DIR, TEMPLATES_DIR, tmp_path / "outbox")
    engine = open_engine(config, store=store)
    return engine


def sms_only(customer_id: str = "C1", **kw: Any) -> dict[str, str]:
    return customer_row(customer_id, email="", consent_email="false", **kw)


def email_only(customer_id: str = "C1", **kw: Any) -> dict[str, str]:
    return customer_row(customer_id, phone="", consent_sms="false", **kw)


def sent_touch(store: Store, tmp_path: Path, customer: dict[str, str]) -> tuple[int, Attempt, str]:
    """One birthday touch sent through the outbox: (touch id, attempt, provider message id)."""
    load_rows(store, customers=[customer])
    report = run_day(engine_for(store, tmp_path), DAY, run_id="t-send", now=NOON)
    assert report.sent == 1
    ledger = Ledger(store)
    (state,) = ledger.states_for_day(DAY)
    attempt = ledger.attempts(state.id)[-1]
    (sent,) = [e for e in ledger.history(state.id) if e.status == "sent"]
    return state.id, attempt, str(sent.provider_message_id)


def claimed_touch(store: Store, tmp_path: Path, customer: dict[str, str]) -> tuple[int, Attempt]:
    """One birthday touch claimed (``sending``) as a sender does before calling the provider."""
    load_rows(store, customers=[customer])
    engine = engine_for(store, tmp_path)
    ids = plan_and_record(engine, DAY, run_id="t-plan", now=NOON)
    ledger = Ledger(store)
    (state,) = ledger.states(ids)
    channel = state.channel or "sms"
    won = ledger.claim_many(
        [
            Claim(
                state=state,
                channel=channel,
                transport="twilio" if channel == "sms" else "sendgrid",
                recipient=customer["phone"] if channel == "sms" else customer["email"],
                template_hash="0" * 64,
                message=RenderedMessage(
                    Channel(channel), "生日快乐", "subject" if channel == "email" else None
                ),
            )
        ],
        run_id="t-claim",
        now=NOON,
    )
    return state.id, won[state.id]


def counts(store: Store) -> dict[str, int]:
    """Rows in the tables a webhook may write."""
    with store.read_session() as session:
        return {
            name: session.scalar(select(func.count()).select_from(model)) or 0
            for name, model in (
                ("provider_events", ProviderEventRow),
                ("touch_events", TouchEvent),
                ("consent_events", ConsentEvent),
            )
        }


def provider_events(store: Store) -> list[ProviderEventRow]:
    with store.read_session() as session:
        return list(session.scalars(select(ProviderEventRow).order_by(ProviderEventRow.id)))


def consent(store: Store, customer_id: str) -> dict[str, bool]:
    from caretouch.store.models import Customer

    with store.read_session() as session:
        c = session.scalars(select(Customer).where(Customer.customer_id == customer_id)).one()
        return {"sms": c.consent_sms, "email": c.consent_email, "marketing": c.consent_marketing}
