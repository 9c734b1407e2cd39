"""Relation triggers and the ``agent`` variable at ``care validate`` (issue 15): a rule may
trigger on ``relation.birth_date`` and name ``relation.*`` fields, no other rule may; every
template may use ``agent``, guarded, since a customer may have no agent."""

from __future__ import annotations

import shutil
from pathlib import Path

import jsonschema
import pytest

from caretouch.render.templates import TemplateStore
from caretouch.rules.loader import load_rules
from caretouch.rules.model import sample_contexts, template_variables
from caretouch.rules.schema import RULE_FILE_SCHEMA
from caretouch.vocab import SubjectKind
from conftest import RULES_DIR, TEMPLATES_DIR

CHILD_RULE = """\
version: 1
rules:
  - id: child-birthday
    description: A card on the birthday of a premium customer's child.
    trigger:
      kind: anniversary
      field: relation.birth_date
      leap_day: mar1
      years_min: 1
    audience:
      all:
        - relation.kind: child
        - customer.status: active
    tiers: [A]
    channels: [sms]
    template: child_birthday
    category: care
    priority: 40
"""

GUARDED = (
    "{{ customer.name }}: happy {{ years }}th birthday to {{ relation.name }} "
    "({{ relation.kind }}, born {{ relation.birth_date }})!"
    "{% if agent %} Your agent {{ agent.name }}"
    "{% if agent.phone %}, {{ agent.phone }}{% endif %}.{% endif %}"
)


def write_template(templates_dir: Path, text: str, name: str = "child_birthday") -> Path:
    """An SMS template of the same text in every locale; returns its English file."""
    folder = templates_dir / name
    folder.mkdir(exist_ok=True)
    for locale in ("en", "zh-CN", "zh-TW"):
        (folder / f"sms.{locale}.txt").write_text(text, encoding="utf-8")
    return folder / "sms.en.txt"


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
    write_template(d, GUARDED)
    return d


def errors_for(rules_dir: Path, templates_dir: Path, text: str) -> list[str]:
    (rules_dir / "r.yaml").write_text(text, encoding="utf-8")
    ruleset = load_rules(rules_dir, TemplateStore(templates_dir))
    return [str(e).replace(str(rules_dir / "r.yaml"), "r.yaml") for e in ruleset.errors]


def test_a_relation_rule_loads(rules_dir: Path, templates_dir: Path) -> None:
    (rules_dir / "r.yaml").write_text(CHILD_RULE, encoding="utf-8")
    ruleset = load_rules(rules_dir, TemplateStore(templates_dir))
    assert [str(e) for e in ruleset.errors] == []
    (rule,) = ruleset.rules
    assert rule.trigger.subject is SubjectKind.RELATION
    assert rule.trigger.tables == ("customer", "relation")
    assert rule.trigger.field is not None and rule.trigger.field.name == "relation.birth_date"
    assert (rule.trigger.leap_day.value, rule.trigger.years_min) == ("mar1", 1)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (  # relation fields on a customer's own birthday: there is no relation to read
            "      field: relation.birth_date\n      leap_day: mar1\n      years_min: 1\n",
            "      field: customer.birth_date\n",
            "r.yaml:10:11: relation.kind: relation fields are not available to this rule "
            "(it provides customer); a relation's fields need a relation trigger",
        ),
        (
            "relation.kind: child",
            "relation.kind: cousin",
            "r.yaml:12:26: relation.kind: 'cousin' is not one of spouse, child, parent",
        ),
        (
            "relation.kind: child",
            "relation.knd: child",
            "r.yaml:12:11: unknown field 'relation.knd' (did you mean 'relation.kind'?)",
        ),
        (  # an offset from a relation's birthday is not a trigger (no index serves it)
            "      kind: anniversary\n      field: relation.birth_date\n"
            "      leap_day: mar1\n      years_min: 1\n",
            "      kind: days_before\n      field: relation.birth_date\n      offsets: [7]\n",
            "r.yaml:7:14: 'relation.birth_date' is not one of policy.renewal_date, "
            "policy.start_date",
        ),
    ],
)
def test_relation_misuse_is_refused_at_its_place(
    rules_dir: Path, templates_dir: Path, old: str, new: str, expected: str
) -> None:
    assert old in CHILD_RULE
    errors = errors_for(rules_dir, templates_dir, CHILD_RULE.replace(old, new))
    assert any(e.startswith(expected) for e in errors), errors


def test_relation_fields_in_an_event_rule_are_refused(rules_dir: Path, templates_dir: Path) -> None:
    text = """\
version: 1
rules:
  - id: thanks-copy
    description: A copy of the thank-you rule.
    trigger: {kind: event, type: policy_purchased, delay_days: 1}
    audience:
      relation.name: {is_null: false}
    channels: [email, sms]
    template: thank_you
    category: care
    priority: 70
"""
    errors = errors_for(rules_dir, templates_dir, text)
    assert any(
        e.startswith("r.yaml:7:7: relation.name: relation fields are not available to this rule")
        for e in errors
    ), errors


def test_a_relation_template_may_not_name_the_relations_customer_id(
    rules_dir: Path, templates_dir: Path
) -> None:
    sms = write_template(templates_dir, "{{ relation.customer_id }}")
    errors = errors_for(rules_dir, templates_dir, CHILD_RULE)
    assert any(str(sms) in e and "undefined field relation.customer_id" in e for e in errors)


def test_relation_in_a_customer_rule_template_is_undefined(
    rules_dir: Path, templates_dir: Path
) -> None:
    sms = templates_dir / "birthday" / "sms.en.txt"
    sms.write_text("Happy birthday to {{ relation.name }}", encoding="utf-8")
    birthday = (RULES_DIR / "birthday.yaml").read_text("utf-8")
    errors = errors_for(rules_dir, templates_dir, birthday)
    assert any(str(sms) in e and "undefined variable 'relation'" in e for e in errors), errors


# --- the agent -------------------------------------------------------------------------------


def test_an_unguarded_agent_phone_is_refused(rules_dir: Path, templates_dir: Path) -> None:
    sms = write_template(templates_dir, "Call your agent on {{ agent.phone }}.")
    errors = errors_for(rules_dir, templates_dir, CHILD_RULE)
    assert any(
        str(sms) in e and "with sample data: a customer without an agent" in e for e in errors
    ), errors


def test_an_unguarded_agent_in_a_shipped_rule_is_refused(
    rules_dir: Path, templates_dir: Path
) -> None:
    """Every rule's templates see ``agent``, not only relation rules'."""
    sms = templates_dir / "birthday" / "sms.en.txt"
    sms.write_text("Happy birthday! Your agent: {{ agent.name }}", encoding="utf-8")
    errors = errors_for(rules_dir, templates_dir, (RULES_DIR / "birthday.yaml").read_text())
    assert any(
        str(sms) in e and "with sample data: a customer without an agent" in e for e in errors
    ), errors
    sms.write_text(
        "Happy birthday!{% if agent %} Your agent: {{ agent.name }}{% endif %}", encoding="utf-8"
    )
    assert errors_for(rules_dir, templates_dir, (RULES_DIR / "birthday.yaml").read_text()) == []


def test_an_agent_field_that_does_not_exist_is_named(rules_dir: Path, templates_dir: Path) -> None:
    sms = write_template(templates_dir, "{% if agent %}{{ agent.phon }}{% endif %}")
    errors = errors_for(rules_dir, templates_dir, CHILD_RULE)
    assert any(
        str(sms) in e and "undefined field agent.phon (did you mean agent.phone?)" in e
        for e in errors
    ), errors


def test_the_samples_cover_relations_and_customers_without_an_agent(
    rules_dir: Path, templates_dir: Path
) -> None:
    (rules_dir / "r.yaml").write_text(CHILD_RULE, encoding="utf-8")
    (rule,) = load_rules(rules_dir, TemplateStore(templates_dir)).rules
    variables = template_variables(rule.trigger)
    assert variables["relation"] is not None
    assert {"name", "kind", "birth_date"} <= variables["relation"]
    assert variables["agent"] == frozenset({"name", "phone", "email"})
    samples = {s["_sample"]: s for s in sample_contexts(rule.trigger)}
    assert samples["typical values"]["relation"]["kind"] == "child"
    assert samples["typical values"]["agent"]["phone"]
    assert samples["a customer without an agent"]["agent"] is None
    # The trigger's own date is never empty; an agent's phone may be.
    empty = samples["empty optional fields"]
    assert empty["relation"]["birth_date"] is not None
    assert empty["agent"]["phone"] is None


# --- the published schema ---------------------------------------------------------------------


def test_the_schema_accepts_relation_rules_and_offers_their_fields() -> None:
    import yaml

    document = yaml.safe_load(CHILD_RULE)
    jsonschema.validate(document, RULE_FILE_SCHEMA)
    trigger = RULE_FILE_SCHEMA["$defs"]["condition_customer_relation"]["properties"]
    assert {"relation.kind", "relation.name", "relation.birth_date", "customer.tier"} <= set(
        trigger
    )
    assert "relation.kind" not in RULE_FILE_SCHEMA["$defs"]["condition_customer"]["properties"]
    document["rules"][0]["trigger"] = {
        "kind": "days_after",
        "field": "relation.birth_date",
        "offsets": [1],
    }
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, RULE_FILE_SCHEMA)
