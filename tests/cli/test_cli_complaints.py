"""The complaint lifecycle at the command line: a lifecycle event without its case number is
dead-lettered with file, line and reason (the others go on), and the escalation is in the
manager's ``care task list``."""

from __future__ import annotations

import json

import pytest

from caretouch.ledger import Ledger
from caretouch.schema.migrate import upgrade
from caretouch.store.db import open_store
from caretouch.vocab import TouchStatus
from conftest import Care, customer_row, insert_agents_and_relations, load_rows


@pytest.fixture
def filled(care: Care) -> Care:
    store = open_store(care.store_url)
    upgrade(store)
    insert_agents_and_relations(
        store,
        agents=[
            {"agent_id": "A1", "name": "李娜", "manager_id": "M1"},
            {"agent_id": "M1", "name": "张伟"},
        ],
    )
    load_rows(store, customers=[customer_row("C1", agent_id="A1", birth_date="")])
    store.dispose()
    return care


def touch_keys(care: Care) -> list[str]:
    ledger = Ledger(open_store(care.store_url))
    return sorted(
        s.row.touch_key for s in ledger.states(ledger.touch_ids_in_status(set(TouchStatus)))
    )


def test_import_dead_letters_a_complaint_without_its_case_number(filled: Care) -> None:
    path = filled.home / "complaints.csv"
    path.write_text(
        "event_id,type,customer_id,occurred_at,payload\n"
        'K1,complaint_received,C1,2026-11-20T08:30:00+08:00,"{""case_id"": ""CS-1""}"\n'
        'K2,complaint_received,C1,2026-11-20T08:40:00+08:00,"{""category"": ""billing""}"\n'
        'K3,complaint_closed,C1,2026-11-20T08:20:00+08:00,"{""outcome"": ""withdrawn""}"\n',
        encoding="utf-8",
    )
    result = filled("event", "import", str(path), "--now", "2026-11-20T00:35:00Z")
    assert result.exit_code == 3, result.output
    for line, kind in ((3, "complaint_received"), (4, "complaint_closed")):
        assert f"{path}:{line}: payload field 'case_id' is required for {kind}" in result.output
    letters = [
        json.loads(line)
        for line in filled("event", "dead-letters", "--format", "json").output.splitlines()
    ]
    assert sorted(letter["event_id"] for letter in letters) == ["K2", "K3"]
    assert all("'case_id' is required" in letter["reason"] for letter in letters)
    # The good one went through: acknowledged, called back, escalated if still open.
    assert touch_keys(filled) == [
        "complaint-acknowledge|event:K1|2026-11-20",
        "complaint-call-back|event:K1|2026-11-20",
        "complaint-escalation|event:K1|2026-11-25",
    ]


def test_the_escalation_is_in_the_managers_task_list(filled: Care) -> None:
    emitted = filled(
        *("event", "emit", "--type", "complaint_received", "--customer", "C1", "--id", "K1"),
        *("--at", "2026-11-20T08:30:00+08:00", "--now", "2026-11-20T00:35:00Z"),
        *("--payload", '{"case_id": "CS-1", "category": "billing", "severity": "high"}'),
    )
    assert emitted.exit_code == 0, emitted.output
    run = filled("run", "--date", "2026-11-25", "--now", "2026-11-25T01:05:00Z")
    assert run.exit_code == 0, run.output
    assert "assigned 1" in run.output
    listed = filled("task", "list", "--agent", "M1", "--date", "2026-11-25", "--format", "json")
    [row] = json.loads(listed.output)
    assert (row["rule_id"], row["agent_id"], row["customer_id"], row["due"]) == (
        "complaint-escalation",
        "M1",
        "C1",
        "2026-11-25",
    )
    assert "CS-1" in row["brief"] and "high" in row["brief"]
    mine = filled("task", "list", "--agent", "A1", "--date", "2026-11-25", "--format", "json")
    assert json.loads(mine.output) == []  # the agent's list does not show their manager's


def test_preview_names_the_manager_an_escalation_goes_to(filled: Care) -> None:
    filled(
        *("event", "emit", "--type", "complaint_received", "--customer", "C1", "--id", "K1"),
        *("--at", "2026-11-20T08:30:00+08:00", "--now", "2026-11-20T00:35:00Z"),
        *("--payload", '{"case_id": "CS-1", "category": "billing", "severity": "high"}'),
    )
    shown = filled("preview", "complaint-escalation", "--customer", "C1", "--date", "2026-11-25")
    assert shown.exit_code == 0, shown.output
    assert "channel: agent_task, locale zh-CN, to manager M1 (of agent A1)" in shown.output
    called = filled("preview", "complaint-call-back", "--customer", "C1", "--date", "2026-11-20")
    assert "to agent A1" in called.output
