"""The service report's charts: matplotlib (Agg) drawings of its figures, as base64 PNG."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .figures import SENT_LIKE, Figures, Period

if TYPE_CHECKING:
    from .loops import Loops

_STATUS_GROUPS = (
    ("sent", SENT_LIKE, "#0072B2"),
    ("waiting", ("planned", "sending"), "#56B4E9"),
    ("suppressed", ("suppressed",), "#BBBBBB"),
    ("failed", ("failed",), "#D55E00"),
    ("unknown", ("unknown",), "#E69F00"),
)


@dataclass(frozen=True)
class Charts:
    """The report's four charts, each a base64 PNG for a ``data:`` URL."""

    by_rule: str
    by_channel: str
    by_tier: str
    daily: str


def draw_charts(now: Figures, before: Figures, period: Period, word: str) -> Charts:
    """The charts of a period's figures (``before``: the previous period, for the daily line)."""
    return Charts(
        by_rule=chart(
            lambda ax: _stacked(ax, now, "rule_id", True),
            height=max(2.5, 0.45 * len(now.values("rule_id")) + 1),
        ),
        by_channel=chart(lambda ax: _stacked(ax, now, "channel", False), width=4.2),
        by_tier=chart(lambda ax: _stacked(ax, now, "tier", False), width=4.2),
        daily=chart(lambda ax: _per_day(ax, now, before, period, word), width=9.0),
    )


def chart(draw: Callable[[Any], None], width: float = 7.0, height: float = 3.2) -> str:
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


def _per_day(ax: Any, now: Figures, before: Figures, period: Period, word: str) -> None:
    days = period.days
    ax.bar(
        [d.strftime("%m-%d") for d in days],
        [now.sent_per_day.get(d, 0) for d in days],
        color="#0072B2",
        label=f"this {word}",
    )
    ax.plot(
        [d.strftime("%m-%d") for d in days],
        [before.sent_per_day.get(d - (period.first - before.period.first), 0) for d in days],
        color="#E69F00",
        marker="o",
        markersize=3,
        label=f"previous {word} (same position)",
    )
    ax.legend(fontsize=8, frameon=False)
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    if len(days) > 40:  # a quarter: one label a week
        for n, label in enumerate(ax.get_xticklabels()):
            label.set_visible(n % 7 == 0)
    ax.set_ylabel("sent")


@dataclass(frozen=True)
class LoopCharts:
    """The closed loops' charts: complaint timeliness, tasks per agent (base64 PNG)."""

    complaints: str
    agents: str


_TASK_GROUPS = (
    ("done", "#009E73"),
    ("no_answer", "#E69F00"),
    ("declined", "#CC79A7"),
    ("expired", "#D55E00"),
    ("open", "#56B4E9"),
)


def draw_loop_charts(loops: Loops) -> LoopCharts:
    return LoopCharts(
        complaints=chart(lambda ax: _timeliness(ax, loops), width=6.0, height=2.6),
        agents=chart(lambda ax: _agents(ax, loops), height=max(2.5, 0.4 * len(loops.agents) + 1.2)),
    )


def _timeliness(ax: Any, loops: Loops) -> None:
    c = loops.complaints
    measures = [
        ("acknowledged", c.acknowledged),
        ("called back in time", c.called_back),
        ("second follow-up", c.followed_up),
    ]
    names = [m for m, _ in measures]
    kept = [t.kept for _, t in measures]
    ax.barh(names, [t.owed for _, t in measures], color="#BBBBBB", label="owed")
    ax.barh(names, kept, color="#0072B2", label="kept")
    ax.invert_yaxis()
    ax.legend(fontsize=8, frameon=False)
    ax.set_xlabel("complaints")
    _whole_numbers(ax)


def _agents(ax: Any, loops: Loops) -> None:
    names = [a.agent_id for a in loops.agents]
    base = [0] * len(names)
    for group, colour in _TASK_GROUPS:
        values = [a.counts[group] for a in loops.agents]
        if not any(values):
            continue
        ax.barh(names, values, left=base, label=group, color=colour)
        base = [b + v for b, v in zip(base, values, strict=True)]
    if any(base):
        ax.legend(fontsize=8, frameon=False)
    ax.invert_yaxis()
    ax.set_xlabel("tasks due in the period")
    _whole_numbers(ax)


def _whole_numbers(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
