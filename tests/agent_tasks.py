"""What the tests of tasks for agents share: a rule with the ``agent_task`` channel, its
brief, and agents in the store."""

from __future__ import annotations

import shutil
from pathlib import Path

from caretouch.store.db import Store
from caretouch.store.models import Agent
from conftest import RULES_DIR, TEMPLATES_DIR

BRIEF = {
    "zh-CN": "给{{ customer.name }}打电话，祝生日快乐（{{ occurrence }}）。",
    "zh-TW": "給{{ customer.name }}打電話，祝生日快樂（{{ occurrence }}）。",
    "en": "Call {{ customer.name }} to wish a happy birthday ({{ occurrence }}).",
}


def task_rule(kind: str = "call", channels: str = "[agent_task]", extra: str = "") -> str:
    return f"""version: 1
rules:
  - id: birthday-task
    description: The agent greets the customer on their birthday.
    trigger:
      kind: anniversary
      field: customer.birth_date
    channels: {channels}
    task:
      kind: {kind}
      brief: birthday_brief
    category: care
    priority: 30
{extra}"""


def task_dirs(tmp_path: Path, rule_text: str) -> tuple[Path, Path]:
    """A rules directory with the contact policy, the event types and ``rule_text``, and the
    shipped templates plus the brief ``birthday_brief``."""
    rules = tmp_path / "rules"
    rules.mkdir()
    for name in ("policy.yaml", "events.yaml"):
        shutil.copy(RULES_DIR / name, rules / name)
    (rules / "task.yaml").write_text(rule_text, encoding="utf-8")
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, templates)
    (templates / "birthday_brief").mkdir()
    for locale, text in BRIEF.items():
        (templates / "birthday_brief" / f"agent_task.{locale}.txt").write_text(
            text, encoding="utf-8"
        )
    return rules, templates


def add_agents(store: Store, *agent_ids: str) -> None:
    with store.session() as session:
        for agent_id in agent_ids:
            session.add(
                Agent(
                    agent_id=agent_id, name="李娜", phone="+8613900000001", timezone="Asia/Shanghai"
                )
            )
