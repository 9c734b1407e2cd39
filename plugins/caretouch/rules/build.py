"""Building one ``Rule`` from its validated mapping: trigger, audience conditions, channels,
templates (rendered with sample data). Rule files (``rules.loader``) and campaign files
(``rules.campaigns``) both build their rules here."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ..dates import LeapDayPolicy
from ..errors import Location, ValidationError
from ..render.templates import TemplateStore
from ..suggest import did_you_mean
from ..vocab import (
    MESSAGE_CHANNELS,
    Category,
    Channel,
    Locale,
    TaskAssignee,
    TaskKind,
    VariantMetric,
    VariantThen,
)
from .checks import schema_errors
from .contact_policy import ContactPolicy
from .event_types import EVENTS_FILE, EventTypes
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
    TaskSpec,
    Trigger,
    TriggerKind,
    Variant,
    VariantTest,
    sample_contexts,
    template_variables,
)
from .schema import RULE_FILE_SCHEMA
from .yamlpos import Path as YPath
from .yamlpos import Positions


def _rule_schema() -> dict[str, Any]:
    return {**RULE_FILE_SCHEMA["properties"]["rules"]["items"], "$defs": RULE_FILE_SCHEMA["$defs"]}


def build_rule(
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
        errors.extend(_until_errors(trigger, types, (*path, "trigger"), pos))

    audience: Condition | None = None
    if "audience" in item:
        audience = _build_condition(item["audience"], (*path, "audience"), pos, trigger, errors)
    tiers = tuple(item.get("tiers", ()))
    if tiers:
        # `tiers: [A, B]` is shorthand for the condition `customer.tier: {in: [A, B]}`.
        by_tier = Compare(FIELDS["customer.tier"], Op.IN, tiers)
        audience = by_tier if audience is None else AllOf((audience, by_tier))

    hour, minute = (int(p) for p in str(item.get("send_time", "09:00")).split(":"))
    send_time = dt.time(hour, minute)
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
    task, task_errors = _build_task(item, path, pos, channels)
    errors.extend(task_errors)
    template_id = item.get("template")
    messages = [c for c in channels if c in MESSAGE_CHANNELS]
    variants, variant_test, variant_errors = _build_variants(item, path, pos, messages)
    errors.extend(variant_errors)
    for i, variant in enumerate(variants):
        errors.extend(
            _template_errors(
                templates,
                variant.template,
                messages,
                (*path, "variants", i, "template"),
                pos,
                trigger,
                event_type,
                policy.sms_warn_segments,
            )
        )
    if variants:
        template_id = variants[0].template
    elif template_id is None:
        if messages:
            errors.append(
                ValidationError(
                    f"a rule with channel {messages[0].value} needs a template "
                    "(only a rule whose one channel is agent_task goes without)",
                    location=pos.at(path),
                    rule_id=rule_id,
                )
            )
        template_id = task.brief if task is not None else ""
    else:
        errors.extend(
            _template_errors(
                templates,
                template_id,
                messages,
                (*path, "template"),
                pos,
                trigger,
                event_type,
                policy.sms_warn_segments,
            )
        )
    if task is not None:
        errors.extend(
            _template_errors(
                templates,
                task.brief,
                [Channel.AGENT_TASK],
                (*path, "task", "brief"),
                pos,
                trigger,
                event_type,
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
        task=task,
        variants=variants,
        variant_test=variant_test,
    )
    return rule, errors


def _build_variants(
    item: dict[str, Any], path: YPath, pos: Positions, messages: list[Channel]
) -> tuple[tuple[Variant, ...], VariantTest | None, list[ValidationError]]:
    """The rule's ``variants:`` and ``variant_test:``. Variants replace ``template:`` (a rule
    has one or the other), their ids are unique, and a test needs variants to compare."""
    data = item.get("variants")
    errors: list[ValidationError] = []
    if data is None:
        if "variant_test" in item:
            errors.append(
                ValidationError(
                    "variant_test: compares a rule's variants, and this rule has none",
                    location=pos.at((*path, "variant_test")),
                )
            )
        return (), None, errors
    if "template" in item:
        errors.append(
            ValidationError(
                "a rule with variants takes its templates from them: remove template: "
                "(or the variants)",
                location=pos.at((*path, "template")),
            )
        )
    if not messages:
        errors.append(
            ValidationError(
                "variants are wordings of a message: this rule has no sms or email channel",
                location=pos.at((*path, "variants")),
            )
        )
    seen: set[str] = set()
    for i, v in enumerate(data):
        if v["id"] in seen:
            errors.append(
                ValidationError(
                    f"variant id {v['id']!r} is listed twice: each variant needs its own id",
                    location=pos.at((*path, "variants", i, "id")),
                )
            )
        seen.add(v["id"])
    variants = tuple(Variant(v["id"], v["template"], int(v["weight"])) for v in data)
    test = item.get("variant_test", {})
    first = messages[0] if messages else Channel.SMS
    default_metric = VariantMetric.CLICKED if first is Channel.EMAIL else VariantMetric.REPLIED
    variant_test = VariantTest(
        metric=VariantMetric(test.get("metric", default_metric.value)),
        min_sample=int(test.get("min_sample", 100)),
        then=VariantThen(test.get("then", VariantThen.REPORT.value)),
    )
    if variant_test.metric is VariantMetric.CLICKED and Channel.EMAIL not in messages:
        errors.append(
            ValidationError(
                "metric clicked counts email link clicks (SendGrid click events); this rule "
                "sends no email, and SMS clicks are not counted: use replied or delivered",
                location=pos.at((*path, "variant_test", "metric")),
            )
        )
    return variants, variant_test, errors


def _build_task(
    item: dict[str, Any], path: YPath, pos: Positions, channels: tuple[Channel, ...]
) -> tuple[TaskSpec | None, list[ValidationError]]:
    """The rule's ``task:``, which ``agent_task`` among its channels needs and nothing else
    may have."""
    data = item.get("task")
    if Channel.AGENT_TASK in channels and data is None:
        kinds = ", ".join(k.value for k in TaskKind)
        return None, [
            ValidationError(
                "channel agent_task needs a task: {kind: " + kinds + ", brief: <template>}",
                location=pos.at((*path, "channels")),
            )
        ]
    if data is None:
        return None, []
    if Channel.AGENT_TASK not in channels:
        return None, [
            ValidationError(
                "task: is for the agent_task channel, which this rule's channels do not list",
                location=pos.at((*path, "task")),
            )
        ]
    return (
        TaskSpec(
            TaskKind(data["kind"]),
            data["brief"],
            data.get("expires_days", 7),
            TaskAssignee(data.get("assignee", TaskAssignee.AGENT.value)),
        ),
        [],
    )


# The payload field ``trigger.until`` matches events on: the case they are about.
CASE_FIELD = "case_id"


def _until_errors(
    trigger: Trigger, types: EventTypes, path: YPath, pos: Positions
) -> list[ValidationError]:
    """That each ``until`` type is declared, and that it and the trigger's own type carry
    the ``case_id`` the stop is matched on (else it could never match)."""
    if not trigger.until:
        return []
    errors: list[ValidationError] = []
    own = types.types[str(trigger.event_type)]
    if CASE_FIELD not in own.fields:
        errors.append(
            ValidationError(
                f"until: matches events on payload {CASE_FIELD}, which {own.name} does not "
                f"declare in {types.source}",
                location=pos.at((*path, "until")),
            )
        )
    for i, name in enumerate(trigger.until):
        unknown = types.unknown_type(name)
        if unknown:
            errors.append(ValidationError(unknown, location=pos.at((*path, "until", i))))
        elif CASE_FIELD not in types.types[name].fields:
            errors.append(
                ValidationError(
                    f"until: {name} declares no payload {CASE_FIELD} in {types.source}, so it "
                    "can never match a case",
                    location=pos.at((*path, "until", i)),
                )
            )
    return errors


def _template_errors(
    templates: TemplateStore,
    template_id: str,
    channels: list[Channel],
    where: YPath,
    pos: Positions,
    trigger: Trigger,
    event_type: Any,
    sms_warn_segments: int | None = None,
) -> list[ValidationError]:
    """That ``template_id`` is a template, and renders for each of ``channels`` in every
    locale with the rule's sample contexts."""
    known = templates.template_ids()
    if template_id not in known:
        return [
            ValidationError(
                f"unknown template {template_id!r}{did_you_mean(template_id, known)}; "
                f"templates live in {templates.root}/<template>/",
                location=pos.at(where),
            )
        ]
    errors: list[ValidationError] = []
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
                sms_warn_segments=sms_warn_segments,
            )
        )
    return errors


def _field(name: Any, where: Location, allowed_tables: tuple[str, ...]) -> FieldSpec:
    if not isinstance(name, str) or name not in FIELDS:
        raise ValidationError(f"unknown field {name!r}{did_you_mean(name, FIELDS)}", location=where)
    spec = FIELDS[name]
    if spec.table not in allowed_tables:
        hint = (
            "; a relation's fields need a relation trigger "
            "(trigger: {kind: anniversary, field: relation.birth_date})"
            if spec.table == "relation"
            else ""
        )
        raise ValidationError(
            f"{name}: {spec.table} fields are not available to this rule "
            f"(it provides {', '.join(allowed_tables)}){hint}",
            location=where,
        )
    return spec


def _build_trigger(
    data: dict[str, Any], path: YPath, pos: Positions
) -> tuple[Trigger | None, list[ValidationError]]:
    kind = TriggerKind(data["kind"])
    if kind is TriggerKind.EVENT:
        return (
            Trigger(
                kind,
                event_type=data["type"],
                delay_days=data["delay_days"],
                until=tuple(data.get("until", ())),
            ),
            [],
        )
    if kind is TriggerKind.CALENDAR:
        return _calendar_trigger(data, path, pos)
    if kind is TriggerKind.CADENCE:
        return Trigger(kind), []
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
        year: int | None = parts[0] if len(parts) == 3 else None
        month, day = parts[-2:]
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
