"""Loading rule files: parse with positions, validate, build ``Rule`` objects.

A file with a YAML syntax error is refused whole; otherwise each rule stands alone, so one
broken rule never stops the others from running. Every error names ``file:line:col``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import Location, ValidationError, ValidationFailed
from ..render.templates import TemplateStore
from .build import build_rule
from .campaigns import CAMPAIGN_DIR, load_campaigns
from .checks import schema_errors
from .contact_policy import ContactPolicy, load_policy
from .event_types import EVENTS_FILE, EventTypes, load_event_types
from .model import (
    FIELDS,
    AllOf,
    Compare,
    Op,
    Rule,
    TriggerKind,
)
from .schema import RULE_FILE_SCHEMA
from .yamlpos import load_with_positions, read_yaml_bytes

POLICY_FILE = "policy.yaml"


@dataclass
class RuleSet:
    """The rules that loaded, and the errors of those that did not."""

    rules: list[Rule] = field(default_factory=list)
    errors: list[ValidationError] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # ids (or files) refused
    policy: ContactPolicy = field(default_factory=ContactPolicy)
    # A broken contact policy stops planning altogether: it stands above every rule, and
    # running without it could pester customers it protects.
    policy_errors: list[ValidationError] = field(default_factory=list)
    # Campaign files (care_rules/campaigns/); each one's rule is also in ``rules``.
    campaigns: list[Any] = field(default_factory=list)
    # The declared event types (care_rules/events.yaml), for event rules and intake.
    event_types: EventTypes = field(
        default_factory=lambda: EventTypes(unavailable="no rules directory was loaded")
    )
    # What `care validate` points out without refusing (an SMS of many segments).
    warnings: list[ValidationError] = field(default_factory=list)

    def is_campaign(self, rule_id: str) -> bool:
        return any(c.id == rule_id for c in self.campaigns)

    def by_id(self, rule_id: str) -> Rule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)


def rule_files(rules_dir: Path) -> list[Path]:
    return sorted(
        p
        for p in rules_dir.glob("*.y*ml")
        if p.name not in (POLICY_FILE, EVENTS_FILE) and p.suffix in (".yaml", ".yml")
    )


def load_rules(rules_dir: str | Path, templates: TemplateStore) -> RuleSet:
    """Load every rule file of ``rules_dir`` and the contact policy beside them."""
    rules_dir = Path(rules_dir)
    result = RuleSet()
    templates.take_warnings()  # those of an earlier load are not this one's
    try:
        result.policy = load_policy(rules_dir / POLICY_FILE)
    except ValidationFailed as failed:
        result.errors.extend(failed.errors)
        result.policy_errors.extend(failed.errors)
    except ValidationError as error:  # a YAML syntax error in policy.yaml
        result.errors.append(error)
        result.policy_errors.append(error)
    result.event_types, event_errors = load_event_types(rules_dir)
    result.errors.extend(event_errors)
    seen: dict[str, Location] = {}
    for path in rule_files(rules_dir):
        rules, errors = load_rule_file(path, templates, result.policy, result.event_types)
        result.errors.extend(errors)
        for rule in rules:
            if rule.id in seen:
                result.errors.append(
                    ValidationError(
                        f"duplicate rule id {rule.id!r} (first defined at {seen[rule.id]})",
                        location=rule.source,
                    )
                )
                result.refused.append(rule.id)
                continue
            seen[rule.id] = rule.source
            result.rules.append(rule)
    # Campaigns become rules and are planned with them (rules/campaigns.py).

    campaigns, errors = load_campaigns(rules_dir / CAMPAIGN_DIR, templates, result.policy)
    result.errors.extend(errors)
    for campaign in campaigns:
        if campaign.id in seen:
            result.errors.append(
                ValidationError(
                    f"campaign id {campaign.id!r} is already a rule (defined at "
                    f"{seen[campaign.id]}); rename the campaign file",
                    location=Location(str(campaign.path), 1, 1),
                    rule_id=campaign.id,
                )
            )
            result.refused.append(campaign.id)
            continue
        seen[campaign.id] = campaign.rule.source
        result.rules.append(campaign.rule)
        result.campaigns.append(campaign)
    result.warnings = (
        templates.take_warnings() + _cadence_warnings(result) + _grace_warnings(result)
    )
    return result


def _grace_warnings(ruleset: RuleSet) -> list[ValidationError]:
    """A warning for each offset of a ``days_after`` rule on ``policy.premium_due_date``
    beyond the contact policy's grace period (``premiums.grace_days``): by then an unpaid
    premium has lapsed the policy, so a reminder to pay "within the grace period", or a lapse
    warning meant to leave the agent time, comes too late. A warning: the rule may mean it
    (a reinstatement offer), and the policy may be what is wrong."""
    grace = ruleset.policy.grace_days
    clause = ruleset.policy.clause("premiums.grace_days", grace)
    warnings = []
    for rule in ruleset.rules:
        trig = rule.trigger
        if trig.kind is not TriggerKind.DAYS_AFTER or trig.field is None:
            continue
        if trig.field.name != "policy.premium_due_date":
            continue
        # A deferred touch may go out up to defer_days later: that day must be in grace too.
        late = [o for o in trig.offsets if o + rule.defer_days > grace]
        if late:
            deferred = f" (plus defer_days {rule.defer_days})" if rule.defer_days else ""
            warnings.append(
                ValidationError(
                    f"days_after policy.premium_due_date offset(s) {', '.join(map(str, late))}"
                    f"{deferred} fall beyond the grace period ({clause}): by then an unpaid "
                    "premium has lapsed the policy",
                    location=rule.source,
                    rule_id=rule.id,
                )
            )
    return warnings


def _cadence_warnings(ruleset: RuleSet) -> list[ValidationError]:
    """A warning for each cadence rule that would never fire: no service level of its tiers
    has a cadence (a policy without levels, say). A warning, not an error: the rule is right,
    the policy gives it nothing to do."""
    with_cadence = sorted(
        t for level in ruleset.policy.levels.values() if level.cadence_days for t in level.tiers
    )
    warnings = []
    for rule in ruleset.rules:
        if rule.trigger.kind is not TriggerKind.CADENCE:
            continue
        tiers = set(rule.tiers or with_cadence)
        if tiers & set(with_cadence):
            continue
        where = f"tiers {', '.join(sorted(tiers))}" if rule.tiers else "any tier"
        served = f" (tiers with one: {', '.join(with_cadence)})" if with_cadence else ""
        warnings.append(
            ValidationError(
                f"a cadence trigger plans by the service level's cadence_days, and no level of "
                f"{where} has one in the contact policy{served}: the rule will never fire",
                location=rule.source,
                rule_id=rule.id,
            )
        )
    return warnings


def load_rule_file(
    path: Path,
    templates: TemplateStore,
    policy: ContactPolicy,
    event_types: EventTypes | None = None,
) -> tuple[list[Rule], list[ValidationError]]:
    try:
        raw = read_yaml_bytes(path)
        data, pos = load_with_positions(raw.decode("utf-8"), str(path))
    except ValidationError as exc:
        return [], [exc]
    except UnicodeDecodeError as exc:
        return [], [ValidationError(f"not UTF-8 text: {exc}", location=Location(str(path)))]
    file_hash = hashlib.sha256(raw).hexdigest()
    if not isinstance(data, dict):
        return [], [
            ValidationError("a rule file is a mapping with a 'rules' list", location=pos.at(()))
        ]
    # File-level structure first; rule-level errors are attributed to their rule.
    file_errors = schema_errors(data, _file_level_schema(), pos)
    rules_data = data.get("rules")
    if not isinstance(rules_data, list):
        return [], file_errors
    rules: list[Rule] = []
    errors = list(file_errors)
    for index, item in enumerate(rules_data):
        rule, rule_errors = build_rule(
            item, ("rules", index), pos, templates, policy, file_hash, event_types
        )
        declared_id = item.get("id") if isinstance(item, dict) else None
        for error in rule_errors:  # so that commands can tell a broken rule from an unknown one
            error.rule_id = error.rule_id or (declared_id if isinstance(declared_id, str) else None)
        errors.extend(rule_errors)
        if rule is not None and not rule_errors:
            rules.append(rule)
    return rules, errors


def _file_level_schema() -> dict[str, Any]:
    schema = dict(RULE_FILE_SCHEMA)
    schema["properties"] = {**schema["properties"], "rules": {"type": "array", "minItems": 1}}
    return schema


def for_customers(ruleset: RuleSet, customer_ids: set[str]) -> RuleSet:
    """``ruleset`` with every rule's audience narrowed to these customers.

    Planning a day for a few new events then reads only their customers' candidates, not the
    whole day's (which ``care_dispatch`` plans anyway): caps are per customer, so the event
    touches compete with exactly the touches they would compete with in a full plan. Channel
    capacity (a budget shared by all customers) counts what the ledger already holds.
    """
    only = Compare(FIELDS["customer.customer_id"], Op.IN, tuple(sorted(customer_ids)))
    rules = [
        replace(r, audience=only if r.audience is None else AllOf((r.audience, only)))
        for r in ruleset.rules
    ]
    return replace(ruleset, rules=rules)
