"""The closed loops of the managers' report (``care report``, issue 16): satisfaction, NPS,
complaints and their timeliness, premiums and churn, tasks per agent, and the problem
customers, for one period. SQL over the store and the ledger, into plain data (``Loops``);
the page and the CSVs are ``service_report``'s. Reading only.

Dates: a business event (a complaint, an answer, an NPS score) falls in the period by its
customer-local date (the customer's time zone, else the contact policy's default), as the
rules date it; a touch by its occurrence (the local date it was due); a task's change by the
local day (the touch's time zone) it was recorded.

- Satisfaction: the answers recorded in the period, from two sources: the customers' replies
  (``reply_satisfied`` / ``reply_unsatisfied`` events, their ``score``; one without a score
  counts by its type, satisfied or not, and is left out of the average) and the agents'
  ``care task done --satisfaction`` (the score on the task's closing event, recorded in the
  period). Average score (1-5), share satisfied (a score of 4 or 5), and the response rate:
  the SMS touches due in the period that went out (sent, delivered, undelivered, bounced)
  and got a reply of any kind (``reply_satisfied``, ``reply_unsatisfied``, ``reply_message``
  naming their ``touch_id``, by the time the report is made), among those that went out.
- NPS: ``nps_recorded`` answers in the period: promoters (9-10) minus detractors (0-6), in
  % of the answers; "not collected" without any. Scores outside 0-10 are ignored (counted).
- Complaints: ``complaint_received`` events in the period, and per 1,000 active customers
  (now). Timeliness is what the loaded rules owe (``COMPLAINT_RECEIVED`` and
  ``COMPLAINT_RESOLVED`` event rules), each measured against the complaints the rule owes a
  touch for: those it planned one for (whatever became of it) and those its candidate query
  (``plan.due_touches``: trigger and audience) finds due but the ledger never got.

  - acknowledged: a rule on ``complaint_received`` without a task: its message went out;
  - called back: a rule on ``complaint_received`` with a task for the customer's agent: the
    agent closed the task (done, no answer, declined) by its expiry day (its due day + the
    rule's ``task.expires_days``); "reached" is done. A complaint whose customer has no
    agent (now) is owed no call-back by such a rule (its audience names the agent): counted
    apart ("no agent"), not in the base; a call-back that went out as a message (the rule's
    next channel) is owed but not called back;
  - second follow-up: the complaints resolved in the period (``complaint_resolved``) and,
    of those a ``complaint_resolved`` rule owes a touch, those whose message went out or
    whose task its agent closed (done, no answer, declined; any day);
  - open at the period's end: cases received or reopened and not resolved or closed by the
    end of its last day (``signals.churn.open_complaints``).
- Premiums and churn: the store keeps policies and customers as they are now, not their
  history, so these are read from the current state. Policies with a premium schedule
  (active, with a ``premium_due_date``); overdue: unpaid (``paid_through`` missing or before
  ``premium_due_date``) with the due date on or before the period's last day; lapsed: unpaid
  ``grace_days`` after the due date by the period's last day, or marked ``lapsed`` with a
  schedule; lapse rate: lapsed among the policies with a schedule (active or lapsed).
  Customers at high churn risk on the period's last day (``signals.churn.assess``) and their
  share of the active customers. "Left" (the churn rate): customers whose status is not
  active now, among all customers: a stock, not the period's flow, because the store does
  not record when a customer left.
- Tasks per agent: the tasks whose due day falls in the period, by agent (the one the task
  was assigned to), at their status now (assigned, done, no_answer, declined, expired), and
  overdue: still assigned at the end of the period's last day (all are due by then).
- Problem customers: a complaint received in the period, an unsatisfied answer in it (a
  ``reply_unsatisfied`` or a task satisfaction of 1-3), a premium overdue or lapsed (as
  above) or high churn risk at the period's end; each with what was done (their touches due
  in the period: rule and status, a task's outcome) and the outcome (their latest score by
  the period's end, their cases open or closed). At most ``PROBLEMS_LISTED``, the highest
  churn-risk score first; the rest are counted. Customer and rule ids only: no names, phone
  numbers or addresses.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, func, or_, select

from ..dates import aware_utc
from ..ledger.models import REAL_TOUCH, TouchCurrent, TouchRow
from ..plan.cases import case_of
from ..premiums import DEFAULT_GRACE_DAYS
from ..premiums import lapsed as is_lapsed
from ..rules.contact_policy import ContactPolicy
from ..rules.loader import RuleSet
from ..rules.model import Rule, TriggerKind
from ..rules.sql import premium_unpaid
from ..signals.churn import assess, open_complaints
from ..store.db import Store, among
from ..store.models import Customer, Event, InsurancePolicy
from ..vocab import Channel, CustomerStatus, PolicyStatus, RiskLevel, TaskAssignee, TouchStatus
from .figures import (
    SENT_LIKE,
    TASK_LOOKBACK_DAYS,
    Period,
    TaskLife,
    task_lives,
)

# The days an unpaid premium stays in force after its due date when none is passed in (the
# report passes the contact policy's ``premiums.grace_days``).
GRACE_DAYS_DEFAULT = DEFAULT_GRACE_DAYS
NPS_TYPE = "nps_recorded"
SATISFIED = "reply_satisfied"
UNSATISFIED = "reply_unsatisfied"
REPLY_MESSAGE = "reply_message"
REPLY_TYPES = (SATISFIED, UNSATISFIED, REPLY_MESSAGE)
COMPLAINT_RECEIVED = "complaint_received"
COMPLAINT_RESOLVED = "complaint_resolved"
SATISFIED_FROM = 4  # a score of 4 or 5 is satisfied
PROMOTER_FROM = 9
DETRACTOR_TO = 6
PER = 1000  # complaints per this many active customers
PROBLEMS_LISTED = 200
SATISFACTION = "satisfaction"  # the key of a task's closing detail
CHUNK = 500
SMS = Channel.SMS.value
TASK = Channel.AGENT_TASK.value


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass
class Satisfaction:
    answers: int = 0  # answers recorded in the period (replies and task scores)
    from_replies: int = 0
    from_tasks: int = 0
    scored: int = 0  # of those, with a score
    score_total: int = 0
    satisfied: int = 0  # a score of 4-5 (a reply_satisfied without one)
    asked: int = 0  # SMS touches due in the period that went out
    answered: int = 0  # of those, with a reply naming them

    @property
    def average(self) -> float | None:
        return self.score_total / self.scored if self.scored else None

    @property
    def share_satisfied(self) -> float | None:
        return _share(self.satisfied, self.answers)

    @property
    def response_rate(self) -> float | None:
        return _share(self.answered, self.asked)


@dataclass
class Nps:
    answers: int = 0
    promoters: int = 0
    passives: int = 0
    detractors: int = 0
    ignored: int = 0  # scores outside 0-10

    @property
    def score(self) -> float | None:
        """Promoters minus detractors, in % of the answers (None: not collected)."""
        if not self.answers:
            return None
        return 100 * (self.promoters - self.detractors) / self.answers


@dataclass
class Timeliness:
    """One complaint measure: the complaints the rules owe it for, and those kept."""

    rules: tuple[str, ...] = ()
    owed: int = 0
    kept: int = 0

    @property
    def rate(self) -> float | None:
        return _share(self.kept, self.owed)


@dataclass
class Complaints:
    received: int = 0  # complaint_received events in the period
    active_customers: int = 0  # now
    acknowledged: Timeliness = field(default_factory=Timeliness)
    called_back: Timeliness = field(default_factory=Timeliness)
    reached: int = 0  # of those owed a call-back, the task done
    no_agent: int = 0  # received from customers without an agent: no call-back owed
    resolved: int = 0  # complaint_resolved events in the period
    followed_up: Timeliness = field(default_factory=Timeliness)
    open_cases: int = 0  # at the end of the period's last day
    open_customers: int = 0
    definitions: list[tuple[str, str]] = field(default_factory=list)  # (measure, rule text)

    @property
    def rate(self) -> float | None:
        """Complaints received per ``PER`` active customers."""
        return PER * self.received / self.active_customers if self.active_customers else None


@dataclass
class Premiums:
    grace_days: int = GRACE_DAYS_DEFAULT
    scheduled: int = 0  # policies with a premium schedule, active or lapsed
    overdue: int = 0  # active, unpaid, due on or before the period's last day
    lapsed: int = 0  # unpaid past the grace days, or marked lapsed
    customers: int = 0  # all customers
    active_customers: int = 0
    left: int = 0  # customers whose status is not active (now)
    high_risk: int = 0  # active customers at high churn risk at the period's end

    @property
    def lapse_rate(self) -> float | None:
        return _share(self.lapsed, self.scheduled)

    @property
    def high_risk_share(self) -> float | None:
        return _share(self.high_risk, self.active_customers)

    @property
    def left_share(self) -> float | None:
        return _share(self.left, self.customers)


TASK_COLUMNS = ("due", "done", "no_answer", "declined", "expired", "open", "overdue")


@dataclass
class AgentTasks:
    agent_id: str
    counts: Counter[str] = field(default_factory=Counter)  # TASK_COLUMNS


@dataclass
class ProblemCustomer:
    customer_id: str
    tier: str | None
    agent_id: str | None
    risk_score: int
    why: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)  # "rule: status" of their touches
    latest_score: int | None = None
    cases: list[str] = field(default_factory=list)  # "case: open|closed"


@dataclass
class Loops:
    period: Period
    satisfaction: Satisfaction = field(default_factory=Satisfaction)
    nps: Nps = field(default_factory=Nps)
    complaints: Complaints = field(default_factory=Complaints)
    premiums: Premiums = field(default_factory=Premiums)
    agents: list[AgentTasks] = field(default_factory=list)
    problems: list[ProblemCustomer] = field(default_factory=list)  # at most PROBLEMS_LISTED
    problems_total: int = 0


@dataclass(frozen=True)
class _BusinessEvent:
    event_id: str
    type: str
    customer_id: str
    day: dt.date  # customer-local
    at: dt.datetime
    payload: dict[str, Any]


def _bounds(first: dt.date, last: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """UTC instants that hold every local date from ``first`` to ``last`` (zones are within
    a day of UTC)."""
    return (
        dt.datetime.combine(first - dt.timedelta(days=1), dt.time(), dt.timezone.utc),
        dt.datetime.combine(last + dt.timedelta(days=2), dt.time(), dt.timezone.utc),
    )


def _business_events(
    session: Any,
    policy: ContactPolicy,
    types: Sequence[str],
    first: dt.date,
    last: dt.date | None,
) -> list[_BusinessEvent]:
    """Events of ``types`` whose customer-local date is from ``first`` to ``last`` (None:
    any later day), oldest first."""
    since, until = _bounds(first, last or first)
    events = Event.__table__
    customers = Customer.__table__
    stmt = (
        select(
            events.c.event_id,
            events.c.type,
            events.c.customer_id,
            events.c.occurred_at,
            events.c.payload,
            customers.c.timezone,
        )
        .select_from(events.outerjoin(customers, customers.c.customer_id == events.c.customer_id))
        .where(events.c.type.in_(list(types)), events.c.occurred_at >= since)
        .order_by(events.c.occurred_at, events.c.id)
    )
    if last is not None:
        stmt = stmt.where(events.c.occurred_at < until)
    found = []
    for event_id, type_, customer_id, occurred, payload, tz in session.execute(stmt):
        at = aware_utc(occurred)
        day = at.astimezone(policy.zone(tz)).date()
        if day < first or (last is not None and day > last):
            continue
        found.append(
            _BusinessEvent(
                event_id,
                type_,
                customer_id,
                day,
                at,
                payload if isinstance(payload, dict) else {},
            )
        )
    return found


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def compute_loops(
    store: Store,
    period: Period,
    ruleset: RuleSet,
    *,
    grace_days: int = GRACE_DAYS_DEFAULT,
) -> Loops:
    """The period's closed-loop figures (see the module doc); ``ruleset`` defines the
    complaint timeliness and gives the contact policy (time zones, churn risk)."""
    policy = ruleset.policy
    loops = Loops(period)
    loops.premiums.grace_days = grace_days
    touches = TouchRow.__table__
    current = TouchCurrent.__table__
    channel = func.coalesce(current.c.channel, touches.c.channel)
    with store.read_session() as session:
        in_period = _business_events(
            session,
            policy,
            (SATISFIED, UNSATISFIED, NPS_TYPE, COMPLAINT_RECEIVED, COMPLAINT_RESOLVED),
            period.first,
            period.last,
        )
        # The SMS due in the period that went out, and those a reply names (replies are few;
        # the SMS may be millions: counted in the database, never held here).
        went_out = (
            select(func.count())
            .select_from(touches.join(current, current.c.touch_id == touches.c.id))
            .where(
                touches.c.occurrence >= period.first,
                touches.c.occurrence <= period.last,
                REAL_TOUCH,  # test sends ask nobody
                channel == SMS,
                current.c.status.in_(SENT_LIKE),
            )
        )
        loops.satisfaction.asked = session.execute(went_out).scalar_one()
        replies = _business_events(session, policy, REPLY_TYPES, period.first, None)
        named = sorted({t for e in replies if (t := _int(e.payload.get("touch_id"))) is not None})
        for start in range(0, len(named), CHUNK):
            loops.satisfaction.answered += session.execute(
                went_out.where(touches.c.id.in_(named[start : start + CHUNK]))
            ).scalar_one()
        # Tasks that may have been due, or closed, in the period.
        lives = task_lives(
            session,
            touches.c.occurrence >= period.first - dt.timedelta(days=TASK_LOOKBACK_DAYS),
            touches.c.occurrence <= period.last + dt.timedelta(days=TASK_LOOKBACK_DAYS),
        )
        active = session.execute(
            select(func.count()).where(Customer.status == CustomerStatus.ACTIVE.value)
        ).scalar_one()
        everyone = session.execute(select(func.count()).select_from(Customer)).scalar_one()

    _satisfaction(loops.satisfaction, in_period, lives, period)
    _nps(loops.nps, in_period)
    loops.agents = _agents(lives, period)
    complaints = loops.complaints
    complaints.active_customers = active
    _complaints(store, ruleset, period, in_period, complaints)
    premiums = loops.premiums
    premiums.customers, premiums.active_customers = everyone, active
    premiums.left = everyone - active
    overdue, lapsed = _premiums(store, period, grace_days, premiums)
    risks = assess(store, policy, period.last)
    high = {c: r for c, r in risks.items() if r.level is RiskLevel.HIGH}
    premiums.high_risk = len(high)
    _problems(store, loops, period, in_period, lives, overdue, lapsed, risks, high)
    return loops


def _satisfaction(
    found: Satisfaction,
    in_period: list[_BusinessEvent],
    lives: dict[int, TaskLife],
    period: Period,
) -> None:
    def answer(score: int | None, satisfied: bool) -> None:
        found.answers += 1
        if score is not None and 1 <= score <= 5:
            found.scored += 1
            found.score_total += score
            satisfied = score >= SATISFIED_FROM
        found.satisfied += satisfied

    for e in in_period:
        if e.type in (SATISFIED, UNSATISFIED):
            found.from_replies += 1
            answer(_int(e.payload.get("score")), e.type == SATISFIED)
    for score in _task_scores(lives, period).values():
        found.from_tasks += 1
        answer(score, False)


def _task_scores(lives: dict[int, TaskLife], period: Period) -> dict[int, int]:
    """Task -> the satisfaction its agent recorded on closing it, in the period."""
    scores = {}
    for touch_id, life in lives.items():
        closing = life.closing
        if closing is None or not period.first <= closing[1] <= period.last:
            continue
        score = _int(closing[2].get(SATISFACTION))
        if score is not None and 1 <= score <= 5:
            scores[touch_id] = score
    return scores


def _nps(found: Nps, in_period: list[_BusinessEvent]) -> None:
    for e in in_period:
        if e.type != NPS_TYPE:
            continue
        score = _int(e.payload.get("score"))
        if score is None or not 0 <= score <= 10:
            found.ignored += 1
            continue
        found.answers += 1
        if score >= PROMOTER_FROM:
            found.promoters += 1
        elif score <= DETRACTOR_TO:
            found.detractors += 1
        else:
            found.passives += 1


def _agents(lives: dict[int, TaskLife], period: Period) -> list[AgentTasks]:
    by_agent: dict[str, AgentTasks] = {}
    for life in lives.values():
        if life.due is None or not period.first <= life.due <= period.last:
            continue
        agent = life.agent_id or "(none)"
        row = by_agent.setdefault(agent, AgentTasks(agent))
        row.counts["due"] += 1
        status = life.status
        if status == TouchStatus.ASSIGNED.value:
            row.counts["open"] += 1
        elif status in TASK_COLUMNS:
            row.counts[str(status)] += 1
        if life.status_at(period.last) == TouchStatus.ASSIGNED.value:
            row.counts["overdue"] += 1
    return [by_agent[a] for a in sorted(by_agent)]


# -- complaints ---------------------------------------------------------------------------


def _event_rules(ruleset: RuleSet, event_type: str) -> list[Rule]:
    return [
        r
        for r in ruleset.rules
        if r.trigger.kind is TriggerKind.EVENT and r.trigger.event_type == event_type
    ]


def _definition(rule: Rule, kept: str) -> str:
    trig = rule.trigger
    text = f"{rule.id}: due {trig.delay_days} local day(s) after the {trig.event_type} event"
    if rule.task is not None:
        text += f", a {rule.task.kind.value} task open {rule.task.expires_days} day(s)"
    return f"{text}; {kept}"


def _complaints(
    store: Store,
    ruleset: RuleSet,
    period: Period,
    in_period: list[_BusinessEvent],
    found: Complaints,
) -> None:
    received = [e for e in in_period if e.type == COMPLAINT_RECEIVED]
    resolved = [e for e in in_period if e.type == COMPLAINT_RESOLVED]
    found.received, found.resolved = len(received), len(resolved)
    on_received = _event_rules(ruleset, COMPLAINT_RECEIVED)
    acknowledging = [r for r in on_received if r.task is None]
    calling = [
        r for r in on_received if r.task is not None and r.task.assignee is TaskAssignee.AGENT
    ]
    following = _event_rules(ruleset, COMPLAINT_RESOLVED)
    for r in acknowledging:
        found.definitions.append(("acknowledged", _definition(r, "kept when its message went out")))
    for r in calling:
        found.definitions.append(
            (
                "called back",
                _definition(r, "kept when the agent closed the task by its expiry day"),
            )
        )
    for r in following:
        found.definitions.append(
            (
                "second follow-up",
                _definition(r, "kept when its message went out or its task was closed"),
            )
        )
    agents = _agents_of(store, {e.customer_id for e in received})
    found.no_agent = sum(1 for e in received if not agents.get(e.customer_id))

    touched = _rule_touches(store, [*acknowledging, *calling, *following], period)
    owed_ack = _owed(store, ruleset, acknowledging, received, touched)
    owed_call = _owed(store, ruleset, calling, received, touched)
    owed_follow = _owed(store, ruleset, following, resolved, touched)
    with store.read_session() as session:
        task_ids = [t[0] for ts in touched.values() for t in ts if t[2] == TASK]
        lives: dict[int, TaskLife] = {}
        for start in range(0, len(task_ids), CHUNK):
            lives.update(
                task_lives(session, TouchRow.__table__.c.id.in_(task_ids[start : start + CHUNK]))
            )

    def sent(event_id: str, rules: list[Rule]) -> bool:
        ids = {r.id for r in rules}
        return any(
            status in SENT_LIKE
            for _, rule_id, _, status in touched.get(event_id, ())
            if rule_id in ids
        )

    def closed(event_id: str, rules: list[Rule], *, in_window: bool, done: bool) -> bool:
        ids = {r.id for r in rules}
        for touch_id, rule_id, ch, _ in touched.get(event_id, ()):
            life = lives.get(touch_id)
            if rule_id not in ids or ch != TASK or life is None or life.closing is None:
                continue
            if in_window and not life.closed_in_window:
                continue
            if done and life.closing[0] != TouchStatus.DONE.value:
                continue
            return True
        return False

    found.acknowledged = Timeliness(
        tuple(r.id for r in acknowledging),
        len(owed_ack),
        sum(1 for e in owed_ack if sent(e, acknowledging)),
    )
    found.called_back = Timeliness(
        tuple(r.id for r in calling),
        len(owed_call),
        sum(1 for e in owed_call if closed(e, calling, in_window=True, done=False)),
    )
    found.reached = sum(1 for e in owed_call if closed(e, calling, in_window=True, done=True))
    found.followed_up = Timeliness(
        tuple(r.id for r in following),
        len(owed_follow),
        sum(
            1
            for e in owed_follow
            if sent(e, following) or closed(e, following, in_window=False, done=False)
        ),
    )
    cases = open_complaints(store, period.last)
    found.open_cases = sum(len(c) for c in cases.values())
    found.open_customers = len(cases)


def _agents_of(store: Store, customer_ids: Iterable[str]) -> dict[str, str | None]:
    ids = sorted(customer_ids)
    found: dict[str, str | None] = {}
    with store.read_session() as session:
        for start in range(0, len(ids), CHUNK):
            for customer_id, agent_id in session.execute(
                select(Customer.customer_id, Customer.agent_id).where(
                    among(session, Customer.customer_id, ids[start : start + CHUNK])
                )
            ):
                found[customer_id] = agent_id
    return found


def _rule_touches(
    store: Store, rules: list[Rule], period: Period
) -> dict[str, list[tuple[int, str, str | None, str]]]:
    """Business event id -> the touches ``rules`` made about it (id, rule, channel, status),
    read by rule and occurrence (indexed): the events of the period are due from the
    smallest to the largest delay after it."""
    if not rules:
        return {}
    touches = TouchRow.__table__
    current = TouchCurrent.__table__
    delays = [r.trigger.delay_days or 0 for r in rules]
    found: dict[str, list[tuple[int, str, str | None, str]]] = defaultdict(list)
    with store.read_session() as session:
        for touch_id, rule_id, event_id, ch, status in session.execute(
            select(
                touches.c.id,
                touches.c.rule_id,
                touches.c.event_id,
                func.coalesce(current.c.channel, touches.c.channel),
                current.c.status,
            )
            .select_from(touches.join(current, current.c.touch_id == touches.c.id))
            .where(
                touches.c.rule_id.in_([r.id for r in rules]),
                touches.c.occurrence >= period.first + dt.timedelta(days=min(delays)),
                touches.c.occurrence <= period.last + dt.timedelta(days=max(delays)),
                REAL_TOUCH,
            )
        ):
            if event_id:
                found[event_id].append((touch_id, rule_id, ch, status))
    return found


def _owed(
    store: Store,
    ruleset: RuleSet,
    rules: list[Rule],
    events: list[_BusinessEvent],
    touched: dict[str, list[tuple[int, str, str | None, str]]],
) -> list[str]:
    """The events (ids) ``rules`` owe a touch for: one was planned, or the rule's candidate
    query finds it due on its day (the event's local date + the rule's delay)."""
    if not rules or not events:
        return []
    from ..plan import due_touches

    ids = {r.id for r in rules}
    wanted = {e.event_id for e in events}
    owed = {e for e in wanted if any(t[1] in ids for t in touched.get(e, ()))}
    for rule in rules:
        days = {e.day + dt.timedelta(days=rule.trigger.delay_days or 0) for e in events}
        for day in sorted(days):
            for touch in due_touches(store, rule, day, ruleset.policy):
                event_id = str((touch.event or {}).get("event_id") or "")
                if event_id in wanted:
                    owed.add(event_id)
    return sorted(owed)


# -- premiums ----------------------------------------------------------------------------


def _premiums(
    store: Store, period: Period, grace_days: int, found: Premiums
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Count the policies with a premium schedule, overdue and lapsed; customer -> the
    overdue policies and the lapsed ones."""
    p = InsurancePolicy.__table__
    unpaid = premium_unpaid()
    end = period.last
    overdue: dict[str, list[str]] = defaultdict(list)
    lapsed: dict[str, list[str]] = defaultdict(list)
    scheduled = and_(
        p.c.premium_due_date.is_not(None),
        p.c.status.in_((PolicyStatus.ACTIVE.value, PolicyStatus.LAPSED.value)),
    )
    with store.read_session() as session:
        found.scheduled = session.execute(
            select(func.count()).select_from(p).where(scheduled)
        ).scalar_one()
        # Only the unpaid ones due by the end, and those marked lapsed, are read.
        for row in session.execute(
            select(
                p.c.customer_id,
                p.c.policy_id,
                p.c.status,
                p.c.premium_due_date,
                p.c.paid_through,
            ).where(
                scheduled,
                or_(
                    p.c.status == PolicyStatus.LAPSED.value,
                    and_(unpaid, p.c.premium_due_date <= end),
                ),
            )
        ):
            if is_lapsed(row._mapping, end, grace_days):
                found.lapsed += 1
                lapsed[row.customer_id].append(row.policy_id)
            else:
                found.overdue += 1
                overdue[row.customer_id].append(row.policy_id)
    return dict(overdue), dict(lapsed)


# -- problem customers --------------------------------------------------------------------


def _problems(
    store: Store,
    loops: Loops,
    period: Period,
    in_period: list[_BusinessEvent],
    lives: dict[int, TaskLife],
    overdue: dict[str, list[str]],
    lapsed: dict[str, list[str]],
    risks: dict[str, Any],
    high: dict[str, Any],
) -> None:
    why: dict[str, list[str]] = defaultdict(list)
    cases: dict[str, list[str]] = defaultdict(list)
    for e in in_period:
        if e.type == COMPLAINT_RECEIVED:
            case = case_of(e.payload) or e.event_id
            why[e.customer_id].append(f"complaint {case} received {e.day.isoformat()}")
            cases[e.customer_id].append(case)
        elif e.type == UNSATISFIED:
            why[e.customer_id].append(f"unsatisfied answer {e.day.isoformat()}")
    for touch_id, score in _task_scores(lives, period).items():
        if score < SATISFIED_FROM:
            why[lives[touch_id].customer_id].append(f"task satisfaction {score}")
    for customer_id, policies in overdue.items():
        why[customer_id].append(f"premium overdue ({', '.join(sorted(policies))})")
    for customer_id, policies in lapsed.items():
        why[customer_id].append(f"premium lapsed ({', '.join(sorted(policies))})")
    for customer_id, risk in high.items():
        signals = ", ".join(sorted(s.value for s in risk.signals))
        why[customer_id].append(f"high churn risk (score {risk.score}: {signals})")
    loops.problems_total = len(why)
    if not why:
        return
    # The whole store's assessment holds the active customers with a strong signal; the
    # others (an inactive customer, a complaint closed since) score 0.
    scored = risks
    order = sorted(why, key=lambda c: (-(scored[c].score if c in scored else 0), c))
    order = order[:PROBLEMS_LISTED]
    people = _people(store, order)
    done = _their_touches(store, order, period, lives)
    scores = _latest_scores(store, order, period, lives)
    still_open = open_complaints(store, period.last, order)
    for customer_id in order:
        tier, agent_id = people.get(customer_id, (None, None))
        risk = scored.get(customer_id)
        open_now = set(still_open.get(customer_id, []))
        loops.problems.append(
            ProblemCustomer(
                customer_id,
                tier,
                agent_id,
                risk.score if risk is not None else 0,
                why[customer_id],
                done.get(customer_id, []),
                scores.get(customer_id),
                [
                    f"{case}: {'open' if case in open_now else 'closed'}"
                    for case in dict.fromkeys(cases.get(customer_id, []))
                ],
            )
        )


def _people(store: Store, ids: list[str]) -> dict[str, tuple[str | None, str | None]]:
    """Customer -> (tier, agent): ids only, nothing personal."""
    found: dict[str, tuple[str | None, str | None]] = {}
    with store.read_session() as session:
        for start in range(0, len(ids), CHUNK):
            for customer_id, tier, agent_id in session.execute(
                select(Customer.customer_id, Customer.tier, Customer.agent_id).where(
                    among(session, Customer.customer_id, ids[start : start + CHUNK])
                )
            ):
                found[customer_id] = (tier, agent_id)
    return found


def _their_touches(
    store: Store, ids: list[str], period: Period, lives: dict[int, TaskLife]
) -> dict[str, list[str]]:
    """Customer -> "rule: status" of each touch due in the period (a task: its outcome, as
    ``care task done`` recorded it), by due day."""
    touches = TouchRow.__table__
    current = TouchCurrent.__table__
    found: dict[str, list[str]] = defaultdict(list)
    with store.read_session() as session:
        for start in range(0, len(ids), CHUNK):
            for touch_id, customer_id, rule_id, occurrence, ch, status, reason in session.execute(
                select(
                    touches.c.id,
                    touches.c.customer_id,
                    touches.c.rule_id,
                    touches.c.occurrence,
                    func.coalesce(current.c.channel, touches.c.channel),
                    current.c.status,
                    current.c.reason,
                )
                .select_from(touches.join(current, current.c.touch_id == touches.c.id))
                .where(
                    touches.c.customer_id.in_(ids[start : start + CHUNK]),
                    touches.c.occurrence >= period.first,
                    touches.c.occurrence <= period.last,
                    REAL_TOUCH,
                )
                .order_by(touches.c.occurrence, touches.c.id)
            ):
                what = f"{rule_id} {occurrence} ({ch or 'no channel'}): {status}"
                if reason and status == TouchStatus.SUPPRESSED.value:
                    what += f" ({reason})"
                life = lives.get(touch_id)
                closing = life.closing if life is not None else None
                if closing is not None and closing[2].get(SATISFACTION) is not None:
                    what += f", satisfaction {closing[2][SATISFACTION]}"
                found[customer_id].append(what)
    return dict(found)


def _latest_scores(
    store: Store, ids: list[str], period: Period, lives: dict[int, TaskLife]
) -> dict[str, int]:
    """Customer -> their latest score (a reply's or a task's) by the period's end."""
    end = _bounds(period.last, period.last)[1]
    latest: dict[str, tuple[dt.datetime, int]] = {}

    def note(customer_id: str, at: dt.datetime, score: int | None) -> None:
        fresher = customer_id not in latest or at >= latest[customer_id][0]
        if score is not None and 1 <= score <= 5 and fresher:
            latest[customer_id] = (at, score)

    events = Event.__table__
    with store.read_session() as session:
        for start in range(0, len(ids), CHUNK):
            for customer_id, occurred, payload in session.execute(
                select(events.c.customer_id, events.c.occurred_at, events.c.payload)
                .where(
                    among(session, events.c.customer_id, ids[start : start + CHUNK]),
                    events.c.type.in_((SATISFIED, UNSATISFIED)),
                    events.c.occurred_at < end,
                )
                .order_by(events.c.occurred_at)
            ):
                payload = payload if isinstance(payload, dict) else {}
                note(customer_id, aware_utc(occurred), _int(payload.get("score")))
    wanted = set(ids)
    for life in lives.values():
        closing = life.closing
        if life.customer_id in wanted and closing is not None and closing[1] <= period.last:
            note(life.customer_id, closing[3], _int(closing[2].get(SATISFACTION)))
    return {c: score for c, (_, score) in latest.items()}
