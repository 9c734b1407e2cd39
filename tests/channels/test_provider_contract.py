"""What every real provider's channel does with the provider's answers, as one table run
against each provider (Twilio, SendGrid) through its official SDK and the simulator.

The answers every provider can give alike (accepted, 429 with ``Retry-After``, 5xx, refused
credentials, a body over the declared limit) must come out the same: the same outcome, the
same number of requests, the same waits (recorded by a fake ``sleep``, never measured on the
wall clock). What differs between providers (Twilio's error codes, SendGrid's lost answers
that cannot be looked up) is in tests/channels/test_twilio.py and test_sendgrid.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from provider_sim import SENDGRID, TWILIO, ProviderSim
from sim_channels import FakeTime, email, sendgrid_transport, sms, twilio_transport

from caretouch.channels.base import OutboundMessage, SendResult, Transport
from caretouch.vocab import Outcome

CLIENT_TIMEOUT = 1.0  # far above a busy machine's slowest real answer


@dataclass(frozen=True)
class Provider:
    """One provider under contract: how to build its transport and a message to send."""

    name: str  # the simulator's name for it
    transport: Callable[..., Transport]
    message: Callable[..., OutboundMessage]
    to: str
    wrong_credentials: dict[str, str]
    recipient: Callable[[int], str]


PROVIDERS = {
    "twilio": Provider(
        TWILIO,
        twilio_transport,
        sms,
        "+8613800138000",
        {"auth_token": "not-the-token"},
        lambda i: f"+86138000{i:05d}",
    ),
    "sendgrid": Provider(
        SENDGRID,
        sendgrid_transport,
        email,
        "li.na@example.com",
        {"api_key": "SG.not-the-key"},
        lambda i: f"c{i:04d}@example.com",
    ),
}


@pytest.fixture(params=list(PROVIDERS))
def provider(request: pytest.FixtureRequest) -> Provider:
    return PROVIDERS[request.param]


@dataclass(frozen=True)
class Case:
    id: str
    outcome: Outcome
    accepted: int  # messages at the provider afterwards
    tries: int = 1
    faults: dict[str, Any] = field(default_factory=dict)
    heal_on_retry: bool = False  # the faults stop before the second try
    wrong_credentials: bool = False
    over_limit: bool = False  # a body one character over the transport's ``max_body``
    waits: tuple[float, ...] | None = ()  # exact waits; None: checked by ``wait_bounds``
    wait_bounds: tuple[float, ...] = ()  # upper bounds of backoff waits (full jitter: >= 0)
    provider_id: bool = False
    stop_run: bool = False
    requests: int | None = None  # sends seen by the provider (None: same as tries)


CASES = [
    Case("sent", Outcome.SENT, accepted=1, provider_id=True),
    Case(
        "429-retry-after",
        Outcome.SENT,
        accepted=1,
        tries=2,
        faults={"rate_429": 1.0, "retry_after_s": 3},
        heal_on_retry=True,
        waits=(3.0,),
        provider_id=True,
    ),
    Case(
        # Longer than Backoff.max_retry_after (60 s): not tried sooner than asked, the touch
        # is left for the next run.
        "429-retry-after-too-long",
        Outcome.RETRYABLE_FAILURE,
        accepted=0,
        faults={"rate_429": 1.0, "retry_after_s": 600},
        heal_on_retry=True,
    ),
    *(
        Case(
            f"{status}-then-sent",
            Outcome.SENT,
            accepted=1,
            tries=2,
            faults={f"rate_{status}": 1.0},
            heal_on_retry=True,
            waits=None,
            wait_bounds=(0.5,),
            provider_id=True,
        )
        for status in (503, 500)
    ),
    *(
        Case(
            f"{status}-tries-exhausted",
            Outcome.RETRYABLE_FAILURE,
            accepted=0,
            tries=4,
            faults={f"rate_{status}": 1.0},
            waits=None,
            wait_bounds=(0.5, 1.0, 2.0),
        )
        for status in (503, 500)
    ),
    Case(
        "429-tries-exhausted",
        Outcome.RETRYABLE_FAILURE,
        accepted=0,
        tries=4,
        faults={"rate_429": 1.0, "retry_after_s": 1},
        waits=(1.0, 1.0, 1.0),
    ),
    Case(
        "401-stop-run",
        Outcome.RETRYABLE_FAILURE,
        0,
        wrong_credentials=True,
        stop_run=True,
        requests=1,
    ),
    Case("body-over-limit-no-request", Outcome.PERMANENT_FAILURE, 0, over_limit=True, requests=0),
]


def _send(sim: ProviderSim, provider: Provider, case: Case) -> tuple[SendResult, FakeTime]:
    def heal(_seconds: float) -> None:
        if case.heal_on_retry:
            sim.clear_faults()

    time = FakeTime(on_sleep=heal)
    if case.faults:
        sim.set_faults(**case.faults)
    wrong = provider.wrong_credentials if case.wrong_credentials else {}
    transport = provider.transport(sim, time=time, timeout=CLIENT_TIMEOUT, **wrong)
    message = provider.message(provider.to)
    if case.over_limit:
        message = provider.message(provider.to, body="x" * (transport.max_body + 1))
    return transport.send(message), time


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_provider_outcomes(provider_sim: ProviderSim, provider: Provider, case: Case) -> None:
    result, time = _send(provider_sim, provider, case)
    assert result.outcome is case.outcome, result.detail
    assert result.tries == case.tries
    assert result.stop_run is case.stop_run
    accepted = provider_sim.accepted(provider.name)
    assert len(accepted) == case.accepted
    counts = provider_sim.request_counts(provider.name)
    assert counts["sends"] == (case.tries if case.requests is None else case.requests)
    if case.provider_id:
        assert result.provider_message_id is not None
        assert result.provider_message_id == accepted[-1].id
        assert accepted[-1].to == provider.to
    else:
        assert result.provider_message_id is None
    waits = time.waits()
    if case.waits is not None:
        assert waits == pytest.approx(list(case.waits))
    else:
        assert len(waits) == len(case.wait_bounds)
        assert all(0 <= w <= bound for w, bound in zip(waits, case.wait_bounds, strict=True))
    # The recipient never appears in clear in what the channel says about the send.
    assert provider.to not in result.detail


def test_a_too_long_retry_after_pauses_the_other_senders(
    provider_sim: ProviderSim, provider: Provider
) -> None:
    provider_sim.set_faults(rate_429=1.0, retry_after_s=600)
    time = FakeTime()
    transport = provider.transport(provider_sim, time=time)
    result = transport.send(provider.message(provider.to))
    assert (result.outcome, result.tries, result.retry_after) == (
        Outcome.RETRYABLE_FAILURE,
        1,
        600.0,
    )
    assert time.waits() == []  # the send itself did not wait
    before = time.clock()
    transport.limiter.acquire()  # the next message waits out the longest rest we allow
    assert time.clock() - before == pytest.approx(60.0, abs=0.01)


def test_retry_after_pauses_every_sender(provider_sim: ProviderSim, provider: Provider) -> None:
    """A 429's Retry-After empties the shared bucket: other threads wait for it too."""
    time = FakeTime()
    transport = provider.transport(provider_sim, time=time, rate_per_sec=10.0)
    transport.limiter.acquire()
    transport.limiter.pause(5.0)
    before = time.clock()
    transport.limiter.acquire()  # the pause, then one request's spacing at 10/s
    assert time.clock() - before == pytest.approx(5.0 + 0.1)


def test_send_many_stops_after_refused_credentials(
    provider_sim: ProviderSim, provider: Provider
) -> None:
    transport = provider.transport(provider_sim, concurrency=4, **provider.wrong_credentials)
    results = transport.send_many([provider.message(provider.recipient(i), n=i) for i in range(40)])
    assert len(results) == 40
    assert all(r.stop_run and r.outcome is Outcome.RETRYABLE_FAILURE for r in results)
    # Only the requests already in flight when the first refusal came reached the provider.
    assert provider_sim.request_counts(provider.name)["sends"] <= 4
    assert sum(r.tries for r in results) <= 4
