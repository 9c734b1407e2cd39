"""Test sends (``care send-test``): a rule's message for a real customer, rendered exactly as
``care preview`` renders it, sent through the real channel to an internal address.

The address must be one of the contact policy's ``test_recipients``; the channel follows from
it (a phone number: sms; an email address: email). The send is recorded as a test touch
(``ledger.testsend``): a ``touches`` row with ``test`` TRUE and a key of its own, its attempt
with the rendered content and the address, its status events. Nothing that counts contacts
counts it (caps, cadence, occasions, the reports), and no sender ever takes it, so the
customer's own touch is planned and sent as if the test had never been.

Unlike a customer's touch it is sent at once, whatever the quiet hours or the caps (the
address is staff's), without an unsubscribe link (one would unsubscribe the customer), and a
provider's refusal is final: a retryable failure is recorded ``failed``, never retried by a
later run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from dataclasses import dataclass

from ..addresses import email_is_valid, phone_is_valid
from ..channels.base import SendResult
from ..errors import CareError, ConfigurationError
from ..ledger import Claim, ClaimedAttempt, TouchState
from ..ledger.testsend import TEST_KEY_PREFIX, record_test_touch
from ..mask import mask_recipient, scrub
from ..plan import Touch, plan_day
from ..render.templates import RenderedMessage
from ..rules.contact_policy import ContactPolicy
from ..vocab import Channel, Decision, SendReason, TouchStatus
from .engine import CareEngine
from .message import outbound_message
from .outcome import result_change
from .records import planned_touch
from .report import SendReport

# The policy key that lists the addresses a test may go to.
TEST_RECIPIENTS = "test_recipients"


def customer_touch(engine: CareEngine, rule_id: str, customer_id: str, day: dt.date) -> Touch:
    """The touch ``rule_id`` plans for ``customer_id`` on local date ``day``, sent or
    suppressed, planned as ``care plan`` plans it (the ledger as history); ``CareError``
    when the rule is unknown or has no touch for the customer that day."""
    from ..ledger import Ledger

    try:
        engine.ruleset.by_id(rule_id)
    except KeyError:
        known = ", ".join(r.id for r in engine.ruleset.rules)
        raise CareError(f"unknown or invalid rule {rule_id!r}; loaded rules: {known}") from None
    touches = plan_day(
        engine.store, engine.ruleset, day, rule_ids=[rule_id], history=Ledger(engine.store)
    )
    for touch in touches:
        if touch.customer_id == customer_id:
            return touch
    raise CareError(
        f"rule {rule_id} has no touch for customer {customer_id} on {day}: "
        "the trigger or the audience does not match (see `care plan --explain`)"
    )


def recipient_channel(policy: ContactPolicy, address: str, channel: Channel | None) -> Channel:
    """The channel a test to ``address`` goes on, once the address is found among the
    policy's ``test_recipients`` (an email address whatever its case); ``CareError``
    otherwise, before anything is sent."""
    wanted = address.strip()
    allowed = {a.lower() if "@" in a else a for a in policy.test_recipients}
    where = f" ({policy.source})" if policy.source else ""
    if (wanted.lower() if "@" in wanted else wanted) not in allowed:
        raise CareError(
            f"{mask_recipient(wanted)} is not in {TEST_RECIPIENTS} of the contact policy"
            f"{where}: a test is sent only to the internal addresses listed there; "
            "nothing was sent"
        )
    own = (
        Channel.SMS if phone_is_valid(wanted) else Channel.EMAIL if email_is_valid(wanted) else None
    )
    if own is None or (channel is not None and channel is not own):
        raise CareError(
            f"{mask_recipient(wanted)} is "
            + (f"not an address of the {channel.value} channel" if channel else "no address")
            + "; a phone number (E.164) gets an sms, an email address an email; nothing was sent"
        )
    return own


@dataclass(frozen=True)
class TestSend:
    """What a test send did: the touch it recorded and the provider's answer."""

    __test__ = False  # not a pytest test class

    touch: Touch  # the customer's touch, as planned
    touch_id: int  # the test touch in the ledger
    key: str
    channel: Channel
    recipient: str  # masked
    transport: str
    message: RenderedMessage
    status: TouchStatus  # sent, failed, unknown, or sending (left for recovery)
    detail: str = ""


def send_test(
    engine: CareEngine,
    rule_id: str,
    customer_id: str,
    day: dt.date,
    to: str,
    *,
    channel: Channel | None = None,
    run_id: str,
    now: dt.datetime,
) -> TestSend:
    """Send the message ``rule_id`` would send ``customer_id`` on ``day`` to the internal
    address ``to`` (one of the policy's ``test_recipients``), through the channel's real
    transport, and record it as a test touch (see the module doc)."""
    chosen = recipient_channel(engine.policy, to, channel)
    touch = customer_touch(engine, rule_id, customer_id, day)
    message = touch.render(engine.templates, chosen)  # before anything is written
    transport = engine.transports.get(chosen)
    if transport is None:
        raise ConfigurationError(f"no transport for the {chosen.value} channel")
    record = dataclasses.replace(
        planned_touch(touch),
        key=f"{TEST_KEY_PREFIX}{touch.key}:{uuid.uuid4().hex[:12]}",
        send_at=now,
        channel=chosen,
        decision=Decision.SEND,
        reason=None,
        explain=[
            f"test send to {mask_recipient(to, chosen.value)} (care send-test); the "
            f"customer's touch was decided: {touch.decision.value}"
            + (f" ({touch.reason.value})" if touch.reason else ""),
        ],
    )
    ledger = engine.ledger
    stamp = engine.stamp(now)
    touch_id = record_test_touch(engine.store, record, run_id=run_id, now=stamp)
    (state,) = ledger.states([touch_id])
    claim = Claim(
        state=state,
        channel=chosen.value,
        transport=transport.name,
        recipient=to.strip(),
        template_hash=engine.templates.template_hash(touch.template, chosen, touch.locale),
        message=message,
    )
    attempt = ledger.claim_many([claim], run_id=run_id, now=stamp)[touch_id]
    # No unsubscribe link: it would unsubscribe the customer, not the tester.
    (result,) = transport.send_many([outbound_message(state, attempt, message)])
    status, detail = _record_answer(engine, state, attempt, result, run_id, now)
    return TestSend(
        touch=touch,
        touch_id=touch_id,
        key=record.key,
        channel=chosen,
        recipient=mask_recipient(to, chosen.value),
        transport=transport.name,
        message=message,
        status=status,
        detail=detail,
    )


def _record_answer(
    engine: CareEngine,
    state: TouchState,
    attempt: ClaimedAttempt,
    result: SendResult,
    run_id: str,
    now: dt.datetime,
) -> tuple[TouchStatus, str]:
    """Record the provider's answer as the send step does (``outcome.result_change``),
    except that a retryable failure is final (no run sends a test again) and an opt-out is
    not the customer's. Raises after recording when the provider refused the credentials."""
    if result.settle_later:
        # Left in ``sending``: recovery asks the provider again (it settles test sends too).
        return TouchStatus.SENDING, scrub(result.detail)
    change = result_change(state, attempt, result, SendReport())
    if change.status is TouchStatus.PLANNED:
        change = dataclasses.replace(
            change, status=TouchStatus.FAILED, reason=SendReason.PROVIDER_ERROR.value
        )
    engine.ledger.append_many([change], run_id=run_id, now=engine.stamp(now))
    if result.halt is not None:
        raise result.halt
    if result.stop_run:
        raise ConfigurationError(f"{result.detail}: check the provider's credentials")
    return change.status, scrub(result.detail)
