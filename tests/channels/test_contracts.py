"""Contract tests: our channels, through the official SDKs, against the providers' contracts.

Prism serves ``twilio_messages.json`` and ``sendgrid_mail_send.json`` (the providers' own
OpenAPI descriptions) and validates every request; a test passes only when Prism logged no
violation for what we sent. The negative controls show the check catches a broken request.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator

import pytest
from prism import PRISM, SENDGRID_CONTRACT, TWILIO_CONTRACT, PrismServer, in_ci
from sim_channels import as_sent

from caretouch.channels.base import OutboundMessage
from caretouch.channels.credentials import SendGridCredentials, TwilioCredentials
from caretouch.channels.sendgrid import SendGridTransport
from caretouch.channels.twilio import TwilioTransport
from caretouch.vocab import Channel, Outcome

pytestmark = pytest.mark.slow

SID = "AC" + "0" * 32
SECRET = b"unsubscribe-secret-for-tests-0123456789"


def _need_prism() -> None:
    reason = None
    if not TWILIO_CONTRACT.is_file():
        reason = f"provider contracts not found at {TWILIO_CONTRACT.parent}"
    elif not PRISM.exists():
        reason = (
            "Prism is not installed (`make prism` installs it with npm)"
            if shutil.which("npm")
            else "npm is unavailable, so Prism cannot be installed"
        )
    if reason:
        if in_ci():
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def twilio_prism() -> Iterator[PrismServer]:
    _need_prism()
    server = PrismServer(TWILIO_CONTRACT).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sendgrid_prism() -> Iterator[PrismServer]:
    _need_prism()
    server = PrismServer(SENDGRID_CONTRACT).start()
    yield server
    server.stop()


def sms(body: str, *, attempt_id: int | None = 41) -> OutboundMessage:
    return OutboundMessage(
        touch_key="birthday|customer:C0001|2026-11-23",
        attempt_no=1,
        channel=Channel.SMS,
        recipient="+8613800138000",
        body=body,
        attempt_id=attempt_id,
        metadata={"customer_id": "C0001", "category": "care", "locale": "zh-CN"},
    )


def email(category: str, *, html: str | None, locale: str = "en") -> OutboundMessage:
    """An email as the runner hands it to SendGrid (with its unsubscribe link, if any)."""
    message = OutboundMessage(
        touch_key=f"{category}-rule|customer:C0002|2026-11-23",
        attempt_no=1,
        channel=Channel.EMAIL,
        recipient="li.na@example.com",
        subject="生日快乐 / Happy birthday",
        body="Dear Li Na,\nhappy birthday.",
        html=html,
        attempt_id=42,
        metadata={"customer_id": "C0002", "category": category, "locale": locale},
    )
    return as_sent(message, "https://care.example/care/hooks/unsubscribe", SECRET)


TWILIO_CASES = {
    "plain": (sms("Happy birthday, Li Na!"), "+15005550006"),
    "chinese, several segments": (sms("亲爱的李娜，祝您生日快乐！" * 20), "+15005550006"),
    "near the 1600 limit": (sms("x" * 1600), "+15005550006"),
    "messaging service sender": (sms("Hello"), "MG" + "1" * 32),
    "no status callback": (sms("Hello", attempt_id=None), "+15005550006"),
}


@pytest.mark.parametrize("case", list(TWILIO_CASES))
def test_twilio_messages_pass_the_contract(twilio_prism: PrismServer, case: str) -> None:
    message, sender = TWILIO_CASES[case]
    transport = TwilioTransport(
        TwilioCredentials(
            SID, "token", sender, api_base=twilio_prism.url, public_url="https://care.example"
        )
    )
    mark = twilio_prism.mark()
    result = transport.send(message)
    assert len(twilio_prism.requests(mark)) == 1
    assert twilio_prism.violations(mark) == []
    assert result.outcome is Outcome.SENT, result
    assert result.provider_message_id and result.provider_message_id.startswith("SM")


def test_twilio_reconcile_lookup_passes_the_contract(twilio_prism: PrismServer) -> None:
    transport = TwilioTransport(
        TwilioCredentials(SID, "token", "+15005550006", api_base=twilio_prism.url)
    )
    mark = twilio_prism.mark()
    transport.reconcile(sms("Happy birthday"))
    assert twilio_prism.requests(mark), "reconcile asked Twilio's message list"
    assert twilio_prism.violations(mark) == []


def test_twilio_contract_check_catches_a_bad_request(twilio_prism: PrismServer) -> None:
    """Negative control: a message without a recipient breaks the contract, and we see it."""
    transport = TwilioTransport(
        TwilioCredentials(SID, "token", "+15005550006", api_base=twilio_prism.url)
    )
    mark = twilio_prism.mark()
    with contextlib.suppress(Exception):  # Prism answers the violation with an error status
        transport.client().request(
            "POST",
            f"{twilio_prism.url}/2010-04-01/Accounts/{SID}/Messages.json",
            data={"From": "+15005550006", "Body": "no recipient"},
        )
    assert twilio_prism.violations(mark), "Prism should have flagged the missing To"


SENDGRID_CASES = {
    "care email, HTML + text, unsubscribe link": email(
        "care", html="<html><body><p>Hi</p></body></html>"
    ),
    "marketing email, zh-CN": email("marketing", html="<p>你好</p>", locale="zh-CN"),
    "service email, no unsubscribe": email("service", html="<p>Your renewal</p>"),
    "text only": email("care", html=None),
}


@pytest.mark.parametrize("case", list(SENDGRID_CASES))
def test_sendgrid_mail_passes_the_contract(sendgrid_prism: PrismServer, case: str) -> None:
    transport = SendGridTransport(
        SendGridCredentials(
            "SG.test-key",
            "care@example.com",
            api_base=sendgrid_prism.url,
            public_url="https://care.example",
        ),
    )
    message = SENDGRID_CASES[case]
    payload = transport.build_payload(message)
    mark = sendgrid_prism.mark()
    result = transport.send(message)
    assert len(sendgrid_prism.requests(mark)) == 1
    assert sendgrid_prism.violations(mark) == []
    assert result.outcome is Outcome.SENT, result
    headers = payload.get("headers", {})
    if message.metadata["category"] in ("care", "marketing"):
        assert headers["List-Unsubscribe"].startswith(
            "<https://care.example/care/hooks/unsubscribe?t="
        )
        assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert "/care/hooks/unsubscribe?t=" in payload["content"][0]["value"]
    else:
        assert "List-Unsubscribe" not in headers
    kinds = [c["type"] for c in payload["content"]]
    assert kinds == (["text/plain", "text/html"] if message.html else ["text/plain"])
    assert payload["personalizations"][0]["custom_args"]["care_attempt"] == "42"


def test_sendgrid_contract_check_catches_a_bad_request(sendgrid_prism: PrismServer) -> None:
    """Negative control: no personalizations breaks the contract, and we see it."""
    transport = SendGridTransport(
        SendGridCredentials(
            "SG.test-key",
            "care@example.com",
            api_base=sendgrid_prism.url,
            public_url="https://care.example",
        ),
    )
    payload = transport.build_payload(email("service", html=None))
    del payload["personalizations"]
    mark = sendgrid_prism.mark()
    result = transport.parse_error(_raises(lambda: transport.post(payload)))
    assert sendgrid_prism.violations(mark)
    assert result.outcome is Outcome.PERMANENT_FAILURE


def _raises(call: object) -> Exception:
    try:
        call()  # type: ignore[operator]
    except Exception as exc:
        return exc
    raise AssertionError("expected the provider to refuse the request")
