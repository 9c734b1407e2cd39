"""Rule fixtures (``care_rules/tests/*.yaml``): what ``care test`` reads, checked with
``file:line:col`` for every mistake, as rule files are.

A fixture file holds tests; a test is a few rows written inline (customers, policies, events,
relations, agents, consent withdrawals, touches the ledger already holds), a local date (or
an instant) and expectations about the touches of that day. ``testing.runner`` runs them.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Location, ValidationError
from ..rules.checks import schema_errors
from ..rules.loader import RuleSet
from ..rules.yamlpos import Positions, load_with_positions, read_yaml_bytes
from ..sms import GSM7, UCS2
from ..store.models import CANONICAL_COLUMNS
from ..suggest import did_you_mean
from ..vocab import Channel, SuppressionReason, TouchStatus

FIXTURE_DIR = "tests"  # beside the rules: care_rules/tests/
SNAPSHOT_DIR = "__snapshots__"  # care_rules/tests/__snapshots__/<file stem>/
DECISIONS = ("send", "suppress", "none")  # "none": no touch at all
HISTORY_STATUSES = ("sent", "delivered", "suppressed", "deferred", "done")

# The store's tables a test writes rows to, in the order they are written (each after the
# tables its rows name), with the key of each in the fixture file.
TABLE_KEYS = {
    "agents": "agent",
    "customers": "customer",
    "policies": "policy",
    "events": "event",
    "relations": "relation",
}

# What a row leaves out takes these values: fixtures name only what matters to the test.
# A customer's phone and email are made from its id (``_customer_defaults``).
DEFAULTS: dict[str, dict[str, str]] = {
    "customer": {
        "name": "王芳",
        "birth_date": "1980-06-15",
        "birthday_calendar": "gregorian",
        "locale": "zh-CN",
        "timezone": "Asia/Shanghai",
        "tier": "C",
        "status": "active",
        "consent_sms": "true",
        "consent_email": "true",
        "consent_marketing": "false",
    },
    "policy": {
        "product": "安心医疗险",
        "start_date": "2020-01-15",
        "status": "active",
        "premium": "1200.00",
    },
    "agent": {"name": "李娜", "timezone": "Asia/Shanghai"},
    "relation": {"name": "王小明"},
    "event": {},
}

_DATE = r"^\d{4}-\d{2}-\d{2}$"
_SCALAR = {"type": ["string", "number", "boolean", "null"]}
_TEXTS = {"type": "array", "items": {"type": "string", "minLength": 1}}


def _row_schema(table: str) -> dict[str, Any]:
    columns = {c: dict(_SCALAR) for c in CANONICAL_COLUMNS[table]}
    if table == "event":
        columns["payload"] = {"type": ["object", "string", "null"]}
    return {"type": "object", "properties": columns, "additionalProperties": False}


EXPECTATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["rule"],
    "additionalProperties": False,
    "properties": {
        "rule": {"type": "string", "minLength": 1},
        "customer": {"type": "string", "minLength": 1},
        "subject": {"type": "string", "minLength": 1},
        "decision": {"enum": list(DECISIONS)},
        "reason": {"enum": [r.value for r in SuppressionReason]},
        "channel": {"enum": [c.value for c in Channel]},
        "send_at": {"type": "string", "pattern": r"^(\d{4}-\d{2}-\d{2}T)?\d{2}:\d{2}$"},
        "status": {"enum": [s.value for s in TouchStatus]},
        "variant": {"type": "string", "minLength": 1},
        "contains": _TEXTS,
        "not_contains": _TEXTS,
        "snapshot": {"type": "boolean"},
        "sms_segments": {"type": "integer", "minimum": 1},
        "sms_encoding": {"enum": [GSM7, UCS2]},
    },
}

FIXTURE_FILE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Caretouch rule fixtures (care_rules/tests/*.yaml)",
    "type": "object",
    "required": ["version", "tests"],
    "additionalProperties": False,
    "properties": {
        "version": {"const": 1},
        "tests": {"type": "array", "minItems": 1, "items": {"type": "object"}},
    },
}

TEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "expect"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "date": {"type": "string", "pattern": _DATE},
        "now": {"type": "string", "minLength": 1},
        **{
            key: {"type": "array", "items": _row_schema(table)} for key, table in TABLE_KEYS.items()
        },
        "consents": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["customer", "channel", "at"],
                "additionalProperties": False,
                "properties": {
                    "customer": {"type": "string", "minLength": 1},
                    "channel": {"enum": ["sms", "email", "marketing"]},
                    "at": {"type": "string", "minLength": 1},
                },
            },
        },
        "history": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["rule", "customer", "date"],
                "additionalProperties": False,
                "properties": {
                    "rule": {"type": "string", "minLength": 1},
                    "customer": {"type": "string", "minLength": 1},
                    "subject": {"type": "string", "minLength": 1},
                    "date": {"type": "string", "pattern": _DATE},
                    "status": {"enum": list(HISTORY_STATUSES)},
                    "channel": {"enum": [c.value for c in Channel]},
                    "reason": {"enum": [r.value for r in SuppressionReason]},
                    "context": {"type": "object"},
                },
            },
        },
        "exhaustive": {"type": "boolean"},
        "expect": {"type": "array", "minItems": 1, "items": EXPECTATION_SCHEMA},
    },
}


@dataclass(frozen=True)
class Expectation:
    """What one touch of the day should be (or that there is none: ``decision: none``)."""

    where: Location
    rule: str
    customer: str | None = None
    subject: str | None = None
    decision: str | None = None
    reason: str | None = None
    channel: str | None = None
    send_at: str | None = None
    status: str | None = None
    variant: str | None = None
    contains: tuple[str, ...] = ()
    not_contains: tuple[str, ...] = ()
    snapshot: bool = False
    sms_segments: int | None = None
    sms_encoding: str | None = None
    # Where each key's value is: a failure points at the line of what it is about.
    at: dict[str, Location] = field(default_factory=dict, compare=False, repr=False)

    @property
    def label(self) -> str:
        about = f" for {self.customer}" if self.customer else ""
        return f"{self.rule}{about}" + (f" ({self.subject})" if self.subject else "")

    @property
    def checks_text(self) -> bool:
        return bool(self.contains or self.not_contains or self.snapshot)

    def place(self, key: str) -> Location:
        return self.at.get(key, self.where)


@dataclass(frozen=True)
class HistoryEntry:
    """A touch the ledger already holds when the test's day is planned."""

    where: Location
    rule: str
    customer: str
    day: dt.date
    status: str = "delivered"
    channel: str | None = None
    reason: str | None = None
    subject: str | None = None
    # Facts the touch was planned with that the test's rows no longer show (``days: 30`` of
    # a premium reminder whose premium has since been paid): they win over the planner's.
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ConsentWithdrawal:
    where: Location
    customer: str
    purpose: str
    at: dt.datetime


@dataclass
class Case:
    """One test of a fixture file."""

    file: Path
    where: Location
    name: str
    day: dt.date
    now: dt.datetime | None
    # Per table (``TABLE_KEYS``' values): each row as CSV cells, with where it is written.
    rows: dict[str, list[tuple[Location, dict[str, str]]]]
    consents: list[ConsentWithdrawal]
    history: list[HistoryEntry]
    expect: list[Expectation]
    exhaustive: bool = False

    @property
    def slug(self) -> str:
        """The test's name as a file name: its snapshots' prefix."""
        slug = re.sub(r"[^\w.-]+", "-", self.name.lower(), flags=re.UNICODE).strip("-")
        return slug[:80] or "test"

    @property
    def customer_ids(self) -> list[str]:
        return [row["customer_id"] for _, row in self.rows.get("customer", [])]


def fixture_files(rules_dir: Path) -> list[Path]:
    """The fixture files of a rules directory: ``<rules_dir>/tests/*.yaml`` (and ``.yml``)."""
    folder = Path(rules_dir) / FIXTURE_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def snapshot_path(case: Case, exp: Expectation, channel: str, locale: str) -> Path:
    """Where an expectation's snapshot is kept (``SNAPSHOT_DIR``)."""
    who = exp.customer or (case.customer_ids[0] if case.customer_ids else "customer")
    subject = f"--{exp.subject}" if exp.subject else ""
    name = f"{case.slug}--{exp.rule}--{who}{subject}.{channel}.{locale}.txt"
    return case.file.parent / SNAPSHOT_DIR / case.file.stem / name


def load_fixture_file(path: Path, ruleset: RuleSet) -> tuple[list[Case], list[ValidationError]]:
    """The tests of one fixture file, and every error found in it (``file:line:col``). A test
    with an error is left out; the file's other tests stand."""
    try:
        data, pos = load_with_positions(read_yaml_bytes(path).decode("utf-8"), str(path))
    except ValidationError as exc:
        return [], [exc]
    except UnicodeDecodeError as exc:
        return [], [ValidationError(f"not UTF-8 text: {exc}", location=Location(str(path)))]
    errors = schema_errors(data, FIXTURE_FILE_SCHEMA, pos)
    if not isinstance(data, dict) or not isinstance(data.get("tests"), list):
        return [], errors or [
            ValidationError("a fixture file is a mapping with a 'tests' list", location=pos.at(()))
        ]
    cases: list[Case] = []
    names: dict[str, Location] = {}
    for index, item in enumerate(data["tests"]):
        path_of = ("tests", index)
        if not isinstance(item, dict):
            continue  # the file's schema said so
        problems = schema_errors(item, TEST_SCHEMA, pos, path_of)
        name = str(item.get("name"))
        if name in names:
            problems.append(
                ValidationError(
                    f"duplicate test name {name!r} (first at {names[name]})",
                    location=pos.at((*path_of, "name")),
                )
            )
        names.setdefault(name, pos.at((*path_of, "name")))
        case = None
        if not problems:  # a test of the wrong shape is not read further
            case, problems = _case(path, item, path_of, pos, ruleset)
        errors.extend(problems)
        if case is not None and not problems:
            cases.append(case)
    errors.sort(key=lambda e: (e.location.line or 0) if e.location else 0)
    return cases, errors


def _cells(row: dict[str, Any]) -> dict[str, str]:
    """A fixture row as the CSV cells the importer parses."""
    cells = {}
    for column, value in row.items():
        if value is None:
            cells[column] = ""
        elif isinstance(value, bool):
            cells[column] = "true" if value else "false"
        elif isinstance(value, dict):
            cells[column] = json.dumps(value, ensure_ascii=False)
        else:
            cells[column] = str(value)
    return cells


def _customer_defaults(customer_id: str, number: int) -> dict[str, str]:
    return {
        **DEFAULTS["customer"],
        "phone": f"+86138{number:08d}",
        "email": f"{customer_id.lower()}@example.com",
    }


def _instant(text: str, where: Location) -> tuple[dt.datetime | None, ValidationError | None]:
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None, ValidationError(
            f"{text!r} is not an ISO 8601 instant (e.g. 2027-02-28T22:30:00+08:00)", location=where
        )
    if parsed.tzinfo is None:
        return None, ValidationError(
            f"{text!r} has no UTC offset (e.g. +08:00): an instant must say where", location=where
        )
    return parsed.astimezone(dt.timezone.utc), None


def _day(text: str, where: Location) -> tuple[dt.date | None, ValidationError | None]:
    try:
        return dt.date.fromisoformat(text), None
    except ValueError:
        return None, ValidationError(f"{text!r} is not a date (YYYY-MM-DD)", location=where)


def _case(
    file: Path,
    item: dict[str, Any],
    path: tuple[Any, ...],
    pos: Positions,
    ruleset: RuleSet,
) -> tuple[Case | None, list[ValidationError]]:
    problems: list[ValidationError] = []
    rule_ids = [r.id for r in ruleset.rules]

    def check_rule(rule_id: str, where: Location) -> None:
        if rule_id not in rule_ids:
            hint = did_you_mean(rule_id, rule_ids)
            problems.append(
                ValidationError(
                    f"unknown rule {rule_id!r}{hint} (not among the rules and campaigns loaded)",
                    location=where,
                )
            )

    now: dt.datetime | None = None
    if "now" in item:
        now, error = _instant(item["now"], pos.at((*path, "now")))
        problems += [error] if error else []
    day: dt.date | None = None
    if "date" in item:
        day, error = _day(item["date"], pos.at((*path, "date")))
        problems += [error] if error else []
    elif now is not None:
        day = now.astimezone(ruleset.policy.zone(None)).date()
    else:
        problems.append(
            ValidationError(
                "a test needs `date:` (the local date planned) or `now:` (an instant)",
                location=pos.at(path),
            )
        )
    rows: dict[str, list[tuple[Location, dict[str, str]]]] = {}
    for key, table in TABLE_KEYS.items():
        for index, raw in enumerate(item.get(key) or []):
            where = pos.at((*path, key, index))
            cells = _cells(raw)
            if table == "customer":
                number = len(rows.get("customer", [])) + 1
                cells = {**_customer_defaults(cells.get("customer_id", ""), number), **cells}
            else:
                cells = {**DEFAULTS[table], **cells}
            rows.setdefault(table, []).append((where, cells))
    customers = [cells.get("customer_id") for _, cells in rows.get("customer", [])]
    consents = []
    for index, raw in enumerate(item.get("consents") or []):
        where = pos.at((*path, "consents", index))
        at, error = _instant(raw["at"], pos.at((*path, "consents", index, "at")))
        if error:
            problems.append(error)
        elif at is not None:
            consents.append(ConsentWithdrawal(where, raw["customer"], raw["channel"], at))
    history = []
    for index, raw in enumerate(item.get("history") or []):
        where = pos.at((*path, "history", index))
        check_rule(raw["rule"], pos.at((*path, "history", index, "rule")))
        when, error = _day(raw["date"], pos.at((*path, "history", index, "date")))
        if error:
            problems.append(error)
            continue
        assert when is not None
        history.append(
            HistoryEntry(
                where,
                raw["rule"],
                raw["customer"],
                when,
                raw.get("status", "delivered"),
                raw.get("channel"),
                raw.get("reason"),
                raw.get("subject"),
                dict(raw.get("context") or {}),
            )
        )
    expect = []
    for index, raw in enumerate(item.get("expect") or []):
        here = (*path, "expect", index)
        check_rule(raw["rule"], pos.at((*here, "rule")))
        customer = raw.get("customer")
        if customer is None and len(customers) != 1:
            problems.append(
                ValidationError(
                    f"name the customer (`customer:`): the test has {len(customers)} customers",
                    location=pos.at(here),
                )
            )
        if raw.get("status") and now is None:
            problems.append(
                ValidationError(
                    "`status:` is what the send step recorded: give the test `now:` (the "
                    "instant it runs)",
                    location=pos.at((*here, "status")),
                )
            )
        extra = sorted(set(raw) - {"rule", "customer", "decision", "subject"})
        if raw.get("decision") == "none" and extra:
            problems.append(
                ValidationError(
                    f"`decision: none` expects no touch at all: {', '.join(extra)} "
                    "would be about a touch",
                    location=pos.at((*here, "decision")),
                )
            )
        expect.append(
            Expectation(
                where=pos.at(here),
                rule=raw["rule"],
                customer=customer if customer is not None else (customers or [None])[0],
                subject=raw.get("subject"),
                decision=raw.get("decision"),
                reason=raw.get("reason"),
                channel=raw.get("channel"),
                send_at=raw.get("send_at"),
                status=raw.get("status"),
                variant=raw.get("variant"),
                contains=tuple(raw.get("contains") or ()),
                not_contains=tuple(raw.get("not_contains") or ()),
                snapshot=bool(raw.get("snapshot")),
                sms_segments=raw.get("sms_segments"),
                sms_encoding=raw.get("sms_encoding"),
                at={k: pos.at((*here, k)) for k in raw},
            )
        )
    if problems or day is None:
        return None, problems
    case = Case(
        file=file,
        where=pos.at(path),
        name=str(item["name"]),
        day=day,
        now=now,
        rows=rows,
        consents=consents,
        history=history,
        expect=expect,
        exhaustive=bool(item.get("exhaustive")),
    )
    return case, problems
