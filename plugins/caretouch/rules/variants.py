"""Message variants: which customer gets which wording, and which wording works better.

Assignment is a pure function of the rule's id, the customer's id and the variants' weights:
the first 8 bytes of SHA-256 of ``"<rule id>|<customer id>"``, taken modulo the total weight,
fall into one variant's share of the cumulative weights. Every process and host computes the
same answer on every run (Python's ``hash()`` is salted per process and would not).

Which wording works better is a two-proportion z-test (statsmodels ``proportions_ztest``,
two-sided) of each variant's rate against the best one's, with Wilson confidence intervals
(``proportion_confint``) for each rate. A winner is named only when every comparison is
significant at ``SIGNIFICANCE`` (divided by the number of comparisons when there are more
than two variants: Bonferroni) and each variant has at least the test's ``min_sample`` sent
touches. The report and the planner (``then: send_winner``) both decide here, alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from ..vocab import VariantMetric

# The significance level of a variant test (two-sided), and the confidence of its intervals.
SIGNIFICANCE = 0.05


def assign(rule_id: str, customer_id: str, weights: Sequence[int]) -> int:
    """The index of the variant (of ``weights``, positive integers) the customer is given."""
    digest = hashlib.sha256(f"{rule_id}|{customer_id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") % sum(weights)
    for index, weight in enumerate(weights):
        if point < weight:
            return index
        point -= weight
    raise AssertionError("unreachable: the point is below the total weight")


@dataclass(frozen=True)
class VariantOutcomes:
    """What a rule's touches of one variant came to, from the ledger (test sends left out).

    ``sent``: touches whose message went out (a ``sent`` status event); the others count
    those of them delivered (a ``delivered`` receipt), with a link clicked (a SendGrid
    ``click`` event), replied to (a reply matched to the touch) and followed by a consent
    withdrawal of the customer within ``ledger.variants.OPT_OUT_DAYS`` days of sending.
    """

    rule_id: str
    variant: str
    sent: int = 0
    delivered: int = 0
    clicked: int = 0
    replied: int = 0
    opted_out: int = 0

    def count(self, metric: VariantMetric) -> int:
        return int(getattr(self, metric.value))


@dataclass(frozen=True)
class Rate:
    """One variant's rate on a metric, with its Wilson interval at 1 - SIGNIFICANCE."""

    variant: str
    successes: int
    sent: int
    low: float
    high: float

    @property
    def rate(self) -> float:
        return self.successes / self.sent if self.sent else 0.0


@dataclass(frozen=True)
class Verdict:
    """A variant test's result on its metric: each variant's rate, the best variant, the
    p-value of its comparison with each other variant, and the winner if there is one."""

    metric: VariantMetric
    rates: tuple[Rate, ...]
    best: str | None
    p_values: dict[str, float]  # other variant -> p of (best vs it)
    alpha: float  # the level each comparison is held to (Bonferroni for >2 variants)
    winner: str | None
    why: str


def rate_of(variant: str, successes: int, sent: int) -> Rate:
    """A variant's rate with its Wilson interval (0..1 when nothing was sent)."""
    if sent == 0:
        return Rate(variant, successes, sent, 0.0, 1.0)
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(successes, sent, alpha=SIGNIFICANCE, method="wilson")
    return Rate(variant, successes, sent, float(low), float(high))


def two_proportion_p(a_successes: int, a_sent: int, b_successes: int, b_sent: int) -> float:
    """The two-sided p-value of the pooled two-proportion z-test (1.0 when it is undefined:
    nothing sent, or every rate 0 or 1)."""
    pooled = (a_successes + b_successes) / (a_sent + b_sent) if a_sent and b_sent else 0.0
    if pooled in (0.0, 1.0):
        return 1.0
    from statsmodels.stats.proportion import proportions_ztest

    _, p = proportions_ztest([a_successes, b_successes], [a_sent, b_sent])
    return float(p)


def verdict(outcomes: Sequence[VariantOutcomes], metric: VariantMetric, min_sample: int) -> Verdict:
    """The test's result on ``metric`` for the variants' ``outcomes`` (in the rule's order)."""
    rates = tuple(rate_of(o.variant, o.count(metric), o.sent) for o in outcomes)
    alpha = SIGNIFICANCE / max(1, len(rates) - 1)
    if len(rates) < 2:
        return Verdict(metric, rates, None, {}, alpha, None, "fewer than two variants")
    # The best rate; a tie goes to the variant listed first.
    best = max(rates, key=lambda r: (r.rate, -rates.index(r)))
    p_values = {
        r.variant: two_proportion_p(best.successes, best.sent, r.successes, r.sent)
        for r in rates
        if r is not best
    }
    short = [r.variant for r in rates if r.sent < min_sample]
    if short:
        why = f"too few sent: {', '.join(short)} below min_sample {min_sample} sent"
        return Verdict(metric, rates, best.variant, p_values, alpha, None, why)
    worst_p = max(p_values.values())
    if worst_p >= alpha:
        why = f"no significant difference (p = {worst_p:.3g} >= {alpha:g})"
        return Verdict(metric, rates, best.variant, p_values, alpha, None, why)
    why = (
        f"{best.variant} is significantly better on {metric.value} (p = {worst_p:.3g} < {alpha:g})"
    )
    return Verdict(metric, rates, best.variant, p_values, alpha, best.variant, why)
