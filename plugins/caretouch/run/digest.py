"""The agents' daily digest: each agent's open and overdue tasks, by email, once a day, and
the tasks overdue for ``escalate_after`` days in their manager's digest
(docs/operations.md, "The daily digest and escalation").

- **Who gets one**: every agent with an open (``assigned``) task or a customer at risk of
  leaving, and every manager with an escalated task of one of their agents. An agent without
  an email address is skipped and counted; an agent with nothing open and nobody at risk gets
  nothing.
- **What it says**: per task the customer (id and name, the phone masked as ``care task
  list`` shows it: the agent calls their own customer, whose name the brief gives anyway),
  the kind, the due day, the days overdue and the brief's first line (the rule's id when the
  brief is empty); overdue first, the most overdue at the top. The manager's section lists
  the agent, the customer's id (not the name: the manager follows up with the agent), the
  task and the days overdue.
- **Customers at risk of leaving**: with the contact policy given, the agent's customers at
  ``medium`` or ``high`` churn risk on the day (``signals.churn``; docs/operations.md,
  "Customers at risk of leaving"), highest score first, with their signals.
- **The language**: agents have no locale; a digest is written in the locale most of the
  agent's customers have (``customers.locale``), ``zh-CN`` when they have none or on a tie
  with it; ``templates/_agent_digest/email.<locale>.*`` (a shared folder: no rule may name it).
- **How it goes**: through the email channel of the engine (SendGrid when configured, else
  the outbox), as staff mail: not a touch, not in the ledger, no unsubscribe link.
- **Once per agent and day**: the digest's row in ``agent_digests`` is claimed before the
  send (``store.digests``). A rerun, or a second worker, finds it: ``sent`` is done; a
  ``failed`` send (the provider refused for now) is tried again; a claim older than
  ``LEASE`` that never settled (the process died between claim and send) is settled by
  asking the channel whether it took the message (``Transport.reconcile``: the outbox knows;
  SendGrid cannot tell, so it is ``unknown`` and reported, never sent twice blindly); a
  younger one is another run's, in progress.
- **Escalation**: a task overdue by ``escalate_after`` days or more (``$CARE_ESCALATE_AFTER_DAYS``,
  default 3) goes to the manager of its agent (``agents.manager_id``), every day until it is
  closed; it is recorded once, in ``task_escalations``, with the digest that first carried it,
  when that digest was sent. An agent without a manager (or whose manager is not in
  ``agents``, or has no email address) leaves the task unescalated: listed in the summary.

No personal data in logs: counts and agent ids only.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from ..channels.base import OutboundMessage, SendResult, Transport
from ..errors import RenderError
from ..ledger.tasks import Task, tasks
from ..mask import mask_phone, scrub
from ..render.templates import TemplateStore
from ..rules.contact_policy import ContactPolicy
from ..signals.churn import assess
from ..store import digests as records
from ..store.db import Store, among
from ..store.models import Agent, Customer
from ..vocab import Channel, DigestStatus, Locale, Outcome, RiskLevel
from .engine import CareEngine

log = logging.getLogger("caretouch.run")

TEMPLATE = "_agent_digest"
DEFAULT_LOCALE = Locale.ZH_CN.value
# A claim this old that never settled is a run that died between claim and send.
LEASE = dt.timedelta(minutes=10)
MAX_SUMMARY = 120
_BATCH = 500
_LOCALES = frozenset(loc.value for loc in Locale)


@dataclass(frozen=True)
class DigestLine:
    """One of the agent's own open tasks."""

    task: int
    customer_id: str
    customer_name: str
    phone: str  # masked
    kind: str
    due: dt.date
    days_overdue: int
    summary: str

    @property
    def overdue(self) -> bool:
        return self.days_overdue > 0


@dataclass(frozen=True)
class EscalatedLine:
    """A task of one of the manager's agents, overdue for ``escalate_after`` days or more."""

    task: int
    agent_id: str
    agent_name: str
    customer_id: str
    kind: str
    due: dt.date
    days_overdue: int


@dataclass(frozen=True)
class AtRiskLine:
    """One of the agent's customers at risk of leaving (``signals.churn``)."""

    customer_id: str
    customer_name: str
    tier: str | None
    level: str
    score: int
    signals: tuple[str, ...]


# The risk levels an agent's digest lists.
LISTED_RISK = (RiskLevel.HIGH, RiskLevel.MEDIUM)


@dataclass
class Digest:
    """One agent's digest of one day."""

    agent_id: str
    name: str
    email: str | None
    locale: str
    lines: list[DigestLine] = field(default_factory=list)
    escalated: list[EscalatedLine] = field(default_factory=list)
    at_risk: list[AtRiskLine] = field(default_factory=list)

    @property
    def overdue(self) -> int:
        return sum(line.overdue for line in self.lines)

    def escalations(self) -> list[records.Escalation]:
        return [
            records.Escalation(e.task, e.agent_id, self.agent_id, e.days_overdue)
            for e in self.escalated
        ]


@dataclass(frozen=True)
class Unescalated:
    """A task overdue long enough whose agent's manager cannot be told, and why."""

    task: int
    agent_id: str
    days_overdue: int
    reason: str


@dataclass
class DigestSummary:
    """What a digest run did (``care task digest``, ``care_agent_digest``)."""

    day: dt.date
    escalate_after: int
    dry_run: bool = False
    agents: int = 0  # agents with open tasks
    digests: int = 0  # digests due (agents and managers with an email address)
    sent: int = 0
    already_sent: int = 0
    in_progress: int = 0  # claimed by another run, not yet settled
    skipped_no_email: list[str] = field(default_factory=list)
    escalations: int = 0  # tasks in managers' sections
    escalations_recorded: int = 0  # first escalated by this run
    unescalated: list[Unescalated] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (agent id, why)

    @property
    def ok(self) -> bool:
        """No real failure: nothing refused, nothing in doubt (skips are not failures)."""
        return not self.failed

    def lines(self) -> list[str]:
        """The summary a person reads (no personal data: agent ids only)."""
        verb = "would send" if self.dry_run else "sent"
        out = [
            f"digest {self.day.isoformat()}: {self.agents} agent(s) with open tasks, "
            f"{self.digests} digest(s) due, {verb} {self.sent}, already sent {self.already_sent}"
            + (f", in progress elsewhere {self.in_progress}" if self.in_progress else ""),
            f"skipped (no email): {len(self.skipped_no_email)}"
            + (f" ({', '.join(self.skipped_no_email)})" if self.skipped_no_email else ""),
            f"escalations (overdue ≥ {self.escalate_after} day(s)): {self.escalations} to "
            f"managers ({self.escalations_recorded} new), {len(self.unescalated)} unescalated",
        ]
        out += [
            f"  unescalated: task {u.task} of agent {u.agent_id}, {u.days_overdue} day(s) "
            f"overdue: {u.reason}"
            for u in self.unescalated
        ]
        out.append(f"failures: {len(self.failed)}")
        out += [f"  failed: agent {agent}: {why}" for agent, why in self.failed]
        return out

    def as_dict(self) -> dict[str, object]:
        return {
            "day": self.day.isoformat(),
            "dry_run": self.dry_run,
            "agents": self.agents,
            "digests": self.digests,
            "sent": self.sent,
            "already_sent": self.already_sent,
            "in_progress": self.in_progress,
            "skipped_no_email": list(self.skipped_no_email),
            "escalations": self.escalations,
            "escalations_recorded": self.escalations_recorded,
            "unescalated": [u.task for u in self.unescalated],
            "failed": [agent for agent, _ in self.failed],
        }


# -- what each digest holds -----------------------------------------------------------------


def first_line(brief: str, rule_id: str) -> str:
    """The brief's first non-blank line, shortened; the rule's id when the brief is empty."""
    for line in brief.splitlines():
        if line.strip():
            text = " ".join(line.split())
            return text if len(text) <= MAX_SUMMARY else text[: MAX_SUMMARY - 1] + "…"
    return rule_id


def _in_batches(values: Iterable[str]) -> Iterable[list[str]]:
    ordered = sorted(set(values))
    for start in range(0, len(ordered), _BATCH):
        yield ordered[start : start + _BATCH]


def _customers(store: Store, ids: Iterable[str]) -> dict[str, tuple[str, str | None]]:
    found: dict[str, tuple[str, str | None]] = {}
    with store.read_session() as session:
        for wanted in _in_batches(ids):
            query = select(Customer.customer_id, Customer.name, Customer.phone).where(
                among(session, Customer.customer_id, wanted)
            )
            for customer_id, name, phone in session.execute(query):
                found[customer_id] = (name, phone)
    return found


def _agents(store: Store, ids: Iterable[str]) -> dict[str, Agent]:
    found: dict[str, Agent] = {}
    with store.read_session() as session:
        for wanted in _in_batches(ids):
            for agent in session.scalars(
                select(Agent).where(among(session, Agent.agent_id, wanted))
            ):
                session.expunge(agent)
                found[agent.agent_id] = agent
    return found


def agent_locales(store: Store, agent_ids: Iterable[str]) -> dict[str, str]:
    """Each agent's digest locale: the one most of their customers have; on a tie the first
    of zh-CN, zh-TW, en; ``zh-CN`` for an agent without customers."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    with store.read_session() as session:
        for wanted in _in_batches(agent_ids):
            query = (
                select(Customer.agent_id, Customer.locale, func.count())
                .where(among(session, Customer.agent_id, wanted))
                .group_by(Customer.agent_id, Customer.locale)
            )
            for agent_id, locale, n in session.execute(query):
                if agent_id is not None and locale in _LOCALES:
                    counts[agent_id][locale] += n
    order = [loc.value for loc in Locale]
    chosen = {}
    for agent_id in agent_ids:
        by_locale = counts.get(agent_id)
        if not by_locale:
            chosen[agent_id] = DEFAULT_LOCALE
            continue
        chosen[agent_id] = max(order, key=lambda loc: (by_locale[loc], -order.index(loc)))
    return chosen


def collect(
    store: Store, day: dt.date, *, escalate_after: int, policy: ContactPolicy | None = None
) -> tuple[list[Digest], list[Unescalated], int]:
    """The digests due on ``day`` (by agent id), the overdue tasks no manager can be told
    of, and how many agents have open tasks. With ``policy`` (the levels' cadences), each
    agent's customers at risk of leaving too. Reads only."""
    open_tasks: list[Task] = tasks(store)
    risks = (
        [r for r in assess(store, policy, day).values() if r.level in LISTED_RISK and r.agent_id]
        if policy is not None
        else []
    )
    agent_ids = {t.agent_id for t in open_tasks}
    agents = _agents(store, agent_ids | {str(r.agent_id) for r in risks})
    managers = _agents(store, {a.manager_id for a in agents.values() if a.manager_id} - set(agents))
    everyone = {**agents, **managers}
    customers = _customers(
        store, {t.customer_id for t in open_tasks} | {r.customer_id for r in risks}
    )
    digests: dict[str, Digest] = {}

    def digest_of(agent_id: str) -> Digest:
        if agent_id not in digests:
            agent = everyone[agent_id]
            digests[agent_id] = Digest(agent_id, agent.name, agent.email or None, DEFAULT_LOCALE)
        return digests[agent_id]

    unescalated: list[Unescalated] = []
    for t in open_tasks:
        days_overdue = max(0, (day - t.due).days)
        agent = agents.get(t.agent_id)
        name, phone = customers.get(t.customer_id, ("", None))
        line = DigestLine(
            t.touch_id,
            t.customer_id,
            name,
            mask_phone(phone),
            t.kind,
            t.due,
            days_overdue,
            first_line(t.brief, t.rule_id),
        )
        if agent is None:
            # Assigned to an agent since removed from ``agents``: nobody to mail.
            if days_overdue >= escalate_after:
                why = "the agent is not in the agents table"
                unescalated.append(Unescalated(t.touch_id, t.agent_id, days_overdue, why))
            continue
        digest_of(t.agent_id).lines.append(line)
        if days_overdue < escalate_after:
            continue
        manager = everyone.get(agent.manager_id) if agent.manager_id else None
        if manager is None or manager.agent_id == agent.agent_id:
            reason = (
                "the agent has no manager"
                if not agent.manager_id or agent.manager_id == agent.agent_id
                else f"manager {agent.manager_id} is not in the agents table"
            )
            unescalated.append(Unescalated(t.touch_id, t.agent_id, days_overdue, reason))
            continue
        digest_of(manager.agent_id).escalated.append(
            EscalatedLine(
                t.touch_id,
                agent.agent_id,
                agent.name,
                t.customer_id,
                t.kind,
                t.due,
                days_overdue,
            )
        )
    for risk in risks:
        if risk.agent_id not in agents:
            continue  # an agent since removed from ``agents``: nobody to mail
        digest_of(str(risk.agent_id)).at_risk.append(
            AtRiskLine(
                risk.customer_id,
                customers.get(risk.customer_id, ("", None))[0],
                risk.tier,
                risk.level.value,
                risk.score,
                tuple(s.value for s in risk.signals),
            )
        )
    locales = agent_locales(store, list(digests))
    for digest in digests.values():
        digest.at_risk.sort(key=lambda x: (-x.score, x.customer_id))
        digest.locale = locales[digest.agent_id]
        digest.lines.sort(key=lambda x: (-x.days_overdue, x.due, x.task))
        digest.escalated.sort(key=lambda x: (-x.days_overdue, x.agent_id, x.task))
    return [digests[k] for k in sorted(digests)], unescalated, len(agent_ids & set(agents))


# -- sending --------------------------------------------------------------------------------


def message_key(agent_id: str, day: dt.date) -> str:
    """The digest's key in the channel (the outbox's file name, SendGrid's ``care_touch``)."""
    return f"digest|{agent_id}|{day.isoformat()}"


def render(
    templates: TemplateStore, digest: Digest, day: dt.date, *, escalate_after: int, attempt: int
) -> OutboundMessage:
    """The digest's email (``templates/_agent_digest``), in the agent's locale."""
    context = {
        "day": day,
        "agent": {"agent_id": digest.agent_id, "name": digest.name},
        "tasks": digest.lines,
        "overdue": digest.overdue,
        "escalated": digest.escalated,
        "escalate_after": escalate_after,
        "at_risk": digest.at_risk,
    }
    rendered = templates.render(TEMPLATE, Channel.EMAIL, digest.locale, context)
    return OutboundMessage(
        touch_key=message_key(digest.agent_id, day),
        attempt_no=attempt,
        channel=Channel.EMAIL,
        recipient=digest.email or "",
        body=rendered.body,
        subject=rendered.subject,
        html=rendered.html,
        occurrence=day.isoformat(),
        metadata={"category": "agent_digest", "locale": digest.locale},
    )


def _status_of(result: SendResult) -> DigestStatus:
    if result.outcome is Outcome.SENT:
        return DigestStatus.SENT
    if result.outcome is Outcome.RETRYABLE_FAILURE:
        return DigestStatus.FAILED
    if result.outcome is Outcome.UNKNOWN:
        return DigestStatus.UNKNOWN
    return DigestStatus.REJECTED


def send_digests(
    store: Store,
    templates: TemplateStore,
    transport: Transport,
    day: dt.date,
    *,
    run_id: str,
    clock: Callable[[], dt.datetime],
    escalate_after: int,
    dry_run: bool = False,
    agent_ids: frozenset[str] | None = None,
    policy: ContactPolicy | None = None,
) -> DigestSummary:
    """Send the digests of ``day`` through ``transport`` (the engine's email channel), each
    once (see the module); ``agent_ids``: only these agents' digests. ``clock``: when each
    claim and answer happened. ``dry_run``: render every digest, claim and send nothing.
    ``policy``: list each agent's customers at risk of leaving as well."""
    if escalate_after < 1:
        raise ValueError("escalate_after must be at least 1 day")
    digests, unescalated, agents = collect(store, day, escalate_after=escalate_after, policy=policy)
    summary = DigestSummary(day, escalate_after, dry_run=dry_run, agents=agents)
    summary.unescalated.extend(unescalated)
    for digest in digests:
        if agent_ids is not None and digest.agent_id not in agent_ids:
            continue
        if not digest.email:
            summary.skipped_no_email.append(digest.agent_id)
            summary.unescalated += [
                Unescalated(
                    e.task, e.agent_id, e.days_overdue, f"manager {digest.agent_id} has no email"
                )
                for e in digest.escalated
            ]
            continue
        summary.digests += 1
        summary.escalations += len(digest.escalated)
        try:
            _one(store, templates, transport, digest, day, summary, run_id, clock, dry_run)
        except RenderError as exc:
            # A broken template fails every digest alike; say so once per agent, go on.
            summary.failed.append((digest.agent_id, f"cannot render: {scrub(str(exc))}"))
    log.info(
        "digests of %s: %d due, %d sent, %d already sent, %d skipped (no email), %d failed, "
        "%d escalated (%d new), %d unescalated",
        day.isoformat(),
        summary.digests,
        summary.sent,
        summary.already_sent,
        len(summary.skipped_no_email),
        len(summary.failed),
        summary.escalations,
        summary.escalations_recorded,
        len(summary.unescalated),
    )
    return summary


def _one(
    store: Store,
    templates: TemplateStore,
    transport: Transport,
    digest: Digest,
    day: dt.date,
    summary: DigestSummary,
    run_id: str,
    clock: Callable[[], dt.datetime],
    dry_run: bool,
) -> None:
    """Claim, send and settle one digest (or find it done, in progress or in doubt)."""
    escalate_after = summary.escalate_after
    if dry_run:
        render(templates, digest, day, escalate_after=escalate_after, attempt=1)
        found = records.find(store, digest.agent_id, day)
        if found is not None and found.status is DigestStatus.SENT:
            summary.already_sent += 1
        else:
            summary.sent += 1
        return
    # Rendered before the claim: a template error must not leave a claim behind.
    message = render(templates, digest, day, escalate_after=escalate_after, attempt=1)
    got = records.claim_new(
        store,
        digest.agent_id,
        day,
        run_id=run_id,
        now=clock(),
        tasks=len(digest.lines),
        overdue=digest.overdue,
        escalations=len(digest.escalated),
    )
    if isinstance(got, records.DigestRecord):
        claimed = _take_over(store, transport, digest, message, summary, got, run_id, clock)
        if claimed is None:
            return
    else:
        claimed = got
    message = replace(message, attempt_no=claimed.attempt)
    result = transport.send(message)
    status = _status_of(result)
    applied, recorded = records.settle(
        store,
        claimed.record,
        status,
        now=clock(),
        provider_message_id=result.provider_message_id,
        detail=scrub(result.detail) if result.detail else None,
        escalations=digest.escalations(),
    )
    if not applied:
        # Our claim was taken over (we outlived the lease): the other run answers for it.
        summary.failed.append((digest.agent_id, "claim taken over by another run while sending"))
        return
    summary.escalations_recorded += recorded
    if status is DigestStatus.SENT:
        summary.sent += 1
        log.info("digest of agent %s sent via %s", digest.agent_id, transport.name)
    else:
        summary.failed.append((digest.agent_id, f"{status.value}: {scrub(result.detail)}"))
        log.warning(
            "digest of agent %s not sent via %s: %s",
            digest.agent_id,
            transport.name,
            status.value,
        )


def _take_over(
    store: Store,
    transport: Transport,
    digest: Digest,
    message: OutboundMessage,
    summary: DigestSummary,
    record: records.DigestRecord,
    run_id: str,
    clock: Callable[[], dt.datetime],
) -> records.Claimed | None:
    """The (agent, day) row exists: what to do with it. The new claim, or None when there is
    nothing to send (already sent, in progress, or settled for a person to see)."""
    agent_id = digest.agent_id
    if record.status is DigestStatus.SENT:
        summary.already_sent += 1
        return None
    if record.status in (DigestStatus.REJECTED, DigestStatus.UNKNOWN):
        summary.failed.append(
            (agent_id, f"{record.status.value} earlier today: {record.detail or ''}")
        )
        return None
    now = clock()
    if record.status is DigestStatus.CLAIMED:
        if now - record.claimed_at < LEASE:
            summary.in_progress += 1
            return None
        # The run that claimed it died between claim and answer: did the channel take it?
        try:
            answer = transport.reconcile(replace(message, attempt_no=record.attempts))
        except Exception as exc:  # the provider could not be asked: leave it for later
            summary.failed.append(
                (agent_id, f"a crashed send could not be checked: {type(exc).__name__}")
            )
            return None
        if answer is not None and answer.outcome is Outcome.SENT:
            applied, recorded = records.settle(
                store,
                record,
                DigestStatus.SENT,
                now=now,
                provider_message_id=answer.provider_message_id,
                detail="sent by a run that crashed (found by reconcile)",
                escalations=digest.escalations(),
            )
            summary.escalations_recorded += recorded
            summary.already_sent += 1 if applied else 0
            summary.in_progress += 0 if applied else 1
            return None
        if answer is None or answer.outcome is not Outcome.NOT_SENT:
            records.settle(
                store,
                record,
                DigestStatus.UNKNOWN,
                now=now,
                detail=f"a run crashed while sending; {transport.name} cannot tell whether it went",
            )
            summary.failed.append(
                (agent_id, f"unknown: a crashed send {transport.name} cannot confirm")
            )
            return None
    claimed = records.claim_again(store, record, run_id=run_id, now=now)
    if claimed is None:
        summary.in_progress += 1
    return claimed


def digest_day(engine: CareEngine, now: dt.datetime) -> dt.date:
    """The day a digest run at ``now`` is for: the date in the contact policy's default
    time zone (the agency's), so that a run at 07:30 in Shanghai is that day's."""
    return now.astimezone(ZoneInfo(engine.policy.default_timezone)).date()


def run_digests(
    engine: CareEngine,
    day: dt.date | None,
    *,
    run_id: str,
    now: dt.datetime | None = None,
    dry_run: bool = False,
    agent_ids: frozenset[str] | None = None,
) -> DigestSummary:
    """``send_digests`` with the engine's store, templates and email channel, and
    ``$CARE_ESCALATE_AFTER_DAYS``; ``day`` None: today (``digest_day``). Time comes from the
    engine's clock, else ``now``."""
    if engine.clock is not None:
        clock = engine.clock
    elif now is not None:
        fixed = now
        clock = lambda: fixed  # noqa: E731
    else:
        raise ValueError("run_digests needs the engine's clock or a 'now'")
    return send_digests(
        engine.store,
        engine.templates,
        engine.transports[Channel.EMAIL],
        day if day is not None else digest_day(engine, clock()),
        run_id=run_id,
        clock=clock,
        escalate_after=engine.config.escalate_after_days,
        dry_run=dry_run,
        agent_ids=agent_ids,
        policy=engine.policy,
    )
