"""The run summary operators read: counts by rule, channel, tier, status and reason, from the
ledger."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..ledger import Ledger
from ..vocab import TouchStatus

# The status columns of the tables, in this order (those with no touch are left out).
STATUS_ORDER = (
    TouchStatus.SENT,
    TouchStatus.DELIVERED,
    TouchStatus.ASSIGNED,  # a task given to the customer's agent, then how it ended:
    TouchStatus.DONE,
    TouchStatus.NO_ANSWER,
    TouchStatus.DECLINED,
    TouchStatus.EXPIRED,
    TouchStatus.PLANNED,
    TouchStatus.SENDING,
    TouchStatus.SUPPRESSED,
    TouchStatus.FAILED,
    TouchStatus.UNKNOWN,
)


@dataclass
class DaySummary:
    day: dt.date
    rows: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_ledger(cls, ledger: Ledger, day: dt.date) -> DaySummary:
        return cls(day, ledger.counts_for_day(day))

    @property
    def total(self) -> int:
        return len(self.rows)

    def count(self, **match: Any) -> int:
        """Rows matching every ``key=value`` (a status as a ``TouchStatus``: rows hold its
        word, which the member equals)."""
        return sum(1 for r in self.rows if all(r.get(k) == v for k, v in match.items()))

    def by(self, *keys: str) -> Counter[tuple[Any, ...]]:
        return Counter(tuple(r.get(k) for k in keys) for r in self.rows)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able form (for XCom, ``--format json`` and stored reports)."""
        return {
            "day": self.day.isoformat(),
            "total": self.total,
            "by_rule_status": [
                {"rule_id": k[0], "status": k[1], "count": n}
                for k, n in sorted(self.by("rule_id", "status").items(), key=str)
            ],
            "by_channel_status": [
                {"channel": k[0], "status": k[1], "count": n}
                for k, n in sorted(self.by("channel", "status").items(), key=str)
            ],
            "by_reason": [
                {"reason": k[0], "count": n}
                for k, n in sorted(self.by("reason").items(), key=str)
                if k[0] is not None
            ],
            "by_tier_status": [
                {"tier": k[0], "status": k[1], "count": n}
                for k, n in sorted(self.by("tier", "status").items(), key=str)
            ],
            "by_status_reason": [
                {"status": k[0], "reason": k[1], "count": n}
                for k, n in sorted(self.by("status", "reason").items(), key=str)
            ],
        }

    def render(self) -> str:
        """A plain-text report for a terminal or a task log."""
        statuses = [s for s in STATUS_ORDER if self.count(status=s)] or [TouchStatus.SENT]
        lines = [
            f"Care touches for local date {self.day.isoformat()}: {self.total} in the ledger",
            "",
        ]
        lines += text_table(
            ["rule", *statuses, "total"],
            [
                [
                    rule,
                    *[self.count(rule_id=rule, status=s) for s in statuses],
                    self.count(rule_id=rule),
                ]
                for rule in sorted({r["rule_id"] for r in self.rows})
            ],
        )
        lines.append("")
        channels = sorted({r["channel"] or "-" for r in self.rows})
        lines += text_table(
            ["channel", *statuses, "total"],
            [
                [
                    ch,
                    *[self.count(channel=None if ch == "-" else ch, status=s) for s in statuses],
                    self.count(channel=None if ch == "-" else ch),
                ]
                for ch in channels
            ],
        )
        lines.append("")
        lines += text_table(
            ["tier", *statuses, "total"],
            [
                [
                    tier,
                    *[self.count(tier=tier, status=s) for s in statuses],
                    self.count(tier=tier),
                ]
                for tier in sorted({r.get("tier") or "-" for r in self.rows})
            ],
        )
        reasons = self.by("status", "reason")
        if any(k[1] for k in reasons):
            lines.append("")
            lines += text_table(
                ["status", "reason", "count"],
                [[k[0], k[1], n] for k, n in sorted(reasons.items(), key=str) if k[1]],
            )
        waiting = self.count(status=TouchStatus.PLANNED)
        if waiting:
            lines += [
                "",
                f"{waiting} touch(es) wait for their send time or the end of quiet hours in the "
                "customer's zone; care_dispatch (or the next `care run`) sends them.",
            ]
        return "\n".join(lines)


def text_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """Lines of a plain-text table: first column left-aligned, the others right-aligned."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    out = []
    for n, row in enumerate(cells):
        out.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return out
