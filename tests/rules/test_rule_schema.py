"""The rule JSON Schema is generated from the loader's own field tables: for every trigger,
the date fields and the audience fields it offers are exactly those the loader accepts (it
used to offer policy.renewal_date to anniversaries and customer.birth_date to days_before)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from caretouch.errors import ValidationError
from caretouch.rules.build import _build_condition, _build_trigger
from caretouch.rules.model import FIELDS, TriggerKind
from caretouch.rules.schema import RULE_FILE_SCHEMA, trigger_variants
from caretouch.rules.yamlpos import Positions, load_with_positions
from conftest import RULES_DIR

PUBLISHED = json.loads((RULES_DIR / "rule.schema.json").read_text(encoding="utf-8"))
DATE_KINDS = [TriggerKind.ANNIVERSARY, TriggerKind.DAYS_BEFORE, TriggerKind.DAYS_AFTER]


def test_the_published_file_is_the_generated_schema() -> None:
    assert PUBLISHED == RULE_FILE_SCHEMA, "run `care schema > care_rules/rule.schema.json`"


def _branch(kind: TriggerKind) -> dict[str, Any]:
    for branch in PUBLISHED["properties"]["rules"]["items"]["properties"]["trigger"]["allOf"]:
        if branch["if"]["properties"]["kind"]["const"] == kind.value:
            return branch["then"]["properties"]  # type: ignore[no-any-return]
    raise AssertionError(kind)


def _loader_accepts_trigger(kind: TriggerKind, name: str) -> bool:
    trigger, errors = _build_trigger(
        {"kind": kind.value, "field": name, "offsets": [1]}, ("trigger",), Positions("r.yaml")
    )
    return trigger is not None and not errors


@pytest.mark.parametrize("kind", DATE_KINDS, ids=lambda k: k.value)
def test_each_trigger_offers_exactly_the_date_fields_the_loader_accepts(kind: TriggerKind) -> None:
    offered = set(_branch(kind)["field"]["enum"])
    accepted = {name for name in FIELDS if _loader_accepts_trigger(kind, name)}
    assert offered == accepted
    assert "policy.renewal_date" not in offered or kind is not TriggerKind.ANNIVERSARY
    assert "customer.birth_date" not in offered or kind is TriggerKind.ANNIVERSARY


def _audience_offered(match: dict[str, str]) -> set[str]:
    """The audience fields the published schema offers a rule with this trigger, found as an
    editor finds them: the ``if`` branches of the rule that hold for it."""
    items = PUBLISHED["properties"]["rules"]["items"]
    offered: set[str] = set()
    for branch in items["allOf"]:
        condition = Draft202012Validator({**branch["if"], "$defs": PUBLISHED["$defs"]})
        if condition.is_valid({"trigger": match}):
            ref = branch["then"]["properties"]["audience"]["$ref"].split("/")[-1]
            offered |= set(PUBLISHED["$defs"][ref]["properties"]) - {"all", "any", "not"}
    return offered


def _loader_accepts_audience(trigger: Any, name: str) -> bool:
    errors: list[ValidationError] = []
    built = _build_condition(
        {name: {"is_null": True}}, ("audience",), Positions("r.yaml"), trigger, errors
    )
    return built is not None and not errors


@pytest.mark.parametrize(
    ("match", "trigger"),
    trigger_variants(),
    ids=lambda v: "-".join(v.values()) if isinstance(v, dict) else "",
)
def test_each_trigger_offers_exactly_the_audience_fields_the_loader_accepts(
    match: dict[str, str], trigger: Any
) -> None:
    accepted = {name for name in FIELDS if _loader_accepts_audience(trigger, name)}
    assert _audience_offered(match) == accepted
    assert accepted  # customer fields at least


def test_shipped_rule_files_are_valid_against_the_published_schema() -> None:
    validator = Draft202012Validator(PUBLISHED)
    for path in RULES_DIR.glob("*.yaml"):
        if path.name in ("policy.yaml", "events.yaml"):
            continue
        data, _ = load_with_positions(path.read_text(encoding="utf-8"), str(path))
        assert list(validator.iter_errors(data)) == [], path
