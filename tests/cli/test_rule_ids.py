"""Every command that takes a rule id refuses an unknown one the same way: exit 2 (a usage
error) with a did-you-mean, instead of an empty plan with exit 0 here and an error there."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from caretouch.schema.migrate import upgrade
from caretouch.store.db import open_store
from conftest import RULES_DIR, Care, customer_row, load_rows

DAY = "2026-11-23"
COMMANDS = {
    "plan": ("plan", "--date", DAY, "--rule", "{id}"),
    "plan-json": (
        "plan",
        "--date",
        DAY,
        "--format",
        "json",
        "--rule",
        "birthday",
        "--rule",
        "{id}",
    ),
    "forecast": ("forecast", "--from", DAY, "--days", "1", "--rule", "{id}"),
    "preview": ("preview", "{id}", "--customer", "C1", "--date", DAY),
    "audit-list": ("audit", "list", "--rule", "{id}"),
    "audit-export": ("audit", "export", "--rule", "{id}"),
}


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    store = open_store(f"sqlite:///{tmp_path / 'care.db'}")
    upgrade(store)
    load_rows(store, customers=[customer_row("C1")])
    store.dispose()
    return tmp_path


def command(name: str, rule_id: str) -> list[str]:
    return [part.format(id=rule_id) for part in COMMANDS[name]]


@pytest.mark.parametrize("name", COMMANDS)
@pytest.mark.parametrize(
    ("rule_id", "hint"),
    [("birthdy", " (did you mean 'birthday'?)"), ("nope", "")],
)
def test_an_unknown_rule_id_is_a_usage_error_everywhere(
    care: Care, filled: Path, name: str, rule_id: str, hint: str
) -> None:
    result = care(*command(name, rule_id))
    assert result.exit_code == 2, result.output
    assert f"unknown rule or campaign {rule_id!r}{hint}; known: annual-review, birthday," in (
        result.output
    )


@pytest.mark.parametrize("name", COMMANDS)
def test_a_known_rule_id_is_accepted_everywhere(care: Care, filled: Path, name: str) -> None:
    result = care(*command(name, "birthday"))
    assert result.exit_code == 0, result.output


def test_a_rule_that_failed_validation_is_invalid_input(
    care: Care, filled: Path, tmp_path: Path
) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    path = rules / "birthday.yaml"
    path.write_text(path.read_text("utf-8").replace("priority: 30", "priority: high"), "utf-8")
    for name in ("plan", "forecast", "preview"):
        result = care(*command(name, "birthday"), rules=rules)
        assert result.exit_code == 1, (name, result.output)
        assert "rule 'birthday' has errors and was left out" in result.output


def test_audit_knows_the_rules_of_the_ledger_too(care: Care, filled: Path, tmp_path: Path) -> None:
    # A rule renamed since it sent: the auditor can still ask about its touches.
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    path = rules / "birthday.yaml"
    path.write_text(path.read_text("utf-8").replace("id: birthday", "id: old-birthday"), "utf-8")
    run = care("run", "--date", DAY, "--now", "2026-11-23T04:00:00Z", rules=rules)
    assert run.exit_code == 0, run.output
    result = care("audit", "list", "--rule", "old-birthday")
    assert result.exit_code == 0, result.output
    assert "1 touch(es)" in result.output
