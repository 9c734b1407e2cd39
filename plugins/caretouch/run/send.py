"""Sending planned touches: claim a chunk in the ledger (``sending``, before any provider
call), deliver it through its channels, record the answers.

A crash in between leaves the chunk in ``sending`` for ``recover.recover_in_flight``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from ..channels.base import OutboundMessage, SendResult
from ..errors import ConfigurationError
from ..ledger import Claim, StatusChange
from ..ledger.models import Attempt
from ..mask import scrub
from ..plan.contact import CapacityUse
from ..render.unsubscribe import UnsubscribeLinks
from ..vocab import Channel, Outcome
from .engine import CareEngine
from .message import may_resend, outbound_message
from .outcome import record_opt_out, result_change
from .prepare import Prepared, prepare_chunk
from .report import SendReport

log = logging.getLogger("caretouch.run")

# Touches per claim/record transaction. A crash leaves at most two chunks in ``sending``
# (one being sent, one sent but not yet recorded: send_touches overlaps them).
CHUNK = 50


def send_touches(
    engine: CareEngine,
    touch_ids: Iterable[int],
    *,
    run_id: str,
    now: dt.datetime,
    chunk_size: int = CHUNK,
    progress: Callable[[int], None] | None = None,
) -> SendReport:
    """Send the given touches whose time has come; skip those handled elsewhere.

    ``progress``, if given, is called with the number of touches of each chunk handled.

    A touch is sent when its ``send_at`` has passed and the customer's local time is outside
    quiet hours; otherwise it stays ``planned`` and a later run (or ``care_dispatch``) sends
    it. Work goes in chunks: check and render, claim the chunk in one transaction (``sending``
    is recorded before any provider call), send, then record the answers in one transaction.
    A crash in between leaves the chunk in ``sending`` for ``recover_in_flight``.

    The ledger work overlaps the sending: while one chunk is being sent (in a thread of its
    own), the next is checked and rendered and the one before is recorded, so a provider's
    rate is not left idle during ledger transactions (bench/send_throughput.py). A chunk is
    claimed only once the chunk before has been sent, and nothing is claimed after a provider
    refused the credentials: as without the overlap, at most one chunk is claimed and not yet
    sent, and a crash leaves at most two chunks in ``sending`` (one of them fully sent).
    """
    report = SendReport()
    ids = list(touch_ids)
    use: CapacityUse = {}
    links = engine.unsubscribe_links()  # before any claim: no key, nothing left in sending
    chunks = [ids[start : start + chunk_size] for start in range(0, len(ids), chunk_size)]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="care-send") as sender:
        sending: tuple[Claimed, Future[list[SendResult]]] | None = None
        for chunk in chunks:
            prepared = prepare_chunk(engine, chunk, now=now, capacity_use=use)
            answers = sending[1].result() if sending else []
            if sending and any(r.stop_run for r in answers):
                _record_chunk(engine, sending[0], answers, run_id=run_id, now=now)  # raises
            claimed = _claim_chunk(engine, prepared, run_id=run_id, now=now)
            future = sender.submit(_deliver, engine, claimed, links)
            if sending:
                report.merge(_record_chunk(engine, sending[0], answers, run_id=run_id, now=now))
                if progress is not None:
                    progress(sending[0].size)
            sending = (claimed, future)
        if sending:
            answers = sending[1].result()
            report.merge(_record_chunk(engine, sending[0], answers, run_id=run_id, now=now))
            if progress is not None:
                progress(sending[0].size)
    return report


@dataclass
class Claimed:
    """A chunk claimed in the ledger: the attempts to send, in order."""

    size: int
    report: SendReport
    sends: list[tuple[Claim, Attempt]]


def _claim_chunk(
    engine: CareEngine, prepared: Prepared, *, run_id: str, now: dt.datetime
) -> Claimed:
    """Write the chunk's status changes and claim its touches (``sending``) in the ledger."""
    ledger = engine.ledger
    # Compare-and-set: a change computed while the touch was planned is not written if
    # another worker moved it on meanwhile (claimed, sent); it is counted as skipped.
    for change in ledger.append_many(prepared.changes, run_id=run_id, now=engine.stamp(now)):
        prepared.report.stale(change.status, prepared.keys[change.touch_id])
    won = ledger.claim_many(prepared.claims, run_id=run_id, now=engine.stamp(now))
    prepared.report.skipped += len(prepared.claims) - len(won)
    sends = [
        (c, won[c.state.id])
        for channel in Channel
        for c in prepared.claims
        if c.channel == channel.value and c.state.id in won
    ]
    return Claimed(prepared.size, prepared.report, sends)


def _deliver(
    engine: CareEngine, claimed: Claimed, links: dict[Channel, UnsubscribeLinks]
) -> list[SendResult]:
    """Send a claimed chunk; the answers in the order of ``sends`` (grouped by channel).

    Each channel goes to its own provider at its own rate, so the channels are sent side by
    side, not one after the other: neither provider waits for the other, and a touch is not
    left claimed while another channel's messages go first (a crash would make it
    ``unknown`` where the provider cannot be asked). Runs in the sending thread: it calls
    providers only, never the ledger or the store."""
    groups: list[list[OutboundMessage]] = []
    for channel in Channel:
        mine = [
            outbound_message(
                c.state,
                a,
                c.message,
                may_resend=may_resend(engine.ruleset, c.state.row.rule_id),
                unsubscribe=links.get(channel),
            )
            for c, a in claimed.sends
            if c.channel == channel.value
        ]
        if mine:
            groups.append(mine)
    if len(groups) <= 1:
        return [r for g in groups for r in engine.transports[g[0].channel].send_many(g)]
    with ThreadPoolExecutor(max_workers=len(groups), thread_name_prefix="care-channel") as pool:
        futures = [pool.submit(engine.transports[g[0].channel].send_many, g) for g in groups]
        return [r for f in futures for r in f.result()]


def _record_chunk(
    engine: CareEngine,
    claimed: Claimed,
    answers: list[SendResult],
    *,
    run_id: str,
    now: dt.datetime,
) -> SendReport:
    """Record the providers' answers of a sent chunk in one transaction."""
    report = claimed.report
    results: list[StatusChange] = []
    refused: list[str] = []
    for (claim, attempt), result in zip(claimed.sends, answers, strict=True):
        if result.settle_later:
            report.in_flight += 1
            log.warning(
                "touch %s: %s; left in sending for recovery to ask again",
                claim.state.row.touch_key,
                scrub(result.detail),
            )
            continue
        results.append(result_change(claim.state, attempt, result, report))
        if result.outcome is Outcome.REJECTED_OPTED_OUT:
            record_opt_out(engine, claim.state, Channel(claim.channel), result, now)
        if result.stop_run and result.detail not in refused:
            refused.append(result.detail)
    keys = {claim.state.id: claim.state.row.touch_key for claim, _ in claimed.sends}
    for change in engine.ledger.append_many(results, run_id=run_id, now=engine.stamp(now)):
        report.stale(change.status, keys[change.touch_id])
    if refused:
        # Every touch of the chunk is back in ``planned``; nothing more goes out this run.
        raise ConfigurationError("; ".join(refused) + ": check the provider's credentials")
    return report
