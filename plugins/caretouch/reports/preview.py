"""``care preview``: a rule's message for one real customer, rendered as it would be sent."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from ..mask import mask_recipient
from ..plan import Touch
from ..run.test_send import customer_touch
from ..sms import describe, sms_size
from ..store.lookup import agent_managers
from ..vocab import Channel, TaskAssignee

if TYPE_CHECKING:
    from ..run.engine import CareEngine


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
    touch = customer_touch(engine, rule_id, customer_id, day)
    chosen = Channel(channel) if channel else touch.channel
    lines = [
        f"rule {rule_id}, customer {customer_id}, occurrence {touch.occurrence}",
        f"decision: {touch.decision.value}" + (f" ({touch.reason.value})" if touch.reason else ""),
    ]
    lines += [f"  {why}" for why in touch.explain]
    if chosen is None:
        chosen = touch.rule.channels[0]
        lines.append(f"(no usable channel; showing {chosen.value})")
    locale = touch.locale
    if chosen is Channel.AGENT_TASK:
        # A task for the customer's agent (or that agent's manager: ``task.assignee``): its
        # brief, "to" the agent (no personal data).
        to = _assignee(engine, touch)
    else:
        address = touch.customer.get("phone" if chosen is Channel.SMS else "email")
        to = mask_recipient(address)
    # The same rendering as a test send's (``run.test_send``) and the send step's.
    message = touch.render(engine.templates, chosen)
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
        size = sms_size(message.body)
        lines[-1:-1] = [f"sms: {describe(size, engine.policy.sms_pricing)}"]
    if message.subject is not None:
        lines += [f"Subject: {message.subject}", ""]
    lines.append(message.body)
    if message.html is not None:
        lines += ["", "--- HTML ---", message.html]
    return "\n".join(lines)
