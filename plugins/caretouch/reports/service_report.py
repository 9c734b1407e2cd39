"""``care report``: the weekly, monthly and quarterly service report, as one self-contained
HTML page and a CSV file of each of its tables.

The figures come from ``figures`` and ``loops`` (SQL into plain data), the charts from
``charts``; the page is ``templates/service_report.html``, a Jinja template rendered with
autoescape, so whatever the ledger holds (rule ids, tiers, reasons, touch keys) is printed as
text, never as markup. The CSVs (``tables``) hold the same rows as the page's tables, the
numbers unformatted. Reading only: the report writes nothing but its files.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from ..channels.base import OutboundMessage, SendResult, Transport
from ..rules.loader import RuleSet
from ..storage import Location, at
from ..store.db import Store
from ..vocab import Channel
from .charts import draw_charts, draw_loop_charts
from .figures import (
    OUTCOME_LABELS,
    OUTCOMES,
    SENT_LIKE,
    Figures,
    GroupCoverage,
    Period,
    TierService,
    compute,
)
from .loops import PROBLEMS_LISTED, TASK_COLUMNS, Loops, compute_loops
from .variants import SIGNIFICANCE, RuleVariants, compute_variants, page_sections, variant_table

_PAGES = jinja2.Environment(
    loader=jinja2.PackageLoader("caretouch.reports", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
# Missed obligations listed by key; the rest are counted.
MISSED_LISTED = 200


@dataclass
class Report:
    period: Period
    now: Figures
    before: Figures
    # The closed loops of the period and of the previous one (computed with the rules).
    loops: Loops | None = None
    loops_before: Loops | None = None
    # The message variant tests of the loaded rules with variants (``reports.variants``).
    variants: list[RuleVariants] = field(default_factory=list)
    # The CSV files ``write_report`` wrote next to the page, one per table.
    csv_files: list[Location] = field(default_factory=list)

    def html(self, *, generated_at: dt.datetime) -> str:
        return render_html(self, generated_at=generated_at)


def build_report(
    store: Store,
    period: Period,
    ruleset: RuleSet | None = None,
    *,
    grace_days: int | None = None,
) -> Report:
    """The period's report and the previous period's figures; ``ruleset`` (the loaded rules)
    defines the service obligations, the complaint figures and the closed loops
    (``grace_days``: an unpaid premium's grace; None: the contact policy's
    ``premiums.grace_days``)."""
    report = Report(
        period, compute(store, period, ruleset), compute(store, period.previous(), ruleset)
    )
    if ruleset is not None:
        grace = ruleset.policy.grace_days if grace_days is None else grace_days
        report.loops = compute_loops(store, period, ruleset, grace_days=grace)
        report.loops_before = compute_loops(store, period.previous(), ruleset, grace_days=grace)
        report.variants = compute_variants(store, ruleset, period)
    return report


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _change(now: float | None, before: float | None, *, rate: bool = False) -> str:
    if now is None or before is None:
        return "no comparison"
    if rate:
        return f"{100 * (now - before):+.1f} pts"
    delta = now - before
    if before == 0:
        return f"{delta:+,.0f}" + ("" if delta == 0 else " (new)")
    return f"{delta:+,.0f} ({100 * delta / before:+.1f}%)"


def render_html(report: Report, *, generated_at: dt.datetime) -> str:
    """The page: the figures of the period and of the one before, as text for the template."""
    now, before, period = report.now, report.before, report.period
    word = period.kind
    missed = [m for o in now.obligations for m in o.missed]
    return _PAGES.get_template("service_report.html").render(
        title=f"Care report, {word} {period.label} ({period.first} to {period.last})",
        word=word,
        previous=before.period,
        generated=f"{generated_at.astimezone(dt.timezone.utc):%Y-%m-%d %H:%M}",
        kpis=_kpis(now, before, report.loops, report.loops_before),
        charts=draw_charts(now, before, period, word),
        tables={
            dimension: _table(now, before, dimension, title)
            for dimension, title in (
                ("rule_id", "By rule and campaign"),
                ("channel", "By channel"),
                ("tier", "By tier"),
            )
        },
        delivery={
            "sent": f"{now.sent:,}",
            "reported": f"{now.delivery_reported:,}",
            "delivered": f"{now.delivered:,}",
            "rate": _pct(now.delivery_rate),
            "failed": f"{now.failed:,}",
            "unknown": f"{now.unknown:,}",
            "failure_rate": _pct(now.failure_rate),
        },
        reasons=[(r, f"{n:,}") for r, n in _suppressed_by_reason(now).most_common()],
        opt_outs=[(p, s, f"{n:,}") for (p, s), n in sorted(now.opt_outs.items())],
        follow_ups_due=f"{sum(now.follow_ups.values()):,}",
        follow_ups=[(k, OUTCOME_LABELS[k], f"{now.follow_ups[k]:,}") for k in OUTCOMES],
        outcome_labels=[k.replace("_", " ") for k in OUTCOMES],
        obligations=[
            {
                "rule_id": o.rule_id,
                "due": f"{o.due:,}",
                "outcomes": [f"{o.outcomes[k]:,}" for k in OUTCOMES],
                "definition": o.definition,
            }
            for o in now.obligations
        ],
        missed=missed[:MISSED_LISTED],
        more=f"{len(missed) - MISSED_LISTED:,}" if len(missed) > MISSED_LISTED else "",
        service=[_service_row(t) for t in now.service],
        group=_group_line(now.group, before.group, period),
        period_end=period.last.isoformat(),
        loops=_loops_page(report) if report.loops is not None else None,
        variants=page_sections(report.variants),
        significance=SIGNIFICANCE,
    )


def _cell(column: str, value: Any, label: Any = "") -> str:
    """A CSV value as the page shows it: counts with thousands separators, percentages (a
    column ``*_pct``, or a row whose label ends with ``%``) with a %, nothing as a dash."""
    if value is None or value == "":
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        percent = column.endswith("_pct") or str(label).endswith("%")
        return f"{value:,.1f}%" if percent else f"{value:,.2f}"
    return str(value)


def _loops_page(report: Report) -> dict[str, Any]:
    """The closed-loop sections: each table as CSV-shaped rows, formatted for the page."""
    loops = report.loops
    assert loops is not None
    every = tables(report)
    shown = {}
    for name in LOOP_TABLES:
        columns, rows = every[name]
        shown[name] = {
            "name": name,
            "columns": columns,
            "rows": [
                [_cell(c, v, row[0]) for c, v in zip(columns, row, strict=True)] for row in rows
            ],
        }
    more = loops.problems_total - len(loops.problems)
    return {
        "tables": shown,
        "charts": draw_loop_charts(loops),
        "nps_collected": loops.nps.answers > 0,
        "problems_more": f"{more:,}" if more > 0 else "",
        "problems_listed": PROBLEMS_LISTED,
        "grace_days": loops.premiums.grace_days,
        "definitions": loops.complaints.definitions,
    }


def _kept(t: TierService) -> str:
    """Cadence kept as the report prints it: "66.7% (2 of 3)", or why there is none."""
    if not t.cadence_days:
        return "no cadence"
    if not t.customers:
        return "no customers"
    return f"{_pct(t.cadence_kept)} ({t.within_cadence:,} of {t.customers:,})"


def _service_row(t: TierService) -> dict[str, str]:
    return {
        "tier": t.tier,
        "level": t.level or "none",
        "cadence": f"{t.cadence_days} days" if t.cadence_days else "no cadence",
        "customers": f"{t.customers:,}",
        "messages": f"{t.messages:,}",
        "sent": f"{t.messages_sent:,}",
        "delivered": f"{t.messages_delivered:,}",
        "tasks": f"{t.tasks:,}",
        "assigned": f"{t.tasks_assigned:,}",
        "done": f"{t.tasks_done:,}",
        "kept": _kept(t),
        "overdue": f"{t.tasks_overdue:,}",
    }


def _group_verdict(group: GroupCoverage, period: Period) -> str:
    if group.rate is None:
        return "no group clients"
    if period.kind != "month":
        return f"the target (≥ {100 * group.target:.0f}%) is a month's: not compared"
    if group.below:
        return f"BELOW the target of ≥ {100 * group.target:.0f}%"
    return f"meets the target of ≥ {100 * group.target:.0f}%"


def _group_line(now: GroupCoverage, before: GroupCoverage, period: Period) -> dict[str, Any]:
    return {
        "value": f"{_pct(now.rate)} ({now.contacted:,} of {now.clients:,})",
        "verdict": _group_verdict(now, period),
        "below": now.below and period.kind == "month",
        "change": _change(now.rate, before.rate, rate=True),
    }


def _kpis(
    now: Figures, before: Figures, loops: Loops | None = None, loops_before: Loops | None = None
) -> list[dict[str, str]]:
    missed_now = sum(o.outcomes["missed"] for o in now.obligations)
    missed_before = sum(o.outcomes["missed"] for o in before.obligations)
    kpis = [
        ("touches", "touches due", f"{now.total:,}", _change(now.total, before.total)),
        ("sent", "sent", f"{now.sent:,}", _change(now.sent, before.sent)),
        (
            "delivery-rate",
            "delivery rate",
            _pct(now.delivery_rate),
            _change(now.delivery_rate, before.delivery_rate, rate=True),
        ),
        (
            "failure-rate",
            "failure rate",
            _pct(now.failure_rate),
            _change(now.failure_rate, before.failure_rate, rate=True),
        ),
        (
            "suppressed",
            "suppressed",
            f"{now.suppressed:,}",
            _change(now.suppressed, before.suppressed),
        ),
        (
            "opt-outs",
            "opt-outs",
            f"{now.opt_out_total:,}",
            _change(now.opt_out_total, before.opt_out_total),
        ),
        (
            "follow-ups",
            "complaint follow-ups on time (sent by their due date)",
            f"{now.follow_ups_on_time:,} of {now.follow_ups_settled:,}",
            _change(now.follow_up_rate, before.follow_up_rate, rate=True),
        ),
        (
            "obligations-missed",
            "service obligations missed",
            f"{missed_now:,}",
            _change(missed_now, missed_before),
        ),
    ]
    if loops is not None:
        kpis += _loop_kpis(loops, loops_before)
    return [dict(zip(("key", "label", "value", "change"), k, strict=True)) for k in kpis]


def _of(part: int, whole: int) -> str:
    return f"{part:,} of {whole:,}"


def _loop_kpis(now: Loops, before: Loops | None) -> list[tuple[str, str, str, str]]:
    sat, was = now.satisfaction, before.satisfaction if before is not None else None
    comp = now.complaints
    prev = before.complaints if before is not None else None
    average = "–" if sat.average is None else f"{sat.average:.2f}"
    return [
        (
            "satisfaction",
            f"average satisfaction (1-5, {sat.answers:,} answer(s))",
            average,
            _change(sat.average, was.average if was else None),
        ),
        (
            "satisfied",
            "satisfied (4-5)",
            _pct(sat.share_satisfied),
            _change(sat.share_satisfied, was.share_satisfied if was else None, rate=True),
        ),
        (
            "complaints",
            "complaints received",
            f"{comp.received:,}",
            _change(comp.received, prev.received if prev else None),
        ),
        (
            "acknowledged",
            "complaints acknowledged",
            _of(comp.acknowledged.kept, comp.acknowledged.owed),
            _change(comp.acknowledged.rate, prev.acknowledged.rate if prev else None, rate=True),
        ),
        (
            "called-back",
            "complaints called back in time",
            _of(comp.called_back.kept, comp.called_back.owed),
            _change(comp.called_back.rate, prev.called_back.rate if prev else None, rate=True),
        ),
        (
            "lapse-rate",
            "premium lapse rate",
            _pct(now.premiums.lapse_rate),
            _change(
                now.premiums.lapse_rate,
                before.premiums.lapse_rate if before is not None else None,
                rate=True,
            ),
        ),
    ]


def _table(now: Figures, before: Figures, dimension: str, title: str) -> dict[str, Any]:
    """Touches by one dimension (rule, channel, tier), this period and the previous one."""
    labels = sorted(
        set(now.values(dimension)) | set(before.values(dimension)),
        key=lambda v: (v is None, str(v)),
    )
    rows = []
    for v in labels:
        sent_now = now.count(statuses=SENT_LIKE, **{dimension: v})
        sent_before = before.count(statuses=SENT_LIKE, **{dimension: v})
        rows.append(
            {
                "key": str(v),
                "name": str(v) if v is not None else "none",
                "touches": f"{now.count(**{dimension: v}):,}",
                "sent": f"{sent_now:,}",
                "suppressed": f"{now.count(status='suppressed', **{dimension: v}):,}",
                "failed": f"{now.count(status='failed', **{dimension: v}):,}",
                "sent_before": f"{sent_before:,}",
                "change": _change(sent_now, sent_before),
            }
        )
    heading = dimension.replace("_id", "")
    return {"dimension": dimension, "title": title, "heading": heading, "rows": rows}


def _suppressed_by_reason(figures: Figures) -> Counter[str]:
    reasons = Counter[str]()
    for key, n in figures.touches.items():
        if key[3] == "suppressed" and key[4]:
            reasons[key[4]] += n
    return reasons


# -- the tables, as CSV ----------------------------------------------------------------

Table = tuple[list[str], list[list[Any]]]
# The closed-loop tables, in the page's order (the page shows them from these rows).
LOOP_TABLES = (
    "satisfaction",
    "nps",
    "complaints",
    "premiums-churn",
    "tasks-per-agent",
    "problem-customers",
)


def _pct_value(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 1)


def _measure(name: str, count: int, of: int | None = None, pct: float | None = None) -> list[Any]:
    return [name, count, of, _pct_value(pct) if of is not None else None]


def tables(report: Report) -> dict[str, Table]:
    """Every table of the page as (columns, rows), the numbers unformatted: the CSV files,
    and the rows the page's closed-loop sections show."""
    now, before = report.now, report.before
    found: dict[str, Table] = {
        "kpis": (
            ["key", "label", "value", "change"],
            [
                [k["key"], k["label"], k["value"], k["change"]]
                for k in _kpis(now, before, report.loops, report.loops_before)
            ],
        )
    }
    for dimension, name in (("rule_id", "by-rule"), ("channel", "by-channel"), ("tier", "by-tier")):
        labels = sorted(
            set(now.values(dimension)) | set(before.values(dimension)),
            key=lambda v: (v is None, str(v)),
        )
        found[name] = (
            [dimension, "touches", "sent", "suppressed", "failed", "sent_previous"],
            [
                [
                    v,
                    now.count(**{dimension: v}),
                    now.count(statuses=SENT_LIKE, **{dimension: v}),
                    now.count(status="suppressed", **{dimension: v}),
                    now.count(status="failed", **{dimension: v}),
                    before.count(statuses=SENT_LIKE, **{dimension: v}),
                ]
                for v in labels
            ],
        )
    found["service-per-tier"] = (
        [
            "tier",
            "level",
            "cadence_days",
            "customers",
            "messages",
            "sent",
            "delivered",
            "tasks",
            "assigned",
            "done",
            "within_cadence",
            "tasks_overdue",
        ],
        [
            [
                t.tier,
                t.level,
                t.cadence_days,
                t.customers,
                t.messages,
                t.messages_sent,
                t.messages_delivered,
                t.tasks,
                t.tasks_assigned,
                t.tasks_done,
                t.within_cadence,
                t.tasks_overdue,
            ]
            for t in now.service
        ],
    )
    found["delivery"] = (
        ["measure", "count"],
        [
            ["sent", now.sent],
            ["delivery_reported", now.delivery_reported],
            ["delivered", now.delivered],
            ["failed", now.failed],
            ["unknown", now.unknown],
            ["suppressed", now.suppressed],
        ],
    )
    found["suppressed-by-reason"] = (
        ["reason", "touches"],
        [[r, n] for r, n in _suppressed_by_reason(now).most_common()],
    )
    found["opt-outs"] = (
        ["purpose", "source", "withdrawals"],
        [[p, src, n] for (p, src), n in sorted(now.opt_outs.items())],
    )
    found["obligations"] = (
        ["rule_id", "due", *OUTCOMES, "definition"],
        [
            [o.rule_id, o.due, *(o.outcomes[k] for k in OUTCOMES), o.definition]
            for o in now.obligations
        ],
    )
    found["obligations-missed"] = (
        ["touch_key", "due", "why"],
        [list(m) for o in now.obligations for m in o.missed],
    )
    if report.loops is not None:
        found.update(_loop_tables(report.loops))
    if report.variants:
        found["message-variants"] = variant_table(report.variants)
    return found


def _loop_tables(loops: Loops) -> dict[str, Table]:
    sat, nps, comp, prem = loops.satisfaction, loops.nps, loops.complaints, loops.premiums
    average = None if sat.average is None else round(sat.average, 2)
    measures = ["measure", "count", "of", "rate_pct"]
    return {
        "satisfaction": (
            ["measure", "value"],
            [
                ["answers", sat.answers],
                ["from customers' replies", sat.from_replies],
                ["from agents' tasks", sat.from_tasks],
                ["with a score", sat.scored],
                ["average score (1-5)", average],
                ["satisfied (4-5)", sat.satisfied],
                ["satisfied, %", _pct_value(sat.share_satisfied)],
                ["SMS that went out", sat.asked],
                ["of those, answered", sat.answered],
                ["response rate, %", _pct_value(sat.response_rate)],
            ],
        ),
        "nps": (
            ["measure", "value"],
            [
                ["answers", nps.answers],
                ["promoters (9-10)", nps.promoters],
                ["passives (7-8)", nps.passives],
                ["detractors (0-6)", nps.detractors],
                ["ignored (outside 0-10)", nps.ignored],
                # Whole points, as NPS is quoted (the figure itself is ``Nps.score``).
                ["NPS (-100 to +100)", None if nps.score is None else round(nps.score)],
            ],
        ),
        "complaints": (
            measures,
            [
                _measure("received", comp.received),
                [
                    f"received per {1000:,} active customers",
                    None if comp.rate is None else round(comp.rate, 2),
                    comp.active_customers,
                    None,
                ],
                _measure(
                    "acknowledged",
                    comp.acknowledged.kept,
                    comp.acknowledged.owed,
                    comp.acknowledged.rate,
                ),
                _measure(
                    "called back within the task's window",
                    comp.called_back.kept,
                    comp.called_back.owed,
                    comp.called_back.rate,
                ),
                _measure(
                    "reached (call-back done)",
                    comp.reached,
                    comp.called_back.owed,
                    comp.reached / comp.called_back.owed if comp.called_back.owed else None,
                ),
                _measure("received from customers without an agent", comp.no_agent),
                _measure("resolved", comp.resolved),
                _measure(
                    "second follow-up done",
                    comp.followed_up.kept,
                    comp.followed_up.owed,
                    comp.followed_up.rate,
                ),
                _measure("cases open at the end", comp.open_cases),
                _measure("customers with an open case at the end", comp.open_customers),
            ],
        ),
        "premiums-churn": (
            measures,
            [
                _measure("policies with a premium schedule", prem.scheduled),
                _measure(
                    "premium overdue",
                    prem.overdue,
                    prem.scheduled,
                    _ratio(prem.overdue, prem.scheduled),
                ),
                _measure(
                    f"lapsed (unpaid over {prem.grace_days} days, or marked lapsed)",
                    prem.lapsed,
                    prem.scheduled,
                    prem.lapse_rate,
                ),
                _measure(
                    "customers at high churn risk at the end",
                    prem.high_risk,
                    prem.active_customers,
                    prem.high_risk_share,
                ),
                _measure(
                    "customers who left (status not active, now)",
                    prem.left,
                    prem.customers,
                    prem.left_share,
                ),
            ],
        ),
        "tasks-per-agent": (
            ["agent_id", *TASK_COLUMNS],
            [[a.agent_id, *(a.counts[c] for c in TASK_COLUMNS)] for a in loops.agents],
        ),
        "problem-customers": (
            [
                "customer_id",
                "tier",
                "agent_id",
                "risk_score",
                "why",
                "what_was_done",
                "latest_score",
                "cases",
            ],
            [
                [
                    p.customer_id,
                    p.tier,
                    p.agent_id,
                    p.risk_score,
                    "; ".join(p.why),
                    "; ".join(p.done),
                    p.latest_score,
                    "; ".join(p.cases),
                ]
                for p in loops.problems
            ],
        ),
    }


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def to_csv(table: Table) -> str:
    """One table as CSV (RFC 4180, header first; nothing is an empty field)."""
    columns, rows = table
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
    return out.getvalue()


def csv_path(page: Location, name: str) -> Location:
    """Where table ``name`` of the report at ``page`` goes: next to it,
    ``<page without .html>-<name>.csv``."""
    url = page.url[: -len(".html")] if page.url.endswith(".html") else page.url
    return Location(f"{url}-{name}.csv", page.options)


def report_path(reports_dir: Location | str | Path, period: Period) -> Location:
    """Where a period's report goes in the reports folder (a folder or a URL)."""
    return at(reports_dir).child(f"care-report-{period.label}.html")


def write_report(
    store: Store,
    period: Period,
    reports_dir: Location | str | Path,
    *,
    generated_at: dt.datetime,
    output: Location | str | Path | None = None,
    ruleset: RuleSet | None = None,
    grace_days: int | None = None,
) -> tuple[Location, Report]:
    """Compute the period's report and write its HTML (``care report`` and ``care_reports``)
    to ``output``, else ``report_path`` (``storage.Location``: a path or a URL), and a CSV
    file of each of its tables next to it (``csv_path``; listed in ``csv_files``)."""
    result = build_report(store, period, ruleset, grace_days=grace_days)
    place = at(output) if output is not None else report_path(reports_dir, period)
    place.write_text(result.html(generated_at=generated_at))
    for name, table in tables(result).items():
        target = csv_path(place, name)
        target.write_text(to_csv(table))
        result.csv_files.append(target)
    return place, result


def summary_line(result: Report) -> str:
    """One line of the period's key numbers (the CLI, the DAG log, the email's text part)."""
    n = result.now
    kept = ", ".join(
        f"{t.tier} {_pct(t.cadence_kept)}" for t in n.service if t.cadence_kept is not None
    )
    tasks = sum(t.tasks for t in n.service)
    line = (
        f"{result.period.kind} {result.period.label}: {n.total:,} touches, {n.sent:,} sent, "
        f"{n.failed:,} failed, {n.suppressed:,} suppressed, {n.opt_out_total:,} opt-out(s), "
        f"{n.follow_ups_on_time}/{n.follow_ups_settled} complaint follow-up(s) on time, "
        f"{sum(o.outcomes['missed'] for o in n.obligations):,} service obligation(s) missed"
    )
    if tasks:
        line += (
            f", {tasks:,} task(s) ({sum(t.tasks_done for t in n.service):,} done, "
            f"{sum(t.tasks_overdue for t in n.service):,} overdue)"
        )
    if kept:
        line += f", cadence kept {kept}"
    if n.group.clients:
        line += f", group clients contacted {_pct(n.group.rate)}"
        if n.group.below and result.period.kind == "month":
            line += f" (below {100 * n.group.target:.0f}%)"
    if result.loops is not None:
        sat, comp = result.loops.satisfaction, result.loops.complaints
        if sat.answers:
            average = "–" if sat.average is None else f"{sat.average:.2f}"
            line += (
                f", satisfaction {average} ({_pct(sat.share_satisfied)} satisfied of "
                f"{sat.answers:,} answer(s))"
            )
        owed = comp.acknowledged.owed + comp.called_back.owed + comp.followed_up.owed
        if comp.received or owed:
            line += (
                f", {comp.received:,} complaint(s): "
                f"{comp.acknowledged.kept}/{comp.acknowledged.owed} acknowledged, "
                f"{comp.called_back.kept}/{comp.called_back.owed} called back in time, "
                f"{comp.followed_up.kept}/{comp.followed_up.owed} second follow-up(s) done"
            )
    return line


def email_report(
    result: Report,
    page: str,
    recipients: Sequence[str],
    transport: Transport,
) -> list[tuple[str, SendResult]]:
    """Send the report through the email channel (SendGrid, or the outbox when none is
    configured) to staff addresses. Not a customer touch: it is not in the ledger, and it
    carries no unsubscribe link (no rule category). Returns each recipient's answer."""
    period = result.period
    subject = f"Caretouch {period.kind} report {period.label}"
    text = (
        summary_line(result)
        + "\n\nThe full report with its charts is the HTML part of this message."
    )
    answers = []
    for recipient in recipients:
        digest = hashlib.sha256(recipient.lower().encode()).hexdigest()[:12]
        message = OutboundMessage(
            touch_key=f"report|{period.kind}:{period.label}|{digest}",
            attempt_no=1,
            channel=Channel.EMAIL,
            recipient=recipient,
            body=text,
            subject=subject,
            html=page,
            occurrence=period.last.isoformat(),
            metadata={"category": "report", "locale": "en"},
        )
        answers.append((recipient, transport.send(message)))
    return answers
