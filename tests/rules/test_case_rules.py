"""``trigger.until`` (only while the case is open) and ``task.assignee`` (the agent, or the
agent's manager): parsed into the rule, and every mistake an error at its file:line:col."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from caretouch.render.templates import TemplateStore
from caretouch.rules.loader import RuleSet, load_rules
from caretouch.vocab import TaskAssignee
from conftest import RULES_DIR, TEMPLATES_DIR

ESCALATION = """\
version: 1
rules:
  - id: escalation
    description: The manager takes over a complaint still open.
    trigger:
      kind: event
      type: complaint_received
      delay_days: 5
      until: [complaint_resolved, complaint_closed]
    channels: [agent_task]
    task:
      kind: call
      brief: complaint_escalation
      assignee: manager
    category: service
    priority: 90
"""


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    d = tmp_path / "rules"
    d.mkdir()
    shutil.copy(RULES_DIR / "policy.yaml", d / "policy.yaml")
    shutil.copy(RULES_DIR / "events.yaml", d / "events.yaml")
    return d


def load(rules_dir: Path, text: str) -> RuleSet:
    (rules_dir / "r.yaml").write_text(text, encoding="utf-8")
    return load_rules(rules_dir, TemplateStore(TEMPLATES_DIR))


def errors_of(rules_dir: Path, text: str) -> list[str]:
    path = str(rules_dir / "r.yaml")
    return [str(e).replace(path, "r.yaml") for e in load(rules_dir, text).errors]


def test_until_and_the_managers_task_are_parsed(rules_dir: Path) -> None:
    ruleset = load(rules_dir, ESCALATION)
    assert ruleset.errors == []
    rule = ruleset.by_id("escalation")
    assert rule.trigger.until == ("complaint_resolved", "complaint_closed")
    assert rule.task is not None and rule.task.assignee is TaskAssignee.MANAGER


def test_without_them_a_rule_waits_for_nothing_and_tasks_go_to_the_agent(rules_dir: Path) -> None:
    text = ESCALATION.replace("      until: [complaint_resolved, complaint_closed]\n", "")
    rule = load(rules_dir, text.replace("      assignee: manager\n", "")).by_id("escalation")
    assert rule.trigger.until == ()
    assert rule.task is not None and rule.task.assignee is TaskAssignee.AGENT


def test_the_shipped_escalation_waits_for_the_case_and_goes_to_the_manager(
    shipped_rules,
) -> None:
    rule = shipped_rules.by_id("complaint-escalation")
    assert rule.trigger.event_type == "complaint_received"
    assert rule.trigger.delay_days == 5
    assert set(rule.trigger.until) == {"complaint_resolved", "complaint_closed"}
    assert rule.task is not None and rule.task.assignee is TaskAssignee.MANAGER
    call_back = shipped_rules.by_id("complaint-call-back")
    assert call_back.task is not None
    assert (call_back.task.expires_days, call_back.task.assignee) == (3, TaskAssignee.AGENT)
    for rule_id in ("complaint-acknowledge", "complaint-call-back", "complaint-escalation"):
        # Service obligations: deferred within their window, never dropped by a cap.
        assert shipped_rules.by_id(rule_id).obligation
        assert shipped_rules.by_id(rule_id).defer_days > 0


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "until: [complaint_resolved, complaint_closed]",
            "until: [complaint_resolved, complaint_closd]",
            "r.yaml:9:35: unknown event type 'complaint_closd' (did you mean 'complaint_closed'?)",
        ),
        (
            "until: [complaint_resolved, complaint_closed]",
            "until: [complaint_resolved, premium_paid]",
            "r.yaml:9:35: until: premium_paid declares no payload case_id in ",
        ),
        (
            "type: complaint_received",
            "type: policy_purchased",
            "r.yaml:9:14: until: matches events on payload case_id, which policy_purchased does "
            "not declare",
        ),
        (
            "until: [complaint_resolved, complaint_closed]",
            "until: []",
            "r.yaml:9:14: [] should be non-empty",
        ),
        (
            "assignee: manager",
            "assignee: boss",
            "r.yaml:14:17: 'boss' is not one of agent, manager",
        ),
    ],
)
def test_mistakes_are_errors_at_their_place(
    rules_dir: Path, old: str, new: str, expected: str
) -> None:
    assert old in ESCALATION
    errors = errors_of(rules_dir, ESCALATION.replace(old, new))
    assert any(e.startswith(expected) for e in errors), errors


def test_until_is_for_event_triggers_only(rules_dir: Path) -> None:
    text = """\
version: 1
rules:
  - id: birthday-until
    description: A birthday that waits for a case.
    trigger:
      kind: anniversary
      field: customer.birth_date
      until: [complaint_closed]
    channels: [sms]
    template: birthday
    category: care
    priority: 30
"""
    errors = errors_of(rules_dir, text)
    assert any(e.startswith("r.yaml:8:7: unknown field 'until'") for e in errors), errors
