"""Recovery after a crash: settle the touches a dead worker left in ``sending``."""

from __future__ import annotations

import datetime as dt
import logging

from ..channels.base import SendResult
from ..dates import aware_utc
from ..render.templates import RenderedMessage
from ..vocab import Channel, Outcome, SendReason, TouchStatus
from .engine import CareEngine
from .message import may_resend, outbound_message
from .report import SendReport

log = logging.getLogger("caretouch.run")

# A touch in ``sending`` for longer than this was abandoned by a crashed worker.
SENDING_LEASE = dt.timedelta(minutes=10)


def recover_in_flight(
    engine: CareEngine,
    *,
    run_id: str,
    now: dt.datetime,
    day: dt.date | None = None,
    dead_writer: str | None = None,
) -> SendReport:
    """Settle touches left in ``sending`` by a crash, asking the provider where it can answer.

    Only attempts older than ``SENDING_LEASE`` are touched: a younger one may belong to a
    worker that is still sending it. Found at the provider: ``sent``. Certainly not there
    (``Outcome.NOT_SENT``): ``planned`` again, to be sent. The provider cannot tell:
    ``unknown``, for a person to review; never sent again blindly.

    ``dead_writer``: a run id known to be dead (an Airflow task's earlier try, which Airflow
    retries only once that try has ended or was declared dead by its heartbeat timeout):
    its attempts are settled at once, whatever their age; the others wait for the lease.
    """
    report = SendReport()
    ledger = engine.ledger
    # Test sends too (``care send-test``): settled like any touch, never sent by a sender.
    ids = ledger.touch_ids_in_status({TouchStatus.SENDING}, day=day, tests=True)
    for state in ledger.states(ids):
        if state.status is not TouchStatus.SENDING:
            continue
        attempt = ledger.attempts(state.id)[-1]
        dead = dead_writer is not None and attempt.run_id == dead_writer
        if not dead and aware_utc(attempt.created_at) > now - SENDING_LEASE:
            report.skipped += 1
            continue
        transport = engine.transports.get(Channel(attempt.channel))
        rendered = RenderedMessage(
            Channel(attempt.channel),
            body=attempt.body or "",
            subject=attempt.subject,
            html=attempt.html,
        )
        resend = may_resend(engine.ruleset, state.row.rule_id)
        try:
            answer = (
                transport.reconcile(outbound_message(state, attempt, rendered, may_resend=resend))
                if transport and transport.name == attempt.transport
                else None
            )
        except Exception as exc:  # the provider cannot be asked now: ask again next run
            log.warning("touch %s: cannot reconcile now: %r", state.row.touch_key, exc)
            report.skipped += 1
            continue
        if answer is None and resend:
            answer = SendResult(Outcome.NOT_SENT, detail="not found")  # the rule allows it
        if answer is not None and answer.outcome is Outcome.SENT:
            recorded = ledger.append(
                state.id,
                TouchStatus.SENT,
                expected=TouchStatus.SENDING,
                attempt_id=attempt.id,
                provider_message_id=answer.provider_message_id,
                detail={"detail": "reconciled: " + answer.detail},
                run_id=run_id,
                now=engine.stamp(now),
            )
            report.sent += recorded
        elif answer is not None and answer.outcome is Outcome.NOT_SENT:
            recorded = ledger.append(
                state.id,
                TouchStatus.PLANNED,
                expected=TouchStatus.SENDING,
                attempt_id=attempt.id,
                reason=SendReason.RECONCILED_NOT_SENT.value,
                run_id=run_id,
                now=engine.stamp(now),
            )
            report.retry += recorded
        else:
            recorded = ledger.append(
                state.id,
                TouchStatus.UNKNOWN,
                expected=TouchStatus.SENDING,
                attempt_id=attempt.id,
                reason=SendReason.CRASH_UNRECONCILED.value,
                run_id=run_id,
                now=engine.stamp(now),
            )
            report.unknown += recorded
        # Compare-and-set: a touch that left ``sending`` meanwhile (its worker was alive
        # after all and recorded the answer, a receipt arrived) keeps its status.
        report.skipped += not recorded
    return report
