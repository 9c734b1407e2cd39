"""`care validate` refuses a template that prints ``None``: an empty optional value (an event's
optional payload field, a nullable column, a customer without an agent) printed as it is."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import TEMPLATES_DIR, Care


@pytest.mark.parametrize(
    ("path", "before", "after", "part"),
    [
        # reply_unsatisfied's score is optional (events.yaml): unguarded, the agent read "None".
        (
            "unsatisfied_call/agent_task.en.txt",
            "{% if p.get('score') is not none %}{{ p.get('score') }} out of 5{% else %}"
            "unsatisfied{% endif %}",
            "{{ p.get('score') }} out of 5",
            "text",
        ),
        # A nullable column in an email's subject line.
        (
            "renewal_reminder/email.en.subject.txt",
            "",
            " {{ customer.birth_date }}",
            "subject",
        ),
    ],
)
def test_a_printed_none_is_an_error(
    care: Care, tmp_path: Path, path: str, before: str, after: str, part: str
) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, templates)
    target = templates / path
    text = target.read_text(encoding="utf-8")
    changed = text.replace(before, after) if before else text.rstrip("\n") + after + "\n"
    assert changed != text
    target.write_text(changed, encoding="utf-8")
    result = care("validate", templates=templates)
    assert result.exit_code == 1
    assert f"the {part} prints 'None' with sample data (empty optional fields)" in result.output
    assert str(templates / path) in result.output
