"""The NUL character (U+0000), which the store cannot hold: refused wherever text comes in.

PostgreSQL stores no NUL in text (psycopg refuses to send one) nor in ``jsonb`` (``\\u0000``);
SQLite stores it. So that both stores behave alike, and no database error carrying the row
reaches a log, each door that lets text in refuses a value holding a NUL, naming the field:
the CSV import (a ``FILE:LINE`` row error), event intake (a dead letter), the providers'
webhooks, the audit view's filters, rule and template files. A ground module: it imports
nothing of Caretouch, so any layer can call it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NUL = "\x00"


def _name(text: str) -> str:
    # A field name shown in a message must not carry the NUL itself, nor run on.
    return text.replace(NUL, "\\x00")[:64]


def find_nul(value: Any, name: str = "") -> str | None:
    """Where in ``value`` the first NUL is, or ``None``: ``name`` for a string, ``name.key``
    for a mapping's key or value, ``name[i]`` for a list item (mappings and lists nest)."""
    if isinstance(value, str):
        return (name or "value") if NUL in value else None
    if isinstance(value, bytes):
        return (name or "value") if b"\x00" in value else None
    if isinstance(value, Mapping):
        for key, item in value.items():
            where = f"{name}.{_name(str(key))}" if name else _name(str(key))
            if NUL in str(key):
                return where
            found = find_nul(item, where)
            if found:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = find_nul(item, f"{name}[{i}]")
            if found:
                return found
    return None


def nul_reason(where: str) -> str:
    """The reason a value holding a NUL is refused."""
    return f"{where} contains a NUL character (\\x00), which the store cannot hold"


def escape_nul(text: str) -> str:
    """``text`` with each NUL written as ``\\u0000`` (as JSON escapes it): for keeping refused
    input, such as a dead letter's raw text, where the NUL itself cannot go."""
    return text.replace(NUL, "\\u0000")


def escape_nul_values(row: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` with ``escape_nul`` applied to each text value."""
    return {k: escape_nul(v) if isinstance(v, str) else v for k, v in row.items()}
