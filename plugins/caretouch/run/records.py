"""The planner's touches as the records the ledger takes (``ledger.PlannedTouch``).

The ledger records what it is given: it knows neither rules nor touches. A day's plan is
turned into records here, one layer above both, before ``Ledger.record_plan`` writes it.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..ledger import PlannedTouch
from ..plan.touch import Touch

# What a customer without a tier is recorded with (without a locale: ``DEFAULT_LOCALE``).
DEFAULT_TIER = "C"


def planned_touch(touch: Touch) -> PlannedTouch:
    """One touch and the decision about it, with the facts its templates render from and
    the customer's consent when it was decided."""
    return PlannedTouch(
        key=touch.key,
        rule_id=touch.rule.id,
        rule_hash=touch.rule.file_hash,
        category=touch.rule.category.value,
        priority=touch.rule.priority,
        subject_kind=touch.subject.value,
        subject_id=touch.subject_id,
        customer_id=touch.customer_id,
        policy_id=(touch.policy or {}).get("policy_id"),
        event_id=(touch.event or {}).get("event_id"),
        occurrence=touch.occurrence,
        send_at=touch.send_at,
        timezone=touch.timezone,
        locale=touch.locale,
        tier=touch.customer.get("tier") or DEFAULT_TIER,
        channel=touch.channel,
        # A variant's template: the send step renders what the touch row names.
        template_id=touch.template,
        context=touch.template_context(),
        decision=touch.decision,
        reason=touch.reason,
        explain=touch.explain,
        consent={
            p: bool(touch.customer.get(f"consent_{p}")) for p in ("sms", "email", "marketing")
        },
        variant=touch.variant.id if touch.variant is not None else None,
    )


def planned_touches(touches: Iterable[Touch]) -> list[PlannedTouch]:
    return [planned_touch(t) for t in touches]


def take_planned(touches: list[Touch]) -> list[PlannedTouch]:
    """``planned_touches`` of a plan nothing needs afterwards: each touch (and its rows) is
    let go as soon as its record is made, and ``touches`` is left empty, so that a festival
    day never holds its touches and all their records at once."""
    records = []
    touches.reverse()
    while touches:
        records.append(planned_touch(touches.pop()))
    return records
