"""``plan_day``: every candidate touch due on a local date, with its decision.

Pure with respect to time: the day is an argument. Writes nothing; ``care plan`` prints what
it returns and ``care run`` hands it to the ledger.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import ColumnElement, select, true

from ..bounds import Unreadable
from ..dates import (
    LeapDayPolicy,
    anniversary_in_year,
    aware_utc,
    lunar_month_day,
    lunar_years_between,
)
from ..errors import ValidationFailed
from ..premiums import due_date_of
from ..rules.contact_policy import ContactPolicy
from ..rules.loader import RuleSet
from ..rules.model import AGENT_TEMPLATE_COLUMNS, Rule, TriggerKind
from ..rules.sql import PREMIUM_DUE_FIELD, TABLES, candidate_selects, row_splitter
from ..store.consent import withdrawn_consents
from ..store.db import Store, among
from ..store.lookup import agent_managers, customer_row_ids
from ..store.models import Agent
from ..store.payments import paid_through, paid_why
from ..touch_history import DeferredTouch, PastContact
from ..vocab import (
    BirthdayCalendar,
    Channel,
    Decision,
    SubjectKind,
    SuppressionReason,
    TaskAssignee,
)
from .cadence import is_due, levels_with_cadence
from .cases import CaseWait, closed_cases
from .contact import (
    apply_blackout,
    apply_capacity,
    apply_caps,
    apply_deferral,
    assign_tasks,
    choose_channel,
)
from .history import History
from .touch import Touch
from .variants import give_variants

log = logging.getLogger("caretouch.plan")

_AGENTS = Agent.__table__

# Told (event_id, reason) for every event left out of a plan because it cannot be handled.
OnUnreadable = Callable[[str, str], None]

# One planner's share of a day: the customers whose store id is ``k`` modulo ``n``.
Shard = tuple[int, int]


def in_shard(shard: Shard | None) -> ColumnElement[bool]:
    """The store's customers of ``shard`` (all of them for ``None``), as a SQL condition."""
    if shard is None:
        return true()
    k, n = shard
    if not 0 <= k < n:
        raise ValueError(f"shard {k} of {n}: k must be in 0..{n - 1}")
    return TABLES["customer"].c.id % n == k


def local_send_at(day: dt.date, at: dt.time, zone: dt.tzinfo) -> dt.datetime:
    """The instant (UTC) of local time ``at`` on ``day`` in ``zone``."""
    local = dt.datetime.combine(day, at, tzinfo=zone)
    # Round-trip through UTC so a time in a DST gap lands on a real instant.
    return local.astimezone(dt.timezone.utc)


def _due(
    rule: Rule,
    rows: dict[str, dict | None],
    day: dt.date,
    policy: ContactPolicy,
    holiday: str | None = None,
) -> Touch | None:
    """The touch for one candidate row if it is really due on ``day``, else None.

    ``holiday``: for a calendar trigger, the festival it matches on ``day`` (the same for
    every row: ``due_touches`` asks ``calendar_match`` once)."""
    customer = rows["customer"]
    assert customer is not None
    zone = policy.zone(customer.get("timezone"))
    tz_name = zone.key  # the zone actually used (the default one when none is recorded)
    trig = rule.trigger
    touch = Touch(
        rule=rule,
        customer=customer,
        policy=rows.get("policy"),
        event=rows.get("event"),
        occurrence=day,
        send_at=local_send_at(day, rule.send_time, zone),
        timezone=tz_name,
        relation=rows.get("relation"),
    )
    if trig.kind is TriggerKind.CADENCE:
        return touch  # due or not: ``_cadence_touches`` decides, from the last contact
    if trig.kind is TriggerKind.CALENDAR:
        touch.holiday = holiday
        touch.explain.append(
            sys.intern(f"calendar: {touch.holiday or day.strftime('%m-%d')} on {day}")
        )
        return touch
    if trig.kind is TriggerKind.EVENT:
        event = touch.event
        assert event is not None
        occurred = aware_utc(event["occurred_at"])
        event["occurred_at"] = occurred
        local_day = occurred.astimezone(zone).date()
        if local_day + dt.timedelta(days=trig.delay_days) != day:
            return None
        touch.explain.append(
            f"event {trig.event_type} at {occurred:%Y-%m-%d %H:%M}Z = local {local_day} "
            f"({tz_name}); due {trig.delay_days} day(s) later"
        )
        return touch
    assert trig.field is not None
    table_row = {"customer": customer, "policy": touch.policy, "relation": touch.relation}[
        trig.field.table
    ]
    assert table_row is not None
    origin: dt.date = table_row[trig.field.column]
    # A relation's date names the family member (by id and kind: the name is personal data).
    whose = (
        f"relation {table_row['relation_id']} ({table_row.get('kind')}): "
        if trig.field.table == "relation"
        else ""
    )
    if trig.kind is TriggerKind.ANNIVERSARY:
        # A birthday (the customer's or a relation's) in the calendar its owner keeps.
        lunar = (
            trig.field.column == "birth_date"
            and table_row.get("birthday_calendar") == BirthdayCalendar.LUNAR.value
        )
        if lunar:
            years = lunar_years_between(origin, day)
            kind = f"lunar anniversary (lunar month-day {lunar_month_day(origin)})"
        else:
            if anniversary_in_year(origin, day.year, trig.leap_day) != day:
                # The SQL pre-filter matched a month-day key that is not due this year
                # (e.g. a 29 February key on 1 March under the feb28 policy).
                return None
            years = day.year - origin.year
            kind = "anniversary"
        if years < trig.years_min or years < 0 or (lunar and day < origin):
            return None
        touch.years = years
        touch.explain.append(f"{whose}{trig.field.name} {origin} -> {kind}, year {years}")
        return touch
    touch.days = abs((origin - day).days)
    touch.explain.append(
        f"{trig.field.name} {origin} is {touch.days} day(s) {'after' if trig.kind is TriggerKind.DAYS_BEFORE else 'before'} {day}"
    )
    if trig.field.name == PREMIUM_DUE_FIELD:
        # Only an unpaid premium is a candidate (rules.sql.premium_unpaid): say so.
        through = table_row.get("paid_through")
        touch.explain.append(
            f"premium due {origin} unpaid: paid through {through or 'nothing recorded'}"
        )
    return touch


# Candidate rows fetched per round trip while a rule's candidates are read.
CANDIDATE_BATCH = 5000


def due_touches(
    store: Store,
    rule: Rule,
    day: dt.date,
    policy: ContactPolicy,
    on_unreadable: OnUnreadable | None = None,
    shard: Shard | None = None,
    history: History | None = None,
) -> list[Touch]:
    """The touches ``rule`` makes due on local date ``day``, before the contact policy: its
    trigger and audience, evaluated in the database. The report derives its figures of what
    a rule should have done from this same definition. An event whose payload cannot be read
    back is left out (``plan_day``). ``shard``: only that share of the customers'.
    ``history``: the last contacts a cadence trigger counts from (none: never contacted)."""
    if rule.trigger.kind is TriggerKind.CADENCE:
        return _cadence_touches(store, rule, day, policy, history, shard)
    touches = []
    holiday = (
        rule.trigger.calendar_match(day)[1] if rule.trigger.kind is TriggerKind.CALENDAR else None
    )
    with store.read_session() as session:
        for stmt in candidate_selects(rule, day):
            stmt = stmt.where(in_shard(shard)) if shard is not None else stmt
            # A server-side cursor on PostgreSQL (SQLite's cursor is incremental anyway): a
            # festival's million candidates are read in batches, not fetched all at once.
            result = session.execute(stmt, execution_options={"yield_per": CANDIDATE_BATCH})
            split = row_splitter(list(result.keys()))
            for row in result:
                rows = split(row)
                event = rows.get("event")
                if event is not None and isinstance(event.get("payload"), Unreadable):
                    _left_out(event, on_unreadable)
                    continue
                touch = _due(rule, rows, day, policy, holiday)
                if touch is not None:
                    touches.append(touch)
    return touches


def _cadence_touches(
    store: Store,
    rule: Rule,
    day: dt.date,
    policy: ContactPolicy,
    history: History | None,
    shard: Shard | None,
) -> list[Touch]:
    """A cadence rule's check-ins due on ``day`` (``plan.cadence``): the audience's
    customers of a level with a cadence whose cycle since their last contact ends today."""
    levels = levels_with_cadence(policy)
    if not levels:
        return []
    customers = TABLES["customer"]
    rows: list[dict[str, Any]] = []
    with store.read_session() as session:
        for stmt in candidate_selects(rule, day):
            stmt = stmt.where(customers.c.tier.in_(sorted(levels)), in_shard(shard))
            result = session.execute(stmt, execution_options={"yield_per": CANDIDATE_BATCH})
            split = row_splitter(list(result.keys()))
            rows += [split(row)["customer"] or {} for row in result]
    last = (
        history.last_contacts([str(r["customer_id"]) for r in rows], day)
        if history is not None and rows
        else {}
    )
    touches = []
    for customer in rows:
        customer_id = str(customer["customer_id"])
        level = levels[str(customer["tier"])]
        cadence = level.cadence_days
        assert cadence is not None
        contacted = last.get(customer_id)
        if not is_due(day, cadence, contacted, customer_id):
            continue
        touch = _due(rule, {"customer": customer}, day, policy)
        assert touch is not None
        touch.cadence = (level.name, cadence, contacted)
        since = f"last contact {contacted}" if contacted else "never contacted"
        touch.explain.append(
            f"cadence: {since}; {policy.clause(level.clause_name + '.cadence_days', cadence)} "
            f"for tier {customer['tier']} runs out on {day}"
        )
        touches.append(touch)
    return touches


# A deferred service obligation whose window ended before any plan revived it (plans were
# skipped) is recorded as missed by the plans of up to this many days after its window.
MISSED_SWEEP_DAYS = 7


def _deferred_touches(
    store: Store, ruleset: RuleSet, day: dt.date, history: History, shard: Shard | None = None
) -> tuple[list[Touch], dict[str, dt.date]]:
    """Touches deferred on earlier days whose window still includes ``day``, and deferred
    service obligations whose window is over (already suppressed ``obligation_missed``).

    Also returns the keys due on ``day`` itself that the send step deferred to a later day,
    with that day: a plan of ``day`` must not pull them back to it.
    """
    # Every deferrable rule, not only those asked for: a deferred touch takes a cap's place.
    rules = {r.id: r for r in ruleset.rules if r.defer_days}
    if not rules:
        return [], {}
    longest = max(r.defer_days for r in rules.values())
    first = day - dt.timedelta(days=longest + MISSED_SWEEP_DAYS)
    competing: list[tuple[DeferredTouch, bool]] = []  # (touch, its window is over)
    held: dict[str, dt.date] = {}
    for w in history.deferred(rules, first, day):
        rule = rules[w.rule_id]
        if w.wait_until is not None and w.wait_until > day:
            if w.occurrence == day:
                held[w.key] = w.wait_until
            continue
        if w.occurrence >= day:
            continue  # deferred by a plan of this day: it competes anew as the day's candidate
        last = rule.last_day(w.occurrence, w.context.get("days"))
        if day <= last:
            competing.append((w, False))
        elif rule.obligation:
            competing.append((w, True))
    if not competing:
        return [], held
    customers = TABLES["customer"]
    ids = sorted({w.customer_id for w, _ in competing})
    rows: dict[str, dict[str, Any]] = {}
    with store.read_session() as session:
        for start in range(0, len(ids), 500):
            stmt = select(customers).where(
                customers.c.customer_id.in_(ids[start : start + 500]), in_shard(shard)
            )
            for row in session.execute(stmt):
                rows[row.customer_id] = dict(row._mapping)
        # A premium reminder deferred before its premium was paid is owed no more.
        paid = paid_through(
            session,
            (
                w.policy_id
                for w, _ in competing
                if w.policy_id and _premium_due(rules[w.rule_id], w)
            ),
        )
    touches = []
    for w, over in competing:
        customer = rows.get(w.customer_id)
        if customer is None:
            continue  # gone from the store, or another shard's
        rule = rules[w.rule_id]
        zone = ruleset.policy.zone(customer.get("timezone"))
        touch = Touch(
            rule=rule,
            customer=customer,
            policy={"policy_id": w.policy_id} if w.policy_id else None,
            event={"event_id": w.event_id} if w.event_id else None,
            occurrence=w.occurrence,
            send_at=local_send_at(day, rule.send_time, zone),
            timezone=zone.key,
            frozen_context=w.context,
            relation=_deferred_relation(rule, w),
            # The variant it was given keeps it (plan.variants leaves it as recorded).
            variant=rule.variant(w.variant) if w.variant else None,
        )
        if touch.relation is not None:
            touch.explain.append(
                sys.intern(
                    f"relation {touch.relation['relation_id']} ({touch.relation.get('kind')})"
                )
            )
        due = _premium_due(rule, w)
        why = paid_why(w.policy_id, paid.get(w.policy_id), due) if due and w.policy_id else None
        if why is not None:
            touch.suppress(SuppressionReason.PAID, why)
        elif over:
            touch.suppress(
                SuppressionReason.OBLIGATION_MISSED,
                f"deferred from {w.occurrence}, but no plan of its window (ended "
                f"{touch.last_day}) sent it",
            )
        elif w.wait_until is not None:
            touch.explain.append(
                f"deferred from {w.occurrence} at send time; competes again on {day}"
            )
        else:
            touch.explain.append(f"deferred from {w.occurrence}; competes again on {day}")
        touches.append(touch)
    return touches, held


def _premium_due(rule: Rule, w: DeferredTouch) -> dt.date | None:
    """The due date of the premium a deferred premium reminder is about (its occurrence and
    the offset its frozen context holds); None for a touch of another rule."""
    trig = rule.trigger
    if trig.field is None or trig.field.name != PREMIUM_DUE_FIELD or not w.policy_id:
        return None
    days = w.context.get("days")
    if not isinstance(days, int):
        return None
    return due_date_of(w.occurrence, days, before=trig.kind is TriggerKind.DAYS_BEFORE)


def _deferred_relation(rule: Rule, w: DeferredTouch) -> dict[str, Any] | None:
    """The family member a deferred relation touch is about: its subject (the key's), and
    its kind as the frozen context recorded it; None for a touch of another subject."""
    if rule.trigger.subject is not SubjectKind.RELATION:
        return None
    frozen = w.context.get("relation") or {}
    return {"relation_id": w.subject_id or frozen.get("relation_id"), "kind": frozen.get("kind")}


# Agents read per round trip when a day's touches are given theirs.
AGENT_BATCH = 500


def _attach_agents(store: Store, touches: list[Touch]) -> None:
    """Give each touch its customer's agent (``customers.agent_id``) as templates see it:
    one read of the day's agents, not one per touch. A customer without an agent, or whose
    agent is not in the store, gets None. Deferred touches keep the agent frozen in their
    context."""
    ids = sorted(
        {
            agent_id
            for t in touches
            if t.frozen_context is None and (agent_id := t.customer.get("agent_id"))
        }
    )
    if not ids:
        return
    agents = _AGENTS
    shown = [agents.c[c] for c in AGENT_TEMPLATE_COLUMNS]
    found: dict[str, dict[str, Any]] = {}
    with store.read_session() as session:
        for start in range(0, len(ids), AGENT_BATCH):
            stmt = select(agents.c.agent_id, *shown).where(
                among(session, agents.c.agent_id, ids[start : start + AGENT_BATCH])
            )
            for row in session.execute(stmt):
                found[row.agent_id] = {c: getattr(row, c) for c in AGENT_TEMPLATE_COLUMNS}
    for touch in touches:
        if touch.frozen_context is None:
            touch.agent = found.get(touch.customer.get("agent_id") or "")


def _stop_closed_cases(store: Store, touches: list[Touch]) -> None:
    """Suppress ``case_closed`` the touches of rules with ``trigger.until`` whose case was
    resolved or closed before their send time (``plan.cases``)."""
    waits = [
        CaseWait(t.key, str(t.event["event_id"]), t.rule.trigger.until, t.send_at)
        for t in touches
        if t.decision is Decision.SEND and t.rule.trigger.until and t.event is not None
    ]
    if not waits:
        return
    closed = closed_cases(store, waits)
    for touch in touches:
        why = closed.get(touch.key) if touch.decision is Decision.SEND else None
        if why is not None:
            touch.suppress(SuppressionReason.CASE_CLOSED, why)


def _assign_to_managers(store: Store, sending: list[Touch]) -> None:
    """Check that tasks for an agent's manager (``task.assignee: manager``) have one."""
    escalations = [
        t
        for t in sending
        if t.decision is Decision.SEND
        and t.channel is Channel.AGENT_TASK
        and t.rule.task is not None
        and t.rule.task.assignee is TaskAssignee.MANAGER
    ]
    if not escalations:
        return
    agent_ids = {str(t.customer.get("agent_id")) for t in escalations if t.customer.get("agent_id")}
    with store.read_session() as session:
        managers = agent_managers(session, agent_ids)
    assign_tasks(escalations, managers)


def _occasion_contacts(
    touches: list[Touch], ruleset: RuleSet, history: History | None
) -> list[PastContact]:
    """Who was greeted (or is planned to be) for the occasions of the day's greetings."""
    rules = [r.id for r in ruleset.rules if r.occasion]
    greetings = [t for t in touches if t.decision is Decision.SEND and t.occasion]
    if history is None or not rules or not greetings:
        return []
    years = sorted({t.occurrence.year for t in greetings})
    return history.occasion_contacts(
        {t.customer_id for t in greetings},
        rules,
        dt.date(years[0], 1, 1),
        dt.date(years[-1], 12, 31),
    )


_SEALED = {
    SuppressionReason.ALREADY_SENT: "the ledger holds this touch as handled",
    SuppressionReason.OBLIGATION_MISSED: "its window is over: recorded as missed",
}


def _left_out(event: dict[str, Any], on_unreadable: OnUnreadable | None) -> None:
    reason = event["payload"].reason
    log.warning("event %s left out of the plan: %s", event["event_id"], reason)
    if on_unreadable is not None:
        on_unreadable(str(event["event_id"]), reason)


def _of_shard(store: Store, past: list[PastContact], shard: Shard) -> list[PastContact]:
    """The contacts of ``shard``'s customers among ``past`` (store id ``k`` modulo ``n``,
    as ``in_shard`` selects them)."""
    k, n = shard
    with store.read_session() as session:
        ids = customer_row_ids(session, (c.customer_id for c in past))
    return [c for c in past if c.customer_id in ids and ids[c.customer_id] % n == k]


def plan_day(
    store: Store,
    ruleset: RuleSet,
    day: dt.date,
    *,
    rule_ids: Iterable[str] | None = None,
    history: History | None = None,
    on_unreadable: OnUnreadable | None = None,
    shard: Shard | None = None,
) -> list[Touch]:
    """Every candidate touch due on local date ``day``, sent or suppressed, with the reason.

    ``history`` (usually the ``Ledger``) tells what already happened: touches already
    handled are reported as ``already_sent``, touches that reached the customer count
    against the caps, and touches deferred on earlier days compete again. Without it the
    plan treats the past as empty.

    An event whose stored payload cannot be read back safely (``bounds.Unreadable``: put
    there by an older version or directly in SQL) is left out, logged, and reported to
    ``on_unreadable(event_id, reason)``; every other touch of the day is planned.

    ``shard`` ``(k, n)``: plan only the customers whose store id is ``k`` modulo ``n``, so
    that ``n`` planners share a large day. Caps are per customer, so a shard's decisions
    about them are the whole plan's. Channel capacity, a budget of the whole day, is split
    evenly between the shards (``contact.capacity_share``), each spending its share on
    its own customers, higher tiers first.
    """
    if ruleset.policy_errors:
        raise ValidationFailed(ruleset.policy_errors)
    # Every rule is planned even when only some are asked for: they compete for the same
    # caps and capacity, so a rule's decisions depend on the others.
    wanted = set(rule_ids) if rule_ids is not None else None
    policy = ruleset.policy
    touches: list[Touch] = []
    seen: set[str] = set()
    for rule in ruleset.rules:
        for touch in due_touches(store, rule, day, policy, on_unreadable, shard, history):
            if touch.key not in seen:
                seen.add(touch.key)
                touches.append(touch)
    if history is not None:
        deferred, held = _deferred_touches(store, ruleset, day, history, shard)
        touches += [t for t in deferred if t.key not in seen]
        done = history.final_keys([t.key for t in touches]) if touches else {}
        for touch in touches:
            if touch.key in done:
                reason = SuppressionReason(done[touch.key])
                touch.suppress(reason, _SEALED.get(reason, "decided when it was due to be sent"))
            elif touch.key in held:
                touch.suppress(
                    SuppressionReason.DEFERRED,
                    f"the send step deferred it to {held[touch.key]}: it competes again then",
                )
    _stop_closed_cases(store, touches)
    _attach_agents(store, touches)
    give_variants(touches, ruleset.rules, history)
    sending = [t for t in touches if t.decision is Decision.SEND]
    opted_out = withdrawn_consents(store, {t.customer_id for t in sending})
    for touch in sending:
        choose_channel(touch, policy, opted_out.get(touch.customer_id, set()))
    _assign_to_managers(store, sending)
    apply_blackout(touches, policy, day)
    # Every window of the longest cap (7 days, or 30 with a per_30_days cap) around the day.
    span = dt.timedelta(days=policy.longest_cap_days - 1)
    past = (
        history.contacts({t.customer_id for t in touches}, day - span, day + span)
        if history is not None and touches
        else []
    )
    greeted = _occasion_contacts(touches, ruleset, history)
    apply_caps(touches, policy, day, past, greeted, {r.id: r for r in ruleset.rules})
    if policy.capacity:
        today = history.contacts(None, day, day) if history is not None else []
        if shard is not None:
            today = _of_shard(store, today, shard)
        apply_capacity(touches, policy, day, today, shard)
    apply_deferral(touches, day)
    if wanted is not None:
        touches = [t for t in touches if t.rule.id in wanted]
    touches.sort(key=lambda t: (t.send_at, -t.rule.priority, t.rule.id, t.customer_id, t.key))
    return touches


__all__ = ["LeapDayPolicy", "Shard", "due_touches", "in_shard", "plan_day"]
