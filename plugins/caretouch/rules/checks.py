"""Turning JSON Schema violations into ``file:line:col: message`` with did-you-mean hints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaViolation

from ..errors import ValidationError
from ..suggest import did_you_mean
from .yamlpos import Positions

_TYPE_WORDS = {
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "object": "a mapping",
    "array": "a list",
    "boolean": "true or false",
}


def _describe(value: Any) -> str:
    return type(value).__name__ if not isinstance(value, str) else "a string"


def _leaf_errors(error: SchemaViolation) -> list[SchemaViolation]:
    # if/then and allOf wrap the useful error; report the innermost ones.
    if error.context:
        leaves: list[SchemaViolation] = []
        for sub in error.context:
            leaves.extend(_leaf_errors(sub))
        return leaves
    return [error]


def schema_errors(
    data: Any, schema: dict[str, Any], pos: Positions, base: Sequence[Any] = ()
) -> list[ValidationError]:
    """Validate ``data`` against ``schema``; one ``ValidationError`` per violation, in file order."""
    validator = Draft202012Validator(schema)
    found: list[ValidationError] = []
    seen: set[tuple[str, str]] = set()
    for top in validator.iter_errors(data):
        for error in _leaf_errors(top):
            for item in _translate(error, pos, tuple(base)):
                key = (str(item.location), item.message)
                if key not in seen:
                    seen.add(key)
                    found.append(item)
    found.sort(key=lambda e: (e.location.line or 0, e.location.col or 0) if e.location else (0, 0))
    return found


def _translate(
    error: SchemaViolation, pos: Positions, base: tuple[Any, ...]
) -> list[ValidationError]:
    path = (*base, *error.absolute_path)
    where = pos.at(path)
    name = str(path[-1]) if path and isinstance(path[-1], str) else None
    v = error.validator
    if v == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in allowed]
        return [
            ValidationError(
                f"unknown field {k!r}{did_you_mean(k, allowed)}",
                location=pos.at((*path, k), key=True),
            )
            for k in extra
        ]
    if v == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return [ValidationError(f"missing required field {missing!r}", location=where)]
    if v == "dependentRequired":
        # {"a": ["b"]}: a mapping that gives ``a`` must give ``b`` too.
        given = [k for k in error.validator_value if k in error.instance]
        return [
            ValidationError(
                f"{k!r} needs {needed!r} beside it (missing)",
                location=pos.at((*path, k), key=True),
            )
            for k in given
            for needed in error.validator_value[k]
            if needed not in error.instance
        ]
    if v == "enum":
        choices = [str(c) for c in error.validator_value]
        return [
            ValidationError(
                f"{error.instance!r} is not one of {', '.join(choices)}"
                f"{did_you_mean(error.instance, choices)}",
                location=where,
            )
        ]
    if v == "const":
        return [
            ValidationError(
                f"expected {error.validator_value!r}, got {error.instance!r}", location=where
            )
        ]
    if v == "type":
        expected = _TYPE_WORDS.get(str(error.validator_value), str(error.validator_value))
        field = f"{name} " if name else ""
        return [
            ValidationError(
                f"{field}must be {expected}, got {_describe(error.instance)} {error.instance!r}",
                location=where,
            )
        ]
    if v == "pattern" and "propertyNames" in error.schema_path:
        # A key of the mapping at ``path`` (e.g. an event type's name): point at the key.
        return [
            ValidationError(
                f"{error.instance!r} has the wrong form (it must match {error.validator_value})",
                location=pos.at((*path, error.instance), key=True),
            )
        ]
    if v == "pattern":
        hint = ""
        if "[0-5][0-9]" in str(error.validator_value):
            hint = ' (a time of day like "09:00", in quotes)'
        elif str(error.validator_value).startswith("^[a-z][a-z0-9"):
            hint = " (lower-case letters, digits, - or _, starting with a letter)"
        return [ValidationError(f"{error.instance!r} has the wrong form{hint}", location=where)]
    if v in ("minItems", "maxProperties", "minProperties") and isinstance(error.instance, dict):
        return [
            ValidationError(
                "a condition must have exactly one key: a field name, or all, any or not",
                location=where,
            )
        ]
    return [ValidationError(error.message, location=where)]
