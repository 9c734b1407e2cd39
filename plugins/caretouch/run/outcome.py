"""What a provider's answer becomes in the ledger: the status change of the touch, and the
customer's opt-out when the provider says so (SPEC section 8)."""

from __future__ import annotations

import datetime as dt
import logging

from ..channels.base import SendResult
from ..errors import CareError
from ..ledger import ClaimedAttempt, StatusChange, TouchState
from ..ledger.consent import record_consent
from ..ledger.models import Attempt
from ..mask import scrub
from ..store.consent import Purpose
from ..vocab import Channel, Outcome, SendReason, TouchStatus
from .engine import CareEngine
from .report import SendReport

log = logging.getLogger("caretouch.run")

MAX_ATTEMPTS = 5

# A refusal's reason in the ledger; any other final outcome is ``provider_error``.
_FAILED = {
    Outcome.REJECTED_INVALID_RECIPIENT: SendReason.INVALID_RECIPIENT,
    Outcome.REJECTED_OPTED_OUT: SendReason.OPTED_OUT,
    Outcome.RETRYABLE_FAILURE: SendReason.RETRIES_EXHAUSTED,
}


def result_change(
    state: TouchState, attempt: Attempt | ClaimedAttempt, result: SendResult, report: SendReport
) -> StatusChange:
    """The status event that records a provider's answer, counted in ``report``."""
    detail: dict[str, object] | None = {"detail": scrub(result.detail)} if result.detail else None
    if result.provider_code is not None:
        detail = {**(detail or {}), "provider_code": result.provider_code}
    if result.tries > 1:
        detail = {**(detail or {}), "tries": result.tries}
    if result.outcome is Outcome.SENT:
        report.sent += 1
        return StatusChange(
            state.id,
            TouchStatus.SENT,
            attempt_id=attempt.id,
            provider_message_id=result.provider_message_id,
            detail=detail,
            expected=TouchStatus.SENDING,
        )
    if result.outcome is Outcome.RETRYABLE_FAILURE and (
        attempt.attempt_no < MAX_ATTEMPTS or result.stop_run
    ):
        report.retry += 1
        return StatusChange(
            state.id,
            TouchStatus.PLANNED,
            SendReason.RETRY.value,
            attempt.id,
            detail=detail,
            expected=TouchStatus.SENDING,
        )
    if result.outcome is Outcome.UNKNOWN:
        report.unknown += 1
        return StatusChange(
            state.id,
            TouchStatus.UNKNOWN,
            SendReason.UNKNOWN.value,
            attempt.id,
            detail=detail,
            expected=TouchStatus.SENDING,
        )
    reason = _FAILED.get(result.outcome, SendReason.PROVIDER_ERROR)
    report.failed += 1
    report.failures.append(f"{state.row.touch_key}: {reason.value}: {scrub(result.detail)}")
    return StatusChange(
        state.id,
        TouchStatus.FAILED,
        reason.value,
        attempt.id,
        detail=detail,
        expected=TouchStatus.SENDING,
    )


def record_opt_out(
    engine: CareEngine, state: TouchState, channel: Channel, result: SendResult, now: dt.datetime
) -> None:
    """The provider says the customer opted out (Twilio 21610): never that channel again
    until consent is given again (SPEC section 6)."""
    purpose = Purpose.SMS if channel is Channel.SMS else Purpose.EMAIL
    try:
        record_consent(
            engine.store,
            state.row.customer_id,
            {purpose: False},
            source=f"provider:{engine.transports[channel].name}",
            at=engine.stamp(now),
            note=f"provider error {result.provider_code}" if result.provider_code else None,
        )
    except CareError as exc:  # the customer was removed meanwhile: the failure is recorded
        log.warning("touch %s: opt-out not recorded: %s", state.row.touch_key, exc)
