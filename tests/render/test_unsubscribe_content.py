"""Unsubscribe links are content built in render/ (``render.unsubscribe``) and handed to the
channel in the message; SendGrid receives exactly what it did when the channel built them.

``sendgrid_payloads_before.json`` holds the payloads main's ``SendGridTransport`` built
(link, words and headers made inside the channel) for the messages below.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from caretouch.channels.base import OutboundMessage
from caretouch.channels.credentials import SendGridCredentials
from caretouch.channels.sendgrid import SendGridTransport
from caretouch.render import RenderedMessage
from caretouch.render.unsubscribe import UnsubscribeLinks, read_token
from caretouch.vocab import Channel

KEY = b"unsubscribe-secret-for-tests-0123456789"
BEFORE = json.loads(Path(__file__).with_name("sendgrid_payloads_before.json").read_text("utf-8"))


def _message(category: str, locale: str, html: str | None) -> OutboundMessage:
    return OutboundMessage(
        touch_key=f"{category}-rule|customer:C0002|2026-11-23",
        attempt_no=1,
        channel=Channel.EMAIL,
        recipient="li.na@example.com",
        subject="生日快乐 / Happy birthday",
        body="Dear Li Na,\nhappy birthday.",
        html=html,
        attempt_id=42,
        metadata={"customer_id": "C0002&x=<1>", "category": category, "locale": locale},
    )


@pytest.mark.parametrize("case", BEFORE, ids=lambda c: "-".join(c["case"][:2]))
def test_sendgrid_receives_what_it_did_before(case: dict) -> None:
    transport = SendGridTransport(
        SendGridCredentials("SG.test-key", "care@example.com", public_url="https://care.example")
    )
    assert transport.unsubscribe_base == "https://care.example/care/hooks/unsubscribe"
    message = _message(*case["case"])
    # What the runner does (run.runner._message): the link goes into the rendered content.
    rendered = UnsubscribeLinks(transport.unsubscribe_base, KEY).add_to(
        RenderedMessage(Channel.EMAIL, message.body, message.subject, message.html),
        customer_id=message.metadata["customer_id"],
        category=message.metadata["category"],
        locale=message.metadata["locale"],
    )
    sent = replace(message, body=rendered.body, html=rendered.html, headers=dict(rendered.headers))
    assert transport.build_payload(sent) == case["payload"]


def test_the_link_is_signed_and_not_part_of_the_content_hash() -> None:
    links = UnsubscribeLinks("https://care.example/care/hooks/unsubscribe", KEY)
    rendered = RenderedMessage(Channel.EMAIL, "Hi", "Subject", "<p>Hi</p>")
    sent = links.add_to(rendered, customer_id="C1", category="marketing", locale="en")
    link = dict(sent.headers)["List-Unsubscribe"].strip("<>")
    assert read_token(link.split("?t=", 1)[1], KEY) == ("C1", "marketing")
    assert link in sent.body and link in (sent.html or "")
    # The ledger records the message as rendered; the link is added on the way out.
    assert sent.content_hash() != rendered.content_hash()
    assert replace(sent, headers=()).content_hash() == sent.content_hash()


@pytest.mark.parametrize(
    ("category", "channel"), [("service", Channel.EMAIL), ("care", Channel.SMS)]
)
def test_no_link_for_service_emails_or_sms(category: str, channel: Channel) -> None:
    links = UnsubscribeLinks("https://care.example/care/hooks/unsubscribe", KEY)
    rendered = RenderedMessage(channel, "Hi", "Subject" if channel is Channel.EMAIL else None)
    assert links.add_to(rendered, customer_id="C1", category=category, locale="en") == rendered
