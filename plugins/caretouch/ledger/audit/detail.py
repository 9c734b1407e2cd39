"""One touch for an auditor: its attempts, its history, and the decision behind each
status (``care audit show`` and the web view's touch page)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from ...mask import mask_recipient, scrub
from ...store.db import Store
from ..models import Attempt, TouchEvent, TouchRow
from ..readers import states_of
from ..replies import Reply, latest_scores, touch_replies
from .search import find_touch_id, iso


def agent_details(context: Any) -> frozenset[str]:
    """The agent's phone and address a touch's message may give the customer (its context's
    ``agent``): shown as written, not masked, in the message's content."""
    agent = context.get("agent") if isinstance(context, dict) else None
    if not isinstance(agent, dict):
        return frozenset()
    return frozenset(str(v) for k in ("phone", "email") if (v := agent.get(k)))


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed(v) for v in value]
    return value


def decision_facts(detail: Any) -> dict[str, Any]:
    """What a status event's ``detail`` says about the decision: ``why`` (the planner's or
    the sender's explanation, naming the policy clause, e.g. ``caps.per_day=1
    (care_rules/policy.yaml:15:3)``), ``consent`` (the customer's consent when it was
    decided, ``sms on, email off, marketing off``, or None where not recorded) and ``other``
    (the rest of the detail: a provider's answer, ...). Addresses in it are masked."""
    if not isinstance(detail, dict):
        return {"why": [], "consent": None, "other": _scrubbed(detail) or None}
    explain = detail.get("explain") or []
    why = [scrub(str(line)) for line in (explain if isinstance(explain, list) else [explain])]
    consent = detail.get("consent")
    consent_text = (
        ", ".join(f"{purpose} {'on' if granted else 'off'}" for purpose, granted in consent.items())
        if isinstance(consent, dict)
        else None
    )
    other = {k: _scrubbed(v) for k, v in detail.items() if k not in ("explain", "consent")}
    return {"why": why, "consent": consent_text, "other": other or None}


def touch_detail(store: Store, ref: int | str) -> dict[str, Any] | None:
    """One touch, by id or idempotency key, with every attempt (content, hashes, masked
    recipient) and its history; each history entry with its ``decision_facts``, and the
    touch with those of the decision behind its current status (``why``, ``consent``).

    Phone numbers and email addresses are masked in everything, message content included
    (its ``content_hash`` is of the message as sent). ``care audit show`` and the web view's
    touch page both show this."""
    touch_id = find_touch_id(store, ref)
    if touch_id is None:
        return None
    with store.read_session() as session:
        row = session.get(TouchRow, touch_id)
        if row is None:
            return None
        (state,) = states_of(session, [row])
        attempts = session.scalars(
            select(Attempt).where(Attempt.touch_id == touch_id).order_by(Attempt.attempt_no)
        ).all()
        events = session.scalars(
            select(TouchEvent).where(TouchEvent.touch_id == touch_id).order_by(TouchEvent.id)
        ).all()
    history = [
        {
            "at": iso(e.at),
            "status": e.status,
            "reason": scrub(e.reason) if e.reason else None,
            "provider_message_id": e.provider_message_id,
            "run_id": e.run_id,
            **decision_facts(e.detail),
        }
        for e in events
    ]
    # The decision behind the current status: the newest event that explains one.
    decided: dict[str, Any] = next(
        (h for h in reversed(history) if h["why"] or h["consent"] is not None),
        {"why": [], "consent": None},
    )
    agent = agent_details(row.context)
    latest = latest_scores(store, [row.customer_id]).get(row.customer_id)
    return {
        "touch_id": row.id,
        "touch_key": row.touch_key,
        "rule_id": row.rule_id,
        "rule_hash": row.rule_hash,
        "variant": row.variant,  # the message variant (a rule's variants:), or None
        "category": row.category,
        "priority": row.priority,
        "customer_id": row.customer_id,
        "policy_id": row.policy_id,
        "event_id": row.event_id,
        "occurrence": row.occurrence.isoformat(),
        "send_at": iso(state.send_at),
        "timezone": row.timezone,
        "locale": row.locale,
        "tier": row.tier,
        "status": state.status.value,
        "reason": state.reason,
        "why": decided["why"],
        "consent": decided["consent"],
        "run_id": row.run_id,
        # A test send (``care send-test``) to an internal address, not the customer.
        "test": bool(row.test),
        "attempts": [
            {
                "attempt_no": a.attempt_no,
                "channel": a.channel,
                "transport": a.transport,
                "recipient": mask_recipient(a.recipient, a.channel),
                "template_id": a.template_id,
                "template_hash": a.template_hash,
                "content_hash": a.content_hash,
                "subject": scrub(a.subject, agent) if a.subject is not None else None,
                "body": scrub(a.body, agent) if a.body is not None else None,
                "html": scrub(a.html, agent) if a.html is not None else None,
                "created_at": iso(a.created_at),
                "run_id": a.run_id,
            }
            for a in attempts
        ],
        "history": history,
        # The customer's replies to this touch (what they wrote is not shown here: it is in
        # the agent's task), and their latest satisfaction answer to any touch.
        "replies": [_reply(r) for r in touch_replies(store, row.id)],
        "customer_satisfaction": _reply(latest) if latest is not None else None,
    }


def _reply(reply: Reply) -> dict[str, Any]:
    return {
        "received_at": iso(reply.received_at),
        "provider": reply.provider,
        "kind": reply.kind.value,
        "score": reply.score,
        "touch_id": reply.touch_id,
    }
