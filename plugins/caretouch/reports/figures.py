"""The service report's figures (``care report``): SQL over the ledger and the store, into
plain data (``Figures``, ``Obligation``); the page is ``service_report``, its charts ``charts``.

Every number is read from the ledger (touches by their occurrence, the customer-local date
they were due; each touch counted at its current status), except opt-outs, which are the
consent withdrawals recorded in the store (``consent_events``) in the period, and the
customers of each tier and segment (their tier, segment and status now, in ``customers``).
Each figure is shown with its change from the previous period of the same kind (month on
month, week on week, quarter on quarter). Reading only: the report writes nothing but its
files (the page and its CSVs). The closed loops (satisfaction, complaints, premiums, tasks
per agent, problem customers) are ``loops``'.

Service obligations (the touches of ``service`` rules, among them the complaint follow-up)
are measured the way their rule defines them, from the loaded rules: a touch is due on its
occurrence (for the complaint follow-up: the local date of the resolution + the rule's
``delay_days``, at its ``send_time``) and on time when it was sent on or before that local
date; sent later (deferred within its window) it is late; ``obligation_missed`` and other
final suppressions are missed. A touch that became a task (``agent_task``) is on time when its
agent closed it (done, no answer, declined) by its expiry day (the rule's
``task.expires_days`` after its due day), late when closed after that day (before the run
expired it), waiting while assigned, and missed once expired. For event-triggered ones, the rule's own candidate query
(``plan.due_touches``: trigger and audience) also finds the touches due in the period that
were never planned: missed too. Customers the rule does not apply to (inactive, outside its
audience) are not counted.

The service delivered per tier and service level (``TierService``, ``service_by_tier``):
touches due in the period split into messages and tasks (a task: a touch on the
``agent_task`` channel), the share of the tier's active customers whose last completed
contact (a message that went out, ``CONTACT_MADE``, on the local day of its send time; a task
done, on the local day its outcome was recorded) falls within their level's ``cadence_days``
on the period's last day (contacted on or after that day minus ``cadence_days``), the tasks
overdue then (their status as of the end of the period's last local day is ``assigned`` and
their due day is on or before it: what ``care task list --date <the next day>`` would mark
overdue), and the group-client coverage
(``GroupCoverage``): the active customers of segment ``group`` with a completed contact in
the period, against ``GROUP_COVERAGE_TARGET``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import and_, func, select

from ..dates import aware_utc
from ..ledger.codec import decode
from ..ledger.models import REAL_TOUCH, TouchCurrent, TouchEvent, TouchRow
from ..ledger.records import zone
from ..ledger.statuses import CONTACT_MADE, MAX_DEFER_DAYS, TASK_CLOSED, TASK_OPEN
from ..ledger.tasks import AGENT, DUE, EXPIRES
from ..rules.contact_policy import ContactPolicy
from ..rules.loader import RuleSet
from ..rules.model import Rule, TriggerKind
from ..store.db import Store
from ..store.models import ConsentEvent, Customer
from ..vocab import Channel, CustomerStatus, SuppressionReason, Tier, TouchStatus

# Current statuses that mean the message reached the provider.
SENT_LIKE = tuple(
    s.value
    for s in (TouchStatus.SENT, TouchStatus.DELIVERED, TouchStatus.UNDELIVERED, TouchStatus.BOUNCED)
)
# Delivery reports that settle a sent message.
DELIVERY_SETTLED = tuple(
    s.value for s in (TouchStatus.DELIVERED, TouchStatus.UNDELIVERED, TouchStatus.BOUNCED)
)
# The business event whose follow-up the report's key figure measures (SPEC section 1).
COMPLAINT_EVENT = "complaint_resolved"
# How a service obligation ended, in the order the report shows them.
OUTCOMES = ("on_time", "late", "missed", "failed", "unreachable", "waiting")
OUTCOME_LABELS = {
    "on_time": "on time (sent by the due date; a task closed by its expiry day)",
    "late": "late (sent after the due date, within its window; a task closed after its expiry day)",
    "missed": "missed (window over, never planned, or a task expired)",
    "failed": "failed or unknown at the provider",
    "unreachable": "no usable channel (no_contact, opted_out)",
    "waiting": "still waiting (planned, deferred, or a task still assigned)",
}
_UNREACHABLE = (SuppressionReason.NO_CONTACT.value, SuppressionReason.OPTED_OUT.value)

# The seed practice's target for group clients (SPEC section 1): at least 30 % of the group
# clients contacted each month. A constant of the report, not a policy setting: nothing
# plans to it (the contact policy decides what may be sent, not what should be), so it only
# sets where the report's coverage line is flagged. Move it to the contact policy when
# planning ever has to act on it.
GROUP_SEGMENT = "group"
GROUP_COVERAGE_TARGET = 0.30
TASK = Channel.AGENT_TASK.value
# The statuses of a task that reached its agent (assigned, then closed some way).
TASK_STATUSES = tuple(s.value for s in (TASK_OPEN, *sorted(TASK_CLOSED)))
# The statuses of a task its agent closed (``care task done``); ``expired`` is the run's.
AGENT_CLOSED = tuple(
    s.value for s in (TouchStatus.DONE, TouchStatus.NO_ANSWER, TouchStatus.DECLINED)
)
# A message that went out: a completed contact (a task done is read from its own event).
MESSAGE_CONTACT = tuple(s.value for s in CONTACT_MADE - TASK_CLOSED - {TASK_OPEN})
# How far before the period a task's touch may have been due and still be open or done in
# it: the longest expiry (rules.schema: task.expires_days at most 90) plus a deferral.
TASK_LOOKBACK_DAYS = 90 + MAX_DEFER_DAYS + 1


@dataclass
class TierService:
    """The service one tier got in the period, under its service level."""

    tier: str
    level: str | None  # the contact policy's level serving the tier (None: none)
    cadence_days: int | None  # the level's cadence (None: no cadence)
    customers: int = 0  # active customers of the tier (now)
    messages: int = 0  # message touches due in the period, any status
    messages_sent: int = 0  # of those, sent (SENT_LIKE)
    messages_delivered: int = 0
    tasks: int = 0  # task touches (agent_task) due in the period, any status
    tasks_assigned: int = 0  # of those, assigned to the agent (open or closed since)
    tasks_done: int = 0
    within_cadence: int = 0  # active customers contacted within the cadence at the end
    tasks_overdue: int = 0  # tasks open past their due day at the end of the period

    @property
    def cadence_kept(self) -> float | None:
        """Active customers contacted within the cadence, among the tier's active
        customers; None without a cadence or without customers."""
        if not self.cadence_days or not self.customers:
            return None
        return self.within_cadence / self.customers


@dataclass
class GroupCoverage:
    """Group clients (segment ``GROUP_SEGMENT``) contacted in the period."""

    clients: int = 0  # active customers of the segment
    contacted: int = 0  # of those, with a completed contact in the period
    target: float = GROUP_COVERAGE_TARGET

    @property
    def rate(self) -> float | None:
        return self.contacted / self.clients if self.clients else None

    @property
    def below(self) -> bool:
        """Below the target (a segment without clients is not flagged)."""
        return self.rate is not None and self.rate < self.target


@dataclass
class Obligation:
    """How one service rule's touches due in the period ended."""

    rule_id: str
    definition: str  # how the rule defines due and on time, in words
    complaint: bool  # triggered by COMPLAINT_EVENT: the report's complaint follow-up figure
    outcomes: Counter[str] = field(default_factory=Counter)
    missed: list[tuple[str, str, str]] = field(default_factory=list)  # (key, due, why)

    @property
    def due(self) -> int:
        return sum(self.outcomes.values())

    @property
    def settled(self) -> int:
        """Due touches whose fate is known: all but those still waiting."""
        return self.due - self.outcomes["waiting"]


@dataclass(frozen=True)
class Period:
    kind: str  # "month", "week" or "quarter"
    label: str  # 2026-11, 2026-W47 or 2026Q4
    first: dt.date
    last: dt.date

    @classmethod
    def month(cls, text: str) -> Period:
        m = re.fullmatch(r"(\d{4})-(\d{2})", text)
        if not m or not 1 <= int(m.group(2)) <= 12:
            raise ValueError(f"{text!r} is not a month (YYYY-MM)")
        first = dt.date(int(m.group(1)), int(m.group(2)), 1)
        following = (first + dt.timedelta(days=32)).replace(day=1)
        return cls("month", text, first, following - dt.timedelta(days=1))

    @classmethod
    def week(cls, text: str) -> Period:
        m = re.fullmatch(r"(\d{4})-W(\d{2})", text)
        if not m:
            raise ValueError(f"{text!r} is not an ISO week (YYYY-Www)")
        try:
            first = dt.date.fromisocalendar(int(m.group(1)), int(m.group(2)), 1)
        except ValueError:
            raise ValueError(f"{text!r} is not an ISO week (YYYY-Www)") from None
        return cls("week", text, first, first + dt.timedelta(days=6))

    @classmethod
    def quarter(cls, text: str) -> Period:
        """A calendar quarter, ``2026Q4`` (October to December)."""
        m = re.fullmatch(r"(\d{4})Q([1-4])", text)
        if not m:
            raise ValueError(f"{text!r} is not a quarter (YYYYQn, n 1 to 4, e.g. 2026Q4)")
        year, n = int(m.group(1)), int(m.group(2))
        first = dt.date(year, 3 * n - 2, 1)
        following = dt.date(year + 1, 1, 1) if n == 4 else dt.date(year, 3 * n + 1, 1)
        return cls("quarter", text, first, following - dt.timedelta(days=1))

    @classmethod
    def of_quarter(cls, day: dt.date) -> Period:
        return cls.quarter(f"{day.year}Q{(day.month - 1) // 3 + 1}")

    @classmethod
    def of_week(cls, day: dt.date) -> Period:
        year, week, _ = day.isocalendar()
        return cls.week(f"{year}-W{week:02d}")

    @classmethod
    def of_month(cls, day: dt.date) -> Period:
        return cls.month(f"{day:%Y-%m}")

    def previous(self) -> Period:
        if self.kind == "month":
            return Period.of_month(self.first - dt.timedelta(days=1))
        if self.kind == "quarter":
            return Period.of_quarter(self.first - dt.timedelta(days=1))
        return Period.of_week(self.first - dt.timedelta(days=7))

    @property
    def days(self) -> list[dt.date]:
        return [self.first + dt.timedelta(days=n) for n in range((self.last - self.first).days + 1)]


@dataclass
class Figures:
    """The numbers of one period."""

    period: Period
    # (rule_id, channel, tier, status, reason) -> touches, by current status.
    touches: Counter[tuple[Any, ...]] = field(default_factory=Counter)
    sent_per_day: Counter[dt.date] = field(default_factory=Counter)
    opt_outs: Counter[tuple[str, str]] = field(default_factory=Counter)  # (purpose, source)
    obligations: list[Obligation] = field(default_factory=list)
    service: list[TierService] = field(default_factory=list)  # per tier, A to D
    group: GroupCoverage = field(default_factory=GroupCoverage)

    def count(self, *, statuses: tuple[str, ...] | None = None, **match: Any) -> int:
        index = {"rule_id": 0, "channel": 1, "tier": 2, "status": 3, "reason": 4}
        return sum(
            n
            for key, n in self.touches.items()
            if (statuses is None or key[3] in statuses)
            and all(key[index[k]] == v for k, v in match.items())
        )

    @property
    def total(self) -> int:
        return self.count()

    @property
    def sent(self) -> int:
        return self.count(statuses=SENT_LIKE)

    @property
    def delivered(self) -> int:
        return self.count(status=TouchStatus.DELIVERED.value)

    @property
    def failed(self) -> int:
        return self.count(status=TouchStatus.FAILED.value)

    @property
    def unknown(self) -> int:
        return self.count(status=TouchStatus.UNKNOWN.value)

    @property
    def suppressed(self) -> int:
        return self.count(status=TouchStatus.SUPPRESSED.value)

    @property
    def delivery_reported(self) -> int:
        return self.count(statuses=DELIVERY_SETTLED)

    @property
    def delivery_rate(self) -> float | None:
        """Delivered among sent messages whose delivery report has arrived."""
        return self.delivered / self.delivery_reported if self.delivery_reported else None

    @property
    def failure_rate(self) -> float | None:
        """Failed (provider refused or retries exhausted) among attempted touches."""
        attempted = self.sent + self.failed + self.unknown
        return self.failed / attempted if attempted else None

    @property
    def opt_out_total(self) -> int:
        return sum(self.opt_outs.values())

    @property
    def follow_ups(self) -> Counter[str]:
        """Outcomes of the complaint follow-ups (the rules triggered by ``COMPLAINT_EVENT``)."""
        total: Counter[str] = Counter()
        for o in self.obligations:
            if o.complaint:
                total.update(o.outcomes)
        return total

    @property
    def follow_ups_on_time(self) -> int:
        return self.follow_ups["on_time"]

    @property
    def follow_ups_settled(self) -> int:
        return sum(self.follow_ups.values()) - self.follow_ups["waiting"]

    @property
    def follow_up_rate(self) -> float | None:
        """On time among the complaint follow-ups due in the period whose fate is known."""
        settled = self.follow_ups_settled
        return self.follow_ups_on_time / settled if settled else None

    def values(self, dimension: str) -> list[Any]:
        index = {"rule_id": 0, "channel": 1, "tier": 2}[dimension]
        return sorted({k[index] for k in self.touches}, key=lambda v: (v is None, str(v)))


def compute(store: Store, period: Period, ruleset: RuleSet | None = None) -> Figures:
    """The period's figures, read from the ledger and the store; with ``ruleset``, also how
    its service rules' touches ended (``obligations``). The closed loops are ``loops``'."""
    figures = Figures(period)
    touches = TouchRow.__table__
    current = TouchCurrent.__table__
    # Test sends (``care send-test``) are no touch of the period's figures.
    in_period = and_(
        touches.c.occurrence >= period.first,
        touches.c.occurrence <= period.last,
        REAL_TOUCH,
    )
    channel = func.coalesce(current.c.channel, touches.c.channel)
    with store.read_session() as session:
        stmt = (
            select(
                touches.c.rule_id,
                channel,
                touches.c.tier,
                current.c.status,
                current.c.reason,
                func.count(),
            )
            .select_from(touches.join(current, current.c.touch_id == touches.c.id))
            .where(in_period)
            .group_by(
                touches.c.rule_id, channel, touches.c.tier, current.c.status, current.c.reason
            )
        )
        for rule_id, ch, tier, status, reason, n in session.execute(stmt):
            figures.touches[(rule_id, ch, tier, status, reason)] += n
        per_day = (
            select(touches.c.occurrence, func.count())
            .select_from(touches.join(current, current.c.touch_id == touches.c.id))
            .where(in_period, current.c.status.in_(SENT_LIKE))
            .group_by(touches.c.occurrence)
        )
        for day, n in session.execute(per_day):
            figures.sent_per_day[
                day if isinstance(day, dt.date) else dt.date.fromisoformat(day)
            ] = n

        # Opt-outs: consent withdrawals recorded in the period (UTC days).
        start = dt.datetime.combine(period.first, dt.time(), dt.timezone.utc)
        end = dt.datetime.combine(period.last + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
        consent = ConsentEvent.__table__
        stmt = (
            select(consent.c.purpose, consent.c.source, func.count())
            .where(consent.c.granted.is_(False), consent.c.at >= start, consent.c.at < end)
            .group_by(consent.c.purpose, consent.c.source)
        )
        for purpose, source, n in session.execute(stmt):
            figures.opt_outs[(purpose, _source_kind(source))] += n
    if ruleset is not None:
        figures.obligations = obligations(store, period, ruleset)
    figures.service, figures.group = service_by_tier(
        store, period, ruleset.policy if ruleset is not None else None, figures.touches
    )
    return figures


def service_by_tier(
    store: Store,
    period: Period,
    policy: ContactPolicy | None,
    touches: Counter[tuple[Any, ...]],
) -> tuple[list[TierService], GroupCoverage]:
    """Per tier (A to D, and any other tier the ledger holds), the service delivered under
    its level, and the group-client coverage (see the module doc). ``touches`` are the
    period's touches by (rule, channel, tier, status, reason), as ``Figures.touches``.

    Bulk reads: the active customers counted by tier and segment, the messages that went out
    and the task events of the window the cadences reach back to, with their customers'
    current tier and segment; nothing is read customer by customer."""
    tiers: dict[str, TierService] = {}

    def of(tier: str) -> TierService:
        if tier not in tiers:
            level = policy.level_of(tier) if policy is not None else None
            tiers[tier] = TierService(
                tier,
                level.name if level is not None else None,
                level.cadence_days if level is not None else None,
            )
        return tiers[tier]

    for t in Tier:
        of(t.value)
    for (_, channel, tier, status, _), n in touches.items():
        row = of(str(tier))
        if channel == TASK:
            row.tasks += n
            row.tasks_assigned += n if status in TASK_STATUSES else 0
            row.tasks_done += n if status == TouchStatus.DONE.value else 0
        else:
            row.messages += n
            row.messages_sent += n if status in SENT_LIKE else 0
            row.messages_delivered += n if status == TouchStatus.DELIVERED.value else 0

    group = GroupCoverage()
    customers = Customer.__table__
    active = customers.c.status == CustomerStatus.ACTIVE.value
    longest = max((r.cadence_days or 0 for r in tiers.values()), default=0)
    since = min(period.first, period.last - dt.timedelta(days=longest))
    # Per active customer: (current tier, segment, last completed contact day <= period.last).
    last: dict[str, tuple[str, str | None, dt.date]] = {}

    def contact(customer_id: str, tier: str, segment: str | None, day: dt.date) -> None:
        if since <= day <= period.last and day > last.get(customer_id, ("", None, dt.date.min))[2]:
            last[customer_id] = (tier, segment, day)

    rows = TouchRow.__table__
    current = TouchCurrent.__table__
    events = TouchEvent.__table__
    end = period.last
    with store.read_session() as session:
        for tier, segment, n in session.execute(
            select(customers.c.tier, customers.c.segment, func.count())
            .where(active)
            .group_by(customers.c.tier, customers.c.segment)
        ):
            of(str(tier)).customers += n
            if segment == GROUP_SEGMENT:
                group.clients += n
        # Messages that went out, on the local day of their send time (as the cadence
        # trigger counts them, ``Ledger.last_contacts``): sent at most a deferral and a
        # day after their occurrence.
        for customer_id, tier, segment, tz, sent_at, planned_at in session.execute(
            select(
                rows.c.customer_id,
                customers.c.tier,
                customers.c.segment,
                rows.c.timezone,
                current.c.send_at,
                rows.c.send_at,
            )
            .select_from(
                rows.join(current, current.c.touch_id == rows.c.id).join(
                    customers, customers.c.customer_id == rows.c.customer_id
                )
            )
            .where(
                active,
                current.c.status.in_(MESSAGE_CONTACT),
                rows.c.occurrence >= since - dt.timedelta(days=MAX_DEFER_DAYS + 1),
                rows.c.occurrence <= end,
                REAL_TOUCH,  # a test send is no contact
            )
        ):
            day = aware_utc(sent_at or planned_at).astimezone(zone(tz)).date()
            contact(customer_id, tier, segment, day)
        # Tasks: every event of the tasks due in the window (and before it, as long as a
        # task can stay open), oldest first, to read each one's status at the period's end.
        history: dict[int, list[tuple[str, dt.date, Any]]] = {}
        who: dict[int, tuple[str, str, str | None, str | None]] = {}
        for (
            touch_id,
            status,
            at,
            detail,
            tz,
            touch_tier,
            customer_id,
            tier,
            segment,
        ) in session.execute(
            select(
                events.c.touch_id,
                events.c.status,
                events.c.at,
                events.c.detail,
                rows.c.timezone,
                rows.c.tier,
                rows.c.customer_id,
                customers.c.tier,
                customers.c.segment,
            )
            .select_from(
                events.join(rows, rows.c.id == events.c.touch_id).outerjoin(
                    customers,
                    and_(customers.c.customer_id == rows.c.customer_id, active),
                )
            )
            .where(
                events.c.status.in_(TASK_STATUSES),
                rows.c.occurrence >= since - dt.timedelta(days=TASK_LOOKBACK_DAYS),
                rows.c.occurrence <= end,
            )
            .order_by(events.c.id)
        ):
            day = aware_utc(at).astimezone(zone(tz)).date()
            history.setdefault(touch_id, []).append((status, day, detail))
            who[touch_id] = (str(touch_tier), customer_id, tier, segment)
    for touch_id, changes in history.items():
        touch_tier, customer_id, tier, segment = who[touch_id]
        status, due = None, None
        for event_status, day, detail in changes:
            if day > end:
                break  # recorded after the period: not its status at the end
            status = event_status
            if event_status == TouchStatus.ASSIGNED.value:
                due = _as_date((decode(detail) if detail else {}).get(DUE, day))
            if event_status == TouchStatus.DONE.value and tier is not None:
                contact(customer_id, tier, segment, day)
        if status == TouchStatus.ASSIGNED.value and due is not None and due <= end:
            of(touch_tier).tasks_overdue += 1
    for tier, segment, day in last.values():
        row = of(str(tier))
        if row.cadence_days and (end - day).days <= row.cadence_days:
            row.within_cadence += 1
        if segment == GROUP_SEGMENT and day >= period.first:
            group.contacted += 1
    return [tiers[t] for t in sorted(tiers)], group


def obligations(store: Store, period: Period, ruleset: RuleSet) -> list[Obligation]:
    """How the touches of each service rule due in the period ended (see the module doc)."""
    rules = [r for r in ruleset.rules if r.obligation]
    if not rules:
        return []
    touches = TouchRow.__table__
    current = TouchCurrent.__table__
    events = TouchEvent.__table__
    found: dict[str, Obligation] = {r.id: _obligation(r) for r in rules}
    seen: set[str] = set()
    with store.read_session() as session:
        rows = session.execute(
            select(
                touches.c.id,
                touches.c.touch_key,
                touches.c.rule_id,
                touches.c.occurrence,
                touches.c.timezone,
                current.c.status,
                current.c.reason,
            )
            .select_from(touches.join(current, current.c.touch_id == touches.c.id))
            .where(
                touches.c.rule_id.in_(list(found)),
                touches.c.occurrence >= period.first,
                touches.c.occurrence <= period.last,
                REAL_TOUCH,
            )
        ).all()
        sent_ids = [r.id for r in rows if r.status in SENT_LIKE]
        first_sent: dict[int, dt.datetime] = {}
        for start in range(0, len(sent_ids), 500):
            for touch_id, status, at in session.execute(
                select(events.c.touch_id, events.c.status, func.min(events.c.at))
                .where(
                    events.c.touch_id.in_(sent_ids[start : start + 500]),
                    events.c.status.in_((TouchStatus.SENDING.value, TouchStatus.SENT.value)),
                )
                .group_by(events.c.touch_id, events.c.status)
            ):
                # The provider's acceptance ("sent"); the claim ("sending") if not recorded.
                if status == TouchStatus.SENT.value or touch_id not in first_sent:
                    first_sent[touch_id] = aware_utc(at)
        task_ids = [r.id for r in rows if r.status in TASK_STATUSES]
        lives: dict[int, TaskLife] = {}
        for start in range(0, len(task_ids), 500):
            lives.update(task_lives(session, touches.c.id.in_(task_ids[start : start + 500])))
    for r in rows:
        seen.add(r.touch_key)
        o = found[r.rule_id]
        occurrence = _as_date(r.occurrence)
        if r.status in TASK_STATUSES:
            # A task: on time when its agent closed it within its window (due day to expiry
            # day), late when closed after (before the daily run expired it); still
            # assigned, it is waiting; expired, missed.
            life = lives.get(r.id)
            if r.status == TouchStatus.ASSIGNED.value:
                o.outcomes["waiting"] += 1
            elif r.status in AGENT_CLOSED and life is not None:
                o.outcomes["on_time" if life.closed_in_window else "late"] += 1
            else:
                o.outcomes["missed"] += 1
                o.missed.append((r.touch_key, occurrence.isoformat(), str(r.status)))
        elif r.status in SENT_LIKE:
            at = first_sent.get(r.id)
            sent_day = at.astimezone(_zone(r.timezone)).date() if at else occurrence
            o.outcomes["on_time" if sent_day <= occurrence else "late"] += 1
        elif r.status in (TouchStatus.FAILED.value, TouchStatus.UNKNOWN.value):
            o.outcomes["failed"] += 1
        elif (
            r.status in (TouchStatus.PLANNED.value, TouchStatus.SENDING.value)
            or r.reason == SuppressionReason.DEFERRED.value
        ):
            o.outcomes["waiting"] += 1
        elif r.reason in _UNREACHABLE:
            o.outcomes["unreachable"] += 1
        else:
            o.outcomes["missed"] += 1
            o.missed.append((r.touch_key, occurrence.isoformat(), str(r.reason)))
    # What an event-triggered rule made due in the period and the ledger never got.
    from ..plan import due_touches

    for rule in rules:
        if rule.trigger.kind is not TriggerKind.EVENT:
            continue
        o = found[rule.id]
        for day in period.days:
            for touch in due_touches(store, rule, day, ruleset.policy):
                if touch.key not in seen:
                    seen.add(touch.key)
                    o.outcomes["missed"] += 1
                    o.missed.append((touch.key, day.isoformat(), "never planned"))
    for o in found.values():
        o.missed.sort(key=lambda m: (m[1], m[0]))
    return [found[r.id] for r in rules]


@dataclass
class TaskLife:
    """One task's life in the ledger: whose it is, its window, and its status changes, each
    on the local day (the touch's time zone) it was recorded."""

    touch_id: int
    rule_id: str
    customer_id: str
    event_id: str | None
    occurrence: dt.date
    agent_id: str | None = None
    due: dt.date | None = None
    expires: dt.date | None = None
    # (status, local day, detail, instant), oldest first.
    changes: list[tuple[str, dt.date, dict[str, Any], dt.datetime]] = field(default_factory=list)

    @property
    def status(self) -> str | None:
        """Its status now (the latest change)."""
        return self.changes[-1][0] if self.changes else None

    def status_at(self, day: dt.date) -> str | None:
        """Its status at the end of local ``day`` (None: not assigned by then)."""
        found = None
        for status, on, *_ in self.changes:
            if on > day:
                break
            found = status
        return found

    @property
    def closing(self) -> tuple[str, dt.date, dict[str, Any], dt.datetime] | None:
        """The agent's outcome (done, no_answer, declined): status, day, detail, instant."""
        for change in self.changes:
            if change[0] in AGENT_CLOSED:
                return change
        return None

    @property
    def closed_in_window(self) -> bool:
        """Closed by its agent on or before its expiry day."""
        closing = self.closing
        return closing is not None and (self.expires is None or closing[1] <= self.expires)


def task_lives(session: Any, *where: Any) -> dict[int, TaskLife]:
    """The tasks among the touches ``where`` selects (conditions on ``touches`` and
    ``touch_events``), each with its task status changes, oldest first."""
    rows = TouchRow.__table__
    events = TouchEvent.__table__
    found: dict[int, TaskLife] = {}
    for (
        touch_id,
        status,
        at,
        detail,
        tz,
        rule_id,
        customer_id,
        event_id,
        occurrence,
    ) in session.execute(
        select(
            events.c.touch_id,
            events.c.status,
            events.c.at,
            events.c.detail,
            rows.c.timezone,
            rows.c.rule_id,
            rows.c.customer_id,
            rows.c.event_id,
            rows.c.occurrence,
        )
        .select_from(events.join(rows, rows.c.id == events.c.touch_id))
        .where(events.c.status.in_(TASK_STATUSES), *where)
        .order_by(events.c.id)
    ):
        life = found.get(touch_id)
        if life is None:
            life = found[touch_id] = TaskLife(
                touch_id, rule_id, customer_id, event_id, _as_date(occurrence)
            )
        info = decode(detail) if detail else {}
        info = info if isinstance(info, dict) else {}
        if status == TouchStatus.ASSIGNED.value:
            life.agent_id = str(info.get(AGENT) or "") or None
            day = aware_utc(at).astimezone(zone(tz)).date()
            life.due = _as_date(info.get(DUE, day))
            life.expires = _as_date(info[EXPIRES]) if info.get(EXPIRES) else None
        instant = aware_utc(at)
        life.changes.append((status, instant.astimezone(zone(tz)).date(), info, instant))
    return found


def _obligation(rule: Rule) -> Obligation:
    trig = rule.trigger
    if trig.kind is TriggerKind.EVENT:
        due = (
            f"due {trig.delay_days} local day(s) after the {trig.event_type} event's local "
            f"date, at {rule.send_time:%H:%M}"
        )
    elif trig.kind is TriggerKind.DAYS_BEFORE:
        offsets = ", ".join(str(n) for n in trig.offsets)
        field_name = trig.field.name if trig.field else ""
        due = f"due {offsets} day(s) before {field_name} (never sent on or after it)"
    elif trig.kind is TriggerKind.CALENDAR:
        due = "due on its calendar days"
    else:
        due = f"due on the {trig.kind.value} of {trig.field.name if trig.field else ''}"
    window = (
        f"; held back, it may go up to {rule.defer_days} day(s) later (late)"
        if rule.defer_days
        else ""
    )
    if rule.task is not None:
        window += (
            f"; as a task, on time when the agent closes it (done, no answer, declined) "
            f"by its expiry ({rule.task.expires_days} day(s) after its due day), waiting "
            f"while assigned, missed once expired"
        )
    return Obligation(
        rule.id,
        f"{due}, on time if sent by that local date{window}",
        complaint=trig.kind is TriggerKind.EVENT and trig.event_type == COMPLAINT_EVENT,
    )


def _as_date(value: Any) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _source_kind(source: str) -> str:
    # "import:customers.csv" -> "import"; "webhook:twilio" -> "webhook".
    return source.split(":", 1)[0]
