"""``care forecast``: how many touches each rule and campaign would plan, send and suppress.

For each local date of a range, the forecast is exactly ``care plan`` of that date: every rule
and campaign planned together under the contact policy, with the ledger as history (touches
already handled, caps already used, deferred touches). Nothing is written.

Each day is forecast on its own, against the ledger as it is now: the touches the forecast
sends on day D are not in the ledger when day D+1 is forecast. A rolling 7-day cap can
therefore stop more touches in reality than the forecast of a later day shows; the first day
of a forecast is exact.

Besides the rows by day and rule, the forecast counts per tier (and the contact policy's
service level serving it) the messages and the tasks (touches on the ``agent_task`` channel)
it expects (``TierForecast``), and the tasks per agent (``AgentLoad``: the customer's
``agent_id``, with the agent's name from the ``agents`` table), so that a manager sees an
agent's load before a festival; tasks of customers without an agent are a line of their own.

Given the templates, the forecast also renders every SMS it would send, exactly as the send
step would (the rule's template, the customer's locale, the touch's facts), and totals their
segments per day (``sms.sms_size``: what the carrier bills) and, when the contact policy
prices a segment (``sms.cost_per_segment``), their estimated cost. Rendering costs about as
much as planning (docs/operations.md, "Forecast"), so a forecast without templates skips it.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import html
import io
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from ..errors import RenderError
from ..plan import plan_day
from ..plan.history import History
from ..plan.touch import Touch
from ..render.templates import TemplateStore
from ..rules.loader import RuleSet
from ..sms import SmsPricing, sms_size
from ..store.db import Store, among
from ..store.models import Agent
from ..vocab import Channel, Decision, SuppressionReason, Tier

REASONS = tuple(r.value for r in SuppressionReason)


@dataclass
class DayForecast:
    """One rule's (or campaign's) candidates on one local date."""

    day: dt.date
    rule_id: str
    kind: str  # "rule" or "campaign"
    candidates: int = 0
    send: int = 0
    suppressed: Counter[str] = field(default_factory=Counter)
    sms: int = 0  # SMS to send, rendered (forecast with templates)
    sms_segments: int = 0  # their segments, as the carrier bills them
    sms_unrendered: int = 0  # SMS to send whose template failed to render

    @property
    def suppressed_total(self) -> int:
        return sum(self.suppressed.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "rule_id": self.rule_id,
            "kind": self.kind,
            "candidates": self.candidates,
            "send": self.send,
            "suppressed": self.suppressed_total,
            **{reason: self.suppressed.get(reason, 0) for reason in REASONS},
            "sms": self.sms,
            "sms_segments": self.sms_segments,
        }


@dataclass(frozen=True)
class SmsDay:
    """The SMS the forecast would send on one local date: how many, their segments, and
    (when the policy prices a segment) their estimated cost."""

    day: dt.date
    sms: int
    segments: int
    cost: Decimal | None
    unrendered: int = 0


@dataclass
class TierForecast:
    """The messages and tasks the forecast expects for one tier, under its service level."""

    tier: str
    level: str | None  # the level serving the tier (None: none)
    messages: int = 0  # message candidates
    messages_send: int = 0  # of those, to send
    tasks: int = 0  # task candidates (agent_task)
    tasks_assign: int = 0  # of those, to assign to an agent

    def as_dict(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "level": self.level or "",
            "messages": self.messages,
            "messages_send": self.messages_send,
            "tasks": self.tasks,
            "tasks_assign": self.tasks_assign,
        }


# The line of ``Forecast.agents`` for the customers without an agent.
NO_AGENT = ""


@dataclass
class AgentLoad:
    """The tasks one agent would be given over the forecast's days."""

    agent_id: str  # NO_AGENT: the customers without one
    name: str | None = None  # from ``agents``; None when not there (or no agent)
    tasks: int = 0  # task candidates of the agent's customers
    assign: int = 0  # of those, to assign (the agent's load)
    by_kind: Counter[str] = field(default_factory=Counter)  # to assign, by task kind

    @property
    def label(self) -> str:
        if self.agent_id == NO_AGENT:
            return "(no agent)"
        return f"{self.agent_id} {self.name}" if self.name else f"{self.agent_id} (not in agents)"

    def as_dict(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "name": self.name or "",
            "tasks": self.tasks,
            "assign": self.assign,
            **{f"assign_{k}": self.by_kind.get(k, 0) for k in TASK_KINDS},
        }


TASK_KINDS = ("call", "visit", "gift")


@dataclass
class Forecast:
    first: dt.date
    days: int
    rows: list[DayForecast]
    tiers: list[TierForecast] = field(default_factory=list)
    agents: list[AgentLoad] = field(default_factory=list)
    # The SMS were rendered and their segments counted (a forecast given the templates).
    sms_counted: bool = False
    pricing: SmsPricing | None = None  # the policy's price of a segment, if any

    @property
    def dates(self) -> list[dt.date]:
        return [self.first + dt.timedelta(days=n) for n in range(self.days)]

    def rule_ids(self) -> list[str]:
        return sorted({r.rule_id for r in self.rows})

    def total(self, attr: str, **match: Any) -> int:
        return sum(
            getattr(r, attr) for r in self.rows if all(getattr(r, k) == v for k, v in match.items())
        )

    def sms_days(self) -> list[SmsDay]:
        """Per local date: the SMS to send, their segments and estimated cost."""
        days = []
        for day in self.dates:
            sms = self.total("sms", day=day)
            segments = self.total("sms_segments", day=day)
            cost = self.pricing.cost_per_segment * segments if self.pricing is not None else None
            days.append(SmsDay(day, sms, segments, cost, self.total("sms_unrendered", day=day)))
        return days

    def reasons_used(self) -> list[str]:
        used = set().union(*(r.suppressed for r in self.rows)) if self.rows else set()
        return [r for r in REASONS if r in used]


def forecast(
    store: Store,
    ruleset: RuleSet,
    first: dt.date,
    days: int,
    *,
    history: History | None,
    rule_ids: Iterable[str] | None = None,
    progress: Callable[[dt.date], None] | None = None,
    templates: TemplateStore | None = None,
) -> Forecast:
    """Plan each local date of ``[first, first + days)`` without writing; count by rule.
    With ``templates``, render each SMS to send and count its segments (module doc)."""
    wanted = set(rule_ids) if rule_ids is not None else None
    campaigns = {c.id for c in ruleset.campaigns}
    rows: list[DayForecast] = []
    tiers: dict[str, TierForecast] = {}
    agents: dict[str, AgentLoad] = {}

    def tier_of(tier: str) -> TierForecast:
        if tier not in tiers:
            level = ruleset.policy.level_of(tier)
            tiers[tier] = TierForecast(tier, level.name if level is not None else None)
        return tiers[tier]

    for t in Tier:
        tier_of(t.value)
    for n in range(days):
        day = first + dt.timedelta(days=n)
        by_rule: dict[str, DayForecast] = {}
        for touch in plan_day(store, ruleset, day, rule_ids=wanted, history=history):
            _count_service(touch, tier_of(str(touch.customer.get("tier"))), agents)
            rule_id = touch.rule.id
            row = by_rule.get(rule_id)
            if row is None:
                kind = "campaign" if rule_id in campaigns else "rule"
                row = by_rule[rule_id] = DayForecast(day, rule_id, kind)
            row.candidates += 1
            if touch.decision is Decision.SEND:
                row.send += 1
                if templates is not None and touch.channel is Channel.SMS:
                    _count_sms(templates, touch, row)
            elif touch.reason is not None:
                row.suppressed[touch.reason.value] += 1
        rows += [by_rule[k] for k in sorted(by_rule)]
        if progress is not None:
            progress(day)
    _name_agents(store, agents)
    return Forecast(
        first,
        days,
        rows,
        [tiers[k] for k in sorted(tiers)],
        sorted(agents.values(), key=lambda a: (a.agent_id == NO_AGENT, -a.assign, a.agent_id)),
        sms_counted=templates is not None,
        pricing=ruleset.policy.sms_pricing,
    )


def _count_sms(templates: TemplateStore, touch: Touch, row: DayForecast) -> None:
    """Render the SMS as the send step would and add its segments to ``row``."""
    try:
        body = touch.render(templates, Channel.SMS).body
    except RenderError:
        row.sms_unrendered += 1  # the send would fail it (render_error); nothing to bill
        return
    row.sms += 1
    row.sms_segments += sms_size(body).segments


def is_task(touch: Touch) -> bool:
    """A task: planned on the ``agent_task`` channel, or, suppressed before a channel was
    chosen, of a rule whose first channel is ``agent_task``."""
    if touch.channel is not None:
        return touch.channel is Channel.AGENT_TASK
    return bool(touch.rule.channels) and touch.rule.channels[0] is Channel.AGENT_TASK


def _count_service(touch: Touch, tier: TierForecast, agents: dict[str, AgentLoad]) -> None:
    send = touch.decision is Decision.SEND
    if not is_task(touch):
        tier.messages += 1
        tier.messages_send += send
        return
    tier.tasks += 1
    tier.tasks_assign += send
    agent_id = str(touch.customer.get("agent_id") or NO_AGENT)
    load = agents.get(agent_id)
    if load is None:
        load = agents[agent_id] = AgentLoad(agent_id)
    load.tasks += 1
    if send:
        load.assign += 1
        task = touch.rule.task
        load.by_kind[task.kind.value if task is not None else "call"] += 1


def _name_agents(store: Store, agents: dict[str, AgentLoad]) -> None:
    """The agents' names, from ``agents``: one read per 500 agents."""
    ids = sorted(a for a in agents if a != NO_AGENT)
    table = Agent.__table__
    with store.read_session() as session:
        for start in range(0, len(ids), 500):
            for agent_id, name in session.execute(
                select(table.c.agent_id, table.c.name).where(
                    among(session, table.c.agent_id, ids[start : start + 500])
                )
            ):
                agents[agent_id].name = name


# -- output --------------------------------------------------------------------------------


def table_rows(fc: Forecast) -> tuple[list[str], list[list[Any]]]:
    reasons = fc.reasons_used()
    header = ["day", "rule / campaign", "candidates", "send", *reasons]
    body: list[list[Any]] = [
        [
            r.day.isoformat(),
            r.rule_id + (" (campaign)" if r.kind == "campaign" else ""),
            r.candidates,
            r.send,
            *[r.suppressed.get(x, 0) for x in reasons],
        ]
        for r in fc.rows
    ]
    for rule_id in fc.rule_ids():
        body.append(
            [
                "total",
                rule_id,
                fc.total("candidates", rule_id=rule_id),
                fc.total("send", rule_id=rule_id),
                *[
                    sum(r.suppressed.get(x, 0) for r in fc.rows if r.rule_id == rule_id)
                    for x in reasons
                ],
            ]
        )
    return header, body


def sms_rows(fc: Forecast) -> tuple[list[str], list[list[Any]]]:
    """The table of SMS per day: how many, their segments, their estimated cost (a column
    only when the policy prices a segment), and a total line."""
    priced = fc.pricing is not None
    header = ["day", "sms", "segments"] + (
        [f"est. cost ({fc.pricing.currency})"] if fc.pricing is not None else []
    )
    days = fc.sms_days()
    body: list[list[Any]] = [
        [d.day.isoformat(), d.sms, d.segments] + ([_money(d.cost)] if priced else []) for d in days
    ]
    total_cost = sum((d.cost for d in days if d.cost is not None), Decimal(0))
    body.append(
        ["total", sum(d.sms for d in days), sum(d.segments for d in days)]
        + ([_money(total_cost)] if priced else [])
    )
    return header, body


def _money(value: Decimal | None) -> str:
    return "" if value is None else f"{value.normalize():f}"


def tier_rows(fc: Forecast) -> tuple[list[str], list[list[Any]]]:
    """The table of messages and tasks by tier and service level."""
    header = ["tier", "level", "messages", "to send", "tasks", "to assign"]
    body: list[list[Any]] = [
        [t.tier, t.level or "none", t.messages, t.messages_send, t.tasks, t.tasks_assign]
        for t in fc.tiers
    ]
    return header, body


def agent_rows(fc: Forecast) -> tuple[list[str], list[list[Any]]]:
    """The table of tasks per agent, the heaviest load first; no agent last."""
    header = ["agent", "tasks", "to assign", *TASK_KINDS]
    body: list[list[Any]] = [
        [a.label, a.tasks, a.assign, *[a.by_kind.get(k, 0) for k in TASK_KINDS]] for a in fc.agents
    ]
    return header, body


# ``care forecast --format csv --by``: one table per CSV.
CSV_TABLES = ("rule", "tier", "agent", "sms")


def to_csv(fc: Forecast, by: str = "rule") -> str:
    """One of the forecast's tables as CSV: by day and rule (``rule``), by tier and level
    (``tier``), tasks per agent (``agent``), or SMS segments and cost per day (``sms``)."""
    out = io.StringIO()
    if by == "sms":
        fields = ["day", "sms", "segments", "est_cost", "currency"]
        rows = [
            {
                "day": d.day.isoformat(),
                "sms": d.sms,
                "segments": d.segments,
                "est_cost": _money(d.cost),
                "currency": fc.pricing.currency if fc.pricing is not None else "",
            }
            for d in fc.sms_days()
        ]
    elif by == "tier":
        fields = list(TierForecast("", None).as_dict())
        rows = [t.as_dict() for t in fc.tiers]
    elif by == "agent":
        fields = list(AgentLoad(NO_AGENT).as_dict())
        rows = [a.as_dict() for a in fc.agents]
    else:
        fields = [
            "day",
            "rule_id",
            "kind",
            "candidates",
            "send",
            "suppressed",
            *REASONS,
            "sms",
            "sms_segments",
        ]
        rows = [r.as_dict() for r in fc.rows]
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


# Colours that stay apart for the usual colour-vision deficiencies (Okabe-Ito), then tab20.
_PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999933"]
_REASON_COLOURS = {
    "frequency_cap": "#D55E00",
    "deferred": "#E69F00",
    "no_contact": "#999999",
    "opted_out": "#555555",
    "blackout": "#CC79A7",
    "capacity": "#0072B2",
    "already_sent": "#BBBBBB",
    "quiet_hours": "#56B4E9",
    "too_late": "#000000",
}


def to_png(fc: Forecast, title: str | None = None) -> bytes:
    """A stacked bar chart: sends per day by rule/campaign above, suppressions by reason below."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    dates = fc.dates
    rule_ids = fc.rule_ids()
    reasons = fc.reasons_used()
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(max(8.0, min(20.0, 0.18 * len(dates) + 6)), 7.5), sharex=True
    )
    x = list(range(len(dates)))
    base = [0] * len(dates)
    for i, rule_id in enumerate(rule_ids):
        values = [fc.total("send", rule_id=rule_id, day=d) for d in dates]
        kind = next(r.kind for r in fc.rows if r.rule_id == rule_id)
        top.bar(
            x,
            values,
            bottom=base,
            label=rule_id + (" (campaign)" if kind == "campaign" else ""),
            color=_PALETTE[i % len(_PALETTE)],
            hatch="//" if kind == "campaign" else None,
            edgecolor="white",
            linewidth=0.3,
        )
        base = [b + v for b, v in zip(base, values, strict=True)]
    top.set_ylabel("touches to send")
    top.set_title(
        title or f"Care touches forecast, {dates[0]} to {dates[-1]} (customer-local dates)",
        fontsize=12,
    )
    if rule_ids:
        top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    base = [0] * len(dates)
    for reason in reasons:
        values = [sum(r.suppressed.get(reason, 0) for r in fc.rows if r.day == d) for d in dates]
        bottom.bar(
            x,
            values,
            bottom=base,
            label=reason,
            color=_REASON_COLOURS.get(reason, "#777777"),
            edgecolor="white",
            linewidth=0.3,
        )
        base = [b + v for b, v in zip(base, values, strict=True)]
    bottom.set_ylabel("suppressed, by reason")
    if reasons:
        bottom.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    step = max(1, len(dates) // 15)
    bottom.set_xticks(x[::step])
    bottom.set_xticklabels([d.strftime("%m-%d") for d in dates[::step]], rotation=45, fontsize=8)
    from matplotlib.ticker import FuncFormatter

    for ax in (top, bottom):
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
        ax.grid(axis="y", alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def to_html(fc: Forecast) -> str:
    """A self-contained page: the chart (embedded PNG) and the table."""
    png = base64.b64encode(to_png(fc)).decode("ascii")
    header, body = table_rows(fc)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join(
        "<tr"
        + (' class="total"' if row[0] == "total" else "")
        + ">"
        + "".join(f"<td>{html.escape(str(c))}</td>" for c in row)
        + "</tr>\n"
        for row in body
    )
    service = "".join(
        f'<h2>{title}</h2>\n<table id="{key}">\n' + _html_table(*table) + "</table>\n"
        for key, title, table in (
            ("by-tier", "By tier and service level", tier_rows(fc)),
            ("by-agent", "Tasks per agent", agent_rows(fc)),
            *((("sms-per-day", "SMS segments per day", sms_rows(fc)),) if fc.sms_counted else ()),
        )
    )
    last = fc.first + dt.timedelta(days=fc.days - 1)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Care touches forecast {fc.first} to {last}</title>
<style>
body {{ font-family: Arial, Helvetica, sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ border: 1px solid #ddd; padding: 3px 8px; text-align: right; }}
th:nth-child(-n+2), td:nth-child(-n+2) {{ text-align: left; }}
tr.total td {{ font-weight: bold; background: #f4f6f8; }}
img {{ max-width: 100%; }}
</style>
</head>
<body>
<h1>Care touches forecast</h1>
<p>{fc.first} to {last} (customer-local dates): <strong id="total-send">{fc.total("send")}</strong>
touches to send, <strong id="total-suppressed">{sum(r.suppressed_total for r in fc.rows)}</strong>
suppressed, of <strong id="total-candidates">{fc.total("candidates")}</strong> candidates.
Each day is planned as <code>care plan</code> would plan it today, against the ledger as it is.</p>
<img alt="forecast chart" src="data:image/png;base64,{png}">
<table>
<thead><tr>{head}</tr></thead>
<tbody>
{rows}</tbody>
</table>
{service}</body>
</html>
"""


def _html_table(header: list[str], body: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>\n" for row in body
    )
    return f"<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}</tbody>\n"
