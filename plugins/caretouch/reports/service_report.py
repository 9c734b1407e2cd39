"""``care report``: the monthly and weekly service report, as one self-contained HTML page.

The figures come from ``figures`` (SQL into plain data), the charts from ``charts``; the page
is ``templates/service_report.html``, a Jinja template rendered with autoescape, so whatever
the ledger holds (rule ids, tiers, reasons, touch keys) is printed as text, never as markup.
Reading only: the report writes nothing but its HTML file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from ..channels.base import OutboundMessage, SendResult, Transport
from ..rules.loader import RuleSet
from ..storage import Location, at
from ..store.db import Store
from ..vocab import Channel
from .charts import draw_charts
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

    def html(self, *, generated_at: dt.datetime) -> str:
        return render_html(self, generated_at=generated_at)


def build_report(store: Store, period: Period, ruleset: RuleSet | None = None) -> Report:
    """The period's report and the previous period's figures; ``ruleset`` (the loaded rules)
    defines the service obligations and the complaint follow-up figure."""
    return Report(
        period, compute(store, period, ruleset), compute(store, period.previous(), ruleset)
    )


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
    word = "month" if period.kind == "month" else "week"
    missed = [m for o in now.obligations for m in o.missed]
    return _PAGES.get_template("service_report.html").render(
        title=f"Care report, {word} {period.label} ({period.first} to {period.last})",
        word=word,
        previous=before.period,
        generated=f"{generated_at.astimezone(dt.timezone.utc):%Y-%m-%d %H:%M}",
        kpis=_kpis(now, before),
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
    )


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


def _kpis(now: Figures, before: Figures) -> list[dict[str, str]]:
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
    return [dict(zip(("key", "label", "value", "change"), k, strict=True)) for k in kpis]


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
) -> tuple[Location, Report]:
    """Compute the period's report and write its HTML (``care report`` and ``care_reports``)
    to ``output``, else ``report_path`` (``storage.Location``: a path or a URL)."""
    result = build_report(store, period, ruleset)
    place = at(output) if output is not None else report_path(reports_dir, period)
    place.write_text(result.html(generated_at=generated_at))
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
