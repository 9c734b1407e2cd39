"""``care report``: the monthly and weekly service report, as one self-contained HTML page.

Every number is read from the ledger (touches by their occurrence, the customer-local date
they were due; each touch counted at its current status), except opt-outs, which are the
consent withdrawals recorded in the store (``consent_events``) in the period. Each figure is
shown with its change from the previous period of the same kind (month on month, week on
week). Reading only: the report writes nothing but its HTML file.

Service obligations (the touches of ``service`` rules, among them the complaint follow-up)
are measured the way their rule defines them, from the loaded rules: a touch is due on its
occurrence (for the complaint follow-up: the local date of the resolution + the rule's
``delay_days``, at its ``send_time``) and on time when it was sent on or before that local
date; sent later (deferred within its window) it is late; ``obligation_missed`` and other
final suppressions are missed. For event-triggered ones, the rule's own candidate query
(``plan.due_touches``: trigger and audience) also finds the touches due in the period that
were never planned: missed too. Customers the rule does not apply to (inactive, outside its
audience) are not counted.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import io
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import and_, func, select

from ..channels.base import OutboundMessage, SendResult, Transport
from ..dates import aware_utc
from ..ledger.models import TouchCurrent, TouchEvent, TouchRow
from ..rules.loader import RuleSet
from ..rules.model import Rule, TriggerKind
from ..store.db import Store
from ..store.models import ConsentEvent
from ..vocab import Channel, SuppressionReason

# Current statuses that mean the message reached the provider.
SENT_LIKE = ("sent", "delivered", "undelivered", "bounced")
# Delivery reports that settle a sent message.
DELIVERY_SETTLED = ("delivered", "undelivered", "bounced")
# The business event whose follow-up the report's key figure measures (SPEC section 1).
COMPLAINT_EVENT = "complaint_resolved"
# How a service obligation ended, in the order the report shows them.
OUTCOMES = ("on_time", "late", "missed", "failed", "unreachable", "waiting")
OUTCOME_LABELS = {
    "on_time": "on time (sent by the due date)",
    "late": "late (sent after the due date, within its window)",
    "missed": "missed (window over, or never planned)",
    "failed": "failed or unknown at the provider",
    "unreachable": "no usable channel (no_contact, opted_out)",
    "waiting": "still waiting (planned or deferred)",
}
_UNREACHABLE = (SuppressionReason.NO_CONTACT.value, SuppressionReason.OPTED_OUT.value)


@dataclass
class Obligation:
    """How one service rule's touches due in the period ended."""

    rule_id: str
    definition: str  # how the rule defines due and on time, in words
    complaint: bool  # triggered by COMPLAINT_EVENT: the report's complaint follow-up figure
    outcomes: Counter[str] = field(default_factory=Counter)
    missed: list[tuple[str, str, str]] = field(default_factory=list)  # (key, due, why)

    @property
    def due(self) -> int:
        return sum(self.outcomes.values())

    @property
    def settled(self) -> int:
        """Due touches whose fate is known: all but those still waiting."""
        return self.due - self.outcomes["waiting"]


@dataclass(frozen=True)
class Period:
    kind: str  # "month" or "week"
    label: str  # 2026-11 or 2026-W47
    first: dt.date
    last: dt.date

    @classmethod
    def month(cls, text: str) -> Period:
        m = re.fullmatch(r"(\d{4})-(\d{2})", text)
        if not m or not 1 <= int(m.group(2)) <= 12:
            raise ValueError(f"{text!r} is not a month (YYYY-MM)")
        first = dt.date(int(m.group(1)), int(m.group(2)), 1)
        following = (first + dt.timedelta(days=32)).replace(day=1)
        return cls("month", text, first, following - dt.timedelta(days=1))

    @classmethod
    def week(cls, text: str) -> Period:
        m = re.fullmatch(r"(\d{4})-W(\d{2})", text)
        if not m:
            raise ValueError(f"{text!r} is not an ISO week (YYYY-Www)")
        try:
            first = dt.date.fromisocalendar(int(m.group(1)), int(m.group(2)), 1)
        except ValueError:
            raise ValueError(f"{text!r} is not an ISO week (YYYY-Www)") from None
        return cls("week", text, first, first + dt.timedelta(days=6))

    @classmethod
    def of_week(cls, day: dt.date) -> Period:
        year, week, _ = day.isocalendar()
        return cls.week(f"{year}-W{week:02d}")

    @classmethod
    def of_month(cls, day: dt.date) -> Period:
        return cls.month(f"{day:%Y-%m}")

    def previous(self) -> Period:
        if self.kind == "month":
            return Period.of_month(self.first - dt.timedelta(days=1))
        return Period.of_week(self.first - dt.timedelta(days=7))

    @property
    def days(self) -> list[dt.date]:
        return [self.first + dt.timedelta(days=n) for n in range((self.last - self.first).days + 1)]


@dataclass
class Figures:
    """The numbers of one period."""

    period: Period
    # (rule_id, channel, tier, status, reason) -> touches, by current status.
    touches: Counter[tuple[Any, ...]] = field(default_factory=Counter)
    sent_per_day: Counter[dt.date] = field(default_factory=Counter)
    opt_outs: Counter[tuple[str, str]] = field(default_factory=Counter)  # (purpose, source)
    obligations: list[Obligation] = field(default_factory=list)

    def count(self, *, statuses: tuple[str, ...] | None = None, **match: Any) -> int:
        index = {"rule_id": 0, "channel": 1, "tier": 2, "status": 3, "reason": 4}
        return sum(
            n
            for key, n in self.touches.items()
            if (statuses is None or key[3] in statuses)
            and all(key[index[k]] == v for k, v in match.items())
        )

    @property
    def total(self) -> int:
        return self.count()

    @property
    def sent(self) -> int:
        return self.count(statuses=SENT_LIKE)

    @property
    def delivered(self) -> int:
        return self.count(status="delivered")

    @property
    def failed(self) -> int:
        return self.count(status="failed")

    @property
    def unknown(self) -> int:
        return self.count(status="unknown")

    @property
    def suppressed(self) -> int:
        return self.count(status="suppressed")

    @property
    def delivery_reported(self) -> int:
        return self.count(statuses=DELIVERY_SETTLED)

    @property
    def delivery_rate(self) -> float | None:
        """Delivered among sent messages whose delivery report has arrived."""
        return self.delivered / self.delivery_reported if self.delivery_reported else None

    @property
    def failure_rate(self) -> float | None:
        """Failed (provider refused or retries exhausted) among attempted touches."""
        attempted = self.sent + self.failed + self.unknown
        return self.failed / attempted if attempted else None

    @property
    def opt_out_total(self) -> int:
        return sum(self.opt_outs.values())

    @property
    def follow_ups(self) -> Counter[str]:
        """Outcomes of the complaint follow-ups (the rules triggered by ``COMPLAINT_EVENT``)."""
        total: Counter[str] = Counter()
        for o in self.obligations:
            if o.complaint:
                total.update(o.outcomes)
        return total

    @property
    def follow_ups_on_time(self) -> int:
        return self.follow_ups["on_time"]

    @property
    def follow_ups_settled(self) -> int:
        return sum(self.follow_ups.values()) - self.follow_ups["waiting"]

    @property
    def follow_up_rate(self) -> float | None:
        """On time among the complaint follow-ups due in the period whose fate is known."""
        settled = self.follow_ups_settled
        return self.follow_ups_on_time / settled if settled else None

    def values(self, dimension: str) -> list[Any]:
        index = {"rule_id": 0, "channel": 1, "tier": 2}[dimension]
        return sorted({k[index] for k in self.touches}, key=lambda v: (v is None, str(v)))


def compute(store: Store, period: Period, ruleset: RuleSet | None = None) -> Figures:
    """The period's figures, read from the ledger and the store; with ``ruleset``, also how
    its service rules' touches ended (``obligations``)."""
    figures = Figures(period)
    touches = TouchRow.__table__
    current = TouchCurrent.__table__
    in_period = and_(touches.c.occurrence >= period.first, touches.c.occurrence <= period.last)
    channel = func.coalesce(current.c.channel, touches.c.channel)
    with store.read_session() as session:
        stmt = (
            select(
                touches.c.rule_id,
                channel,
                touches.c.tier,
                current.c.status,
                current.c.reason,
                func.count(),
            )
            .select_from(touches.join(current, current.c.touch_id == touches.c.id))
            .where(in_period)
            .group_by(
                touches.c.rule_id, channel, touches.c.tier, current.c.status, current.c.reason
            )
        )
        for rule_id, ch, tier, status, reason, n in session.execute(stmt):
            figures.touches[(rule_id, ch, tier, status, reason)] += n
        per_day = (
            select(touches.c.occurrence, func.count())
            .select_from(touches.join(current, current.c.touch_id == touches.c.id))
            .where(in_period, current.c.status.in_(SENT_LIKE))
            .group_by(touches.c.occurrence)
        )
        for day, n in session.execute(per_day):
            figures.sent_per_day[
                day if isinstance(day, dt.date) else dt.date.fromisoformat(day)
            ] = n

        # Opt-outs: consent withdrawals recorded in the period (UTC days).
        start = dt.datetime.combine(period.first, dt.time(), dt.timezone.utc)
        end = dt.datetime.combine(period.last + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
        consent = ConsentEvent.__table__
        stmt = (
            select(consent.c.purpose, consent.c.source, func.count())
            .where(consent.c.granted.is_(False), consent.c.at >= start, consent.c.at < end)
            .group_by(consent.c.purpose, consent.c.source)
        )
        for purpose, source, n in session.execute(stmt):
            figures.opt_outs[(purpose, _source_kind(source))] += n
    if ruleset is not None:
        figures.obligations = obligations(store, period, ruleset)
    return figures


def obligations(store: Store, period: Period, ruleset: RuleSet) -> list[Obligation]:
    """How the touches of each service rule due in the period ended (see the module doc)."""
    rules = [r for r in ruleset.rules if r.obligation]
    if not rules:
        return []
    touches = TouchRow.__table__
    current = TouchCurrent.__table__
    events = TouchEvent.__table__
    found: dict[str, Obligation] = {r.id: _obligation(r) for r in rules}
    seen: set[str] = set()
    with store.read_session() as session:
        rows = session.execute(
            select(
                touches.c.id,
                touches.c.touch_key,
                touches.c.rule_id,
                touches.c.occurrence,
                touches.c.timezone,
                current.c.status,
                current.c.reason,
            )
            .select_from(touches.join(current, current.c.touch_id == touches.c.id))
            .where(
                touches.c.rule_id.in_(list(found)),
                touches.c.occurrence >= period.first,
                touches.c.occurrence <= period.last,
            )
        ).all()
        sent_ids = [r.id for r in rows if r.status in SENT_LIKE]
        first_sent: dict[int, dt.datetime] = {}
        for start in range(0, len(sent_ids), 500):
            for touch_id, status, at in session.execute(
                select(events.c.touch_id, events.c.status, func.min(events.c.at))
                .where(
                    events.c.touch_id.in_(sent_ids[start : start + 500]),
                    events.c.status.in_(("sending", "sent")),
                )
                .group_by(events.c.touch_id, events.c.status)
            ):
                # The provider's acceptance ("sent"); the claim ("sending") if not recorded.
                if status == "sent" or touch_id not in first_sent:
                    first_sent[touch_id] = aware_utc(at)
    for r in rows:
        seen.add(r.touch_key)
        o = found[r.rule_id]
        occurrence = _as_date(r.occurrence)
        if r.status in SENT_LIKE:
            at = first_sent.get(r.id)
            sent_day = at.astimezone(_zone(r.timezone)).date() if at else occurrence
            o.outcomes["on_time" if sent_day <= occurrence else "late"] += 1
        elif r.status in ("failed", "unknown"):
            o.outcomes["failed"] += 1
        elif r.status in ("planned", "sending") or r.reason == SuppressionReason.DEFERRED.value:
            o.outcomes["waiting"] += 1
        elif r.reason in _UNREACHABLE:
            o.outcomes["unreachable"] += 1
        else:
            o.outcomes["missed"] += 1
            o.missed.append((r.touch_key, occurrence.isoformat(), str(r.reason)))
    # What an event-triggered rule made due in the period and the ledger never got.
    from ..plan import due_touches

    for rule in rules:
        if rule.trigger.kind is not TriggerKind.EVENT:
            continue
        o = found[rule.id]
        for day in period.days:
            for touch in due_touches(store, rule, day, ruleset.policy):
                if touch.key not in seen:
                    seen.add(touch.key)
                    o.outcomes["missed"] += 1
                    o.missed.append((touch.key, day.isoformat(), "never planned"))
    for o in found.values():
        o.missed.sort(key=lambda m: (m[1], m[0]))
    return [found[r.id] for r in rules]


def _obligation(rule: Rule) -> Obligation:
    trig = rule.trigger
    if trig.kind is TriggerKind.EVENT:
        due = (
            f"due {trig.delay_days} local day(s) after the {trig.event_type} event's local "
            f"date, at {rule.send_time:%H:%M}"
        )
    elif trig.kind is TriggerKind.DAYS_BEFORE:
        offsets = ", ".join(str(n) for n in trig.offsets)
        field_name = trig.field.name if trig.field else ""
        due = f"due {offsets} day(s) before {field_name} (never sent on or after it)"
    elif trig.kind is TriggerKind.CALENDAR:
        due = "due on its calendar days"
    else:
        due = f"due on the {trig.kind.value} of {trig.field.name if trig.field else ''}"
    window = (
        f"; held back, it may go up to {rule.defer_days} day(s) later (late)"
        if rule.defer_days
        else ""
    )
    return Obligation(
        rule.id,
        f"{due}, on time if sent by that local date{window}",
        complaint=trig.kind is TriggerKind.EVENT and trig.event_type == COMPLAINT_EVENT,
    )


def _as_date(value: Any) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _source_kind(source: str) -> str:
    # "import:customers.csv" -> "import"; "webhook:twilio" -> "webhook".
    return source.split(":", 1)[0]


# -- the page --------------------------------------------------------------------------------


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


def _chart(draw: Any, width: float = 7.0, height: float = 3.2) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height))
    draw(ax)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(alpha=0.3)
    ax.set_axisbelow(True)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


_STATUS_GROUPS = (
    ("sent", SENT_LIKE, "#0072B2"),
    ("waiting", ("planned", "sending"), "#56B4E9"),
    ("suppressed", ("suppressed",), "#BBBBBB"),
    ("failed", ("failed",), "#D55E00"),
    ("unknown", ("unknown",), "#E69F00"),
)


def _stacked(ax: Any, figures: Figures, dimension: str, horizontal: bool) -> None:
    labels = figures.values(dimension)
    names = [str(v) if v is not None else "none" for v in labels]
    base = [0] * len(labels)
    for group, statuses, colour in _STATUS_GROUPS:
        values = [figures.count(statuses=statuses, **{dimension: v}) for v in labels]
        if not any(values):
            continue
        if horizontal:
            ax.barh(names, values, left=base, label=group, color=colour)
        else:
            ax.bar(names, values, bottom=base, label=group, color=colour)
        base = [b + v for b, v in zip(base, values, strict=True)]
    if any(base):
        ax.legend(fontsize=8, frameon=False)
    if horizontal:
        ax.invert_yaxis()


def render_html(report: Report, *, generated_at: dt.datetime) -> str:
    now, before, period = report.now, report.before, report.period
    word = "month" if period.kind == "month" else "week"
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
            f"{sum(o.outcomes['missed'] for o in now.obligations):,}",
            _change(
                sum(o.outcomes["missed"] for o in now.obligations),
                sum(o.outcomes["missed"] for o in before.obligations),
            ),
        ),
    ]
    cards = "\n".join(
        f'<div class="kpi" id="kpi-{key}"><div class="label">{html.escape(label)}</div>'
        f'<div class="value">{html.escape(value)}</div>'
        f'<div class="change">{html.escape(change)} vs previous {word}</div></div>'
        for key, label, value, change in kpis
    )

    def table(dimension: str, title: str) -> str:
        labels = sorted(
            set(now.values(dimension)) | set(before.values(dimension)),
            key=lambda v: (v is None, str(v)),
        )
        rows = []
        for v in labels:
            sent_now = now.count(statuses=SENT_LIKE, **{dimension: v})
            sent_before = before.count(statuses=SENT_LIKE, **{dimension: v})
            rows.append(
                f'<tr data-key="{html.escape(str(v))}"><td>{html.escape(str(v) if v is not None else "none")}</td>'
                f"<td>{now.count(**{dimension: v}):,}</td><td>{sent_now:,}</td>"
                f"<td>{now.count(status='suppressed', **{dimension: v}):,}</td>"
                f"<td>{now.count(status='failed', **{dimension: v}):,}</td>"
                f"<td>{sent_before:,}</td><td>{html.escape(_change(sent_now, sent_before))}</td></tr>"
            )
        return (
            f'<h2>{html.escape(title)}</h2><table id="by-{dimension}"><thead><tr><th>{dimension.replace("_id", "")}</th>'
            f"<th>touches</th><th>sent</th><th>suppressed</th><th>failed</th>"
            f"<th>sent, previous {word}</th><th>change</th></tr></thead><tbody>"
            + "".join(rows)
            + "</tbody></table>"
        )

    by_rule = _chart(
        lambda ax: _stacked(ax, now, "rule_id", True),
        height=max(2.5, 0.45 * len(now.values("rule_id")) + 1),
    )
    by_channel = _chart(lambda ax: _stacked(ax, now, "channel", False), width=4.2)
    by_tier = _chart(lambda ax: _stacked(ax, now, "tier", False), width=4.2)

    def per_day(ax: Any) -> None:
        days = period.days
        ax.bar(
            [d.strftime("%m-%d") for d in days],
            [now.sent_per_day.get(d, 0) for d in days],
            color="#0072B2",
            label=f"this {word}",
        )
        ax.plot(
            [d.strftime("%m-%d") for d in days],
            [
                before.sent_per_day.get(d - (period.first - report.before.period.first), 0)
                for d in days
            ],
            color="#E69F00",
            marker="o",
            markersize=3,
            label=f"previous {word} (same position)",
        )
        ax.legend(fontsize=8, frameon=False)
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        ax.set_ylabel("sent")

    daily = _chart(per_day, width=9.0)
    reasons = Counter[str]()
    for key, n in now.touches.items():
        if key[3] == "suppressed" and key[4]:
            reasons[key[4]] += n
    reason_rows = "".join(
        f"<tr><td>{html.escape(r)}</td><td>{n:,}</td></tr>" for r, n in reasons.most_common()
    )
    opt_rows = "".join(
        f"<tr><td>{html.escape(p)}</td><td>{html.escape(s)}</td><td>{n:,}</td></tr>"
        for (p, s), n in sorted(now.opt_outs.items())
    )
    title = f"Care report, {word} {period.label} ({period.first} to {period.last})"
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: Arial, Helvetica, sans-serif; margin: 24px auto; max-width: 1000px; color: #222; }}
.kpis {{ display: flex; flex-wrap: wrap; gap: 12px; }}
.kpi {{ border: 1px solid #ddd; border-radius: 8px; padding: 10px 14px; min-width: 170px; }}
.kpi .label {{ font-size: 12px; color: #666; }}
.kpi .value {{ font-size: 24px; font-weight: bold; margin: 4px 0; }}
.kpi .change {{ font-size: 12px; color: #444; }}
table {{ border-collapse: collapse; font-size: 13px; margin: 8px 0 16px; }}
th, td {{ border: 1px solid #ddd; padding: 3px 8px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
img {{ max-width: 100%; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 12px; }}
.note {{ font-size: 12px; color: #666; }}
</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p class="note">Touches are counted by the customer-local date they were due, at their
current status in the ledger. Previous {word}: {report.before.period.label}
({report.before.period.first} to {report.before.period.last}). Generated
{generated_at.astimezone(dt.timezone.utc):%Y-%m-%d %H:%M} UTC.</p>
<div class="kpis">
{cards}
</div>
<h2>Touches by rule and campaign</h2>
<img alt="touches by rule" src="data:image/png;base64,{by_rule}">
{table("rule_id", "By rule and campaign")}
<div class="charts">
<div><h2>By channel</h2><img alt="touches by channel" src="data:image/png;base64,{by_channel}"></div>
<div><h2>By tier</h2><img alt="touches by tier" src="data:image/png;base64,{by_tier}"></div>
</div>
{table("channel", "By channel")}
{table("tier", "By tier")}
<h2>Sent per day</h2>
<img alt="sent per day" src="data:image/png;base64,{daily}">
<h2>Delivery and failures</h2>
<table id="delivery"><tbody>
<tr><td>sent (reached the provider)</td><td id="sent">{now.sent:,}</td></tr>
<tr><td>delivery reports received</td><td>{now.delivery_reported:,}</td></tr>
<tr><td>delivered</td><td id="delivered">{now.delivered:,}</td></tr>
<tr><td>delivery rate (delivered of reports received)</td><td>{_pct(now.delivery_rate)}</td></tr>
<tr><td>failed</td><td id="failed">{now.failed:,}</td></tr>
<tr><td>unknown (for review)</td><td>{now.unknown:,}</td></tr>
<tr><td>failure rate (failed of attempted)</td><td>{_pct(now.failure_rate)}</td></tr>
</tbody></table>
<h2>Suppressed, by reason</h2>
<table id="reasons"><tbody>{reason_rows or '<tr><td colspan="2">none</td></tr>'}</tbody></table>
<h2>Opt-outs</h2>
<table id="opt-outs"><thead><tr><th>channel / purpose</th><th>source</th><th>withdrawals</th></tr></thead>
<tbody>{opt_rows or '<tr><td colspan="3">none</td></tr>'}</tbody></table>
<h2>Complaint follow-ups</h2>
<table id="complaints"><tbody>
<tr><td>follow-ups due (complaints of customers the rule applies to)</td><td>{sum(now.follow_ups.values()):,}</td></tr>
{"".join(f'<tr data-outcome="{k}"><td>{html.escape(OUTCOME_LABELS[k])}</td><td>{now.follow_ups[k]:,}</td></tr>' for k in OUTCOMES)}
</tbody></table>
{_obligations_html(now)}
</body>
</html>
"""


def _obligations_html(figures: Figures) -> str:
    """The service obligations: per rule, how its touches due in the period ended, and the
    missed ones by key (flagged)."""
    if not figures.obligations:
        return (
            '<h2>Service obligations</h2><p class="note">No service rule is loaded: the '
            "report cannot say which touches were due.</p>"
        )
    head = "".join(f"<th>{html.escape(k.replace('_', ' '))}</th>" for k in OUTCOMES)
    rows = "".join(
        f'<tr data-key="{html.escape(o.rule_id)}"><td>{html.escape(o.rule_id)}</td>'
        f"<td>{o.due:,}</td>"
        + "".join(f"<td>{o.outcomes[k]:,}</td>" for k in OUTCOMES)
        + f'<td class="note">{html.escape(o.definition)}</td></tr>'
        for o in figures.obligations
    )
    missed = [m for o in figures.obligations for m in o.missed]
    flagged = "".join(
        f"<tr><td>{html.escape(key)}</td><td>{html.escape(due)}</td><td>{html.escape(why)}</td></tr>"
        for key, due, why in missed[:200]
    )
    more = f'<p class="note">... and {len(missed) - 200:,} more.</p>' if len(missed) > 200 else ""
    return (
        '<h2>Service obligations</h2><p class="note">The touches of service rules due in the '
        "period (by their due date), as each rule defines due and on time.</p>"
        f'<table id="obligations"><thead><tr><th>rule</th><th>due</th>{head}'
        f"<th>definition</th></tr></thead><tbody>{rows}</tbody></table>"
        + (
            '<h3>Missed obligations</h3><table id="obligations-missed"><thead><tr><th>touch</th>'
            f"<th>due</th><th>why</th></tr></thead><tbody>{flagged}</tbody></table>{more}"
            if missed
            else ""
        )
    )


def report_path(reports_dir: Path, period: Period) -> Path:
    return reports_dir / f"care-report-{period.label}.html"


def write_report(
    store: Store,
    period: Period,
    reports_dir: Path,
    *,
    generated_at: dt.datetime,
    output: Path | None = None,
    ruleset: RuleSet | None = None,
) -> tuple[Path, Report]:
    """Compute the period's report and write its HTML (``care report`` and ``care_reports``)."""
    result = build_report(store, period, ruleset)
    path = output or report_path(reports_dir, period)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(result.html(generated_at=generated_at), encoding="utf-8")
    return path, result


def summary_line(result: Report) -> str:
    """One line of the period's key numbers (the CLI, the DAG log, the email's text part)."""
    n = result.now
    return (
        f"{result.period.kind} {result.period.label}: {n.total:,} touches, {n.sent:,} sent, "
        f"{n.failed:,} failed, {n.suppressed:,} suppressed, {n.opt_out_total:,} opt-out(s), "
        f"{n.follow_ups_on_time}/{n.follow_ups_settled} complaint follow-up(s) on time, "
        f"{sum(o.outcomes['missed'] for o in n.obligations):,} service obligation(s) missed"
    )


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
