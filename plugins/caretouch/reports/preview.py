"""``care preview``: a rule's message for one real customer, rendered as it would be sent."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from ..errors import CareError
from ..mask import mask_recipient
from ..plan import Touch, plan_day
from ..sms import sms_size
from ..store.lookup import agent_managers
from ..vocab import Channel, TaskAssignee

if TYPE_CHECKING:
    from ..run.engine import CareEngine


def _find_touch(engine: CareEngine, rule_id: str, customer_id: str, day: dt.date) -> Touch | None:
    from ..ledger import Ledger

    touches = plan_day(
        engine.store,
        engine.ruleset,
        day,
        rule_ids=[rule_id],
        history=Ledger(engine.store),
    )
    for touch in touches:
        if touch.customer_id == customer_id:
            return touch
    return None


def _assignee(engine: CareEngine, touch: Touch) -> str:
    """Who a task would go to: ``agent A1``, or ``manager M1 (of agent A1)``."""
    agent_id = touch.customer.get("agent_id")
    task = touch.rule.task
    if not agent_id:
        return "agent (none)"
    if task is None or task.assignee is not TaskAssignee.MANAGER:
        return f"agent {agent_id}"
    with engine.store.read_session() as session:
        manager, known = agent_managers(session, [agent_id]).get(agent_id, (None, False))
    if manager is None:
        return f"manager (none: agent {agent_id} has no manager)"
    return f"manager {manager} (of agent {agent_id})" + ("" if known else ", not in the store")


def preview_touch(
    engine: CareEngine, rule_id: str, customer_id: str, day: dt.date, channel: str | None
) -> str:
    """The message text (masked recipient), the decision and why, for one customer and day."""
    try:
        engine.ruleset.by_id(rule_id)
    except KeyError:
        known = ", ".join(r.id for r in engine.ruleset.rules)
        raise CareError(f"unknown or invalid rule {rule_id!r}; loaded rules: {known}") from None
    touch = _find_touch(engine, rule_id, customer_id, day)
    if touch is None:
        raise CareError(
            f"rule {rule_id} has no touch for customer {customer_id} on {day}: "
            "the trigger or the audience does not match (see `care plan --explain`)"
        )
    chosen = Channel(channel) if channel else touch.channel
    lines = [
        f"rule {rule_id}, customer {customer_id}, occurrence {touch.occurrence}",
        f"decision: {touch.decision.value}" + (f" ({touch.reason.value})" if touch.reason else ""),
    ]
    lines += [f"  {why}" for why in touch.explain]
    if chosen is None:
        chosen = touch.rule.channels[0]
        lines.append(f"(no usable channel; showing {chosen.value})")
    locale = touch.customer.get("locale") or "zh-CN"
    template = touch.template  # its variant's, when the rule has variants
    if chosen is Channel.AGENT_TASK:
        # A task for the customer's agent (or that agent's manager: ``task.assignee``): its
        # brief, "to" the agent (no personal data).
        template = touch.rule.task.brief if touch.rule.task else template
        to = _assignee(engine, touch)
    else:
        address = touch.customer.get("phone" if chosen is Channel.SMS else "email")
        to = mask_recipient(address)
    message = engine.templates.render(template, chosen, locale, touch.template_context())
    if touch.variant is not None:
        total = sum(v.weight for v in touch.rule.variants)
        lines.append(f"variant: {touch.variant.id} (weight {touch.variant.weight} of {total})")
    lines += [
        f"channel: {chosen.value}, locale {locale}, to {to}",
        f"send at: {touch.send_at:%Y-%m-%d %H:%M}Z ({touch.timezone})",
        "",
    ]
    if chosen is Channel.SMS:
        # What the carrier counts and bills (``sms``): before anyone sends it.
        lines[-1:-1] = [f"sms: {sms_size(message.body)}"]
    if message.subject is not None:
        lines += [f"Subject: {message.subject}", ""]
    lines.append(message.body)
    if message.html is not None:
        lines += ["", "--- HTML ---", message.html]
    return "\n".join(lines)
