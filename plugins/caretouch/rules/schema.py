"""The JSON Schema of rule files and of the contact policy file.

It is the single source of the files' structure: the loader validates against it (and turns
its errors into ``file:line:col`` messages), and ``care schema`` publishes it as
``care_rules/rule.schema.json`` so that editors can autocomplete and check as you type.
What a rule may name is generated from the loader's own tables (``model.FIELDS``,
``model.DATE_TRIGGER_FIELDS``, ``Trigger.tables``): each trigger kind's date fields, and the
audience fields of each trigger, so an editor suggests exactly what the loader accepts.
Semantics the schema cannot express (templates, quiet hours, operand types) are checked by
the loader afterwards.
"""

from __future__ import annotations

from typing import Any

from ..dates import HOLIDAYS
from ..vocab import Category, Channel, TaskAssignee, TaskKind, Tier, VariantMetric, VariantThen
from .model import DATE_TRIGGER_FIELDS, FIELDS, Op, Trigger, TriggerKind

_TIME = {"type": "string", "pattern": r"^([01][0-9]|2[0-3]):[0-5][0-9]$"}


def _date_field(kind: TriggerKind) -> dict[str, Any]:
    allowed = list(DATE_TRIGGER_FIELDS[kind])
    return {
        "enum": allowed,
        "description": f"The date the {kind.value} trigger counts from: {', '.join(allowed)}.",
    }


_CAP: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "per_day": {"type": "integer", "minimum": 0},
        "per_7_days": {"type": "integer", "minimum": 0},
        "per_30_days": {"type": "integer", "minimum": 0},
    },
}

_CAPS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": "Touches per customer per local day, per rolling 7 and 30 local days.",
    "properties": {
        **_CAP["properties"],
        "categories": {
            "type": "object",
            "additionalProperties": False,
            "properties": {c.value: _CAP for c in Category},
        },
        "channels": {
            "type": "object",
            "additionalProperties": False,
            "properties": {c.value: _CAP for c in Channel},
        },
    },
}

_LEVEL: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["tiers"],
    "description": "A service level: the tiers it serves, its caps (each replaces the same "
    "cap of the top-level `caps` for its customers) and its cadence.",
    "properties": {
        "tiers": {
            "type": "array",
            "items": {"enum": [t.value for t in Tier]},
            "uniqueItems": True,
            "minItems": 1,
        },
        "caps": _CAPS,
        "cadence_days": {
            "type": "integer",
            "minimum": 1,
            "maximum": 3660,
            "description": "The longest a customer of this level may go without a completed "
            "touch (a sent message or a completed task); `cadence` rules plan a check-in "
            "when it runs out. Absent: no cadence.",
        },
    },
}

_CONDITION: dict[str, Any] = {
    "description": (
        "One condition: a field name mapped to a value (equality) or to an operator "
        "({eq|ne|in|not_in|lt|le|gt|ge|is_null: ...}), or a combinator all/any (lists) or not."
    ),
    "type": "object",
    "minProperties": 1,
    "maxProperties": 1,
    "properties": {
        "all": {"type": "array", "items": {"$ref": "#/$defs/condition"}, "minItems": 1},
        "any": {"type": "array", "items": {"$ref": "#/$defs/condition"}, "minItems": 1},
        "not": {"$ref": "#/$defs/condition"},
    },
}


def _condition_def(tables: tuple[str, ...]) -> dict[str, Any]:
    """A condition on the fields of ``tables``: the keys an editor offers are the fields the
    loader accepts for a rule whose trigger provides those tables."""
    ref = f"#/$defs/{_condition_name(tables)}"
    fields: dict[str, Any] = {}
    for name, spec in FIELDS.items():
        if spec.table not in tables:
            continue
        described = f"{name} ({spec.type.value})"
        if spec.choices:
            described += f": one of {', '.join(spec.choices)}"
        fields[name] = {
            "description": f"{described}. A value (equality), or one operator: "
            f"{{{'|'.join(o.value for o in Op)}: ...}}."
        }
    return {
        "description": f"One condition on {', '.join(tables)} fields, or all/any (lists) or not.",
        "type": "object",
        "minProperties": 1,
        "maxProperties": 1,
        "properties": {
            "all": {"type": "array", "items": {"$ref": ref}, "minItems": 1},
            "any": {"type": "array", "items": {"$ref": ref}, "minItems": 1},
            "not": {"$ref": ref},
            **fields,
        },
    }


def _condition_name(tables: tuple[str, ...]) -> str:
    return "condition_" + "_".join(tables)


def trigger_variants() -> list[tuple[dict[str, str], Trigger]]:
    """Every kind of trigger a rule can have, with the tables it provides to the audience and
    the templates: one per (kind, date field), and one for event and calendar triggers."""
    variants: list[tuple[dict[str, str], Trigger]] = []
    for kind, names in DATE_TRIGGER_FIELDS.items():
        for name in names:
            variants.append(
                ({"kind": kind.value, "field": name}, Trigger(kind, field=FIELDS[name]))
            )
    for kind in (TriggerKind.EVENT, TriggerKind.CALENDAR, TriggerKind.CADENCE):
        variants.append(({"kind": kind.value}, Trigger(kind)))
    return variants


def _audience_by_trigger() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``if`` the trigger is one of these, ``then`` the audience may use these fields."""
    groups: dict[tuple[str, ...], list[dict[str, str]]] = {}
    for match, trigger in trigger_variants():
        groups.setdefault(trigger.tables, []).append(match)
    branches = [
        {
            "if": {
                "required": ["trigger"],
                "properties": {
                    "trigger": {
                        "anyOf": [
                            {
                                "required": list(match),
                                "properties": {k: {"const": v} for k, v in match.items()},
                            }
                            for match in matches
                        ]
                    }
                },
            },
            "then": {"properties": {"audience": {"$ref": f"#/$defs/{_condition_name(tables)}"}}},
        }
        for tables, matches in groups.items()
    ]
    defs = {_condition_name(tables): _condition_def(tables) for tables in groups}
    return branches, defs


def _trigger_branch(kind: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
        "then": {
            "properties": {"kind": {"const": kind}, **properties},
            "required": ["kind", *required],
            "additionalProperties": False,
        },
    }


_TRIGGER: dict[str, Any] = {
    "type": "object",
    "required": ["kind"],
    "properties": {
        "kind": {"enum": [k.value for k in TriggerKind]},
    },
    "allOf": [
        _trigger_branch(
            "anniversary",
            {
                "field": _date_field(TriggerKind.ANNIVERSARY),
                "years_min": {"type": "integer", "minimum": 0, "default": 0},
                "leap_day": {"enum": ["feb28", "mar1"], "default": "feb28"},
            },
            ["field"],
        ),
        _trigger_branch(
            "days_before",
            {
                "field": _date_field(TriggerKind.DAYS_BEFORE),
                "offsets": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 0, "maximum": 3660},
                    "minItems": 1,
                    "uniqueItems": True,
                },
            },
            ["field", "offsets"],
        ),
        _trigger_branch(
            "days_after",
            {
                "field": _date_field(TriggerKind.DAYS_AFTER),
                "offsets": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 0, "maximum": 3660},
                    "minItems": 1,
                    "uniqueItems": True,
                },
            },
            ["field", "offsets"],
        ),
        _trigger_branch(
            "event",
            {
                "type": {"type": "string", "minLength": 1, "examples": ["policy_purchased"]},
                "delay_days": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": 365,
                    "description": "Local days after the event's local date (1 = next day).",
                },
                "until": {
                    "type": "array",
                    "items": {"type": "string", "minLength": 1},
                    "minItems": 1,
                    "uniqueItems": True,
                    "examples": [["complaint_resolved", "complaint_closed"]],
                    "description": "Only while the case is open: an event of one of these "
                    "types for the same customer with the same payload case_id, occurring "
                    "from the triggering event on, stops the touch (suppressed case_closed, "
                    "at planning or at sending). The types must declare case_id.",
                },
            },
            ["type", "delay_days"],
        ),
        _trigger_branch("cadence", {}, []),
        _trigger_branch(
            "calendar",
            {
                "dates": {
                    "type": "array",
                    "items": {
                        "type": "string",
                        "pattern": r"^([0-9]{4}-)?(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$",
                        "description": "MM-DD every year, or YYYY-MM-DD once.",
                    },
                    "uniqueItems": True,
                },
                "holidays": {
                    "type": "array",
                    "items": {"enum": list(HOLIDAYS)},
                    "uniqueItems": True,
                },
            },
            [],
        ),
    ],
}

RULE_PROPERTIES: dict[str, Any] = {
    "id": {"type": "string", "pattern": r"^[a-z][a-z0-9-]*$"},
    "description": {"type": "string", "minLength": 1},
    "trigger": _TRIGGER,
    "audience": {"$ref": "#/$defs/condition"},
    "channels": {
        "type": "array",
        "items": {"enum": [c.value for c in Channel]},
        "minItems": 1,
        "uniqueItems": True,
    },
    "template": {
        "type": "string",
        "pattern": r"^[a-z][a-z0-9_-]*$",
        "description": "The message template (templates/<template>/); required unless the "
        "only channel is agent_task.",
    },
    "variants": {
        "type": "array",
        "minItems": 2,
        "maxItems": 10,
        "description": "Message variants: each customer is given one (by a hash of the rule "
        "id and customer id onto the weights, the same on every run), recorded on the touch. "
        "They replace `template` (a rule has one or the other). Ids unique.",
        "items": {
            "type": "object",
            "additionalProperties": False,
            "required": ["id", "template", "weight"],
            "properties": {
                "id": {"type": "string", "pattern": r"^[a-z][a-z0-9_-]{0,63}$"},
                "template": {"type": "string", "pattern": r"^[a-z][a-z0-9_-]*$"},
                "weight": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 10000,
                    "description": "This variant's share: weight out of the variants' total.",
                },
            },
        },
    },
    "variant_test": {
        "type": "object",
        "additionalProperties": False,
        "description": "How the variants are compared (only with variants): the metric that "
        "decides (default clicked when the first message channel is email, replied for sms), "
        "the sent touches each variant needs before a winner is named, and then: report (name "
        "it in `care report`) or send_winner (new touches all get it).",
        "properties": {
            "metric": {"enum": [m.value for m in VariantMetric]},
            "min_sample": {"type": "integer", "minimum": 1, "maximum": 1000000, "default": 100},
            "then": {"enum": [t.value for t in VariantThen], "default": VariantThen.REPORT.value},
        },
    },
    "task": {
        "type": "object",
        "additionalProperties": False,
        "required": ["kind", "brief"],
        "description": "The task an agent_task channel assigns to the customer's agent: "
        "required with agent_task among the channels, refused without it.",
        "properties": {
            "kind": {"enum": [k.value for k in TaskKind]},
            "brief": {
                "type": "string",
                "pattern": r"^[a-z][a-z0-9_-]*$",
                "description": "The template of the agent's script or brief: "
                "templates/<brief>/agent_task.<locale>.txt.",
            },
            "expires_days": {
                "type": "integer",
                "minimum": 1,
                "maximum": 90,
                "default": 7,
                "description": "Days after its due day an assigned task not done expires.",
            },
            "assignee": {
                "enum": [a.value for a in TaskAssignee],
                "default": TaskAssignee.AGENT.value,
                "description": "Who is given the task: the customer's agent, or that agent's "
                "manager (agents.manager_id; an escalation). No manager, or one not in the "
                "store: suppressed no_contact.",
            },
        },
    },
    "category": {"enum": [c.value for c in Category]},
    "priority": {"type": "integer", "minimum": 0, "maximum": 1000},
    "send_time": {**_TIME, "default": "09:00", "description": "Local time of day, HH:MM."},
    "tiers": {
        "type": "array",
        "items": {"enum": [t.value for t in Tier]},
        "minItems": 1,
        "uniqueItems": True,
        "description": "Only customers of these tiers (shorthand for an audience condition).",
    },
    "defer_days": {
        "type": "integer",
        "minimum": 0,
        "maximum": 14,
        "default": 0,
        "description": "When the contact policy holds a touch back (cap, blackout, capacity), "
        "try again on each of the next N days instead of dropping it. For a service rule "
        "(a service obligation) this is its window: held back on its last day, or at send "
        "time past it, a touch is recorded as obligation_missed.",
    },
    "occasion": {
        "type": "string",
        "pattern": r"^[a-z][a-z0-9_-]*$",
        "description": "The occasion this rule greets (e.g. spring_festival): a customer gets at "
        "most one touch per occasion and year, from the highest-priority rule; the others are "
        "suppressed (occasion_taken). 'holiday' on a calendar rule with holidays: the festival "
        "that matched.",
        "examples": ["holiday", "spring_festival", "mid_autumn"],
    },
    "resend_unknown": {
        "type": "boolean",
        "default": False,
        "description": "When a provider cannot tell whether it took a message (a crash or a "
        "timeout mid-send, and the provider offers no lookup), send it again rather than "
        "leaving the touch 'unknown' for review. For messages where a duplicate is harmless.",
    },
}

_AUDIENCE_BRANCHES, _AUDIENCE_DEFS = _audience_by_trigger()

RULE_FILE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://caretouch.dev/schema/rule-file.json",
    "title": "Caretouch rule file",
    "type": "object",
    "required": ["rules"],
    "additionalProperties": False,
    "properties": {
        "version": {"const": 1},
        "rules": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": [
                    "id",
                    "description",
                    "trigger",
                    "channels",
                    "category",
                    "priority",
                ],
                "additionalProperties": False,
                "properties": RULE_PROPERTIES,
                "allOf": _AUDIENCE_BRANCHES,
            },
        },
    },
    "$defs": {"condition": _CONDITION, **_AUDIENCE_DEFS},
}

POLICY_FILE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://caretouch.dev/schema/policy-file.json",
    "title": "Caretouch contact policy",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "version": {"const": 1},
        "default_timezone": {"type": "string", "minLength": 1, "default": "Asia/Shanghai"},
        "quiet_hours": {
            "type": "object",
            "additionalProperties": False,
            "required": ["start", "end"],
            "properties": {"start": _TIME, "end": _TIME},
        },
        "caps": _CAPS,
        "levels": {
            "type": "object",
            "description": "Service levels by name (e.g. premium, value_added, basic): each "
            "tier belongs to at most one.",
            "propertyNames": {"pattern": "^[a-z][a-z0-9_]{0,31}$"},
            "additionalProperties": _LEVEL,
        },
        "consent": {
            "type": "object",
            "additionalProperties": False,
            "description": "Consents a category needs besides the channel's own.",
            "properties": {
                c.value: {"type": "array", "items": {"enum": ["marketing"]}, "uniqueItems": True}
                for c in Category
            },
        },
        "blackout": {
            "type": "object",
            "additionalProperties": False,
            "description": "Days on which the listed categories are not sent.",
            "properties": {
                "categories": {
                    "type": "array",
                    "items": {"enum": [c.value for c in Category]},
                    "uniqueItems": True,
                },
                "dates": {
                    "type": "array",
                    "items": {
                        "type": "string",
                        "format": "date",
                        "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
                    },
                    "uniqueItems": True,
                },
                "public_holidays": {
                    "enum": ["cn"],
                    "description": "cn: mainland China's statutory holidays (chinese-calendar).",
                },
            },
        },
        "capacity": {
            "type": "object",
            "additionalProperties": False,
            "description": "Messages per channel per local day; higher tiers are served first.",
            "properties": {
                c.value: {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["per_day"],
                    "properties": {"per_day": {"type": "integer", "minimum": 0}},
                }
                for c in Channel
            },
        },
        "sending_window_hours": {
            "type": "integer",
            "minimum": 1,
            "maximum": 168,
            "default": 24,
            "description": "How long after its send time a touch may still go out; "
            "later it is suppressed (too_late, or quiet_hours when they outlast it).",
        },
        "sms": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "warn_segments": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 10,
                    "default": 3,
                    "description": "`care validate` warns about an SMS template that renders "
                    "to more segments than this (160 GSM-7 or 70 UCS-2 characters single, "
                    "153 or 67 per part; each part is billed). Over 1,600 characters, the "
                    "provider's limit, is an error.",
                },
                "cost_per_segment": {
                    "type": "number",
                    "minimum": 0,
                    "description": "What the provider bills per segment (e.g. 0.0079): "
                    "`care preview` and `care forecast` then estimate each message's cost "
                    "(segments x this). Without it, no cost is shown.",
                },
                "currency": {
                    "type": "string",
                    "pattern": "^[A-Z]{3}$",
                    "description": "The currency of cost_per_segment (ISO 4217, e.g. USD).",
                },
            },
            "dependentRequired": {"cost_per_segment": ["currency"]},
        },
        "test_recipients": {
            "type": "array",
            "items": {"type": "string", "minLength": 3, "maxLength": 320},
            "uniqueItems": True,
            "maxItems": 100,
            "description": "The internal addresses `care send-test` may send a rule's "
            "message to: phone numbers in E.164 (+8613800000000) and email addresses. "
            "Any other address is refused.",
        },
        "premiums": {
            "type": "object",
            "additionalProperties": False,
            "description": 'Premiums kept in force (docs/rules.md, "Premium reminders").',
            "properties": {
                "grace_days": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": 366,
                    "default": 60,
                    "description": "Days after a premium's due date the policy stays in force "
                    "unpaid (60 for long-term life policies in mainland China); later it has "
                    "lapsed. `care validate` warns about a days_after premium_due_date rule "
                    "whose offsets go beyond it.",
                }
            },
        },
        "tier_order": {
            "type": "array",
            "items": {"enum": [t.value for t in Tier]},
            "uniqueItems": True,
            "minItems": 4,
            "maxItems": 4,
        },
    },
}
