"""No personal data and no secret in any log line while sending, even at DEBUG level."""

from __future__ import annotations

import logging

import pytest
from provider_sim import (
    SENDGRID_API_KEY,
    TWILIO_ACCOUNT_SID,
    TWILIO_AUTH_TOKEN,
    ProviderSim,
)
from sim_channels import as_sent

from caretouch.channels.base import OutboundMessage
from caretouch.channels.credentials import SendGridCredentials, TwilioCredentials
from caretouch.channels.limits import Backoff
from caretouch.channels.sendgrid import SendGridTransport
from caretouch.channels.twilio import TwilioTransport
from caretouch.vocab import Channel, Outcome

PHONE = "+8613812348000"
EMAIL = "wang.fang@example.com"


def message(channel: Channel, recipient: str) -> OutboundMessage:
    return OutboundMessage(
        touch_key="birthday|customer:C1|2026-11-23",
        attempt_no=1,
        channel=channel,
        recipient=recipient,
        body="王芳，生日快乐！",
        subject="生日快乐",
        html="<p>王芳，生日快乐！</p>",
        attempt_id=9,
        metadata={"customer_id": "C1", "category": "care", "locale": "zh-CN"},
    )


def test_sending_logs_no_address_and_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    waits: list[float] = []
    # Every other request fails with a 503 and some are held past the timeout: retries,
    # error paths and a reconcile (a list query by phone number) all run and log.
    with ProviderSim(
        rate_503=0.3, rate_timeout=0.2, timeout_hold_s=1.0, timeout_after_accept=1.0, seed=3
    ) as sim:
        sms = TwilioTransport(
            TwilioCredentials(
                TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, "+15005550006", api_base=sim.url
            ),
            timeout=0.5,
            backoff=Backoff(tries=6, base=0.01, cap=0.02),
            sleep=waits.append,
        )
        email = SendGridTransport(
            SendGridCredentials(
                SENDGRID_API_KEY,
                "care@example.com",
                api_base=sim.url,
                public_url="https://care.example",
            ),
            timeout=0.5,
            backoff=Backoff(tries=6, base=0.01, cap=0.02),
            sleep=waits.append,
        )
        results = [sms.send(message(Channel.SMS, PHONE)) for _ in range(4)]
        # As the runner hands it over: with the unsubscribe link render.unsubscribe puts in.
        mail = as_sent(message(Channel.EMAIL, EMAIL), "https://care.example/care/hooks/unsubscribe")
        results += [email.send(mail) for _ in range(4)]
        faults = sim.request_counts()
    assert sum(faults.values()) > 8, "faults were injected, so error paths ran"
    assert {r.outcome for r in results} <= {
        Outcome.SENT,
        Outcome.UNKNOWN,
        Outcome.RETRYABLE_FAILURE,
    }
    text = caplog.text
    assert text, "something was logged (the check can see log lines)"
    for secret in (PHONE, PHONE[1:], "13812348000", EMAIL, TWILIO_AUTH_TOKEN, SENDGRID_API_KEY):
        assert secret not in text, f"{secret!r} appears in the logs"
