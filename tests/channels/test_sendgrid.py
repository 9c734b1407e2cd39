"""The SendGrid channel through the official SDK against the simulator (real HTTP), as a table.

Like tests/channels/test_twilio.py, with one difference that matters: SendGrid offers no way
to ask whether it took a message. A lost answer (timeout, dropped connection), whether the
provider had accepted the message or not, makes the touch ``unknown`` and nothing is sent
again; only a message that allows resending (``resend_unknown`` on its rule) is tried again,
at the price of a possible duplicate, which the table shows. The answers every provider gives
alike are in the shared table of tests/channels/test_provider_contract.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from provider_sim import SENDGRID, ProviderSim
from sim_channels import FakeTime, email, sendgrid_transport

from caretouch.channels.base import SendResult
from caretouch.channels.limits import Backoff
from caretouch.errors import ConfigurationError
from caretouch.vocab import Outcome

TO = "li.na@example.com"
CLIENT_TIMEOUT = 1.0  # far above a busy machine's slowest real answer: only injected holds time out
HOLD = 2.5


@dataclass(frozen=True)
class Case:
    id: str
    outcome: Outcome
    accepted: int  # messages at the provider afterwards
    tries: int = 1
    faults: dict[str, Any] = field(default_factory=dict)
    heal_on_retry: bool = False
    invalid: bool = False  # the provider refuses the address
    may_resend: bool = False
    body: str = "Dear Li Na,\nhappy birthday."
    waits: tuple[float, ...] | None = ()
    wait_bounds: tuple[float, ...] = ()
    provider_id: bool = False
    stop_run: bool = False
    requests: int | None = None


TIMEOUT = {"rate_timeout": 1.0, "timeout_hold_s": HOLD}
CASES = [
    Case("invalid-address", Outcome.REJECTED_INVALID_RECIPIENT, 0, invalid=True),
    # Lost answers: SendGrid cannot be asked, so nothing is sent again...
    Case("timeout-before-accept", Outcome.UNKNOWN, 0, faults={**TIMEOUT}),
    Case("drop-before-accept", Outcome.UNKNOWN, 0, faults={"rate_drop": 1.0}),
    Case(
        "timeout-after-accept",
        Outcome.UNKNOWN,
        1,
        faults={**TIMEOUT, "timeout_after_accept": 1.0},
    ),
    Case(
        "drop-after-accept", Outcome.UNKNOWN, 1, faults={"rate_drop": 1.0, "drop_after_accept": 1}
    ),
    # ... unless the rule allows resending: then the lost one is tried again.
    Case(
        "timeout-before-accept-may-resend",
        Outcome.SENT,
        accepted=1,
        tries=2,
        faults={**TIMEOUT},
        heal_on_retry=True,
        may_resend=True,
        waits=None,
        wait_bounds=(0.5,),
        provider_id=True,
    ),
    Case(
        "drop-after-accept-may-resend-duplicates",
        Outcome.SENT,
        accepted=2,  # the price of resend_unknown: the customer may get it twice
        tries=2,
        faults={"rate_drop": 1.0, "drop_after_accept": 1.0},
        heal_on_retry=True,
        may_resend=True,
        waits=None,
        wait_bounds=(0.5,),
        provider_id=True,
    ),
]


def _send(sim: ProviderSim, case: Case) -> tuple[SendResult, FakeTime]:
    def heal(_seconds: float) -> None:
        if case.heal_on_retry:
            sim.clear_faults()

    time = FakeTime(on_sleep=heal)
    if case.faults:
        sim.set_faults(**case.faults)
    if case.invalid:
        sim.set_sendgrid_invalid_recipient(TO)
    transport = sendgrid_transport(sim, time=time, timeout=CLIENT_TIMEOUT)
    return transport.send(email(TO, case.body, may_resend=case.may_resend)), time


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_sendgrid_outcomes(provider_sim: ProviderSim, case: Case) -> None:
    result, time = _send(provider_sim, case)
    assert result.outcome is case.outcome, result.detail
    assert result.tries == case.tries
    assert result.stop_run is case.stop_run
    accepted = provider_sim.accepted(SENDGRID)
    assert len(accepted) == case.accepted
    sends = provider_sim.request_counts(SENDGRID)["sends"]
    assert sends == (case.tries if case.requests is None else case.requests)
    if case.provider_id:
        assert result.provider_message_id == accepted[-1].id
    else:
        assert result.provider_message_id is None
    if case.outcome is Outcome.UNKNOWN:
        assert "cannot tell" in result.detail
    waits = time.waits()
    if case.waits is not None:
        assert waits == pytest.approx(list(case.waits))
    else:
        assert len(waits) == len(case.wait_bounds)
        assert all(0 <= w <= bound for w, bound in zip(waits, case.wait_bounds, strict=True))
    assert TO not in result.detail


@pytest.mark.parametrize(
    ("category", "locale", "words"),
    [
        ("care", "en", "Don't want these emails? Unsubscribe"),
        ("marketing", "zh-CN", "不想再收到此类邮件？退订"),
        ("care", "zh-TW", "不想再收到此類郵件？取消訂閱"),
    ],
)
def test_care_and_marketing_carry_an_unsubscribe_link(
    provider_sim: ProviderSim, category: str, locale: str, words: str
) -> None:
    transport = sendgrid_transport(provider_sim)
    message = email(metadata={"customer_id": "C0001", "category": category, "locale": locale})
    assert transport.send(message).outcome is Outcome.SENT
    (sent,) = provider_sim.accepted(SENDGRID)
    link = re.search(
        r"<(https://care\.example\.com/care/hooks/unsubscribe[^>]+)>", str(sent.headers)
    )
    assert link is not None, sent.headers
    assert sent.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert f"{words}: {link.group(1)}" in (sent.text or "")
    assert words in (sent.html or "") and (sent.html or "").rstrip().endswith("</body></html>")
    assert sent.custom_args == {"care_touch": message.touch_key, "care_attempt": "1"}
    assert sent.subject == "Happy birthday" and sent.from_ == "care@example.com"


def test_service_email_has_no_unsubscribe_link(provider_sim: ProviderSim) -> None:
    transport = sendgrid_transport(provider_sim)
    message = email(metadata={"customer_id": "C0001", "category": "service", "locale": "en"})
    assert transport.send(message).outcome is Outcome.SENT
    (sent,) = provider_sim.accepted(SENDGRID)
    assert "List-Unsubscribe" not in sent.headers
    assert "unsubscribe" not in (sent.text or "").lower()
    assert sent.text == message.body  # plain-text alternative, as rendered


def test_plain_text_only_when_the_template_has_no_html(provider_sim: ProviderSim) -> None:
    transport = sendgrid_transport(provider_sim)
    assert transport.send(email(html=None)).outcome is Outcome.SENT
    (sent,) = provider_sim.accepted(SENDGRID)
    assert sent.html is None and sent.text and sent.text.startswith("Dear Li Na")


def test_no_public_url_is_a_configuration_error(provider_sim: ProviderSim) -> None:
    with pytest.raises(ConfigurationError, match="CARE_PUBLIC_URL"):
        sendgrid_transport(provider_sim, public_url=None)


def test_send_many_under_faults_never_resends_a_lost_answer(provider_sim: ProviderSim) -> None:
    """Concurrent sends with 429s, 503s and lost answers: every message is at the provider
    at most once; those sent are there once; lost answers are ``unknown``, never resent."""
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
    messages = [email(f"c{i:04d}@example.com", n=i) for i in range(120)]
    transport = sendgrid_transport(
        provider_sim, timeout=CLIENT_TIMEOUT, concurrency=8, backoff=Backoff(base=0.01, cap=0.05)
    )
    results = transport.send_many(messages)
    at_sim = provider_sim.count_by_recipient(SENDGRID)
    assert max(at_sim.values()) == 1
    by_outcome: dict[Outcome, set[str]] = {}
    for m, r in zip(messages, results, strict=True):
        by_outcome.setdefault(r.outcome, set()).add(m.recipient)
    assert set(by_outcome) <= {Outcome.SENT, Outcome.UNKNOWN, Outcome.RETRYABLE_FAILURE}
    assert by_outcome[Outcome.SENT] <= set(at_sim)
    assert by_outcome.get(Outcome.RETRYABLE_FAILURE, set()).isdisjoint(at_sim)
    # Unknown: some reached the provider (answer lost after acceptance), some did not.
    unknown = by_outcome.get(Outcome.UNKNOWN, set())
    assert set(at_sim) == by_outcome[Outcome.SENT] | (unknown & set(at_sim))
    counts = provider_sim.request_counts(SENDGRID)
    lost = counts["fault_timeout"] + counts["fault_drop"]
    assert len(unknown) == lost  # every lost answer, and nothing else, is unknown
    assert len(unknown & set(at_sim)) == (
        counts["fault_timeout_accepted"] + counts["fault_drop_accepted"]
    )
