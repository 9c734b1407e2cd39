"""The premium rules against the contact policy's grace period (``premiums.grace_days``):
`care validate` warns, with the rule's file:line, about a days_after premium_due_date offset
(plus its defer_days) beyond it; the setting is checked like the rest of policy.yaml."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from caretouch.cli import main
from caretouch.render import TemplateStore
from caretouch.rules.contact_policy import load_policy
from caretouch.rules.loader import load_rules
from conftest import RULES_DIR, TEMPLATES_DIR


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    d = tmp_path / "rules"
    shutil.copytree(RULES_DIR, d)
    return d


def with_grace(rules: Path, text: str) -> None:
    policy = rules / "policy.yaml"
    body = policy.read_text("utf-8")
    start = body.index("premiums:")
    policy.write_text(body[:start] + text, "utf-8")


def test_the_shipped_policy_gives_sixty_days_and_the_rules_fit() -> None:
    assert load_policy(RULES_DIR / "policy.yaml").grace_days == 60
    ruleset = load_rules(RULES_DIR, TemplateStore(TEMPLATES_DIR))
    assert not [w for w in ruleset.warnings if w.rule_id and w.rule_id.startswith("premium-")]


def test_no_setting_means_sixty_days(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\n", "utf-8")
    assert load_policy(path).grace_days == 60


def test_rules_beyond_a_shorter_grace_period_are_warned_about(rules: Path) -> None:
    with_grace(rules, "premiums:\n  grace_days: 48\n")
    ruleset = load_rules(rules, TemplateStore(TEMPLATES_DIR))
    assert ruleset.errors == []
    late = {w.rule_id: w for w in ruleset.warnings if w.rule_id}
    # The grace reminders' 50 (+3 deferred) and the lapse warning's 45 (+5) go beyond 48.
    assert set(late) == {"premium-grace-reminder", "premium-lapse-warning"}
    grace = late["premium-grace-reminder"]
    assert grace.location is not None and grace.location.file.endswith(
        "premium-grace-reminder.yaml"
    )
    assert grace.location.line is not None
    assert "offset(s) 50 (plus defer_days 3)" in grace.message
    assert "premiums.grace_days=48" in grace.message
    result = CliRunner().invoke(
        main, ["--rules", str(rules), "--templates", str(TEMPLATES_DIR), "validate"]
    )
    assert result.exit_code == 0, result.output
    assert f"warning: {grace.location}" in result.output


@pytest.mark.parametrize("value", ["-1", "sixty", "400"])
def test_a_grace_period_out_of_range_is_refused_with_its_line(rules: Path, value: str) -> None:
    with_grace(rules, f"premiums:\n  grace_days: {value}\n")
    ruleset = load_rules(rules, TemplateStore(TEMPLATES_DIR))
    assert ruleset.policy_errors
    error = ruleset.policy_errors[0]
    assert error.location is not None and error.location.file.endswith("policy.yaml")
    assert error.location.line is not None and error.location.line > 1
