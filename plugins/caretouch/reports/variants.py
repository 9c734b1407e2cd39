"""The report's "Message variants" section: per rule with variants, each variant's sent
touches and rates (delivered, clicked, replied, opted out) with Wilson confidence intervals,
and the test's verdict on the rule's metric (``rules.variants.verdict``: a winner only when
the difference is significant at ``SIGNIFICANCE``, two-sided, and each variant has its
``min_sample`` sent). The test runs from its start to the period's end: touches due up to
its last day, whatever came of them since (a click the day after still counts), as the
planner (``then: send_winner``) counts it, so the report names the winner the planner sends.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ledger import Ledger
from ..rules.loader import RuleSet
from ..rules.variants import SIGNIFICANCE, Rate, VariantOutcomes, Verdict, rate_of, verdict
from ..store.db import Store
from ..vocab import VariantMetric
from .figures import Period

# The rates shown for each variant, in this order; a rule's metric is one of the first three.
MEASURES = ("delivered", "clicked", "replied", "opted_out")

Table = tuple[list[str], list[list[object]]]


@dataclass(frozen=True)
class VariantLine:
    """One variant of a rule: its template and weight, what came of it, its rate per
    measure (with a Wilson interval)."""

    variant: str
    template: str
    weight: int
    outcomes: VariantOutcomes
    rates: dict[str, Rate]


@dataclass(frozen=True)
class RuleVariants:
    """One rule's variant test, up to the end of the period."""

    rule_id: str
    metric: VariantMetric
    min_sample: int
    then: str
    lines: tuple[VariantLine, ...]
    verdict: Verdict


def compute_variants(store: Store, ruleset: RuleSet, period: Period) -> list[RuleVariants]:
    """The section's figures: one entry per loaded rule with variants, in the rules' order."""
    rules = [r for r in ruleset.rules if r.variants and r.variant_test is not None]
    if not rules:
        return []
    found: dict[tuple[str, str], VariantOutcomes] = {
        (o.rule_id, o.variant): o
        for o in Ledger(store).variant_outcomes(
            [r.id for r in rules], last=period.last, opt_outs=True
        )
    }
    sections = []
    for rule in rules:
        test = rule.variant_test
        assert test is not None
        outcomes = [
            found.get((rule.id, v.id), VariantOutcomes(rule.id, v.id)) for v in rule.variants
        ]
        lines = tuple(
            VariantLine(
                v.id,
                v.template,
                v.weight,
                o,
                {m: rate_of(v.id, getattr(o, m), o.sent) for m in MEASURES},
            )
            for v, o in zip(rule.variants, outcomes, strict=True)
        )
        sections.append(
            RuleVariants(
                rule.id,
                test.metric,
                test.min_sample,
                test.then.value,
                lines,
                verdict(outcomes, test.metric, test.min_sample),
            )
        )
    return sections


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def shown_rate(rate: Rate) -> str:
    """``12.5% (9.6–16.1%)``: the rate and its Wilson interval; ``–`` when nothing was sent."""
    if not rate.sent:
        return "–"
    return f"{_pct(rate.rate)} ({_pct(rate.low)}–{_pct(rate.high)})"


def verdict_text(section: RuleVariants) -> str:
    """The test's result in words: the winner, or why none is named."""
    v = section.verdict
    if v.winner is not None:
        text = f"winner {v.winner} on {v.metric.value}: {v.why}"
        if section.then == "send_winner":
            text += "; new touches all get it (then: send_winner)"
        return text
    return f"no winner on {v.metric.value}: {v.why}"


def variant_table(sections: list[RuleVariants]) -> Table:
    """The CSV table ``message-variants``: one row per rule and variant, the numbers
    unformatted (rates and interval bounds as fractions), the p-value of the variant's
    comparison with the best one (empty for the best one) and the winner if any."""
    columns = [
        "rule_id",
        "variant",
        "template",
        "weight",
        "metric",
        "sent",
        *(f"{m}{suffix}" for m in MEASURES for suffix in ("", "_rate", "_low", "_high")),
        "p_value_vs_best",
        "alpha",
        "winner",
    ]
    rows: list[list[object]] = []
    for s in sections:
        for line in s.lines:
            cells: list[object] = []
            for m in MEASURES:
                r = line.rates[m]
                sent = bool(r.sent)
                cells += [
                    r.successes,
                    round(r.rate, 6) if sent else None,
                    round(r.low, 6) if sent else None,
                    round(r.high, 6) if sent else None,
                ]
            p = s.verdict.p_values.get(line.variant)
            rows.append(
                [
                    s.rule_id,
                    line.variant,
                    line.template,
                    line.weight,
                    s.metric.value,
                    line.outcomes.sent,
                    *cells,
                    None if p is None else round(p, 6),
                    s.verdict.alpha,
                    s.verdict.winner,
                ]
            )
    return columns, rows


def page_sections(sections: list[RuleVariants]) -> list[dict[str, object]]:
    """The HTML section's rows, formatted."""
    return [
        {
            "rule_id": s.rule_id,
            "metric": s.metric.value,
            "min_sample": f"{s.min_sample:,}",
            "verdict": verdict_text(s),
            "winner": s.verdict.winner,
            "rows": [
                {
                    "variant": line.variant,
                    "template": line.template,
                    "weight": line.weight,
                    "sent": f"{line.outcomes.sent:,}",
                    "rates": [shown_rate(line.rates[m]) for m in MEASURES],
                    "p": "best"
                    if line.variant == s.verdict.best
                    else f"{s.verdict.p_values.get(line.variant, 1.0):.4f}",
                }
                for line in s.lines
            ],
        }
        for s in sections
    ]


def text_lines(sections: list[RuleVariants]) -> list[str]:
    """The section as text (``care report`` prints it after the summary line)."""
    lines: list[str] = []
    for s in sections:
        lines.append(f"variants of {s.rule_id} (metric {s.metric.value}): {verdict_text(s)}")
        for line in s.lines:
            rates = ", ".join(f"{m} {shown_rate(line.rates[m])}" for m in MEASURES)
            lines.append(
                f"  {line.variant} ({line.template}, weight {line.weight}): "
                f"{line.outcomes.sent:,} sent; {rates}"
            )
    return lines


__all__ = ["SIGNIFICANCE", "RuleVariants", "compute_variants", "text_lines", "variant_table"]
