"""The Twilio channel through the official SDK against the simulator (real HTTP), as a table.

Each row: what the simulator does (faults, a recipient's error code), the message, and what
the channel must answer: the outcome of the closed set, how many requests it made, the waits
it chose (recorded by a fake ``sleep``, never measured on the wall clock) and how many
messages the provider holds afterwards. "Before accept" faults leave nothing at the provider,
"after accept" ones leave the message there while the answer is lost: the channel must find
it in Twilio's message list instead of sending it again.

The answers every provider gives alike (sent, 429, 5xx, refused credentials, a body over the
limit) are in the shared table of tests/channels/test_provider_contract.py; here are Twilio's
own: its error codes and lost answers looked up in its message list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from provider_sim import TWILIO, ProviderSim
from sim_channels import FakeTime, sms, twilio_transport

from caretouch.channels.base import SendResult
from caretouch.channels.limits import Backoff
from caretouch.vocab import Outcome

TO = "+8613800138000"
SID = re.compile(r"^SM[0-9a-f]{32}$")
# Twilio's client times out long before the simulator answers a held request.
CLIENT_TIMEOUT = 1.0  # far above a busy machine's slowest real answer: only injected holds time out
HOLD = 2.5


@dataclass(frozen=True)
class Case:
    id: str
    outcome: Outcome
    accepted: int  # messages at the provider afterwards
    tries: int = 1
    faults: dict[str, Any] = field(default_factory=dict)
    heal_on_retry: bool = False  # the faults stop before the second try
    recipient_error: int | None = None
    to: str = TO
    body: str = "王芳，生日快乐！"
    waits: tuple[float, ...] | None = ()  # exact waits; None: checked by ``wait_bounds``
    wait_bounds: tuple[float, ...] = ()  # upper bounds of backoff waits (full jitter: >= 0)
    provider_id: bool = False
    code: int | None = None
    stop_run: bool = False
    requests: int | None = None  # sends seen by the provider (None: same as tries)
    reads: int = 0  # message-list lookups


TIMEOUT = {"rate_timeout": 1.0, "timeout_hold_s": HOLD}
CASES = [
    Case(
        "long-body-in-segments",
        Outcome.SENT,
        accepted=1,
        provider_id=True,
        body="生日快乐" * 400,  # 1,600 characters: the provider's limit, 24 segments
    ),
    Case("21211-not-a-number", Outcome.REJECTED_INVALID_RECIPIENT, 0, to="12345", code=21211),
    Case("21614-not-mobile", Outcome.REJECTED_INVALID_RECIPIENT, 0, recipient_error=21614),
    Case("21612-unreachable", Outcome.REJECTED_INVALID_RECIPIENT, 0, recipient_error=21612),
    Case("21610-opted-out", Outcome.REJECTED_OPTED_OUT, 0, recipient_error=21610, code=21610),
    Case("21408-region", Outcome.PERMANENT_FAILURE, 0, recipient_error=21408, code=21408),
    Case(
        "timeout-before-accept",
        Outcome.SENT,
        accepted=1,
        tries=2,
        faults={**TIMEOUT, "timeout_after_accept": 0.0},
        heal_on_retry=True,
        waits=None,
        wait_bounds=(0.5,),
        provider_id=True,
        reads=1,
    ),
    Case(
        "drop-before-accept",
        Outcome.SENT,
        accepted=1,
        tries=2,
        faults={"rate_drop": 1.0, "drop_after_accept": 0.0},
        heal_on_retry=True,
        waits=None,
        wait_bounds=(0.5,),
        provider_id=True,
        reads=1,
    ),
    Case(
        "timeout-after-accept-reconciled",
        Outcome.SENT,
        accepted=1,
        faults={**TIMEOUT, "timeout_after_accept": 1.0},
        provider_id=True,
        reads=1,
    ),
    Case(
        "drop-after-accept-reconciled",
        Outcome.SENT,
        accepted=1,
        faults={"rate_drop": 1.0, "drop_after_accept": 1.0},
        provider_id=True,
        reads=1,
    ),
]


def _send(sim: ProviderSim, case: Case) -> tuple[SendResult, FakeTime]:
    def heal(_seconds: float) -> None:
        if case.heal_on_retry:
            sim.clear_faults()

    time = FakeTime(on_sleep=heal)
    if case.faults:
        sim.set_faults(**case.faults)
    if case.recipient_error is not None:
        sim.set_twilio_recipient_error(case.to, case.recipient_error)
    transport = twilio_transport(sim, time=time, timeout=CLIENT_TIMEOUT)
    return transport.send(sms(case.to, case.body)), time


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_twilio_outcomes(provider_sim: ProviderSim, case: Case) -> None:
    result, time = _send(provider_sim, case)
    assert result.outcome is case.outcome, result.detail
    assert result.tries == case.tries
    assert result.stop_run is case.stop_run
    if case.code is not None:
        assert result.provider_code == case.code
    accepted = provider_sim.accepted(TWILIO)
    assert len(accepted) == case.accepted
    counts = provider_sim.request_counts(TWILIO)
    expected_sends = case.tries if case.requests is None else case.requests
    assert counts["sends"] == expected_sends
    assert counts["reads"] == case.reads
    if case.provider_id:
        assert result.provider_message_id is not None
        assert SID.match(result.provider_message_id)
        assert result.provider_message_id == accepted[0].id
        assert accepted[0].to == case.to and accepted[0].body == case.body
    else:
        assert result.provider_message_id is None
    waits = time.waits()
    if case.waits is not None:
        assert waits == pytest.approx(list(case.waits))
    else:
        assert len(waits) == len(case.wait_bounds)
        assert all(0 <= w <= bound for w, bound in zip(waits, case.wait_bounds, strict=True))
    # The recipient never appears in clear in what the channel says about the send.
    assert case.to not in result.detail or case.to == "12345"


def test_sms_is_sent_as_twilio_expects(provider_sim: ProviderSim) -> None:
    transport = twilio_transport(provider_sim)
    result = transport.send(sms(body="生日快乐" * 100, attempt_id=41))
    assert result.outcome is Outcome.SENT
    (message,) = provider_sim.accepted(TWILIO)
    assert message.from_ == "+15005550006"
    assert message.num_segments == 6  # 400 UCS-2 characters, 67 per segment
    assert message.status_callback == "https://care.example.com/care/hooks/twilio/status?attempt=41"


def test_messaging_service_sender(provider_sim: ProviderSim) -> None:
    transport = twilio_transport(provider_sim, sender="MG" + "1" * 32)
    assert transport.send(sms()).outcome is Outcome.SENT
    (message,) = provider_sim.accepted(TWILIO)
    assert (message.from_, message.messaging_service_sid) == (None, "MG" + "1" * 32)


def test_send_many_under_faults_sends_each_once(provider_sim: ProviderSim) -> None:
    """Concurrent sends with 429s, 503s and lost answers (before and after acceptance):
    every message is at the provider exactly once, or reported as not sent."""
    provider_sim.set_faults(
        rate_429=0.05,
        retry_after_s=0,
        rate_503=0.05,
        rate_timeout=0.05,
        timeout_hold_s=2.5,
        timeout_after_accept=0.5,
        rate_drop=0.05,
        drop_after_accept=0.5,
    )
    messages = [sms(f"+86138000{i:05d}", body=f"生日快乐 {i}", n=i) for i in range(120)]
    transport = twilio_transport(
        provider_sim, timeout=CLIENT_TIMEOUT, concurrency=8, backoff=Backoff(base=0.01, cap=0.05)
    )
    results = transport.send_many(messages)
    at_sim = provider_sim.count_by_recipient(TWILIO)
    assert provider_sim.duplicates(TWILIO) == {}
    sent = [m for m, r in zip(messages, results, strict=True) if r.outcome is Outcome.SENT]
    others = [r for r in results if r.outcome is not Outcome.SENT]
    assert {m.recipient for m in sent} == set(at_sim)
    assert all(r.outcome is Outcome.RETRYABLE_FAILURE for r in others)
    assert len(sent) + len(others) == 120
    assert len(sent) >= 115  # four tries each at 20 % faults: nearly all go
    ids = {r.provider_message_id for r in results if r.outcome is Outcome.SENT}
    assert ids == {m.id for m in provider_sim.accepted(TWILIO)}


def test_a_failed_lookup_leaves_the_message_to_be_settled_later(provider_sim: ProviderSim) -> None:
    """The answer is lost after Twilio took the message, and the lookup fails too: the
    result says "settle later" (the runner leaves the touch in ``sending`` for recovery)
    instead of ``unknown`` for good; the next lookup finds the message."""
    provider_sim.set_faults(rate_drop=1.0, drop_after_accept=1.0, fault_reads=True)
    transport = twilio_transport(provider_sim, time=FakeTime())
    message = sms()
    result = transport.send(message)
    assert (result.outcome, result.settle_later) == (Outcome.UNKNOWN, True)
    assert len(provider_sim.accepted(TWILIO)) == 1
    provider_sim.clear_faults()
    found = transport.reconcile(message)
    assert found is not None and found.outcome is Outcome.SENT
    assert found.provider_message_id == provider_sim.accepted(TWILIO)[0].id
