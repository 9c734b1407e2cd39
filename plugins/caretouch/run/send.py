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
from ..errors import CareError, ConfigurationError
from ..ledger import Claim, ClaimedAttempt, StatusChange, TouchState
from ..ledger.queue import Due, WorkQueue
from ..mask import scrub
from ..plan.contact import CapacityUse
from ..render.unsubscribe import UnsubscribeLinks
from ..vocab import Channel, Outcome
from .engine import CareEngine
from .message import may_resend, outbound_message
from .outcome import record_opt_out, result_change
from .prepare import Prepared, prepare_chunk
from .report import SendReport
from .tasks import assigned_change, is_task

log = logging.getLogger("caretouch.run")

# Touches per claim/record transaction: about ``CHUNK_SECONDS`` of sending at the slowest
# channel's rate (``chunk_for``), at least ``CHUNK`` and at most ``MAX_CHUNK``. Every chunk
# costs two write transactions whatever its size, which a fast channel (the outbox, a
# provider allowed hundreds of messages a second) would otherwise spend most of its CPU on;
# a slow one keeps chunks it sends in a few seconds. A crash leaves at most two chunks in
# ``sending`` (one being sent, one sent but not yet recorded: send_touches overlaps them).
CHUNK = 50
MAX_CHUNK = 200
CHUNK_SECONDS = 5.0


def chunk_for(engine: CareEngine) -> int:
    """The chunk size for ``engine``'s channels: ``CHUNK_SECONDS`` of sending at the
    slowest one's rate (Twilio and SendGrid at their default 10 messages/s: ``CHUNK``)."""
    rates = [r for t in engine.transports.values() if (r := getattr(t, "rate", None))]
    if not rates:
        return CHUNK
    return int(min(MAX_CHUNK, max(CHUNK, min(rates) * CHUNK_SECONDS)))


def send_touches(
    engine: CareEngine,
    touch_ids: Iterable[int],
    *,
    run_id: str,
    now: dt.datetime,
    chunk_size: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> SendReport:
    """Send the given touches whose time has come; skip those handled elsewhere (``send``).
    ``chunk_size``: touches per chunk (default ``chunk_for(engine)``)."""
    queue = WorkQueue(engine.store, Due(ids=tuple(touch_ids)), chunk_size or chunk_for(engine))
    return send(engine, queue, run_id=run_id, now=now, progress=progress)


def send_due(
    engine: CareEngine,
    due: Due,
    *,
    run_id: str,
    now: dt.datetime,
    chunk_size: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> SendReport:
    """Send the planned touches ``due`` names whose time has come, taking them from the
    send queue in chunks alongside any other sender (``send``); ``chunk_size`` as for
    ``send_touches``."""
    queue = WorkQueue(engine.store, due, chunk_size or chunk_for(engine))
    return send(engine, queue, run_id=run_id, now=now, progress=progress)


def send(
    engine: CareEngine,
    queue: WorkQueue,
    *,
    run_id: str,
    now: dt.datetime,
    progress: Callable[[int], None] | None = None,
) -> SendReport:
    """Send the touches ``queue`` hands this sender, chunk by chunk, until it is empty.

    ``progress``, if given, is called with the number of touches of each chunk handled.

    A touch is sent when its ``send_at`` has passed and the customer's local time is outside
    quiet hours; otherwise it stays ``planned`` and a later run (or ``care_dispatch``) sends
    it. Work goes in chunks taken from the send queue (``ledger.queue``): in one transaction
    the chunk's touches are locked (those another sender holds are skipped, not waited
    for), checked and rendered, and claimed (``sending`` is recorded before any provider
    call); then the chunk is sent, and the answers recorded in one transaction.
    A crash in between leaves the chunk in ``sending`` for ``recover_in_flight``.

    The ledger work overlaps the sending: while one chunk is being sent (in a thread of its
    own), the one before is recorded, so a provider's
    rate is not left idle during ledger transactions (bench/send_throughput.py). A chunk is
    claimed only once the chunk before has been sent, and nothing is claimed after a provider
    refused the credentials: as without the overlap, at most one chunk is claimed and not yet
    sent, and a crash leaves at most two chunks in ``sending`` (one of them fully sent).
    """
    report = SendReport()
    use: CapacityUse = {}
    links = engine.unsubscribe_links()  # before any claim: no key, nothing left in sending
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="care-send") as sender:
        sending: tuple[Claimed, Future[list[SendResult]]] | None = None
        while True:
            answers = sending[1].result() if sending else []
            if sending and any(r.stop_run for r in answers):
                _record_chunk(engine, sending[0], answers, run_id=run_id, now=now)  # raises
            claimed = _claim_next(engine, queue, use, run_id=run_id, now=now)
            if claimed is None:
                break
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
    sends: list[tuple[Claim, ClaimedAttempt]]


def _claim_next(
    engine: CareEngine, queue: WorkQueue, use: CapacityUse, *, run_id: str, now: dt.datetime
) -> Claimed | None:
    """Take the next chunk from the queue: check and render it (``prepare_chunk``) while its
    touches are held, write its status changes and claim it (``sending``); None when the
    queue is empty."""
    prepared: list[Prepared] = []

    def decide(states: list[TouchState]) -> tuple[list[StatusChange], list[Claim]]:
        ids = [s.id for s in states]
        prepared.append(prepare_chunk(engine, ids, now=now, capacity_use=use, states=states))
        return prepared[0].changes, prepared[0].claims

    taken = queue.claim_next(decide, run_id=run_id, now=engine.stamp(now))
    if taken is None:
        return None
    chunk = prepared[0] if prepared else Prepared(0, SendReport(), [], [])
    # Held by another sender (an explicit list): it is handling them.
    chunk.report.skipped += len(taken.busy)
    # Compare-and-set: a change computed while the touch was planned is not written if
    # another worker moved it on meanwhile (claimed, sent); it is counted as skipped.
    for change in taken.stale:
        chunk.report.stale(change.status, chunk.keys[change.touch_id])
    chunk.report.skipped += len(chunk.claims) - len(taken.won)
    sends = [
        (c, taken.won[c.state.id])
        for channel in Channel
        for c in chunk.claims
        if c.channel == channel.value and c.state.id in taken.won
    ]
    return Claimed(chunk.size + len(taken.busy), chunk.report, sends)


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
    halt: CareError | None = None
    for (claim, attempt), result in zip(claimed.sends, answers, strict=True):
        if result.settle_later:
            report.in_flight += 1
            log.warning(
                "touch %s: %s; left in sending for recovery to ask again",
                claim.state.row.touch_key,
                scrub(result.detail),
            )
            continue
        if is_task(claim.channel) and result.outcome is Outcome.SENT:
            # A task the agent_task channel took is assigned to the agent, due on its day.
            zone = engine.policy.zone(claim.state.row.timezone)
            day = claim.state.send_at.astimezone(zone).date()
            results.append(assigned_change(engine.ruleset, claim.state, attempt, day))
            report.assigned += 1
            continue
        results.append(result_change(claim.state, attempt, result, report))
        if result.outcome is Outcome.REJECTED_OPTED_OUT:
            record_opt_out(engine, claim.state, Channel(claim.channel), result, now)
        if result.halt is not None:
            halt = halt or result.halt
        elif result.stop_run and result.detail not in refused:
            refused.append(result.detail)
    keys = {claim.state.id: claim.state.row.touch_key for claim, _ in claimed.sends}
    for change in engine.ledger.append_many(results, run_id=run_id, now=engine.stamp(now)):
        report.stale(change.status, keys[change.touch_id])
    if halt is not None:
        # The touches the provider did not answer are back in ``planned``; nothing more goes
        # out this run (the shared rate limiter cannot be reached: sending on unlimited could
        # exceed the account's limit).
        raise halt
    if refused:
        # Every touch of the chunk is back in ``planned``; nothing more goes out this run.
        raise ConfigurationError("; ".join(refused) + ": check the provider's credentials")
    return report
