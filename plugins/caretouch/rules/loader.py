"""Loading rule files: parse with positions, validate, build ``Rule`` objects.

A file with a YAML syntax error is refused whole; otherwise each rule stands alone, so one
broken rule never stops the others from running. Every error names ``file:line:col``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..dates import LeapDayPolicy
from ..errors import Location, ValidationError, ValidationFailed
from ..render.templates import TemplateStore
from ..suggest import did_you_mean
from ..vocab import Category, Channel, Locale
from .checks import schema_errors
from .contact_policy import ContactPolicy, load_policy
from .event_types import EVENTS_FILE, EventTypes, load_event_types
from .model import (
    DATE_TRIGGER_FIELDS,
    FIELDS,
    HOLIDAY_OCCASION,
    AllOf,
    AnyOf,
    Compare,
    Condition,
    FieldSpec,
    FieldType,
    Not,
    Op,
    Rule,
    Trigger,
    TriggerKind,
    sample_contexts,
    template_variables,
)
from .schema import RULE_FILE_SCHEMA
from .yamlpos import Path as YPath
from .yamlpos import Positions, load_with_positions, read_yaml_bytes

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
    from .campaigns import CAMPAIGN_DIR, load_campaigns

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
    result.warnings = templates.take_warnings()
    return result


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
        rule, rule_errors = _build_rule(
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


def _rule_schema() -> dict[str, Any]:
    return {**RULE_FILE_SCHEMA["properties"]["rules"]["items"], "$defs": RULE_FILE_SCHEMA["$defs"]}


def _build_rule(
    item: Any,
    path: YPath,
    pos: Positions,
    templates: TemplateStore,
    policy: ContactPolicy,
    file_hash: str,
    event_types: EventTypes | None = None,
) -> tuple[Rule | None, list[ValidationError]]:
    errors = schema_errors(item, _rule_schema(), pos, base=path)
    if errors or not isinstance(item, dict):
        return None, errors or [ValidationError("a rule must be a mapping", location=pos.at(path))]
    rule_id = item["id"]

    trigger, trigger_errors = _build_trigger(item["trigger"], (*path, "trigger"), pos)
    errors.extend(trigger_errors)
    if trigger is None:
        return None, errors
    event_type = None
    if trigger.kind is TriggerKind.EVENT:
        # The type must be declared (care_rules/events.yaml): a misspelt one would never match.
        types = event_types or EventTypes(unavailable=f"no {EVENTS_FILE} was given")
        unknown = types.unknown_type(str(trigger.event_type))
        if unknown:
            errors.append(ValidationError(unknown, location=pos.at((*path, "trigger", "type"))))
            return None, errors
        event_type = types.types[str(trigger.event_type)]

    audience: Condition | None = None
    if "audience" in item:
        audience = _build_condition(item["audience"], (*path, "audience"), pos, trigger, errors)
    tiers = tuple(item.get("tiers", ()))
    if tiers:
        # `tiers: [A, B]` is shorthand for the condition `customer.tier: {in: [A, B]}`.
        by_tier = Compare(FIELDS["customer.tier"], Op.IN, tiers)
        audience = by_tier if audience is None else AllOf((audience, by_tier))

    send_time = dt.time(*map(int, item.get("send_time", "09:00").split(":")))
    if policy.quiet_hours.contains(send_time):
        errors.append(
            ValidationError(
                f"send_time {send_time:%H:%M} is inside the quiet hours {policy.quiet_hours} "
                "of the contact policy",
                location=pos.at((*path, "send_time")),
                rule_id=rule_id,
            )
        )

    channels = tuple(Channel(c) for c in item["channels"])
    template_id = item["template"]
    known_templates = templates.template_ids()
    if template_id not in known_templates:
        errors.append(
            ValidationError(
                f"unknown template {template_id!r}{did_you_mean(template_id, known_templates)}; "
                f"templates live in {templates.root}/<template>/",
                location=pos.at((*path, "template")),
                rule_id=rule_id,
            )
        )
    else:
        variables = template_variables(trigger)
        for channel in channels:
            errors.extend(
                templates.check(
                    template_id,
                    channel,
                    [loc.value for loc in Locale],
                    variables,
                    sample_contexts(trigger, event_type),
                    payload=event_type,
                    sms_warn_segments=policy.sms_warn_segments,
                )
            )
    occasion = item.get("occasion")
    if occasion == HOLIDAY_OCCASION and not (
        trigger.kind is TriggerKind.CALENDAR and trigger.holidays
    ):
        errors.append(
            ValidationError(
                f"occasion: {HOLIDAY_OCCASION} means the festival the calendar trigger matched; "
                "this rule's trigger has no holidays: name the occasion (e.g. spring_festival)",
                location=pos.at((*path, "occasion")),
            )
        )
    for e in errors:
        e.rule_id = rule_id
    rule = Rule(
        id=rule_id,
        description=item["description"],
        trigger=trigger,
        audience=audience,
        channels=channels,
        template=template_id,
        category=Category(item["category"]),
        priority=item["priority"],
        send_time=send_time,
        source=pos.at(path),
        file_hash=file_hash,
        tiers=tiers,
        defer_days=item.get("defer_days", 0),
        resend_unknown=bool(item.get("resend_unknown", False)),
        occasion=occasion,
    )
    return rule, errors


def _field(name: Any, where: Location, allowed_tables: tuple[str, ...]) -> FieldSpec:
    if not isinstance(name, str) or name not in FIELDS:
        raise ValidationError(f"unknown field {name!r}{did_you_mean(name, FIELDS)}", location=where)
    spec = FIELDS[name]
    if spec.table not in allowed_tables:
        raise ValidationError(
            f"{name}: {spec.table} fields are not available to this rule "
            f"(it provides {', '.join(allowed_tables)})",
            location=where,
        )
    return spec


def _build_trigger(
    data: dict[str, Any], path: YPath, pos: Positions
) -> tuple[Trigger | None, list[ValidationError]]:
    kind = TriggerKind(data["kind"])
    if kind is TriggerKind.EVENT:
        return Trigger(kind, event_type=data["type"], delay_days=data["delay_days"]), []
    if kind is TriggerKind.CALENDAR:
        return _calendar_trigger(data, path, pos)
    name = data["field"]
    allowed = DATE_TRIGGER_FIELDS[kind]
    if name not in allowed:
        return None, [
            ValidationError(
                f"{name!r} is not a date field the {kind.value} trigger can use"
                f"{did_you_mean(name, allowed)}; use one of {', '.join(allowed)}",
                location=pos.at((*path, "field")),
            )
        ]
    spec = FIELDS[name]
    return (
        Trigger(
            kind,
            field=spec,
            offsets=tuple(sorted(data.get("offsets", ()))),
            years_min=data.get("years_min", 0),
            leap_day=LeapDayPolicy(data.get("leap_day", "feb28")),
        ),
        [],
    )


def _calendar_trigger(
    data: dict[str, Any], path: YPath, pos: Positions
) -> tuple[Trigger | None, list[ValidationError]]:
    errors: list[ValidationError] = []
    dates: list[tuple[int | None, int, int]] = []
    for i, text in enumerate(data.get("dates", [])):
        parts = [int(p) for p in str(text).split("-")]
        year, month, day = parts if len(parts) == 3 else (None, *parts)
        try:
            dt.date(year or 2000, month, day)  # 2000 is a leap year: 02-29 is allowed
        except ValueError:
            errors.append(
                ValidationError(
                    f"{text!r} is not a real date", location=pos.at((*path, "dates", i))
                )
            )
            continue
        dates.append((year, month, day))
    holidays = tuple(data.get("holidays", ()))
    if not dates and not holidays and not errors:
        errors.append(
            ValidationError(
                "a calendar trigger needs dates (MM-DD or YYYY-MM-DD) or holidays",
                location=pos.at(path),
            )
        )
    if errors:
        return None, errors
    return Trigger(TriggerKind.CALENDAR, dates=tuple(dates), holidays=holidays), []


def _build_condition(
    data: dict[str, Any],
    path: YPath,
    pos: Positions,
    trigger: Trigger,
    errors: list[ValidationError],
) -> Condition | None:
    ((key, value),) = data.items()
    if key in ("all", "any"):
        items = [
            _build_condition(sub, (*path, key, i), pos, trigger, errors)
            for i, sub in enumerate(value)
        ]
        kept = tuple(c for c in items if c is not None)
        if len(kept) != len(items):
            return None
        return AllOf(kept) if key == "all" else AnyOf(kept)
    if key == "not":
        inner = _build_condition(value, (*path, key), pos, trigger, errors)
        return Not(inner) if inner is not None else None
    try:
        spec = _field(key, pos.at((*path, key), key=True), trigger.tables)
    except ValidationError as exc:
        errors.append(exc)
        return None
    vpath = (*path, key)
    if isinstance(value, dict):
        if len(value) != 1:
            errors.append(
                ValidationError(
                    f"{key}: give exactly one operator ({', '.join(o.value for o in Op)})",
                    location=pos.at(vpath),
                )
            )
            return None
        ((op_word, operand),) = value.items()
        if op_word not in {o.value for o in Op}:
            errors.append(
                ValidationError(
                    f"unknown operator {op_word!r}{did_you_mean(op_word, [o.value for o in Op])}",
                    location=pos.at((*vpath, op_word), key=True),
                )
            )
            return None
        op = Op(op_word)
        vpath = (*vpath, op_word)
    else:
        op, operand = Op.EQ, value
    problem = _check_operand(spec, op, operand)
    if problem:
        errors.append(ValidationError(f"{key}: {problem}", location=pos.at(vpath)))
        return None
    return Compare(spec, op, _coerce(spec, op, operand))


def _check_operand(spec: FieldSpec, op: Op, operand: Any) -> str | None:
    if op is Op.IS_NULL:
        return None if isinstance(operand, bool) else "is_null takes true or false"
    values = operand if op in (Op.IN, Op.NOT_IN) else [operand]
    if op in (Op.IN, Op.NOT_IN) and (not isinstance(operand, list) or not operand):
        return f"{op.value} takes a non-empty list"
    for v in values:
        if spec.choices and str(v) not in spec.choices:
            return f"{v!r} is not one of {', '.join(spec.choices)}{did_you_mean(v, spec.choices)}"
        if spec.type is FieldType.DATE and not isinstance(v, dt.date):
            try:
                dt.date.fromisoformat(str(v))
            except ValueError:
                return f"{v!r} is not a date (YYYY-MM-DD)"
        if spec.type is FieldType.BOOL and not isinstance(v, bool):
            return f"{v!r} is not true or false"
        if spec.type is FieldType.NUMBER and not isinstance(v, (int, float)):
            return f"{v!r} is not a number"
    if op in (Op.LT, Op.LE, Op.GT, Op.GE) and spec.type in (FieldType.BOOL, FieldType.JSON):
        return f"{op.value} does not apply to a {spec.type.value} field"
    return None


def _coerce(spec: FieldSpec, op: Op, operand: Any) -> Any:
    def one(v: Any) -> Any:
        if spec.type is FieldType.DATE and not isinstance(v, dt.date):
            return dt.date.fromisoformat(str(v))
        if spec.type is FieldType.TEXT:
            return str(v)
        return v

    if op is Op.IS_NULL:
        return operand
    if op in (Op.IN, Op.NOT_IN):
        return tuple(one(v) for v in operand)
    return one(operand)
