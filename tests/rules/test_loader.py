"""Rule validation: every error names file:line:col, with a did-you-mean where it helps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from caretouch.render.templates import TemplateStore
from caretouch.rules.loader import load_rules
from caretouch.rules.schema import POLICY_FILE_SCHEMA, RULE_FILE_SCHEMA
from conftest import RULES_DIR, TEMPLATES_DIR

GOOD = """\
version: 1
rules:
  - id: birthday-copy
    description: A copy of the birthday rule.
    trigger:
      kind: anniversary
      field: customer.birth_date
    audience:
      customer.status: active
    channels: [sms, email]
    template: birthday
    category: care
    priority: 30
"""


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    d = tmp_path / "rules"
    d.mkdir()
    shutil.copy(RULES_DIR / "policy.yaml", d / "policy.yaml")
    shutil.copy(RULES_DIR / "events.yaml", d / "events.yaml")
    return d


@pytest.fixture
def templates_dir(tmp_path: Path) -> Path:
    d = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, d)
    return d


def errors_for(rules_dir: Path, templates_dir: Path, text: str, name: str = "r.yaml") -> list[str]:
    (rules_dir / name).write_text(text, encoding="utf-8")
    ruleset = load_rules(rules_dir, TemplateStore(templates_dir))
    return [str(e) for e in ruleset.errors]


def test_shipped_rules_are_valid(shipped_rules) -> None:
    assert sorted(r.id for r in shipped_rules.rules if not shipped_rules.is_campaign(r.id)) == [
        "annual-review",
        "birthday",
        "check-in",
        "claim-settled",
        "complaint-acknowledge",
        "complaint-call-back",
        "complaint-escalation",
        "complaint-follow-up",
        "complaint-follow-up-call",
        "complaint-reopened-call-back",
        "customer-wrote",
        "holiday-greeting",
        "premium-due-reminder",
        "premium-festival-care",
        "premium-grace-reminder",
        "premium-lapse-warning",
        "renewal-reminder",
        "retention-call",
        "thank-you",
        "unsatisfied-call-back",
    ]
    assert shipped_rules.warnings == []


def test_published_schemas_are_current() -> None:
    published = json.loads((RULES_DIR / "rule.schema.json").read_text(encoding="utf-8"))
    assert published == RULE_FILE_SCHEMA, "run `care schema > care_rules/rule.schema.json`"
    policy = json.loads((RULES_DIR / "policy.schema.json").read_text(encoding="utf-8"))
    assert policy == POLICY_FILE_SCHEMA, (
        "run `care schema --policy > care_rules/policy.schema.json`"
    )


def test_good_rule_loads(rules_dir: Path, templates_dir: Path) -> None:
    assert errors_for(rules_dir, templates_dir, GOOD) == []


@pytest.mark.parametrize(("line", "expected"), [("", False), ("    resend_unknown: true\n", True)])
def test_resend_unknown_is_off_unless_the_rule_says(
    rules_dir: Path, templates_dir: Path, line: str, expected: bool
) -> None:
    (rules_dir / "r.yaml").write_text(GOOD + line, encoding="utf-8")
    ruleset = load_rules(rules_dir, TemplateStore(templates_dir))
    assert ruleset.errors == []
    assert ruleset.by_id("birthday-copy").resend_unknown is expected


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "    trigger:\n",
            "    triger:\n",
            "r.yaml:5:5: unknown field 'triger' (did you mean 'trigger'?)",
        ),
        (
            "category: care",
            "category: carre",
            "r.yaml:12:15: 'carre' is not one of service, care, marketing (did you mean 'care'?)",
        ),
        (
            "customer.status: active",
            "customer.statsu: active",
            "r.yaml:9:7: unknown field 'customer.statsu' (did you mean 'customer.status'?)",
        ),
        (
            "customer.status: active",
            "customer.status: actve",
            "r.yaml:9:24: customer.status: 'actve' is not one of active, inactive (did you mean 'active'?)",
        ),
        (
            "template: birthday",
            "template: birthdy",
            "r.yaml:11:15: unknown template 'birthdy' (did you mean 'birthday'?)",
        ),
        (
            "priority: 30",
            "priority: high",
            "r.yaml:13:15: priority must be a whole number, got a string 'high'",
        ),
        (
            "field: customer.birth_date",
            "field: customer.birthdate",
            "r.yaml:7:14: 'customer.birthdate' is not one of customer.birth_date, policy.start_date, relation.birth_date (did you mean 'customer.birth_date'?)",
        ),
        (
            "customer.status: active",
            "policy.status: active",
            "r.yaml:9:7: policy.status: policy fields are not available to this rule",
        ),
        (
            "customer.status: active",
            "customer.tier: {inn: [A]}",
            "r.yaml:9:23: unknown operator 'inn' (did you mean 'in'?)",
        ),
        (
            "    priority: 30\n",
            '    priority: 30\n    send_time: "22:30"\n',
            "r.yaml:14:16: send_time 22:30 is inside the quiet hours 21:00-08:00",
        ),
        (
            "    priority: 30\n",
            "    priority: 30\n    send_time: 9:00\n",
            "r.yaml:14:16: '9:00' has the wrong form (a time of day like \"09:00\", in quotes)",
        ),
        (
            "    channels: [sms, email]\n",
            "    channels: [sms, fax]\n",
            "r.yaml:10:21: 'fax' is not one of sms, email",
        ),
        (
            "    description: A copy of the birthday rule.\n",
            "",
            "r.yaml:3:5: missing required field 'description'",
        ),
    ],
)
def test_errors_name_file_line_col(
    rules_dir: Path, templates_dir: Path, old: str, new: str, expected: str
) -> None:
    assert old in GOOD
    errors = errors_for(rules_dir, templates_dir, GOOD.replace(old, new))
    path = str(rules_dir / "r.yaml")
    assert any(e.replace(path, "r.yaml").startswith(expected) for e in errors), errors


def test_yaml_syntax_error_has_position(rules_dir: Path, templates_dir: Path) -> None:
    errors = errors_for(rules_dir, templates_dir, GOOD.replace("[sms, email]", "[sms, email"))
    assert len(errors) == 1
    assert errors[0] == (
        f"{rules_dir / 'r.yaml'}:11:13: YAML syntax error: expected ',' or ']', but got ':' "
        "(while parsing a flow sequence that started at line 10, column 15)"
    )


def test_duplicate_key_is_an_error(rules_dir: Path, templates_dir: Path) -> None:
    errors = errors_for(
        rules_dir,
        templates_dir,
        GOOD.replace("    priority: 30\n", "    priority: 30\n    priority: 40\n"),
    )
    assert errors == [f"{rules_dir / 'r.yaml'}:14:5: duplicate key 'priority'"]


def test_broken_rule_does_not_stop_others(rules_dir: Path, templates_dir: Path) -> None:
    second = (
        GOOD.split("rules:\n", 1)[1]
        .replace("birthday-copy", "broken")
        .replace("category: care", "category: nope")
    )
    (rules_dir / "two.yaml").write_text(GOOD + second, encoding="utf-8")
    (rules_dir / "bad-syntax.yaml").write_text("rules: [\n", encoding="utf-8")
    ruleset = load_rules(rules_dir, TemplateStore(templates_dir))
    assert [r.id for r in ruleset.rules] == ["birthday-copy"]
    assert len(ruleset.errors) == 2
    assert any("bad-syntax.yaml:2:1" in str(e) for e in ruleset.errors)


def test_duplicate_rule_id_is_refused(rules_dir: Path, templates_dir: Path) -> None:
    (rules_dir / "a.yaml").write_text(GOOD, encoding="utf-8")
    errors = errors_for(rules_dir, templates_dir, GOOD, name="b.yaml")
    assert len(errors) == 1 and "duplicate rule id 'birthday-copy'" in errors[0]


def test_template_syntax_error_names_template_line(rules_dir: Path, templates_dir: Path) -> None:
    sms = templates_dir / "birthday" / "sms.en.txt"
    sms.write_text("Hello {{ customer.name }\n", encoding="utf-8")
    errors = errors_for(rules_dir, templates_dir, GOOD)
    assert any(e.startswith(f"{sms}:1: template syntax error") for e in errors), errors


def test_template_undefined_field_with_suggestion(rules_dir: Path, templates_dir: Path) -> None:
    html = templates_dir / "birthday" / "email.zh-TW.html"
    html.write_text(html.read_text(encoding="utf-8") + "\n{{ customer.nmae }}\n", encoding="utf-8")
    errors = errors_for(rules_dir, templates_dir, GOOD)
    assert any(
        str(html) in e and "customer.nmae (did you mean customer.name?)" in e for e in errors
    ), errors


def test_template_may_not_use_contact_data(rules_dir: Path, templates_dir: Path) -> None:
    sms = templates_dir / "birthday" / "sms.zh-CN.txt"
    sms.write_text("{{ customer.phone }}", encoding="utf-8")
    errors = errors_for(rules_dir, templates_dir, GOOD)
    assert any(str(sms) in e and "undefined field customer.phone" in e for e in errors), errors


def test_template_undefined_variable(rules_dir: Path, templates_dir: Path) -> None:
    sms = templates_dir / "birthday" / "sms.en.txt"
    sms.write_text("Renews {{ policy.renewal_date }}", encoding="utf-8")
    errors = errors_for(rules_dir, templates_dir, GOOD)
    assert any(str(sms) in e and "undefined variable 'policy'" in e for e in errors), errors


def test_missing_locale_file(rules_dir: Path, templates_dir: Path) -> None:
    (templates_dir / "birthday" / "email.en.subject.txt").unlink()
    errors = errors_for(rules_dir, templates_dir, GOOD)
    assert any(
        "email.en.subject.txt: missing template file for channel email, locale en" in e
        for e in errors
    )


def test_policy_file_errors_have_positions(rules_dir: Path, templates_dir: Path) -> None:
    (rules_dir / "policy.yaml").write_text(
        "version: 1\nquiet_hour:\n  start: '21:00'\n", encoding="utf-8"
    )
    errors = errors_for(rules_dir, templates_dir, GOOD)
    assert (
        f"{rules_dir / 'policy.yaml'}:2:1: unknown field 'quiet_hour' (did you mean 'quiet_hours'?)"
        in errors
    )


EVENT_RULE = """\
version: 1
rules:
  - id: thanks-copy
    description: A copy of the thank-you rule.
    trigger: {kind: event, type: policy_purchased, delay_days: 1}
    channels: [email, sms]
    template: thank_you
    category: care
    priority: 70
"""


def test_unguarded_policy_in_an_event_template_is_caught(
    rules_dir: Path, templates_dir: Path
) -> None:
    sms = templates_dir / "thank_you" / "sms.en.txt"
    sms.write_text("Thanks for buying {{ policy.product }}!", encoding="utf-8")
    errors = errors_for(rules_dir, templates_dir, EVENT_RULE)
    assert any(
        str(sms) in e and "with sample data: an event without a policy" in e for e in errors
    ), errors


def test_unknown_filter_is_caught(rules_dir: Path, templates_dir: Path) -> None:
    sms = templates_dir / "birthday" / "sms.en.txt"
    sms.write_text("Hi {{ customer.name | shout }}", encoding="utf-8")
    errors = errors_for(rules_dir, templates_dir, GOOD)
    assert any(
        e.startswith(f"{sms}:1: template syntax error: No filter named 'shout'") for e in errors
    ), errors


def test_filter_given_the_wrong_type_is_caught(rules_dir: Path, templates_dir: Path) -> None:
    sms = templates_dir / "birthday" / "sms.en.txt"
    sms.write_text("{{ customer.name | longdate }}", encoding="utf-8")
    errors = errors_for(rules_dir, templates_dir, GOOD)
    assert any(str(sms) in e and "longdate expects a date" in e for e in errors), errors


def test_a_nul_in_a_rule_file_is_an_error_at_its_place(
    rules_dir: Path, templates_dir: Path
) -> None:
    # YAML refuses a raw NUL but makes one of "\0"; the store cannot hold it.
    bad = GOOD.replace("description: A copy of the birthday rule.", 'description: "A\\0copy"')
    errors = errors_for(rules_dir, templates_dir, bad)
    assert errors == [f"{rules_dir / 'r.yaml'}:4:18: a NUL character (\\0) is not allowed"]
    audience = GOOD.replace("customer.status: active", 'customer.name: "x\\0"')
    errors = errors_for(rules_dir, templates_dir, audience)
    assert errors == [f"{rules_dir / 'r.yaml'}:9:22: a NUL character (\\0) is not allowed"]


def test_a_nul_in_a_template_is_an_error_at_its_place(rules_dir: Path, templates_dir: Path) -> None:
    sms = templates_dir / "birthday" / "sms.en.txt"
    sms.write_text("Happy birthday,\n{{ customer.name }}!\x00\n", encoding="utf-8")
    errors = errors_for(rules_dir, templates_dir, GOOD)
    assert f"{sms}:2:21: a NUL character (\\x00) is not allowed in a template" in errors, errors
    # One made by an expression is caught by the sample render.
    sms.write_text('Happy birthday{{ "\\x00" }}', encoding="utf-8")
    errors = errors_for(rules_dir, templates_dir, GOOD)
    assert any(str(sms) in e and "would contain a NUL character" in e for e in errors), errors
