"""``care forecast``: how many touches each rule and campaign would plan, send and suppress.

For each local date of a range, the forecast is exactly ``care plan`` of that date: every rule
and campaign planned together under the contact policy, with the ledger as history (touches
already handled, caps already used, deferred touches). Nothing is written.

Each day is forecast on its own, against the ledger as it is now: the touches the forecast
sends on day D are not in the ledger when day D+1 is forecast. A rolling 7-day cap can
therefore stop more touches in reality than the forecast of a later day shows; the first day
of a forecast is exact.
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
from typing import Any

from ..plan import plan_day
from ..plan.history import History
from ..rules.loader import RuleSet
from ..store.db import Store
from ..vocab import Decision, SuppressionReason

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
        }


@dataclass
class Forecast:
    first: dt.date
    days: int
    rows: list[DayForecast]

    @property
    def dates(self) -> list[dt.date]:
        return [self.first + dt.timedelta(days=n) for n in range(self.days)]

    def rule_ids(self) -> list[str]:
        return sorted({r.rule_id for r in self.rows})

    def total(self, attr: str, **match: Any) -> int:
        return sum(
            getattr(r, attr) for r in self.rows if all(getattr(r, k) == v for k, v in match.items())
        )

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
) -> Forecast:
    """Plan each local date of ``[first, first + days)`` without writing; count by rule."""
    wanted = set(rule_ids) if rule_ids is not None else None
    campaigns = {c.id for c in ruleset.campaigns}
    rows: list[DayForecast] = []
    for n in range(days):
        day = first + dt.timedelta(days=n)
        by_rule: dict[str, DayForecast] = {}
        for touch in plan_day(store, ruleset, day, rule_ids=wanted, history=history):
            rule_id = touch.rule.id
            row = by_rule.get(rule_id)
            if row is None:
                kind = "campaign" if rule_id in campaigns else "rule"
                row = by_rule[rule_id] = DayForecast(day, rule_id, kind)
            row.candidates += 1
            if touch.decision is Decision.SEND:
                row.send += 1
            elif touch.reason is not None:
                row.suppressed[touch.reason.value] += 1
        rows += [by_rule[k] for k in sorted(by_rule)]
        if progress is not None:
            progress(day)
    return Forecast(first, days, rows)


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


def to_csv(fc: Forecast) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(
        out,
        fieldnames=["day", "rule_id", "kind", "candidates", "send", "suppressed", *REASONS],
        lineterminator="\n",
    )
    writer.writeheader()
    for row in fc.rows:
        writer.writerow(row.as_dict())
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
</body>
</html>
"""
