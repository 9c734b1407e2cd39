"""The run summary's tables show tasks by their own statuses (assigned, done, ...), not only
in the total."""

from __future__ import annotations

import datetime as dt

from caretouch.reports.day_summary import DaySummary


def _row(rule: str, channel: str | None, tier: str, status: str) -> dict[str, object]:
    return {"rule_id": rule, "channel": channel, "tier": tier, "status": status, "reason": None}


def test_task_statuses_have_their_columns() -> None:
    summary = DaySummary(
        dt.date(2026, 12, 6),
        [
            _row("check-in", "agent_task", "A", "assigned"),
            _row("check-in", "agent_task", "A", "done"),
            _row("birthday", "sms", "C", "sent"),
        ],
    )
    lines = summary.render().splitlines()
    header = next(line for line in lines if line.startswith("rule "))
    assert header.split() == ["rule", "sent", "assigned", "done", "total"]
    check_in = next(line for line in lines if line.startswith("check-in "))
    assert check_in.split() == ["check-in", "0", "1", "1", "2"]
    channel = next(line for line in lines if line.startswith("agent_task "))
    assert channel.split() == ["agent_task", "0", "1", "1", "2"]


def test_without_tasks_the_columns_are_as_before() -> None:
    summary = DaySummary(dt.date(2026, 12, 6), [_row("birthday", "sms", "C", "sent")])
    header = next(line for line in summary.render().splitlines() if line.startswith("rule "))
    assert header.split() == ["rule", "sent", "total"]
