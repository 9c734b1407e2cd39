"""Running a day: plan -> record -> render -> send -> record, safe to rerun at any point.

The CLI (``care run``) and the Airflow DAGs call these same functions. Nothing here reads the
clock: ``now`` is always an argument.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy import select

from ..channels.base import OutboundMessage, SendResult, Transport
from ..channels.registry import transports_from_env
from ..config import CareConfig
from ..errors import CareError, ConfigurationError, RenderError
from ..ledger import WAIT_UNTIL, Claim, Ledger, StatusChange, TouchState
from ..ledger.models import Attempt
from ..mask import scrub
from ..plan import plan_day
from ..plan.contact import cap_violation
from ..render.templates import RenderedMessage, TemplateStore
from ..render.unsubscribe import UnsubscribeLinks, unsubscribe_key
from ..rules.contact_policy import ContactPolicy
from ..rules.loader import RuleSet, load_rules
from ..store.consent import Purpose, record_consent
from ..store.db import Store, open_store
from ..store.models import Customer
from ..store.write import dead_letter_events
from ..vocab import Category, Channel, Outcome, SuppressionReason, TouchStatus

log = logging.getLogger("caretouch.run")

MAX_ATTEMPTS = 5
# A touch in ``sending`` for longer than this was abandoned by a crashed worker.
SENDING_LEASE = dt.timedelta(minutes=10)
# Touches per claim/record transaction. A crash leaves at most two chunks in ``sending``
# (one being sent, one sent but not yet recorded: send_touches overlaps them).
CHUNK = 50


@dataclass
class Engine:
    """Everything a run needs, opened once."""

    config: CareConfig
    store: Store
    templates: TemplateStore
    ruleset: RuleSet
    transports: dict[Channel, Transport]
    # Where ledger timestamps come from. None: the ``now`` each call is given (tests, replays
    # with ``--now``); the CLI and the DAGs set the real clock so each send is stamped when
    # it happens, not when the run started.
    clock: Callable[[], dt.datetime] | None = None
    # Signs the unsubscribe links of emails; None: ``$CARE_UNSUBSCRIBE_KEY``.
    unsubscribe_key: bytes | None = None

    def stamp(self, now: dt.datetime) -> dt.datetime:
        return self.clock() if self.clock is not None else now

    @property
    def ledger(self) -> Ledger:
        return Ledger(self.store)

    @property
    def policy(self) -> ContactPolicy:
        return self.ruleset.policy

    @classmethod
    def open(cls, config: CareConfig, transports: dict[Channel, Transport] | None = None) -> Engine:
        templates = TemplateStore(config.templates_dir)
        ruleset = load_rules(config.rules_dir, templates)
        store = open_store(config.store_url)
        if transports is None:
            transports = transports_from_env(config.outbox_dir)
        engine = cls(config, store, templates, ruleset, transports)
        engine.unsubscribe_links()  # a provider that needs a key without one: fail at start
        return engine

    def unsubscribe_links(self) -> dict[Channel, UnsubscribeLinks]:
        """How to make the unsubscribe links of each channel whose provider wants them in
        its messages (SendGrid; not the outbox): where they point, and the key signing them."""
        bases = {
            ch: b
            for ch, t in self.transports.items()
            if (b := getattr(t, "unsubscribe_base", None))
        }
        if not bases:
            return {}
        key = self.unsubscribe_key or unsubscribe_key()
        return {ch: UnsubscribeLinks(base, key) for ch, base in bases.items()}


@dataclass
class SendReport:
    """What a run did, by outcome.

    ``planned`` and ``suppressed`` include the decisions recorded by the plan of the run
    (``plan_and_record`` with this report), so they match the ledger. Recorded in the ledger:
    planned, sent, failed, suppressed, unknown, retry (back to ``planned`` after a retryable
    failure) and in_flight (left ``sending``: the provider's answer was unclear). Not
    recorded (the touch is left as it was): waiting (its time has not come), held (its rule
    is not loaded) and skipped (handled by someone else meanwhile).
    """

    sent: int = 0
    failed: int = 0
    suppressed: int = 0
    waiting: int = 0
    skipped: int = 0
    unknown: int = 0
    retry: int = 0
    planned: int = 0
    held: int = 0
    in_flight: int = 0
    failures: list[str] = field(default_factory=list)

    COUNTS = (
        "planned",
        "suppressed",
        "sent",
        "failed",
        "unknown",
        "retry",
        "in_flight",
        "waiting",
        "held",
        "skipped",
    )

    def merge(self, other: SendReport) -> SendReport:
        for name in self.COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failures.extend(other.failures)
        return self

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.COUNTS}


def plan_and_record(
    engine: Engine,
    day: dt.date,
    *,
    run_id: str,
    now: dt.datetime,
    retry_render_errors: bool = False,
    report: SendReport | None = None,
) -> list[int]:
    """Plan ``day`` and record it in the ledger; returns the ids of touches waiting to go.

    ``retry_render_errors``: plan again touches whose template failed (after a fix). Runs an
    operator starts (``care run``, ``care_daily``) do; the frequent dispatcher does not, so
    a broken template is not retried every quarter of an hour. ``report``, if given, counts
    the touches the plan recorded as planned and as suppressed.
    """
    ledger = engine.ledger
    unreadable: dict[str, str] = {}
    touches = plan_day(
        engine.store, engine.ruleset, day, history=ledger, on_unreadable=unreadable.__setitem__
    )
    if unreadable:
        # Out of the inbox, so that no later run trips over them (docs/events.md).
        dead_letter_events(
            engine.store, unreadable, source="inbox", ref=run_id, now=engine.stamp(now)
        )
    record = ledger.record_plan(
        touches, run_id=run_id, now=engine.stamp(now), retry_render_errors=retry_render_errors
    )
    if report is not None:
        report.planned += record.planned
        report.suppressed += record.suppressed
    log.info(
        "planned %s: %d candidates, %d new, %d re-planned, %d suppressed, %d unchanged",
        day,
        len(touches),
        record.new,
        record.replanned,
        record.suppressed,
        record.unchanged,
    )
    return list(record.planned_ids or [])


def _message(
    state: TouchState,
    attempt: Attempt,
    rendered: RenderedMessage,
    *,
    may_resend: bool = False,
    unsubscribe: UnsubscribeLinks | None = None,
) -> OutboundMessage:
    """The message a channel sends; ``unsubscribe`` puts the link (and its headers) in the
    rendered content of a care or marketing email."""
    if unsubscribe is not None:
        rendered = unsubscribe.add_to(
            rendered,
            customer_id=state.row.customer_id,
            category=state.row.category,
            locale=state.row.locale,
        )
    return OutboundMessage(
        touch_key=state.row.touch_key,
        attempt_no=attempt.attempt_no,
        channel=Channel(attempt.channel),
        recipient=attempt.recipient,
        body=rendered.body,
        subject=rendered.subject,
        html=rendered.html,
        occurrence=state.row.occurrence.isoformat(),
        metadata={
            "rule_id": state.row.rule_id,
            "customer_id": state.row.customer_id,
            "category": state.row.category,
            "locale": state.row.locale,
        },
        attempt_id=attempt.id,
        created_at=_aware(attempt.created_at),
        may_resend=may_resend,
        headers=dict(rendered.headers),
    )


_NOT_LOADED = "its rule {rule} is not loaded (broken or removed)"


def _rule_loaded(engine: Engine, rule_id: str) -> bool:
    return any(rule.id == rule_id for rule in engine.ruleset.rules)


def _may_resend(engine: Engine, rule_id: str) -> bool:
    try:
        return engine.ruleset.by_id(rule_id).resend_unknown
    except KeyError:
        return False


def _aware(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value


def _result_change(
    state: TouchState, attempt: Attempt, result: SendResult, report: SendReport
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
        )
    if result.outcome is Outcome.RETRYABLE_FAILURE and (
        attempt.attempt_no < MAX_ATTEMPTS or result.stop_run
    ):
        report.retry += 1
        return StatusChange(state.id, TouchStatus.PLANNED, "retry", attempt.id, detail=detail)
    if result.outcome is Outcome.UNKNOWN:
        report.unknown += 1
        return StatusChange(state.id, TouchStatus.UNKNOWN, "unknown", attempt.id, detail=detail)
    reason = {
        Outcome.REJECTED_INVALID_RECIPIENT: "invalid_recipient",
        Outcome.REJECTED_OPTED_OUT: "opted_out",
        Outcome.RETRYABLE_FAILURE: "retries_exhausted",
    }.get(result.outcome, "provider_error")
    report.failed += 1
    report.failures.append(f"{state.row.touch_key}: {reason}: {scrub(result.detail)}")
    return StatusChange(state.id, TouchStatus.FAILED, reason, attempt.id, detail=detail)


def _timing(policy: ContactPolicy, state: TouchState, now: dt.datetime) -> SuppressionReason | None:
    """None when the touch may go now; else why not.

    A touch may go from its send time until ``sending_window_hours`` later, outside the
    customer's quiet hours. ``DEFERRED`` here means "wait" (not yet time, or quiet hours that
    end within the window); ``QUIET_HOURS`` that the quiet hours outlast the window;
    ``TOO_LATE`` that the window has passed (a late backfill, a dispatcher that was down).
    """
    send_at = state.send_at
    window_end = send_at + dt.timedelta(hours=policy.sending_window_hours)
    if now < send_at:
        return SuppressionReason.DEFERRED
    if now > window_end:
        return SuppressionReason.TOO_LATE
    local_now = now.astimezone(policy.zone(state.row.timezone))
    if policy.quiet_hours.contains(local_now.time()):
        allowed = policy.quiet_hours.next_allowed(local_now)
        return SuppressionReason.QUIET_HOURS if allowed > window_end else SuppressionReason.DEFERRED
    return None


def _held_at_send_time(
    engine: Engine, state: TouchState, now: dt.datetime, cause: SuppressionReason, why: str
) -> StatusChange:
    """The status change of a touch that cannot go out as planned (``too_late``,
    ``quiet_hours``, or ``frequency_cap`` on a later local day): final for most touches.

    A service obligation is deferred instead while its window lasts: it competes again, under
    the caps and capacity of that day, from the plan of the first local day it can still go
    (the day after its planned day at the earliest; after quiet hours if they hold now). Past
    its window it is ``obligation_missed``; final either way, never silently dropped.
    """
    try:
        rule = engine.ruleset.by_id(state.row.rule_id)
    except KeyError:
        rule = None
    if rule is None or not rule.obligation:
        return StatusChange(
            state.id,
            TouchStatus.SUPPRESSED,
            cause.value,
            detail={"final": True, "explain": [why]},
        )
    policy = engine.policy
    zone = policy.zone(state.row.timezone)
    local_now = now.astimezone(zone)
    if policy.quiet_hours.contains(local_now.time()):
        local_now = policy.quiet_hours.next_allowed(local_now)
    planned_day = state.send_at.astimezone(zone).date()
    wait_until = max(planned_day + dt.timedelta(days=1), local_now.date())
    last = rule.last_day(state.row.occurrence, state.context.get("days"))
    window = f"defer_days={rule.defer_days}, window ends {last}"
    if wait_until <= last:
        return StatusChange(
            state.id,
            TouchStatus.SUPPRESSED,
            SuppressionReason.DEFERRED.value,
            detail={
                WAIT_UNTIL: wait_until.isoformat(),
                "explain": [
                    f"held back at send time ({cause.value}): {why}",
                    f"deferred: a service obligation, it competes again when {wait_until} is "
                    f"planned ({window})",
                ],
            },
        )
    return StatusChange(
        state.id,
        TouchStatus.SUPPRESSED,
        SuppressionReason.OBLIGATION_MISSED.value,
        detail={
            "final": True,
            "explain": [
                f"held back at send time ({cause.value}): {why}",
                f"obligation missed: a service obligation, its window is over ({window})",
            ],
        },
    )


# Per send_touches call: the touch keys counted against a channel's capacity on a local day.
CapacityUse = dict[tuple[Channel, dt.date], set[str]]


def _late_cap_problem(
    engine: Engine, state: TouchState, now: dt.datetime, capacity_use: CapacityUse
) -> str | None:
    """A touch sent on a later local day than planned (held by quiet hours, or a dispatcher
    that was down) counts on the day it is sent: the plan of that day did not know it would
    land there, so its caps are checked again now. The day's capacity use is read from the
    ledger once per call of ``send_touches`` (``capacity_use``), not once per late touch."""
    zone = engine.policy.zone(state.row.timezone)
    today = now.astimezone(zone).date()
    if today == state.send_at.astimezone(zone).date():
        return None
    week = dt.timedelta(days=6)
    taken = [
        c
        for c in engine.ledger.contacts([state.row.customer_id], today - week, today + week)
        if c.key != state.row.touch_key
    ]
    channel = Channel(state.channel) if state.channel else None
    problem = cap_violation(engine.policy, Category(state.row.category), channel, taken, today)
    if problem is None and channel is not None and channel in engine.policy.capacity:
        budget = engine.policy.capacity[channel]
        if (channel, today) not in capacity_use:
            capacity_use[(channel, today)] = {
                c.key
                for c in engine.ledger.contacts(None, today, today)
                if c.channel == channel.value
            }
        keys = capacity_use[(channel, today)]
        used = len(keys - {state.row.touch_key})
        if used >= budget:
            problem = (
                engine.policy.clause(f"capacity.{channel.value}.per_day", budget)
                + f": {used} already on {today}"
            )
        else:
            keys.add(state.row.touch_key)  # it goes out today: later late touches count it
    return f"sent late, on {today}: {problem}" if problem else None


def _recipient(
    engine: Engine, state: TouchState, customer: Customer | None
) -> tuple[Channel | None, str | None, str]:
    """The channel and address to use now, re-checked against the customer's current data."""
    if customer is None:
        return None, None, "customer no longer in the store"
    if customer.status != "active":
        return None, None, f"customer status is {customer.status}"
    wanted = Channel(state.channel) if state.channel else None
    rule = engine.ruleset.by_id(state.row.rule_id)
    channel = engine.policy.usable_channel(
        rule.channels,
        rule.category,
        phone=customer.phone,
        email=customer.email,
        consent_sms=customer.consent_sms,
        consent_email=customer.consent_email,
        consent_marketing=customer.consent_marketing,
    )
    if channel is None:
        return None, None, "no usable channel any more (consent or address changed)"
    if wanted is not None and channel is not wanted:
        # The plan weighed caps and capacity for the planned channel; another channel must
        # be weighed by a plan too. The touch waits for the next one (deferred, not final).
        return (
            None,
            None,
            f"planned for {wanted.value}, now only {channel.value} is usable: "
            "the next plan decides on the new channel",
        )
    address = customer.phone if channel is Channel.SMS else customer.email
    return channel, address, ""


def send_touches(
    engine: Engine,
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
        sending: tuple[_Claimed, Future[list[SendResult]]] | None = None
        for chunk in chunks:
            prepared = _prepare_chunk(engine, chunk, now=now, capacity_use=use)
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
class _Prepared:
    """A chunk checked and rendered: the status changes to write and the touches to claim."""

    size: int
    report: SendReport
    changes: list[StatusChange]
    claims: list[Claim]


@dataclass
class _Claimed:
    """A chunk claimed in the ledger: the attempts to send, in order."""

    size: int
    report: SendReport
    sends: list[tuple[Claim, Attempt]]


def _prepare_chunk(
    engine: Engine,
    ids: list[int],
    *,
    now: dt.datetime,
    capacity_use: CapacityUse,
) -> _Prepared:
    report = SendReport()
    ledger = engine.ledger
    states = ledger.states(ids)
    customer_ids = {s.row.customer_id for s in states}
    with engine.store.read_session() as session:
        customers = {
            c.customer_id: c
            for c in session.scalars(select(Customer).where(Customer.customer_id.in_(customer_ids)))
        }
    changes: list[StatusChange] = []
    claims: list[Claim] = []
    for state in states:
        if state.status is not TouchStatus.PLANNED:
            report.skipped += 1
            continue
        loaded = _rule_loaded(engine, state.row.rule_id)
        timing = _timing(engine.policy, state, now)
        if timing is not None:
            if timing is SuppressionReason.DEFERRED:  # not yet: its time has not come
                report.waiting += 1
            else:
                why = (
                    f"planned for {state.send_at:%Y-%m-%d %H:%M}Z; at "
                    f"{now.astimezone(engine.policy.zone(state.row.timezone)):%H:%M} "
                    "local; "
                    + engine.policy.clause(
                        "sending_window_hours", engine.policy.sending_window_hours
                    )
                    + "; "
                    + engine.policy.clause("quiet_hours", engine.policy.quiet_hours)
                )
                held = _held_at_send_time(engine, state, now, timing, why)
                if not loaded and held.detail is not None:
                    held.detail["explain"].append(_NOT_LOADED.format(rule=state.row.rule_id))
                changes.append(held)
                report.suppressed += 1
            continue
        if not loaded:
            # Its rule failed to load (or was removed): nothing is decided for it, so nothing
            # is recorded. It stays planned and goes out once the rule loads again, within its
            # sending window; past the window it is suppressed, too_late, like any touch.
            report.held += 1
            continue
        late = _late_cap_problem(engine, state, now, capacity_use)
        if late:
            changes.append(
                _held_at_send_time(engine, state, now, SuppressionReason.FREQUENCY_CAP, late)
            )
            report.suppressed += 1
            continue
        channel, address, why = _recipient(engine, state, customers.get(state.row.customer_id))
        if channel is None or address is None:
            reason = (
                SuppressionReason.DEFERRED
                if why.startswith("planned for")
                else SuppressionReason.NO_CONTACT
            )
            changes.append(
                StatusChange(
                    state.id, TouchStatus.SUPPRESSED, reason.value, detail={"explain": [why]}
                )
            )
            report.suppressed += 1
            continue
        locale = state.row.locale
        try:
            rendered = engine.templates.render(
                state.row.template_id, channel, locale, state.context
            )
        except RenderError as exc:
            changes.append(
                StatusChange(
                    state.id, TouchStatus.FAILED, "render_error", detail={"detail": str(exc)}
                )
            )
            report.failed += 1
            report.failures.append(f"{state.row.touch_key}: render_error: {exc}")
            log.error("touch %s: %s", state.row.touch_key, exc)
            continue
        claims.append(
            Claim(
                state=state,
                channel=channel.value,
                transport=engine.transports[channel].name,
                recipient=address,
                template_hash=engine.templates.template_hash(
                    state.row.template_id, channel, locale
                ),
                message=rendered,
            )
        )
    return _Prepared(len(ids), report, changes, claims)


def _claim_chunk(engine: Engine, prepared: _Prepared, *, run_id: str, now: dt.datetime) -> _Claimed:
    """Write the chunk's status changes and claim its touches (``sending``) in the ledger."""
    ledger = engine.ledger
    ledger.append_many(prepared.changes, run_id=run_id, now=engine.stamp(now))
    won = ledger.claim_many(prepared.claims, run_id=run_id, now=engine.stamp(now))
    prepared.report.skipped += len(prepared.claims) - len(won)
    sends = [
        (c, won[c.state.id])
        for channel in Channel
        for c in prepared.claims
        if c.channel == channel.value and c.state.id in won
    ]
    return _Claimed(prepared.size, prepared.report, sends)


def _deliver(
    engine: Engine, claimed: _Claimed, links: dict[Channel, UnsubscribeLinks]
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
            _message(
                c.state,
                a,
                c.message,
                may_resend=_may_resend(engine, c.state.row.rule_id),
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
    engine: Engine,
    claimed: _Claimed,
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
        results.append(_result_change(claim.state, attempt, result, report))
        if result.outcome is Outcome.REJECTED_OPTED_OUT:
            _record_opt_out(engine, claim.state, Channel(claim.channel), result, now)
        if result.stop_run and result.detail not in refused:
            refused.append(result.detail)
    engine.ledger.append_many(results, run_id=run_id, now=engine.stamp(now))
    if refused:
        # Every touch of the chunk is back in ``planned``; nothing more goes out this run.
        raise ConfigurationError("; ".join(refused) + ": check the provider's credentials")
    return report


def _record_opt_out(
    engine: Engine, state: TouchState, channel: Channel, result: SendResult, now: dt.datetime
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


def recover_in_flight(
    engine: Engine, *, run_id: str, now: dt.datetime, day: dt.date | None = None
) -> SendReport:
    """Settle touches left in ``sending`` by a crash, asking the provider where it can answer.

    Only attempts older than ``SENDING_LEASE`` are touched: a younger one may belong to a
    worker that is still sending it. Found at the provider: ``sent``. Certainly not there:
    ``planned`` again, to be sent. The provider cannot tell: ``unknown``, for a person to
    review; never sent again blindly.
    """
    report = SendReport()
    ledger = engine.ledger
    ids = ledger.touch_ids_in_status({TouchStatus.SENDING}, day=day)
    for state in ledger.states(ids):
        if state.status is not TouchStatus.SENDING:
            continue
        attempt = ledger.attempts(state.id)[-1]
        if _aware(attempt.created_at) > now - SENDING_LEASE:
            report.skipped += 1
            continue
        transport = engine.transports.get(Channel(attempt.channel))
        rendered = RenderedMessage(
            Channel(attempt.channel),
            body=attempt.body or "",
            subject=attempt.subject,
            html=attempt.html,
        )
        resend = _may_resend(engine, state.row.rule_id)
        try:
            answer = (
                transport.reconcile(_message(state, attempt, rendered, may_resend=resend))
                if transport and transport.name == attempt.transport
                else None
            )
        except Exception as exc:  # the provider cannot be asked now: ask again next run
            log.warning("touch %s: cannot reconcile now: %r", state.row.touch_key, exc)
            report.skipped += 1
            continue
        if answer is None and resend:
            answer = SendResult(Outcome.UNKNOWN, detail="not found")  # the rule allows it
        if answer is not None and answer.outcome is Outcome.SENT:
            ledger.append(
                state.id,
                TouchStatus.SENT,
                attempt_id=attempt.id,
                provider_message_id=answer.provider_message_id,
                detail={"detail": "reconciled: " + answer.detail},
                run_id=run_id,
                now=engine.stamp(now),
            )
            report.sent += 1
        elif answer is not None and answer.detail == "not found":
            ledger.append(
                state.id,
                TouchStatus.PLANNED,
                attempt_id=attempt.id,
                reason="reconciled_not_sent",
                run_id=run_id,
                now=engine.stamp(now),
            )
            report.retry += 1
        else:
            ledger.append(
                state.id,
                TouchStatus.UNKNOWN,
                attempt_id=attempt.id,
                reason="crash_unreconciled",
                run_id=run_id,
                now=engine.stamp(now),
            )
            report.unknown += 1
    return report


def pending_ids(engine: Engine, day: dt.date | None = None) -> list[int]:
    """Touches waiting in ``planned`` (all days, or one)."""
    return engine.ledger.touch_ids_in_status({TouchStatus.PLANNED}, day=day)


def dates_in_effect(now: dt.datetime) -> list[dt.date]:
    """The local dates that are "today" somewhere on Earth at ``now`` (UTC-12 to UTC+14)."""
    utc = now.astimezone(dt.timezone.utc)
    return sorted({(utc + dt.timedelta(hours=h)).date() for h in (-12, 14)} | {utc.date()})


def anchor(engine: Engine, *, run_id: str, now: dt.datetime) -> None:
    """Anchor the ledger's chain head at the end of a run (``ledger.anchors.anchor_run``)."""
    from ..ledger.anchors import anchor_run

    anchor_run(engine.store, engine.config.anchor_file, run_id=run_id, now=engine.stamp(now))


def dispatch(engine: Engine, *, run_id: str, now: dt.datetime) -> SendReport:
    """``care_dispatch``: settle crashed sends, plan the dates in effect, send what is due.

    Planning again is cheap (index lookups) and idempotent; it is what gives a thank-you to
    a purchase recorded after ``care_daily`` ran, within the contact policy's daily cap.
    """
    report = recover_in_flight(engine, run_id=run_id, now=now)
    for day in dates_in_effect(now):
        plan_and_record(engine, day, run_id=run_id, now=engine.stamp(now), report=report)
    report.merge(send_touches(engine, pending_ids(engine), run_id=run_id, now=now))
    anchor(engine, run_id=run_id, now=now)
    return report


def batches(ids: Sequence[int], size: int) -> list[list[int]]:
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


def run_day(
    engine: Engine,
    day: dt.date,
    *,
    run_id: str,
    now: dt.datetime,
    progress: Callable[[int, int], None] | None = None,
) -> SendReport:
    """``care run``: recover, plan, send what is due. Idempotent.

    ``progress(done, total)``, if given, follows the sending, chunk by chunk.
    """
    report = recover_in_flight(engine, run_id=run_id, now=now, day=day)
    planned = plan_and_record(
        engine, day, run_id=run_id, now=now, retry_render_errors=True, report=report
    )
    # The day's own touches and those deferred to it from earlier days (their occurrence
    # is the earlier day).
    ids = sorted(set(planned) | set(pending_ids(engine, day)))
    done = [0]

    def step(count: int) -> None:
        done[0] += count
        if progress is not None:
            progress(done[0], len(ids))

    report.merge(send_touches(engine, ids, run_id=run_id, now=now, progress=step))
    anchor(engine, run_id=run_id, now=now)
    return report
