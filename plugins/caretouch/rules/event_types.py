"""The business events Caretouch knows, declared once in ``care_rules/events.yaml``.

Each event type lists its payload fields: a name, a type (``vocab.PayloadType``), whether it
is required, and an example value. That one declaration is checked against by everything
that names an event or reads its payload:

- event rules (``trigger.type``, with a did-you-mean) and their templates
  (``event.payload.X``), which ``care validate`` also renders with the declared examples;
- every intake path (``care event emit``, ``care event import``, the Redis Stream, the
  Airflow REST API, ``care store import --events``) through ``EventTypes.problems``.

Without an ``events.yaml`` no event type is known: event rules are refused, and intake takes
any type (there is nothing to check it against).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from ..errors import Location, ValidationError
from ..suggest import did_you_mean
from ..vocab import PayloadType
from .checks import schema_errors
from .yamlpos import load_with_positions, read_yaml_bytes

EVENTS_FILE = "events.yaml"
NAME_PATTERN = r"^[a-z][a-z0-9_]*$"

EVENTS_FILE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://caretouch.dev/schema/events-file.json",
    "title": "Caretouch event types (care_rules/events.yaml)",
    "type": "object",
    "required": ["events"],
    "additionalProperties": False,
    "properties": {
        "version": {"const": 1},
        "events": {
            "type": "object",
            "minProperties": 1,
            "description": "Event type name (e.g. claim_settled) -> its declaration.",
            "propertyNames": {"pattern": NAME_PATTERN},
            "additionalProperties": {
                "type": "object",
                "required": ["description"],
                "additionalProperties": False,
                "properties": {
                    "description": {"type": "string", "minLength": 1},
                    "payload": {
                        "type": "object",
                        "description": "Payload field name -> its type, whether it is "
                        "required, and an example value (what `care validate` renders with).",
                        "propertyNames": {"pattern": NAME_PATTERN},
                        "additionalProperties": {
                            "type": "object",
                            "required": ["type", "example"],
                            "additionalProperties": False,
                            "properties": {
                                "type": {"enum": [t.value for t in PayloadType]},
                                "required": {"type": "boolean", "default": False},
                                "description": {"type": "string"},
                                "example": {
                                    "type": ["string", "number", "boolean"],
                                    "description": "A realistic value; decimals and dates "
                                    'may be written as text, e.g. "1234.50", "2026-11-23".',
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}

_INT_TEXT = re.compile(r"^[+-]?[0-9]+$")
_DATE_TEXT = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_DESCRIBED = {
    PayloadType.STRING: "text",
    PayloadType.DECIMAL: 'a decimal number (a JSON number or text such as "1234.50")',
    PayloadType.INT: "a whole number",
    PayloadType.DATE: "a date (YYYY-MM-DD)",
    PayloadType.BOOL: "true or false",
}


def value_problem(kind: PayloadType, value: Any) -> str | None:
    """Why ``value`` is not of ``kind``, or None. Never repeats the value (it may be personal)."""
    if kind is PayloadType.STRING:
        ok = isinstance(value, str)
    elif kind is PayloadType.BOOL:
        ok = isinstance(value, bool)
    elif isinstance(value, bool):
        ok = False
    elif kind is PayloadType.INT:
        ok = isinstance(value, int) or (isinstance(value, str) and bool(_INT_TEXT.match(value)))
    elif kind is PayloadType.DECIMAL:
        try:
            ok = isinstance(value, (int, float, str)) and Decimal(str(value).strip()).is_finite()
        except InvalidOperation:
            ok = False
    else:  # DATE
        try:
            ok = (
                isinstance(value, str)
                and bool(_DATE_TEXT.match(value))
                and bool(dt.date.fromisoformat(value))
            )
        except ValueError:
            ok = False
    if ok:
        return None
    got = "text" if isinstance(value, str) else type(value).__name__
    return f"must be {_DESCRIBED[kind]}, got {got}" + (
        " that is not one" if isinstance(value, str) and kind is not PayloadType.STRING else ""
    )


@dataclass(frozen=True)
class PayloadField:
    name: str
    type: PayloadType
    example: Any
    required: bool = False
    description: str = ""


@dataclass(frozen=True)
class EventType:
    name: str
    description: str
    fields: dict[str, PayloadField]
    location: Location

    def example_payload(self, *, required_only: bool = False) -> dict[str, Any] | None:
        """A payload with the declared examples (only the required fields, if asked); None
        when that leaves it empty (an empty payload is stored as none)."""
        payload = {
            f.name: f.example for f in self.fields.values() if f.required or not required_only
        }
        return payload or None

    def payload_problems(self, payload: Mapping[str, Any] | None) -> list[str]:
        """What is wrong with ``payload`` for this type: undeclared, missing or mistyped fields."""
        problems: list[str] = []
        payload = payload or {}
        for key, value in payload.items():
            spec = self.fields.get(str(key))
            if spec is None:
                declared = ", ".join(self.fields) or "none"
                problems.append(
                    f"payload field {str(key)!r} is not declared for {self.name}"
                    f"{did_you_mean(str(key), self.fields)}; declared: {declared}"
                )
            elif value is not None:
                problem = value_problem(spec.type, value)
                if problem:
                    problems.append(f"payload field {spec.name!r} {problem}")
        for spec in self.fields.values():
            if spec.required and payload.get(spec.name) is None:
                problems.append(f"payload field {spec.name!r} is required for {self.name}")
        return problems


@dataclass
class EventTypes:
    """The declared event types. ``unavailable`` says why there are none to check against
    (no ``events.yaml``, or one with errors); intake then checks nothing."""

    types: dict[str, EventType] = field(default_factory=dict)
    source: str = EVENTS_FILE
    unavailable: str | None = None

    @property
    def available(self) -> bool:
        return self.unavailable is None

    def unknown_type(self, name: str) -> str | None:
        """Why ``name`` is not a type rules and intake may use, or None."""
        if not self.available:
            return f"event type {name!r} cannot be checked: {self.unavailable}"
        if name in self.types:
            return None
        return (
            f"unknown event type {name!r}{did_you_mean(name, self.types)}; "
            f"{self.source} declares {', '.join(self.types)}"
        )

    def problems(self, event_type: str, payload: Mapping[str, Any] | None) -> list[str]:
        """Everything wrong with an event of ``event_type`` carrying ``payload`` (empty: none).

        The one check every intake path calls. With no declaration available, nothing is."""
        if not self.available:
            return []
        unknown = self.unknown_type(event_type)
        if unknown:
            return [unknown]
        return self.types[event_type].payload_problems(payload)


def load_event_types(rules_dir: str | Path) -> tuple[EventTypes, list[ValidationError]]:
    """``<rules_dir>/events.yaml``: the declared types, and the errors (``file:line:col``)."""
    path = Path(rules_dir) / EVENTS_FILE
    if not path.is_file():
        missing = f"{path} is missing (declare every event type there, see docs/events.md)"
        return EventTypes(source=str(path), unavailable=missing), []
    broken = EventTypes(source=str(path), unavailable=f"{path} has errors")
    try:
        raw = read_yaml_bytes(path)
        data, pos = load_with_positions(raw.decode("utf-8"), str(path))
    except ValidationError as exc:
        return broken, [exc]
    except UnicodeDecodeError as exc:
        return broken, [ValidationError(f"not UTF-8 text: {exc}", location=Location(str(path)))]
    if not isinstance(data, dict):
        return broken, [
            ValidationError(
                "events.yaml is a mapping with an 'events' mapping", location=pos.at(())
            )
        ]
    errors = schema_errors(data, EVENTS_FILE_SCHEMA, pos)
    if errors:
        return broken, errors
    types: dict[str, EventType] = {}
    for name, spec in data["events"].items():
        fields: dict[str, PayloadField] = {}
        for field_name, f in (spec.get("payload") or {}).items():
            kind = PayloadType(f["type"])
            problem = value_problem(kind, f["example"])
            if problem:
                errors.append(
                    ValidationError(
                        f"example of {name}.{field_name} {problem}",
                        location=pos.at(("events", name, "payload", field_name, "example")),
                    )
                )
            fields[field_name] = PayloadField(
                field_name,
                kind,
                f["example"],
                bool(f.get("required", False)),
                f.get("description", ""),
            )
        types[name] = EventType(name, spec["description"], fields, pos.at(("events", name)))
    if errors:
        return broken, errors
    return EventTypes(types, str(path)), []
