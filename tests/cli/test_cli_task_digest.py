"""``care task digest``: the summary, the digests in the outbox, the exit status, and no
personal data in what it prints or logs."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest
from agent_tasks import task_dirs, task_rule

from caretouch.schema.migrate import upgrade
from caretouch.store.db import open_store
from conftest import Care, customer_row, insert_agents_and_relations, load_rows


@pytest.fixture
def tasked(tmp_path: Path) -> Care:
    """Call tasks assigned on 2026-11-20 to A1 (manager M1) and A2 (no email, no manager)."""
    rules, templates = task_dirs(tmp_path, task_rule("call"))
    care = Care(tmp_path, rules=rules, templates=templates)
    store = open_store(care.store_url)
    upgrade(store)
    insert_agents_and_relations(
        store,
        agents=[
            {"agent_id": "A1", "name": "李娜", "email": "li.na@agency.example", "manager_id": "M1"},
            {"agent_id": "A2", "name": "赵磊", "email": None},
            {"agent_id": "M1", "name": "陈经理", "email": "chen.mgr@agency.example"},
        ],
    )
    load_rows(
        store,
        customers=[
            customer_row("C1", agent_id="A1", birth_date="1980-11-20", name="李雷"),
            customer_row("C2", agent_id="A2", birth_date="1980-11-20", phone="+8613912345678"),
        ],
    )
    store.dispose()
    result = care("run", "--date", "2026-11-20", "--now", "2026-11-20T12:00:00Z")
    assert result.exit_code == 0, result.output
    return care


def outbox_mails(care: Care) -> list[dict[str, str]]:
    return [
        json.loads(p.read_text(encoding="utf-8"))
        for p in sorted(care.outbox.rglob("digest_*.json"))
    ]


def test_digest_summary_and_outbox(tasked: Care, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    dry = tasked("task", "digest", "--date", "2026-11-24", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would send 2" in dry.output and outbox_mails(tasked) == []

    result = tasked("task", "digest", "--date", "2026-11-24")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == (
        "digest 2026-11-24: 2 agent(s) with open tasks, 2 digest(s) due, sent 2, already sent 0"
    )
    assert lines[1] == "skipped (no email): 1 (A2)"
    assert lines[2] == ("escalations (overdue ≥ 3 day(s)): 1 to managers (1 new), 1 unescalated")
    assert re.fullmatch(
        r"  unescalated: task \d+ of agent A2, 4 day\(s\) overdue: the agent has no manager",
        lines[3],
    )
    assert lines[-1] == "failures: 0"
    assert sorted(m["to"] for m in outbox_mails(tasked)) == [
        "chen.mgr@agency.example",
        "li.na@agency.example",
    ]
    again = tasked("task", "digest", "--date", "2026-11-24")
    assert again.exit_code == 0 and "sent 0, already sent 2" in again.output
    assert len(outbox_mails(tasked)) == 2

    # Neither the output nor the logs name a customer, a phone or an address.
    said = result.output + again.output + dry.output + caplog.text
    for secret in ("李雷", "+8613912345678", "8613812348000", "li.na@", "chen.mgr@", "李娜"):
        assert secret not in said, secret


def test_the_escalation_threshold_is_a_setting(tasked: Care) -> None:
    result = tasked("task", "digest", "--date", "2026-11-24", env={"CARE_ESCALATE_AFTER_DAYS": "5"})
    assert result.exit_code == 0, result.output
    assert "escalations (overdue ≥ 5 day(s)): 0 to managers (0 new), 0 unescalated" in result.output
    assert [m["to"] for m in outbox_mails(tasked)] == ["li.na@agency.example"]


def test_a_failed_digest_exits_1_and_claims_nothing(tasked: Care, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tasked.templates, broken)
    (broken / "_agent_digest" / "email.zh-CN.subject.txt").write_text("{{ nope }}")
    result = tasked("task", "digest", "--date", "2026-11-24", templates=broken)
    assert result.exit_code == 1
    assert "failures: 2" in result.output and "cannot render" in result.output
    assert outbox_mails(tasked) == []
    fixed = tasked("task", "digest", "--date", "2026-11-24")
    assert fixed.exit_code == 0 and "sent 2" in fixed.output
