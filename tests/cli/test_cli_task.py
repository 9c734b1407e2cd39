"""``care task list`` and ``care task done`` on a day whose agent_task rule assigned tasks."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from agent_tasks import add_agents, task_dirs, task_rule

from caretouch.schema.migrate import upgrade
from caretouch.store.db import open_store
from conftest import Care, customer_row, load_rows


@pytest.fixture
def tasked(tmp_path: Path) -> Care:
    """A store whose 2026-11-23 run assigned two call tasks (agents A1 and A2); a third
    customer had no phone consent."""
    rules, templates = task_dirs(tmp_path, task_rule("call"))
    care = Care(tmp_path, rules=rules, templates=templates)
    store = open_store(care.store_url)
    upgrade(store)
    add_agents(store, "A1", "A2")
    load_rows(
        store,
        customers=[
            customer_row("C1", agent_id="A1"),
            customer_row("C2", agent_id="A2", phone="+8613912345678"),
            customer_row("C3", agent_id="A1", consent_sms="false"),
        ],
    )
    store.dispose()
    result = care("run", "--date", "2026-11-23", "--now", "2026-11-23T12:00:00Z")
    assert result.exit_code == 0, result.output
    assert "assigned 2" in result.output
    return care


def test_list_formats(tasked: Care) -> None:
    table = tasked("task", "list", "--date", "2026-11-24")
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert lines[0].split()[:6] == ["TASK", "DUE", "KIND", "AGENT", "CUSTOMER", "PHONE"]
    assert "2026-11-23 !" in lines[1] and "A1" in lines[1] and "+86 138****8000" in lines[1]
    assert lines[-1] == "2 open task(s), 2 overdue (!)"
    assert "+8613812348000" not in table.output

    rows = json.loads(tasked("task", "list", "--agent", "A2", "--format", "json").output)
    assert [(r["customer_id"], r["kind"], r["status"]) for r in rows] == [
        ("C2", "call", "assigned")
    ]
    assert rows[0]["phone"] == "+86 139****5678"
    assert rows[0]["brief"] == "给王芳打电话，祝生日快乐（2026-11-23）。"

    out = tasked("task", "list", "--format", "csv", "--date", "2026-11-23").output
    parsed = list(csv.DictReader(io.StringIO(out)))
    assert [r["agent_id"] for r in parsed] == ["A1", "A2"]
    assert parsed[0]["phone"].startswith("'+86")  # a would-be formula, neutralised
    assert parsed[0]["overdue"] == "False"

    empty = tasked("task", "list", "--due-before", "2026-11-23")
    assert empty.exit_code == 0 and "no open task" in empty.output
    bad = tasked("task", "list", "--due-before", "tomorrow")
    assert bad.exit_code == 2 and "--due-before" in bad.output


def test_done_records_once_and_the_ledger_verifies(tasked: Care) -> None:
    [first, _] = json.loads(tasked("task", "list", "--format", "json").output)
    done = tasked(
        "task",
        "done",
        str(first["task"]),
        "--outcome",
        "reached",
        "--satisfaction",
        "4",
        "--note",
        "all well",
        "--by",
        "agent:A1",
    )
    assert done.exit_code == 0, done.output
    assert done.output.strip() == f"task {first['task']} (call, customer C1): done"
    again = tasked("task", "done", first["touch_key"], "--outcome", "no_answer")
    assert again.exit_code == 2
    assert "is done, not open; nothing was recorded" in again.output
    unknown = tasked("task", "done", "424242", "--outcome", "reached")
    assert unknown.exit_code == 2 and "no task '424242'" in unknown.output
    bad = tasked("task", "done", str(first["task"]), "--outcome", "maybe")
    assert bad.exit_code == 2
    left = json.loads(tasked("task", "list", "--format", "json").output)
    assert [r["customer_id"] for r in left] == ["C2"]
    verified = tasked("audit", "verify")
    assert verified.exit_code == 0 and "ledger verifies" in verified.output
    history = tasked("audit", "show", first["touch_key"])
    assert history.exit_code == 0, history.output
    assert "done" in history.output and "agent:A1" in history.output
    # The audit view lists the task like a message: assigned to the agent (an id, in clear),
    # then the outcome with who recorded it and the satisfaction.
    assert "attempt 1: agent_task via agent_task to A1 at " in history.output
    assert '"outcome": "reached", "satisfaction": 4' in history.output
