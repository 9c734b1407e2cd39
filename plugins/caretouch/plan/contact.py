"""Applying the contact policy to a day's candidate touches (SPEC section 6).

In order: a usable channel (address and consent), blackout days, occasions and caps per
customer (higher priority first, counting what the ledger says already reached the customer),
channel capacity (higher tiers first), then deferral of what a rule allows to wait. Every
suppression carries one reason word and the clause of ``policy.yaml`` behind it.

Service obligations (``Rule.obligation``) on the last day of their window compete before
everything else, for caps and for capacity: a touch that can still wait never pushes out one
that cannot. Held back all the same, an obligation is ``obligation_missed``, never silently
capped.

The same policy is checked again when a planned touch is about to go out (``run.prepare``
calls the send-time half below: ``send_timing``, ``late_cap_problem``, ``recipient``,
``held_at_send_time``), so plan time and send time decide with one module.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..addresses import email_is_valid, phone_is_valid
from ..rules.contact_policy import Cap, ContactPolicy, ServiceLevel, agent_problem
from ..rules.model import Rule
from ..store.models import Customer
from ..touch_history import PastContact
from ..vocab import Category, Channel, Decision, SuppressionReason, TaskAssignee
from .history import History
from .touch import Touch

DEFERRABLE = frozenset(
    {SuppressionReason.FREQUENCY_CAP, SuppressionReason.BLACKOUT, SuppressionReason.CAPACITY}
)

# Per agent: their manager (``agents.manager_id``, or None) and whether that manager is in
# the store (``store.lookup.agent_managers``).
Managers = Mapping[str, tuple[str | None, bool]]


def choose_channel(touch: Touch, policy: ContactPolicy, opted_out: set[str]) -> None:
    """The first channel of the rule's preference with a valid address and consent.

    ``opted_out`` names the purposes (``sms``, ``email``, ``marketing``) this customer
    explicitly withdrew; they make the reason ``opted_out`` rather than ``no_contact``.
    """
    c = touch.customer
    rule = touch.rule
    channel = policy.usable_channel(
        rule.channels,
        rule.category,
        phone=c.get("phone"),
        email=c.get("email"),
        consent_sms=bool(c.get("consent_sms")),
        consent_email=bool(c.get("consent_email")),
        consent_marketing=bool(c.get("consent_marketing")),
        agent_id=c.get("agent_id"),
        task_kind=rule.task.kind if rule.task else None,
    )
    if channel is not None:
        touch.channel = channel
        touch.explain.append(
            sys.intern(
                f"channel {channel.value}: first usable of "
                + ", ".join(ch.value for ch in rule.channels)
            )
        )
        return
    why: list[str] = []
    withdrawn = False
    if policy.needs_marketing(rule.category) and not c.get("consent_marketing"):
        withdrawn = withdrawn or "marketing" in opted_out
        why.append(
            f"{rule.category.value} needs marketing consent ({policy.clause('consent')})"
            + (": withdrawn" if "marketing" in opted_out else ": not given")
        )
    for ch in rule.channels:
        if ch is Channel.AGENT_TASK:
            problem = agent_problem(
                c.get("agent_id"),
                rule.task.kind if rule.task else None,
                phone=c.get("phone"),
                consent_sms=bool(c.get("consent_sms")),
            )
            why.append(f"{ch.value}: {problem or 'usable'}")
            # A call the customer withdrew phone consent for (consent_sms) was opted out of.
            withdrawn = withdrawn or bool(
                problem and c.get("agent_id") and not c.get("consent_sms") and "sms" in opted_out
            )
            continue
        consent = bool(c.get(f"consent_{ch.value}"))
        address = c.get("phone") if ch is Channel.SMS else c.get("email")
        if not consent:
            state = "consent withdrawn" if ch.value in opted_out else "no consent"
            withdrawn = withdrawn or ch.value in opted_out
        elif not address:
            state = "phone missing" if ch is Channel.SMS else "address missing"
        elif not (phone_is_valid(address) if ch is Channel.SMS else email_is_valid(address)):
            state = "phone not valid E.164" if ch is Channel.SMS else "address not valid"
        else:
            state = "usable"
        why.append(f"{ch.value}: {state}")
    reason = SuppressionReason.OPTED_OUT if withdrawn else SuppressionReason.NO_CONTACT
    touch.suppress(reason, "; ".join(why))


def assign_tasks(touches: Iterable[Touch], managers: Managers) -> None:
    """A task for the agent's manager (``task.assignee: manager``) needs one in the store:
    else it is suppressed ``no_contact``, with why (the send step checks again)."""
    for t in touches:
        if t.decision is not Decision.SEND or t.channel is not Channel.AGENT_TASK:
            continue
        if t.rule.task is None or t.rule.task.assignee is not TaskAssignee.MANAGER:
            continue
        assignee, why = task_assignee(t.rule, t.customer.get("agent_id"), managers)
        if assignee is None:
            t.suppress(SuppressionReason.NO_CONTACT, why)
        else:
            t.explain.append(why)


def apply_blackout(touches: Iterable[Touch], policy: ContactPolicy, day: dt.date) -> None:
    unknown = None
    if policy.blackout.public_holidays == "cn" and policy.blackout.categories:
        from ..dates import public_holiday_cn

        is_holiday, why = public_holiday_cn(day)
        if is_holiday is None:
            unknown = (
                f"{policy.clause('blackout.public_holidays', 'cn')}: no holiday data for "
                f"{day.year} ({why}); the day is not treated as a holiday"
            )
    for t in touches:
        if t.decision is not Decision.SEND:
            continue
        if unknown and t.rule.category in policy.blackout.categories:
            t.explain.append(unknown)
        why = policy.blackout.reason(day, t.rule.category)
        if why:
            t.suppress(
                SuppressionReason.BLACKOUT,
                f"{why}; {policy.clause('blackout')} holds back {t.rule.category.value}",
            )


def cap_violation(
    policy: ContactPolicy,
    category: Category,
    channel: Channel | None,
    taken: list[PastContact],
    day: dt.date,
    tier: str | None = None,
) -> str | None:
    """Why one more touch of ``category`` on ``channel`` on local ``day`` to a customer of
    ``tier`` would break a cap (given the customer's ``taken`` contacts), or None when every
    cap allows it: the top-level caps and those of the tier's service level."""
    for cap in policy.caps_for(tier, category, channel):
        problem = _violation(cap, taken, day, policy)
        if problem:
            return problem
    return None


def _in_scope(cap: Cap, contact: PastContact) -> bool:
    if cap.category is not None:
        return contact.category == cap.category
    if cap.channel is not None:
        return contact.channel == cap.channel
    return True


def _violation(
    cap: Cap, taken: list[PastContact], day: dt.date, policy: ContactPolicy
) -> str | None:
    """Why one more touch on ``day`` would break ``cap``, or None."""
    scoped = [c for c in taken if _in_scope(cap, c)]
    if not scoped and _allows_one(cap):
        # Nothing taken in its scope: the usual case on a festival day, not worth the windows.
        return None
    for name, limit, days in cap.limits():
        # Every window of ``days`` local days that contains the day must stay within it.
        for offset in range(days - 1, -1, -1):
            first = day - dt.timedelta(days=offset)
            last = first + dt.timedelta(days=days - 1)
            inside = [c for c in scoped if first <= c.day <= last]
            if len(inside) + 1 > limit:
                where = f"on {day}" if days == 1 else f"in {first}..{last}"
                return f"{policy.clause(f'{cap.name}.{name}', limit)}: {_listing(inside)} {where}"
    return None


def _allows_one(cap: Cap) -> bool:
    """Whether ``cap`` allows a touch to a customer who had none (a cap of 0 does not)."""
    return all(limit >= 1 for _, limit, _ in cap.limits())


def _listing(contacts: list[PastContact]) -> str:
    shown = ", ".join(f"{c.rule_id} ({c.day})" for c in contacts[:3])
    more = f" and {len(contacts) - 3} more" if len(contacts) > 3 else ""
    return f"{len(contacts)} touch(es) already: {shown}{more}"


def competing_order(t: Touch, day: dt.date) -> tuple[Any, ...]:
    """The order in which a customer's touches of ``day`` take their places: service
    obligations on the last day of their window first, then higher priority, then rule id."""
    return (not t.last_chance(day), -t.rule.priority, t.rule.id, t.key)


def apply_caps(
    touches: list[Touch],
    policy: ContactPolicy,
    day: dt.date,
    past: list[PastContact],
    greeted: Iterable[PastContact] = (),
    rules: Mapping[str, Rule] | None = None,
) -> None:
    """Per customer, in ``competing_order``, accept touches while every cap allows one more
    and the occasion they greet (if any) is still free.

    ``past`` holds what the ledger counts for these customers around ``day``; ``greeted``
    the counted touches of rules with an occasion in the occasions' years (``rules``, by id,
    tells which occasion each greets). Touches that are candidates again today are taken out
    of both (they compete anew), except those already handled, which keep their place.
    """
    competing = {t.key for t in touches if t.decision is Decision.SEND}
    taken: dict[str, list[PastContact]] = defaultdict(list)
    for contact in past:
        if contact.key not in competing or contact.handled:
            taken[contact.customer_id].append(contact)
    occasions = _occasions_taken(greeted, competing, rules)
    by_customer: dict[str, list[Touch]] = defaultdict(list)
    for t in touches:
        if t.decision is Decision.SEND:
            by_customer[t.customer_id].append(t)
    for customer_id, group in by_customer.items():
        group.sort(key=lambda t: competing_order(t, day))
        accepted = taken[customer_id]
        mine = occasions[customer_id]
        for t in group:
            occasion = t.occasion
            if occasion is not None and occasion in mine:
                other = mine[occasion]
                t.suppress(
                    SuppressionReason.OCCASION_TAKEN,
                    f"occasion {occasion[0]} {occasion[1]}: {other.rule_id} "
                    f"({other.occurrence}) greets it already (one greeting per occasion; "
                    "priority decides)",
                )
                continue
            tier = t.customer.get("tier")
            level = policy.level_of(tier)
            if level is not None:
                t.explain.append(_level_line(policy, level, tier))
            problem = cap_violation(policy, t.rule.category, t.channel, accepted, day, tier)
            if problem:
                t.suppress(SuppressionReason.FREQUENCY_CAP, f"{problem} (priority decides)")
                continue
            contact = PastContact(
                t.key,
                customer_id,
                t.rule.id,
                t.rule.category.value,
                t.channel.value if t.channel else None,
                day,
                handled=False,
                occurrence=t.occurrence,
            )
            accepted.append(contact)
            if occasion is not None:
                mine[occasion] = contact


def _level_line(policy: ContactPolicy, level: ServiceLevel, tier: str | None) -> str:
    """The explanation's line naming the service level whose caps a touch competes under."""
    return sys.intern(
        f"tier {tier}: service level {level.name}, {policy.clause(level.clause_name)}"
    )


def _occasions_taken(
    greeted: Iterable[PastContact], competing: set[str], rules: Mapping[str, Rule] | None
) -> dict[str, dict[tuple[str, int], PastContact]]:
    """Per customer, the occasions (name, year) already held by a touch that keeps its
    place: handled, or not a candidate again today."""
    by_id = rules or {}
    taken: dict[str, dict[tuple[str, int], PastContact]] = defaultdict(dict)
    for contact in greeted:
        if contact.key in competing and not contact.handled:
            continue
        rule = by_id.get(contact.rule_id)
        occurrence = contact.occurrence or contact.day
        occasion = rule.occasion_on(occurrence) if rule is not None else None
        if occasion is not None:
            taken[contact.customer_id].setdefault(occasion, contact)
    return taken


def capacity_share(budget: int, shard: tuple[int, int] | None) -> int:
    """Planner ``k`` of ``n``'s share of a day's ``budget``: an even split, the remainder
    to the first shards, so the shares add up to the budget."""
    if shard is None:
        return budget
    k, n = shard
    return budget // n + (1 if k < budget % n else 0)


def apply_capacity(
    touches: list[Touch],
    policy: ContactPolicy,
    day: dt.date,
    past: list[PastContact],
    shard: tuple[int, int] | None = None,
) -> None:
    """Spend each channel's daily capacity on higher tiers first, then higher priority.

    ``shard``: the touches and ``past`` contacts are one planner's share of the customers,
    which spends its share of the capacity (``capacity_share``)."""
    if not policy.capacity:
        return
    competing = {t.key for t in touches if t.decision is Decision.SEND}
    rank = {tier: i for i, tier in enumerate(policy.tier_order)}
    for channel, whole in policy.capacity.items():
        budget = capacity_share(whole, shard)
        share = f" (planner {shard[0]} of {shard[1]}'s share: {budget})" if shard else ""
        used = sum(
            1
            for c in past
            if c.channel == channel.value and c.day == day and (c.handled or c.key not in competing)
        )
        queue = [t for t in touches if t.decision is Decision.SEND and t.channel is channel]
        queue.sort(
            key=lambda t: (
                not t.last_chance(day),
                rank.get(str(t.customer.get("tier")), len(rank)),
                -t.rule.priority,
                t.rule.id,
                t.key,
            )
        )
        for t in queue:
            if used < budget:
                used += 1
                continue
            t.suppress(
                SuppressionReason.CAPACITY,
                f"{policy.clause(f'capacity.{channel.value}.per_day', whole)}{share}: spent on "
                f"tiers {'>'.join(policy.tier_order)} first (this customer is tier "
                f"{t.customer.get('tier')})",
            )


def apply_deferral(touches: Iterable[Touch], day: dt.date) -> None:
    """A touch held back by a cap, a blackout or capacity waits for its next day, if its rule
    allows (``defer_days``) and its window is not over; never beyond the window. A service
    obligation held back on the last day of its window is ``obligation_missed``."""
    for t in touches:
        if t.decision is not Decision.SUPPRESS or t.reason not in DEFERRABLE:
            continue
        last = t.last_day
        window = f"defer_days={t.rule.defer_days}, window ends {last}"
        if day < last:
            t.reason = SuppressionReason.DEFERRED
            t.explain.append(
                sys.intern(f"deferred: competes again on {day + dt.timedelta(days=1)} ({window})")
            )
        elif t.rule.obligation:
            cause = t.reason
            t.reason = SuppressionReason.OBLIGATION_MISSED
            t.explain.append(
                f"obligation missed: a service obligation held back ({cause.value}) on the last "
                f"day of its window ({window})"
            )
        elif t.rule.defer_days:
            t.explain.append(
                f"not deferred: its window (defer_days={t.rule.defer_days}) ended {last}"
            )


# -- send time: the policy checked again when a planned touch is about to go out -----------


@dataclass(frozen=True)
class PlannedSend:
    """A planned touch as the send-time checks see it (built by ``run`` from the ledger)."""

    key: str
    customer_id: str
    rule_id: str
    category: Category
    channel: Channel | None  # the channel it is planned for now
    timezone: str | None
    send_at: dt.datetime
    occurrence: dt.date
    tier: str | None = None  # the customer's tier when planned (its service level's caps)


@dataclass(frozen=True)
class SendTimeHold:
    """A touch that cannot go out as planned: the reason to record and its explanation.

    ``wait_until`` is set when it is deferred (a service obligation whose window lasts): the
    local date from whose plan on it competes again. Otherwise the suppression is final.
    """

    reason: SuppressionReason
    explain: list[str]
    wait_until: dt.date | None = None


@dataclass(frozen=True)
class Recipient:
    """Where a touch goes now (``channel`` and ``address``), or why it cannot (``reason``,
    ``why``), re-checked against the customer's current data."""

    channel: Channel | None
    address: str | None
    reason: SuppressionReason | None
    why: str


# Per send run: the touch keys counted against a channel's capacity on a local day.
CapacityUse = dict[tuple[Channel, dt.date], set[str]]


def send_timing(
    policy: ContactPolicy, due: PlannedSend, now: dt.datetime
) -> SuppressionReason | None:
    """None when the touch may go now; else why not.

    A touch may go from its send time until ``sending_window_hours`` later, outside the
    customer's quiet hours. ``DEFERRED`` here means "wait" (not yet time, or quiet hours that
    end within the window); ``QUIET_HOURS`` that the quiet hours outlast the window;
    ``TOO_LATE`` that the window has passed (a late backfill, a dispatcher that was down).
    """
    send_at = due.send_at
    window_end = send_at + dt.timedelta(hours=policy.sending_window_hours)
    if now < send_at:
        return SuppressionReason.DEFERRED
    if now > window_end:
        return SuppressionReason.TOO_LATE
    local_now = now.astimezone(policy.zone(due.timezone))
    if policy.quiet_hours.contains(local_now.time()):
        allowed = policy.quiet_hours.next_allowed(local_now)
        return SuppressionReason.QUIET_HOURS if allowed > window_end else SuppressionReason.DEFERRED
    return None


def timing_explain(policy: ContactPolicy, due: PlannedSend, now: dt.datetime) -> str:
    """Why a touch past its send time cannot go now: the clauses ``send_timing`` applied."""
    return (
        f"planned for {due.send_at:%Y-%m-%d %H:%M}Z; at "
        f"{now.astimezone(policy.zone(due.timezone)):%H:%M} local; "
        + policy.clause("sending_window_hours", policy.sending_window_hours)
        + "; "
        + policy.clause("quiet_hours", policy.quiet_hours)
    )


def held_at_send_time(
    policy: ContactPolicy,
    rule: Rule | None,
    due: PlannedSend,
    now: dt.datetime,
    cause: SuppressionReason,
    why: str,
    *,
    days: int | None = None,
) -> SendTimeHold:
    """A touch that cannot go out as planned (``too_late``, ``quiet_hours``, or
    ``frequency_cap`` on a later local day): final for most touches.

    A service obligation is deferred instead while its window lasts: it competes again, under
    the caps and capacity of that day, from the plan of the first local day it can still go
    (the day after its planned day at the earliest; after quiet hours if they hold now). Past
    its window it is ``obligation_missed``; final either way, never silently dropped.
    ``days``: the touch's ``days_before`` (its context), which may end the window earlier.
    """
    if rule is None or not rule.obligation:
        return SendTimeHold(cause, [why])
    zone = policy.zone(due.timezone)
    local_now = now.astimezone(zone)
    if policy.quiet_hours.contains(local_now.time()):
        local_now = policy.quiet_hours.next_allowed(local_now)
    planned_day = due.send_at.astimezone(zone).date()
    wait_until = max(planned_day + dt.timedelta(days=1), local_now.date())
    last = rule.last_day(due.occurrence, days)
    window = f"defer_days={rule.defer_days}, window ends {last}"
    if wait_until <= last:
        return SendTimeHold(
            SuppressionReason.DEFERRED,
            [
                f"held back at send time ({cause.value}): {why}",
                f"deferred: a service obligation, it competes again when {wait_until} is "
                f"planned ({window})",
            ],
            wait_until=wait_until,
        )
    return SendTimeHold(
        SuppressionReason.OBLIGATION_MISSED,
        [
            f"held back at send time ({cause.value}): {why}",
            f"obligation missed: a service obligation, its window is over ({window})",
        ],
    )


def late_cap_problem(
    policy: ContactPolicy,
    history: History,
    due: PlannedSend,
    now: dt.datetime,
    capacity_use: CapacityUse,
) -> str | None:
    """A touch sent on a later local day than planned (held by quiet hours, or a dispatcher
    that was down) counts on the day it is sent: the plan of that day did not know it would
    land there, so its caps are checked again now. The day's capacity use is read from
    ``history`` once per send run (``capacity_use``), not once per late touch."""
    zone = policy.zone(due.timezone)
    today = now.astimezone(zone).date()
    if today == due.send_at.astimezone(zone).date():
        return None
    span = dt.timedelta(days=policy.longest_cap_days - 1)
    taken = [
        c
        for c in history.contacts([due.customer_id], today - span, today + span)
        if c.key != due.key
    ]
    channel = due.channel
    problem = cap_violation(policy, due.category, channel, taken, today, due.tier)
    if problem is None and channel is not None and channel in policy.capacity:
        budget = policy.capacity[channel]
        if (channel, today) not in capacity_use:
            capacity_use[(channel, today)] = {
                c.key for c in history.contacts(None, today, today) if c.channel == channel.value
            }
        keys = capacity_use[(channel, today)]
        used = len(keys - {due.key})
        if used >= budget:
            problem = (
                policy.clause(f"capacity.{channel.value}.per_day", budget)
                + f": {used} already on {today}"
            )
        else:
            keys.add(due.key)  # it goes out today: later late touches count it
    return f"sent late, on {today}: {problem}" if problem else None


def task_assignee(rule: Rule, agent_id: str | None, managers: Managers) -> tuple[str | None, str]:
    """Who an ``agent_task`` of ``rule`` for a customer of agent ``agent_id`` goes to: the
    agent, or for ``task.assignee: manager`` the agent's manager; None and why when there is
    no one to give it to."""
    if rule.task is None or rule.task.assignee is not TaskAssignee.MANAGER:
        return agent_id, f"task for agent {agent_id}"
    if not agent_id:
        return None, "task.assignee manager: the customer has no agent"
    if agent_id not in managers:
        return None, f"task.assignee manager: agent {agent_id} is not in the store"
    manager_id, present = managers[agent_id]
    if manager_id is None:
        return None, f"task.assignee manager: agent {agent_id} has no manager (agents.manager_id)"
    if not present:
        return None, (
            f"task.assignee manager: {manager_id}, the manager of agent {agent_id}, "
            "is not in the store"
        )
    return manager_id, f"task for {manager_id}, the manager of agent {agent_id}"


def recipient(
    policy: ContactPolicy,
    rule: Rule,
    due: PlannedSend,
    customer: Customer | None,
    managers: Managers | None = None,
) -> Recipient:
    """The channel and address to use now, re-checked against the customer's current data.

    A task's "address" is who it is assigned to: the customer's agent, or their manager for
    a rule with ``task.assignee: manager`` (``managers``: ``store.lookup.agent_managers`` of
    the customer's agent)."""
    if customer is None:
        return Recipient(
            None, None, SuppressionReason.NO_CONTACT, "customer no longer in the store"
        )
    if customer.status != "active":
        return Recipient(
            None, None, SuppressionReason.NO_CONTACT, f"customer status is {customer.status}"
        )
    channel = policy.usable_channel(
        rule.channels,
        rule.category,
        phone=customer.phone,
        email=customer.email,
        consent_sms=customer.consent_sms,
        consent_email=customer.consent_email,
        consent_marketing=customer.consent_marketing,
        agent_id=customer.agent_id,
        task_kind=rule.task.kind if rule.task else None,
    )
    if channel is None:
        return Recipient(
            None,
            None,
            SuppressionReason.NO_CONTACT,
            "no usable channel any more (consent or address changed)",
        )
    wanted = due.channel
    if wanted is not None and channel is not wanted:
        # The plan weighed caps and capacity for the planned channel; another channel must
        # be weighed by a plan too. The touch waits for the next one (deferred, not final).
        return Recipient(
            None,
            None,
            SuppressionReason.DEFERRED,
            f"planned for {wanted.value}, now only {channel.value} is usable: "
            "the next plan decides on the new channel",
        )
    if channel is Channel.AGENT_TASK:
        assignee, why = task_assignee(rule, customer.agent_id, managers or {})
        if assignee is None:
            return Recipient(None, None, SuppressionReason.NO_CONTACT, why)
        return Recipient(channel, assignee, None, "")
    address = customer.phone if channel is Channel.SMS else customer.email
    return Recipient(channel, address, None, "")
