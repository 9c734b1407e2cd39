"""Giving each touch of a rule with variants its message variant.

A customer's variant is a hash of the rule and customer ids onto the weights
(``Rule.variant_for``). A rule whose test is set to ``then: send_winner`` gives every touch
the winner once its test has one (``rules.variants.verdict``), decided from the ledger's
outcomes alone, so that every planner of the day decides alike: one aggregate query for all
such rules per plan, nothing per touch, and no clock.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ..rules.model import Rule
from ..rules.variants import VariantOutcomes, Verdict, verdict
from ..vocab import VariantThen
from .history import History
from .touch import Touch


def send_winner_verdicts(rules: Sequence[Rule], history: History | None) -> dict[str, Verdict]:
    """Per rule whose test is set to send the winner, the test's verdict from the ledger."""
    testing = [
        r
        for r in rules
        if r.variants
        and r.variant_test is not None
        and r.variant_test.then is VariantThen.SEND_WINNER
    ]
    if not testing or history is None:
        return {}
    by_rule: dict[str, dict[str, VariantOutcomes]] = {}
    for o in history.variant_outcomes([r.id for r in testing]):
        by_rule.setdefault(o.rule_id, {})[o.variant] = o
    found: dict[str, Verdict] = {}
    for rule in testing:
        assert rule.variant_test is not None
        seen = by_rule.get(rule.id, {})
        outcomes = [seen.get(v.id, VariantOutcomes(rule.id, v.id)) for v in rule.variants]
        found[rule.id] = verdict(outcomes, rule.variant_test.metric, rule.variant_test.min_sample)
    return found


def give_variants(touches: Sequence[Touch], rules: Sequence[Rule], history: History | None) -> None:
    """Give each touch of a rule with variants its variant, and say why in its explanation."""
    tests = send_winner_verdicts(rules, history)
    for touch in touches:
        rule = touch.rule
        if not rule.variants:
            continue
        if touch.variant is not None:  # deferred: the variant recorded when first planned
            touch.explain.append(
                sys.intern(f"variant {touch.variant.id}: given when first planned")
            )
            continue
        test = tests.get(rule.id)
        if test is not None and test.winner is not None:
            touch.variant = rule.variant(test.winner)
            touch.explain.append(
                sys.intern(
                    f"variant {test.winner}: the test's winner, now sent to all ({test.why})"
                )
            )
            continue
        touch.variant = rule.variant_for(touch.customer_id)
        assert touch.variant is not None
        total = sum(v.weight for v in rule.variants)
        pending = f"; send_winner: {test.why}" if test is not None else ""
        touch.explain.append(
            sys.intern(
                f"variant {touch.variant.id} (weight {touch.variant.weight} of {total}): "
                f"by a hash of the rule and customer ids{pending}"
            )
        )
