"""Getting a chunk of planned touches ready to send: the send-time checks of the contact
policy (``plan.contact``: timing, late caps, recipient), then rendering.

What cannot go is turned into status changes; what can, into claims (``ledger.Claim``) that
``send`` writes and sends. Nothing is written here.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from ..errors import RenderError
from ..ledger import WAIT_UNTIL, Claim, StatusChange, TouchState
from ..plan import contact
from ..plan.contact import CapacityUse, PlannedSend, SendTimeHold
from ..store.db import among
from ..store.lookup import agent_managers
from ..store.models import Agent, Customer
from ..vocab import Category, Channel, SendReason, SuppressionReason, TaskAssignee, TouchStatus
from .engine import CareEngine
from .report import SendReport
from .stops import stopped

log = logging.getLogger("caretouch.run")

_NOT_LOADED = "its rule {rule} is not loaded (broken or removed)"


@dataclass
class Prepared:
    """A chunk checked and rendered: the status changes to write and the touches to claim
    (``keys``: the touch keys of the changes' touches, by id)."""

    size: int
    report: SendReport
    changes: list[StatusChange]
    claims: list[Claim]
    keys: dict[int, str] = field(default_factory=dict)


def planned_send(state: TouchState) -> PlannedSend:
    """A ledger touch as the contact policy's send-time checks see it."""
    return PlannedSend(
        key=state.row.touch_key,
        customer_id=state.row.customer_id,
        rule_id=state.row.rule_id,
        category=Category(state.row.category),
        channel=Channel(state.channel) if state.channel else None,
        timezone=state.row.timezone,
        send_at=state.send_at,
        occurrence=state.row.occurrence,
        tier=state.row.tier,
    )


def held_change(state: TouchState, hold: SendTimeHold) -> StatusChange:
    """The status change recording a touch held back at send time."""
    detail: dict[str, object]
    if hold.wait_until is None:
        detail = {"final": True, "explain": hold.explain}
    else:
        detail = {WAIT_UNTIL: hold.wait_until.isoformat(), "explain": hold.explain}
    return StatusChange(
        state.id,
        TouchStatus.SUPPRESSED,
        hold.reason.value,
        detail=detail,
        expected=TouchStatus.PLANNED,
    )


def _held(
    engine: CareEngine,
    state: TouchState,
    due: PlannedSend,
    now: dt.datetime,
    cause: SuppressionReason,
    why: str,
) -> SendTimeHold:
    try:
        rule = engine.ruleset.by_id(state.row.rule_id)
    except KeyError:
        rule = None
    days = state.context.get("days") if rule is not None and rule.obligation else None
    return contact.held_at_send_time(engine.policy, rule, due, now, cause, why, days=days)


# What the send-time checks read of a customer (``contact.recipient``): plain rows of these
# columns, not ``Customer`` objects.
_RECIPIENT_COLUMNS = (
    Customer.customer_id,
    Customer.status,
    Customer.phone,
    Customer.email,
    Customer.consent_sms,
    Customer.consent_email,
    Customer.consent_marketing,
    Customer.agent_id,
)


def _for_manager(engine: CareEngine, state: TouchState) -> bool:
    """Whether ``state`` is a task for the agent's manager (``task.assignee: manager``)."""
    if state.channel != Channel.AGENT_TASK.value:
        return False
    try:
        task = engine.ruleset.by_id(state.row.rule_id).task
    except KeyError:
        return False
    return task is not None and task.assignee is TaskAssignee.MANAGER


def prepare_chunk(
    engine: CareEngine,
    ids: list[int],
    *,
    now: dt.datetime,
    capacity_use: CapacityUse,
    states: list[TouchState] | None = None,
) -> Prepared:
    """Check the chunk's touches against the contact policy as it stands ``now`` and render
    those that may go. ``states``: the touches' states as the send queue read them (else
    they are read here)."""
    report = SendReport()
    ledger = engine.ledger
    policy = engine.policy
    loaded_rules = {rule.id for rule in engine.ruleset.rules}
    if states is None:
        states = ledger.states(ids)
    customer_ids = sorted({s.row.customer_id for s in states})
    customers: dict[str, Any] = {}
    with engine.store.read_session() as session:
        for start in range(0, len(customer_ids), 500):
            wanted = customer_ids[start : start + 500]
            for c in session.execute(
                select(*_RECIPIENT_COLUMNS).where(among(session, Customer.customer_id, wanted))
            ):
                customers[c.customer_id] = c
        # The agents the chunk's tasks would go to, and which of them are in the store.
        wanted_agents = sorted(
            {c.agent_id for c in customers.values() if c.agent_id}
            if any(s.channel == Channel.AGENT_TASK.value for s in states)
            else set()
        )
        agents = set(
            session.scalars(
                select(Agent.agent_id).where(among(session, Agent.agent_id, wanted_agents))
            )
            if wanted_agents
            else ()
        )
        # Escalations go to the agent's manager (``task.assignee: manager``): theirs too.
        managers = (
            agent_managers(session, wanted_agents)
            if any(_for_manager(engine, s) for s in states)
            else {}
        )
        agents |= {m for m, present in managers.values() if m and present}
    templates = engine.templates
    changes: list[StatusChange] = []
    claims: list[Claim] = []
    no_longer_owed = stopped(engine, [s for s in states if s.status is TouchStatus.PLANNED])
    for state in states:
        if state.status is not TouchStatus.PLANNED:
            report.skipped += 1
            continue
        stop = no_longer_owed.get(state.id)
        if stop is not None:
            changes.append(
                StatusChange(
                    state.id,
                    TouchStatus.SUPPRESSED,
                    stop.reason.value,
                    detail={"final": True, "explain": [stop.why]},
                    expected=TouchStatus.PLANNED,
                )
            )
            report.suppressed += 1
            continue
        loaded = state.row.rule_id in loaded_rules
        due = planned_send(state)
        timing = contact.send_timing(policy, due, now)
        if timing is not None:
            if timing is SuppressionReason.DEFERRED:  # not yet: its time has not come
                report.waiting += 1
            else:
                why = contact.timing_explain(policy, due, now)
                hold = _held(engine, state, due, now, timing, why)
                if not loaded:
                    hold.explain.append(_NOT_LOADED.format(rule=state.row.rule_id))
                changes.append(held_change(state, hold))
                report.suppressed += 1
            continue
        if not loaded:
            # Its rule failed to load (or was removed): nothing is decided for it, so nothing
            # is recorded. It stays planned and goes out once the rule loads again, within its
            # sending window; past the window it is suppressed, too_late, like any touch.
            report.held += 1
            continue
        late = contact.late_cap_problem(policy, ledger, due, now, capacity_use)
        if late:
            hold = _held(engine, state, due, now, SuppressionReason.FREQUENCY_CAP, late)
            changes.append(held_change(state, hold))
            report.suppressed += 1
            continue
        to = contact.recipient(
            policy,
            engine.ruleset.by_id(state.row.rule_id),
            due,
            customers.get(state.row.customer_id),
            managers,
        )
        if to.channel is Channel.AGENT_TASK and to.address not in agents:
            to = contact.Recipient(
                None, None, SuppressionReason.NO_CONTACT, f"agent {to.address} is not in the store"
            )
        if to.channel is None or to.address is None:
            reason = to.reason or SuppressionReason.NO_CONTACT
            changes.append(
                StatusChange(
                    state.id,
                    TouchStatus.SUPPRESSED,
                    reason.value,
                    detail={"explain": [to.why]},
                    expected=TouchStatus.PLANNED,
                )
            )
            report.suppressed += 1
            continue
        channel = to.channel
        locale = state.row.locale
        template_id = state.row.template_id
        if channel is Channel.AGENT_TASK:  # the agent's brief, not the customer's message
            task = engine.ruleset.by_id(state.row.rule_id).task
            template_id = task.brief if task is not None else template_id
        try:
            rendered = templates.render(template_id, channel, locale, state.context)
        except RenderError as exc:
            changes.append(
                StatusChange(
                    state.id,
                    TouchStatus.FAILED,
                    SendReason.RENDER_ERROR.value,
                    detail={"detail": str(exc)},
                    expected=TouchStatus.PLANNED,
                )
            )
            report.failed += 1
            report.failures.append(f"{state.row.touch_key}: {SendReason.RENDER_ERROR.value}: {exc}")
            log.error("touch %s: %s", state.row.touch_key, exc)
            continue
        claims.append(
            Claim(
                state=state,
                channel=channel.value,
                transport=engine.transports[channel].name,
                recipient=to.address,
                template_hash=templates.template_hash(template_id, channel, locale),
                message=rendered,
                template_id=template_id,
            )
        )
    keys = {s.id: s.row.touch_key for s in states}
    return Prepared(
        len(ids), report, changes, claims, {c.touch_id: keys[c.touch_id] for c in changes}
    )
