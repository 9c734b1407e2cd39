"""What every channel promises, run against each of them: outbox, Twilio, SendGrid.

The runner relies on these and nothing else (STYLE.md: a shared contract test case runs
against every channel): the same message shapes come back ``sent`` with a provider id; the
declared limits are honoured without calling the provider; results of ``send_many`` come in
order; nothing a channel prints shows a recipient or a secret in clear; and ``reconcile``
answers only what it knows: ``sent`` (the provider has it, with the id the send reported),
``not-sent`` (it certainly does not), or ``None`` (it cannot tell).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from provider_sim import SENDGRID, TWILIO, ProviderSim
from sim_channels import email, sendgrid_transport, sms, twilio_transport

from caretouch.channels.base import OutboundMessage, SendResult, Transport
from caretouch.channels.outbox import OutboxTransport
from caretouch.vocab import Channel, Outcome


@dataclass
class Subject:
    """One channel under contract: its transport, a message maker, and what the far end holds."""

    name: str
    transport: Transport
    message: Callable[..., OutboundMessage]
    delivered: Callable[[], list[str]]  # recipients the far end holds, one per message
    secrets: tuple[str, ...]
    can_reconcile: bool


SHAPES: dict[str, dict[str, object]] = {
    "short": {"body": "Happy birthday!"},
    "chinese": {"body": "王芳，生日快乐！祝您身体健康。"},
    "multi-line": {"body": "Dear customer,\nhappy birthday.\n\n-- Care team"},
    "emoji": {"body": "生日快乐 🎂🎉"},
}


@pytest.fixture(params=["outbox-sms", "outbox-email", "twilio", "sendgrid"])
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    kind = request.param
    if kind.startswith("outbox"):
        channel = Channel.SMS if kind == "outbox-sms" else Channel.EMAIL
        directory = tmp_path / "outbox"

        def files() -> list[str]:
            import json

            return [
                json.loads(p.read_text(encoding="utf-8"))["to"]
                for p in sorted(directory.rglob("*.json"))
            ]

        make = sms if channel is Channel.SMS else email
        yield Subject(kind, OutboxTransport(channel, directory), make, files, (), True)
        return
    sim: ProviderSim = request.getfixturevalue("provider_sim")
    if kind == "twilio":
        transport: Transport = twilio_transport(sim)
        yield Subject(
            kind,
            transport,
            sms,
            lambda: [m.to for m in sim.accepted(TWILIO)],
            (sim.twilio_auth_token,),
            True,
        )
    else:
        transport = sendgrid_transport(sim)
        yield Subject(
            kind,
            transport,
            email,
            lambda: [m.to for m in sim.accepted(SENDGRID)],
            (sim.sendgrid_api_key,),
            False,
        )


def _recipient(subject: Subject, i: int) -> str:
    if subject.transport.channel is Channel.SMS:
        return f"+86138001{i:05d}"
    return f"customer{i}@example.com"


@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_message_shape_is_sent_with_a_provider_id(subject: Subject, shape: str) -> None:
    to = _recipient(subject, 1)
    result = subject.transport.send(subject.message(to, **SHAPES[shape]))
    assert result.outcome is Outcome.SENT, result.detail
    assert result.provider_message_id
    assert subject.delivered() == [to]


def test_the_longest_body_allowed_is_sent_and_one_more_character_is_refused(
    subject: Subject,
) -> None:
    limit = subject.transport.max_body
    longest = "a" * limit if limit <= 2000 else "a" * 2000  # email: far below its limit
    ok = subject.transport.send(subject.message(_recipient(subject, 1), body=longest))
    assert ok.outcome is Outcome.SENT
    over = subject.transport.send(subject.message(_recipient(subject, 2), body="a" * (limit + 1)))
    assert over.outcome is Outcome.PERMANENT_FAILURE
    assert str(limit) in over.detail
    assert subject.delivered() == [_recipient(subject, 1)]  # no request for the long one


def test_limits_are_declared(subject: Subject) -> None:
    kind = type(subject.transport)
    assert kind.max_body > 0 and kind.rate_per_sec > 0 and kind.concurrency >= 1
    assert subject.transport.rate > 0 and subject.transport.workers >= 1


def test_send_many_answers_in_order(subject: Subject) -> None:
    recipients = [_recipient(subject, i) for i in range(12)]
    messages = [subject.message(to, n=i, body=f"message {i}") for i, to in enumerate(recipients)]
    results = subject.transport.send_many(messages)
    assert [r.outcome for r in results] == [Outcome.SENT] * 12
    assert len({r.provider_message_id for r in results}) == 12
    assert sorted(subject.delivered()) == sorted(recipients)
    for message, result in zip(messages, results, strict=True):
        answer = subject.transport.reconcile(message)
        if subject.can_reconcile:
            assert answer is not None
            assert (answer.outcome, answer.provider_message_id) == (
                Outcome.SENT,
                result.provider_message_id,
            )


def test_nothing_printed_shows_a_recipient_or_a_secret(subject: Subject) -> None:
    to = _recipient(subject, 1)
    message = subject.message(to)
    result = subject.transport.send(message)
    failed = subject.transport.send(
        subject.message(to, body="a" * (subject.transport.max_body + 1))
    )
    for text in (repr(message), str(message), repr(subject.transport), repr(result), repr(failed)):
        assert to not in text
        for secret in subject.secrets:
            assert secret not in text
    assert "****" in repr(message) or "***@" in repr(message)


def test_reconcile_answers_only_what_it_knows(subject: Subject) -> None:
    sent = subject.message(_recipient(subject, 1))
    never = subject.message(_recipient(subject, 2), n=2)
    result = subject.transport.send(sent)
    found = subject.transport.reconcile(sent)
    missing = subject.transport.reconcile(never)
    if subject.can_reconcile:
        assert found is not None and found.outcome is Outcome.SENT
        assert found.provider_message_id == result.provider_message_id
        assert missing == SendResult(Outcome.NOT_SENT, detail="not found")
    else:
        # SendGrid cannot be asked: a touch it may have taken becomes ``unknown``.
        assert found is None and missing is None
    assert subject.delivered() == [_recipient(subject, 1)]  # asking sends nothing


def test_a_later_attempt_is_not_mistaken_for_an_earlier_one(subject: Subject) -> None:
    """Reconciling attempt 2 of a touch whose attempt 1 was sent must not claim attempt 2
    was sent, unless the provider truly holds a copy of attempt 2's message."""
    first = subject.message(_recipient(subject, 1), body="first wording")
    subject.transport.send(first)
    second = dataclasses.replace(first, attempt_no=2, body="second wording", attempt_id=2)
    answer = subject.transport.reconcile(second)
    assert answer is None or answer.outcome is not Outcome.SENT
