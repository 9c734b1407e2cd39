"""``care store import``: CSV files into the store, validated row by row.

By default an import is all-or-nothing: any invalid row means nothing is written, and every
bad row is reported as ``FILE:LINE: reason``. With ``skip_invalid`` the valid rows are written
and the rejected ones go, with their reasons, to a rejects file. Re-importing an id updates it.
Rows that are valid but will never be contacted on some channel (a malformed phone number, say)
are imported with a warning: the contact policy, not the importer, decides who is reachable.

Files are read in chunks of ``CHUNK`` rows, each looked up in the store in bulk, validated and
written with one ``executemany`` inside the import's single transaction, so a file of any size
takes bounded memory (the ids seen so far, for the duplicate and reference checks, and the
problems found; an agents file, one row per agent, is held whole, as a manager may come after
the agents it manages). All-or-nothing stops writing at the first problem, checks the rest for the
report, and rolls the transaction back.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import json
import multiprocessing
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import phonenumbers
from sqlalchemy import String, any_, bindparam, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from ..addresses import email_is_valid, has_e164_form, phone_is_valid, timezone_is_valid
from ..bounds import Limits, OutOfBounds
from ..bounds import loads as bounded_loads
from ..dates import LUNAR_FIRST_DAY, LUNAR_LAST_DAY, in_lunar_range, lunar_month_day, month_day
from ..errors import Location
from ..nul import NUL, escape_nul, find_nul, nul_reason
from ..suggest import did_you_mean
from ..vocab import (
    BirthdayCalendar,
    CustomerStatus,
    Locale,
    PaymentFrequency,
    PolicyStatus,
    RelationKind,
    Tier,
)
from .consent import ConsentChange, Purpose, imported_consent_changes
from .db import Store, bulk_page_cache
from .models import CANONICAL_COLUMNS, Agent, Customer, Event, InsurancePolicy, Relation
from .payments import PREMIUM_PAID, PaymentRefused, apply_payment, paid_through_of, policy_owners
from .write import bulk_upsert

# An event's payload holds what templates may show (docs/events.md, "Limits"). Bounded before
# it is parsed: deeper JSON would crash every run that handles it (RecursionError).
PAYLOAD_LIMITS = Limits(max_bytes=32 * 1024, max_depth=16, max_items=1000)
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f", ""}
# The allowed words of each vocabulary, listed once (not on every row of a large file).
_WORDS: dict[Any, tuple[str, ...]] = {
    enum: tuple(m.value for m in enum)
    for enum in (
        BirthdayCalendar,
        CustomerStatus,
        Locale,
        PaymentFrequency,
        PolicyStatus,
        RelationKind,
        Tier,
    )
}
_LUNAR = BirthdayCalendar.LUNAR.value
_GREGORIAN = BirthdayCalendar.GREGORIAN.value
_ZH_CN = Locale.ZH_CN.value
_TIER_C = Tier.C.value

CHUNK = 10_000
"""Rows of a file validated, looked up and written at a time."""
_LOOKUP = 2_000  # ids per bulk lookup query (below SQLite's and PostgreSQL's parameter limits)


class RowError(ValueError):
    """One reason a row is invalid."""


def _refuse_nul(raw: dict[str, str]) -> None:
    """A row with a NUL in any field is invalid, whatever the column (docs/store.md)."""
    if NUL not in "".join(value for value in raw.values() if value):
        return
    bad = [column for column, value in raw.items() if value and NUL in value]
    if bad:
        raise RowError(nul_reason(", ".join(bad)))


@dataclass
class Problem:
    location: Location
    reason: str
    row: dict[str, str] | None = None
    warning: bool = False

    def __str__(self) -> str:
        return f"{self.location}: {'warning: ' if self.warning else ''}{self.reason}"


@dataclass
class ImportReport:
    inserted: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)
    rejected: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    written: bool = False
    rejects_file: Path | None = None
    # A file that cannot be read as a whole (missing, unreadable, empty, not UTF-8, a bad
    # header): nothing is imported, with or without skip_invalid (no row to skip is known).
    file_errors: list[Problem] = field(default_factory=list)
    # What the import changed of existing customers' consents: the caller records these.
    consent_changes: list[ConsentChange] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.rejected and not self.file_errors


def _date(value: str, column: str) -> dt.date | None:
    if value == "":
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise RowError(f"{column}: {value!r} is not a real date (YYYY-MM-DD)") from None


def _required_date(value: str, column: str) -> dt.date:
    parsed = _date(value, column)
    if parsed is None:
        raise RowError(f"{column} is required")
    return parsed


def _bool(value: str, column: str) -> bool:
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise RowError(f"{column}: {value!r} is not true or false")


def _choice(value: str, column: str, enum: Any, default: str) -> str:
    if value == "":
        return default
    choices = _WORDS[enum]
    if value not in choices:
        raise RowError(
            f"{column}: {value!r} is not one of {', '.join(choices)}{did_you_mean(value, choices)}"
        )
    return value


def _text(value: str, column: str, *, required: bool = False, limit: int = 200) -> str | None:
    value = value.strip()
    if not value:
        if required:
            raise RowError(f"{column} is required")
        return None
    if len(value) > limit:
        raise RowError(f"{column} is longer than {limit} characters")
    return value


def parse_customer(
    raw: dict[str, str], phones: Mapping[str, tuple[str | None, bool]] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """A typed customer row from CSV strings, and any warnings; raises ``RowError``.

    ``phones``: ``check_phones`` of this row's phone cell, computed beforehand (elsewhere);
    a number not in it is checked here.
    """
    _refuse_nul(raw)
    warnings: list[str] = []
    birth, calendar = _birthday(raw)
    tz = _timezone(raw)
    phone_text = _text(raw.get("phone", ""), "phone", limit=32)
    known = phones.get(phone_text) if phones is not None and phone_text is not None else None
    phone, valid_phone = known if known is not None else _normalised_phone(phone_text)
    if phone is not None and not valid_phone:
        warnings.append("phone is not a valid E.164 number: SMS will not be used")
    email = _text(raw.get("email", ""), "email", limit=320)
    if email is not None and not email_is_valid(email):
        warnings.append("email address is not valid: email will not be used")
    row = {
        "customer_id": _text(raw.get("customer_id", ""), "customer_id", required=True, limit=64),
        "name": _text(raw.get("name", ""), "name", required=True),
        "birth_date": birth,
        "birthday_calendar": calendar,
        "phone": phone,
        "email": email,
        "locale": _choice(raw.get("locale", ""), "locale", Locale, _ZH_CN),
        "timezone": tz,
        "tier": _choice(raw.get("tier", ""), "tier", Tier, _TIER_C),
        "status": _choice(raw.get("status", ""), "status", CustomerStatus, "active"),
        "consent_sms": _bool(raw.get("consent_sms", ""), "consent_sms"),
        "consent_email": _bool(raw.get("consent_email", ""), "consent_email"),
        "consent_marketing": _bool(raw.get("consent_marketing", ""), "consent_marketing"),
        "agent_id": _text(raw.get("agent_id", ""), "agent_id", limit=64),
        # Lower-cased, so "Group" and "group" are one segment (the coverage report's "group").
        "segment": _lower(_text(raw.get("segment", ""), "segment", limit=32)),
    }
    return with_derived_birthday(row), warnings


def _lower(value: str | None) -> str | None:
    return value.lower() if value is not None else None


def _birthday(raw: dict[str, str]) -> tuple[dt.date | None, str]:
    """A row's ``birth_date`` and ``birthday_calendar`` (a customer's or a relation's): a lunar
    birthday needs a date inside the lunar tables' range."""
    calendar = _choice(
        raw.get("birthday_calendar", ""), "birthday_calendar", BirthdayCalendar, _GREGORIAN
    )
    birth = _date(raw.get("birth_date", ""), "birth_date")
    if calendar == _LUNAR:
        if birth is None:
            raise RowError("birthday_calendar is lunar but birth_date is empty")
        if not in_lunar_range(birth):
            raise RowError(
                f"birth_date {birth} is outside the lunar calendar's range "
                f"({LUNAR_FIRST_DAY} to {LUNAR_LAST_DAY})"
            )
    return birth, calendar


def _timezone(raw: dict[str, str]) -> str | None:
    tz = _text(raw.get("timezone", ""), "timezone", limit=64)
    if tz is not None and not timezone_is_valid(tz):
        raise RowError(f"timezone: {tz!r} is not an IANA time zone (e.g. Asia/Shanghai)")
    return tz


def parse_agent(raw: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """A typed agent row from CSV strings, and any warnings; raises ``RowError``.

    The agent's phone is normalised as a customer's is. Whether ``manager_id`` names an agent
    is checked against the store and the whole file (``_Import``), not here.
    """
    _refuse_nul(raw)
    warnings: list[str] = []
    phone, valid_phone = _normalised_phone(_text(raw.get("phone", ""), "phone", limit=32))
    if phone is not None and not valid_phone:
        warnings.append("phone is not a valid E.164 number")
    email = _text(raw.get("email", ""), "email", limit=320)
    if email is not None and not email_is_valid(email):
        warnings.append("email address is not valid: no email will be sent to this agent")
    agent_id = _text(raw.get("agent_id", ""), "agent_id", required=True, limit=64)
    manager_id = _text(raw.get("manager_id", ""), "manager_id", limit=64)
    if manager_id is not None and manager_id == agent_id:
        raise RowError(f"manager_id: agent {agent_id!r} may not be its own manager")
    row = {
        "agent_id": agent_id,
        "name": _text(raw.get("name", ""), "name", required=True),
        "phone": phone,
        "email": email,
        "timezone": _timezone(raw),
        "manager_id": manager_id,
    }
    return row, warnings


def parse_relation(raw: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """A typed relation row (a member of a customer's family) from CSV strings; raises
    ``RowError``. Its birthday follows the customer's rules (calendar, lunar range)."""
    _refuse_nul(raw)
    birth, calendar = _birthday(raw)
    kind = raw.get("kind", "").strip()
    if not kind:
        raise RowError(f"kind is required (one of {', '.join(_WORDS[RelationKind])})")
    row = {
        "relation_id": _text(raw.get("relation_id", ""), "relation_id", required=True, limit=64),
        "customer_id": _text(raw.get("customer_id", ""), "customer_id", required=True, limit=64),
        "kind": _choice(kind, "kind", RelationKind, ""),
        "name": _text(raw.get("name", ""), "name", required=True),
        "birth_date": birth,
        "birthday_calendar": calendar,
    }
    return with_derived_birthday(row), []


_FORMATTED_PHONE = re.compile(r"^\+[0-9][0-9 ().-]*[0-9]$")


def normalise_phone(phone: str | None) -> str | None:
    """``+86 138-1234-8000`` -> ``+8613812348000``; anything that does not parse is kept as is
    (and never used: the contact policy accepts only valid E.164)."""
    if phone is None or not _FORMATTED_PHONE.match(phone):
        return phone
    try:
        parsed = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return phone
    if not phonenumbers.is_valid_number(parsed):
        return phone
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _normalised_phone(phone: str | None) -> tuple[str | None, bool]:
    """``normalise_phone(phone)`` and whether ``phone_is_valid`` holds for it, parsing the
    number once where the two would each parse it (a number already in E.164, the usual case).
    """
    if phone is None:
        return None, False
    if not _FORMATTED_PHONE.match(phone):  # nor E.164, which is a narrower form
        return phone, False
    try:
        parsed = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return phone, False  # phone_is_valid would parse it the same way and fail
    if not phonenumbers.is_valid_number(parsed):
        return phone, False
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if e164 == phone:  # phone_is_valid: this very parse is valid; only its form is left
        return phone, has_e164_form(phone)
    return e164, phone_is_valid(e164)


def check_phones(cells: Iterable[str]) -> dict[str, tuple[str | None, bool]]:
    """For each phone cell: the number as ``parse_customer`` stores it and whether it is valid
    E.164, keyed by the trimmed cell (cells ``parse_customer`` refuses are left out)."""
    out: dict[str, tuple[str | None, bool]] = {}
    for cell in cells:
        text = cell.strip()
        if text and len(text) <= 32 and text not in out:
            out[text] = _normalised_phone(text)
    return out


# The phone numbers of a large customers file are checked by a helper process, a chunk ahead
# of the rows: ``phonenumbers`` takes ~20 µs a number, a third of a row's cost, and a second
# core does it meanwhile. Below this size a process is not worth starting.
PHONE_HELPER_BYTES = 8 * 1024 * 1024


class _PhoneHelper:
    """``check_phones`` of each chunk's phone cells, in a helper process, one chunk ahead.

    Its answers are what ``parse_customer`` would compute itself: if the helper cannot start
    or fails, the rows are checked in this process, as they are for small files.
    """

    def __init__(self, path: Path) -> None:
        self.pool: ProcessPoolExecutor | None = None
        try:
            if path.stat().st_size >= PHONE_HELPER_BYTES:
                self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        except (OSError, ValueError):
            self.pool = None

    def _submit(self, chunk: list[tuple[int, dict[str, str]]]) -> Future[Any] | None:
        if self.pool is None:
            return None
        try:
            return self.pool.submit(check_phones, [raw.get("phone", "") for _, raw in chunk])
        except Exception:  # cannot start (a daemonic process, say): check them here
            self.close()
            return None

    @staticmethod
    def _result(future: Future[Any] | None) -> dict[str, tuple[str | None, bool]] | None:
        if future is None:
            return None
        try:
            return future.result()
        except Exception:  # the helper died: this chunk is checked here
            return None

    def ahead(
        self, chunks: Iterable[list[tuple[int, dict[str, str]]]]
    ) -> Iterator[tuple[list[tuple[int, dict[str, str]]], dict[str, Any] | None]]:
        """Each chunk with its phones checked, the next chunk's check started first."""
        pending: tuple[list[tuple[int, dict[str, str]]], Future[Any] | None] | None = None
        for chunk in chunks:
            future = self._submit(chunk)
            if pending is not None:
                yield pending[0], self._result(pending[1])
            pending = (chunk, future)
        if pending is not None:
            yield pending[0], self._result(pending[1])

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


def with_derived_birthday(row: dict[str, Any]) -> dict[str, Any]:
    """Add the indexed month-day keys the planner looks customers and relations up by
    (``birth_md``, and ``birth_lunar_md`` for a lunar birthday)."""
    birth = row.get("birth_date")
    row["birth_md"] = month_day(birth) if birth else None
    lunar = birth is not None and row.get("birthday_calendar") == _LUNAR
    row["birth_lunar_md"] = lunar_month_day(birth) if lunar and birth else None
    return row


with_derived_customer = with_derived_birthday
with_derived_relation = with_derived_birthday


def with_derived_policy(row: dict[str, Any]) -> dict[str, Any]:
    start = row.get("start_date")
    row["start_md"] = month_day(start) if start else None
    return row


def parse_policy(raw: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    _refuse_nul(raw)
    start = _required_date(raw.get("start_date", ""), "start_date")
    renewal = _date(raw.get("renewal_date", ""), "renewal_date")
    if renewal is not None and renewal < start:
        raise RowError(f"renewal_date {renewal} is before start_date {start}")
    premium_text = raw.get("premium", "").strip()
    premium: Decimal | None = None
    if premium_text:
        try:
            premium = Decimal(premium_text)
        except InvalidOperation:
            raise RowError(f"premium: {premium_text!r} is not a number") from None
        if premium < 0 or not premium.is_finite():
            raise RowError(f"premium: {premium_text!r} must be a non-negative amount")
    row = {
        "policy_id": _text(raw.get("policy_id", ""), "policy_id", required=True, limit=64),
        "customer_id": _text(raw.get("customer_id", ""), "customer_id", required=True, limit=64),
        "product": _text(raw.get("product", ""), "product", required=True),
        "start_date": start,
        "renewal_date": renewal,
        "status": _choice(raw.get("status", ""), "status", PolicyStatus, "active"),
        "premium": premium,
        **_premium_schedule(raw, start),
    }
    return with_derived_policy(row), []


def _premium_schedule(raw: dict[str, str], start: dt.date) -> dict[str, Any]:
    """A policy's premium schedule (``premium_due_date``, ``payment_frequency``,
    ``paid_through``): each optional; a frequency outside the vocabulary, a date that does
    not parse, a due date before the start or a paid_through before the day before the start
    is refused."""
    due = _date(raw.get("premium_due_date", "").strip(), "premium_due_date")
    paid = _date(raw.get("paid_through", "").strip(), "paid_through")
    word = raw.get("payment_frequency", "").strip()
    frequency = _choice(word, "payment_frequency", PaymentFrequency, "") or None
    if due is not None and due < start:
        raise RowError(f"premium_due_date {due} is before start_date {start}")
    if paid is not None and paid < start - dt.timedelta(days=1):
        raise RowError(f"paid_through {paid} is before start_date {start}")
    return {"premium_due_date": due, "payment_frequency": frequency, "paid_through": paid}


def parse_instant(value: str, column: str = "occurred_at") -> dt.datetime:
    """An ISO 8601 timestamp with an offset, as an aware UTC datetime."""
    text = value.strip()
    if not text:
        raise RowError(f"{column} is required")
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RowError(f"{column}: {text!r} is not an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        raise RowError(f"{column}: {text!r} has no UTC offset (e.g. +08:00)")
    return parsed.astimezone(dt.timezone.utc)


def parse_event(raw: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    _refuse_nul(raw)
    payload_text = raw.get("payload", "").strip()
    payload = None
    if payload_text:
        try:
            payload = bounded_loads(payload_text, PAYLOAD_LIMITS, "payload")
        except OutOfBounds as exc:
            raise RowError(exc.message) from None
        except json.JSONDecodeError as exc:
            raise RowError(f"payload is not valid JSON: {exc.msg}") from None
        if not isinstance(payload, dict):
            raise RowError("payload must be a JSON object")
        # "\u0000" in the JSON text: PostgreSQL's jsonb refuses it.
        where = find_nul(payload, "payload")
        if where:
            raise RowError(nul_reason(where))
    row = {
        "event_id": _text(raw.get("event_id", ""), "event_id", required=True, limit=128),
        "type": _text(raw.get("type", ""), "type", required=True, limit=64),
        "customer_id": _text(raw.get("customer_id", ""), "customer_id", required=True, limit=64),
        "policy_id": _text(raw.get("policy_id", ""), "policy_id", limit=64),
        "occurred_at": parse_instant(raw.get("occurred_at", "")),
        "payload": payload,
    }
    return row, []


PARSERS: dict[str, Callable[[dict[str, str]], tuple[dict[str, Any], list[str]]]] = {
    "agent": parse_agent,
    "customer": parse_customer,
    "policy": parse_policy,
    "event": parse_event,
    "relation": parse_relation,
}
ID_COLUMN = {
    "agent": "agent_id",
    "customer": "customer_id",
    "policy": "policy_id",
    "event": "event_id",
    "relation": "relation_id",
}
MODELS = {
    "agent": Agent,
    "customer": Customer,
    "policy": InsurancePolicy,
    "event": Event,
    "relation": Relation,
}
TABLES = ("agent", "customer", "policy", "event", "relation")
"""The tables an import may hold, in the order their files are read: each after the tables
its rows refer to."""
# What a row of each table refers to: (column, table whose id it names); an empty column
# refers to nothing. An agent's manager is checked once its whole file is read (``_Import``).
REFERENCES: dict[str, tuple[tuple[str, str], ...]] = {
    "agent": (),
    "customer": (("agent_id", "agent"),),
    "policy": (("customer_id", "customer"),),
    "event": (("customer_id", "customer"), ("policy_id", "policy")),
    "relation": (("customer_id", "customer"),),
}


def csv_file_problem(path: Path) -> tuple[Location, str] | None:
    """Why ``path`` cannot be read as a CSV file at all, or None: missing, not a file,
    unreadable, empty, or not UTF-8 text (the first bad byte's line is named). Checked
    before any row, so such a file is one file-level error, never a list of bad rows."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        return Location(str(path)), f"cannot read: {exc.strerror or exc}"
    decoder = codecs.getincrementaldecoder("utf-8")()
    line, size = 1, 0
    with handle:
        try:
            while chunk := handle.read(1 << 20):
                size += len(chunk)
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    # Bytes held back from the chunk before are an unfinished character:
                    # no newline among them, so counting in ``exc.object`` is exact.
                    line += bytes(exc.object[: exc.start]).count(b"\n")
                    return (
                        Location(str(path), line),
                        "not UTF-8 text (export or save the file as UTF-8)",
                    )
                line += chunk.count(b"\n")
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return Location(str(path), line), "not UTF-8 text (ends inside a character)"
        except OSError as exc:
            return Location(str(path)), f"cannot read: {exc.strerror or exc}"
    if size == 0:
        return Location(str(path), 1), "empty file (no header row)"
    return None


def _read_csv(path: Path, table: str, report: ImportReport) -> Iterator[tuple[int, dict[str, str]]]:
    problem = csv_file_problem(path)
    if problem is not None:
        report.file_errors.append(Problem(*problem))
        return
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        report.file_errors.append(Problem(Location(str(path)), f"cannot read: {exc.strerror}"))
        return
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            report.file_errors.append(Problem(Location(str(path), 1), "empty file (no header row)"))
            return
        except (csv.Error, UnicodeDecodeError) as exc:
            report.file_errors.append(Problem(Location(str(path), 1), f"unreadable header: {exc}"))
            return
        columns = [h.strip() for h in header]
        allowed = CANONICAL_COLUMNS[table]
        if not set(columns) & set(allowed):
            report.file_errors.append(
                Problem(
                    Location(str(path), 1),
                    "no header row: the first line must name the columns "
                    f"({table} columns are: {', '.join(allowed)})",
                )
            )
            return
        bad_header = False
        for name in columns:
            if name not in allowed:
                report.file_errors.append(
                    Problem(
                        Location(str(path), 1),
                        f"unknown column {name!r}{did_you_mean(name, allowed)}; "
                        f"{table} columns are: {', '.join(allowed)}",
                    )
                )
                bad_header = True
        # Only the id is needed in the header: a file of ``policy_id,status`` updates
        # existing policies (the other columns are kept); a new row still needs every
        # required field, which the row check reports.
        key = ID_COLUMN[table]
        if key not in columns:
            report.file_errors.append(
                Problem(Location(str(path), 1), f"missing required column {key!r}")
            )
            bad_header = True
        if len(set(columns)) != len(columns):
            report.file_errors.append(Problem(Location(str(path), 1), "duplicate column in header"))
            bad_header = True
        if bad_header:
            return
        line = reader.line_num + 1
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError) as exc:  # the rest cannot be read either
                report.file_errors.append(
                    Problem(Location(str(path), line), f"unreadable from here on: {exc}")
                )
                return
            if not any(v.strip() for v in values):
                line = reader.line_num + 1
                continue
            nul = [c for c, v in zip(columns, values, strict=False) if NUL in v]
            if nul:
                # Refused before anything reads the store with its id (PostgreSQL would fail).
                report.rejected.append(
                    Problem(
                        Location(str(path), line),
                        nul_reason(", ".join(nul)),
                        row={c: escape_nul(v) for c, v in zip(columns, values, strict=False)},
                    )
                )
            elif len(values) != len(columns):
                report.rejected.append(
                    Problem(
                        Location(str(path), line),
                        f"expected {len(columns)} fields, found {len(values)}",
                        row=dict(zip(columns, values, strict=False)),
                    )
                )
            else:
                yield line, dict(zip(columns, values, strict=True))
            line = reader.line_num + 1


def _as_csv(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        return aware.isoformat()
    if isinstance(value, (dt.date, Decimal)):
        return str(value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


_CONSENT_COLUMNS = tuple(p.column for p in Purpose)


class _Discard(Exception):
    """Leaves the import's transaction by rolling it back (nothing is imported)."""


def _chunked(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _existing_ids(
    session: Session, table: str, ids: Iterable[str], columns: Sequence[str] = ()
) -> dict[str, tuple[Any, ...]]:
    """The rows of ``table`` stored with one of ``ids``: id -> the values of ``columns``,
    found in bulk (``_LOOKUP`` ids a query)."""
    model = MODELS[table]
    key = getattr(model, ID_COLUMN[table])
    selected = select(key, *(getattr(model, c) for c in columns))
    wanted = list(set(ids))
    found: dict[str, tuple[Any, ...]] = {}
    postgres = session.get_bind().dialect.name == "postgresql"
    for start in range(0, len(wanted), _LOOKUP):
        part = wanted[start : start + _LOOKUP]
        # PostgreSQL: one array parameter (``= ANY``) instead of thousands of parameters.
        where = (
            key == any_(bindparam("ids", part, type_=ARRAY(String))) if postgres else key.in_(part)
        )
        for values in session.execute(selected.where(where)):
            found[values[0]] = tuple(values[1:])
    return found


@dataclass
class _Import:
    """One import's state while its files stream through, chunk by chunk (``import_csv``)."""

    report: ImportReport
    skip_invalid: bool
    check_event: Callable[[str, dict[str, Any] | None], list[str]] | None
    # table -> id -> line of its first valid row: the duplicate check, and the rows another
    # table may refer to besides the stored ones (``REFERENCES``).
    seen: dict[str, dict[str, int]] = field(default_factory=dict)
    # Per file: its read problems (wrong field count, NUL) and file errors, then its row
    # problems; the reference problems come last, table by table (as before streaming).
    files: list[tuple[ImportReport, list[Problem]]] = field(default_factory=list)
    unknown: dict[str, list[Problem]] = field(default_factory=lambda: {t: [] for t in TABLES})
    # table -> id -> place of a valid row refused for its references: the rows that name it
    # are refused too (with --skip-invalid, a policy of a customer who was not imported).
    refused: dict[str, dict[str, Location]] = field(default_factory=lambda: {t: {} for t in TABLES})
    # The valid rows of the agents file, held until the whole file is read: a manager may
    # come after the agents it manages (an agents file is small: one row per agent).
    agents: list[tuple[Location, dict[str, str], dict[str, Any], bool]] = field(
        default_factory=list
    )

    def clean(self) -> bool:
        """No problem so far: all-or-nothing may go on writing."""
        return not (
            self.report.file_errors
            or any(reading.file_errors or reading.rejected or rows for reading, rows in self.files)
            or any(self.unknown.values())
        )

    def may_write(self) -> bool:
        if self.report.file_errors or any(reading.file_errors for reading, _ in self.files):
            return False
        return self.skip_invalid or self.clean()

    def rejected(self) -> list[Problem]:
        out = [p for reading, rows in self.files for p in (*reading.rejected, *rows)]
        return out + [p for table in TABLES for p in self.unknown[table]]

    def import_file(self, session: Session, table: str, path: Path) -> None:
        reading, rejected = ImportReport(), list[Problem]()
        self.files.append((reading, rejected))
        self.seen[table] = {}
        self.report.inserted[table] = self.report.updated[table] = 0
        chunks = _chunked(_read_csv(path, table, reading), CHUNK)
        if table != "customer":
            for chunk in chunks:
                self.import_chunk(session, table, path, chunk, rejected)
            if table == "agent":
                self.import_agents(session)
            return
        helper = _PhoneHelper(path)
        try:
            for chunk, phones in helper.ahead(chunks):
                self.import_chunk(session, table, path, chunk, rejected, phones)
        finally:
            helper.close()

    def import_chunk(
        self,
        session: Session,
        table: str,
        path: Path,
        chunk: list[tuple[int, dict[str, str]]],
        rejected: list[Problem],
        phones: dict[str, tuple[str | None, bool]] | None = None,
    ) -> None:
        key = ID_COLUMN[table]
        seen = self.seen[table]
        # A column missing from the file keeps its stored value: re-importing an existing id
        # with fewer columns renames a customer, it does not reset their consents.
        missing = [c for c in CANONICAL_COLUMNS[table] if c not in chunk[0][1]]
        consents = _CONSENT_COLUMNS if table == "customer" and self.may_write() else ()
        stored = _existing_ids(
            session, table, [raw.get(key, "").strip() for _, raw in chunk], [*missing, *consents]
        )
        valid: list[tuple[Location, dict[str, str], dict[str, Any]]] = []
        for line, raw in chunk:
            where = Location(str(path), line)
            known = stored.get(raw.get(key, "").strip()) if missing else None
            if known is not None:
                raw.update((c, _as_csv(v)) for c, v in zip(missing, known, strict=False))
            try:
                if phones is not None:
                    row, warnings = parse_customer(raw, phones)
                else:
                    row, warnings = PARSERS[table](raw)
                if table == "event" and self.check_event is not None:
                    problems = self.check_event(row["type"], row["payload"])
                    if problems:
                        raise RowError("; ".join(problems))
            except RowError as exc:
                rejected.append(Problem(where, str(exc), row=raw))
                continue
            ident = row[key]
            if ident in seen:
                rejected.append(
                    Problem(
                        where, f"duplicate {key} {ident!r} (also on line {seen[ident]})", row=raw
                    )
                )
                continue
            seen[ident] = line
            self.report.warnings.extend(Problem(where, w, warning=True) for w in warnings)
            valid.append((where, raw, row))
        valid = _check_references(session, self, table, valid)
        payments: list[tuple[str, dt.date]] = []
        if table == "event":
            valid, payments = _payments(session, valid, rejected, set(self.seen.get("policy", {})))
        if table == "agent":
            self.agents.extend((where, raw, row, row[key] in stored) for where, raw, row in valid)
            return
        self.write(session, table, path, [row for _, _, row in valid], stored, missing, consents)
        if self.may_write():
            # Recorded with the events, in the same transaction (store.payments).
            for policy_id, paid_through in payments:
                apply_payment(session, policy_id, paid_through)

    def import_agents(self, session: Session) -> None:
        """Check the managers of the agents file's valid rows, then write those whose manager
        is stored or imported: ``manager_id`` must name an agent, and no agent may be (through
        others) its own manager."""
        rows = {row["agent_id"]: (where, raw, row) for where, raw, row, _ in self.agents}
        named = {row["manager_id"] for _, _, row in rows.values() if row["manager_id"]}
        stored = _existing_ids(session, "agent", named - rows.keys())
        accepted: set[str] = set()
        while True:  # an agent is accepted once its manager is stored or accepted
            more = {
                ident
                for ident, (_, _, row) in rows.items()
                if ident not in accepted
                and (
                    row["manager_id"] is None
                    or row["manager_id"] in stored
                    or row["manager_id"] in accepted
                )
            }
            if not more:
                break
            accepted |= more
        for ident, (where, raw, row) in rows.items():
            if ident not in accepted:
                self.unknown["agent"].append(Problem(where, _manager_problem(row, rows), row=raw))
                self.refused["agent"][ident] = where
        kept = [(row, existed) for _, _, row, existed in self.agents if row["agent_id"] in accepted]
        self.agents = []
        existed = {row["agent_id"]: () for row, was in kept if was}
        self.write(session, "agent", None, [row for row, _ in kept], existed, [], ())

    def write(
        self,
        session: Session,
        table: str,
        path: Path | None,
        rows: list[dict[str, Any]],
        stored: Mapping[str, tuple[Any, ...]],
        missing: Sequence[str],
        consents: Sequence[str],
    ) -> None:
        """Upsert valid ``rows`` (those whose id is in ``stored`` exist) if the import may
        write, and count them."""
        if not rows or not self.may_write():
            return
        key = ID_COLUMN[table]
        bulk_upsert(session, MODELS[table], key, rows)
        updated = sum(1 for row in rows if row[key] in stored)
        self.report.updated[table] += updated
        self.report.inserted[table] += len(rows) - updated
        if consents and path is not None:
            before = {
                row[key]: dict(zip(consents, stored[row[key]][len(missing) :], strict=True))
                for row in rows
                if row[key] in stored
            }
            self.report.consent_changes.extend(
                imported_consent_changes(before, rows, source=f"import:{path.name}")
            )


def _payments(
    session: Session,
    valid: list[tuple[Location, dict[str, str], dict[str, Any]]],
    rejected: list[Problem],
    imported: set[str],
) -> tuple[list[tuple[Location, dict[str, str], dict[str, Any]]], list[tuple[str, dt.date]]]:
    """The ``premium_paid`` rows among an events chunk's ``valid`` ones as payments
    (policy id, paid through); a payment that cannot move its policy (no policy, another
    customer's, no ``payload.paid_through``) is rejected with the reason instead.
    ``imported``: the policies of this import's policies file, stored already unless the
    import is refused anyway (then their payments are not checked: nothing is written)."""
    paying = [row for _, _, row in valid if row["type"] == PREMIUM_PAID]
    if not paying:
        return valid, []
    owners = policy_owners(session, (r["policy_id"] for r in paying if r["policy_id"]))
    kept = []
    payments = []
    for where, raw, row in valid:
        unwritten = row["policy_id"] in imported and row["policy_id"] not in owners
        if row["type"] == PREMIUM_PAID and not unwritten:
            try:
                payments.append((row["policy_id"], paid_through_of(row, owners)))
            except PaymentRefused as exc:
                rejected.append(Problem(where, str(exc), row=raw))
                continue
        kept.append((where, raw, row))
    return kept, payments


def _manager_problem(
    row: dict[str, Any], rows: Mapping[str, tuple[Location, dict[str, str], dict[str, Any]]]
) -> str:
    """Why an agent's manager is not accepted: unknown, rejected itself, or a circle."""
    manager = row["manager_id"]
    if manager not in rows:
        return f"unknown manager_id {manager!r}"
    chain = [row["agent_id"]]
    current = manager
    while current in rows and current not in chain:
        chain.append(current)
        current = rows[current][2]["manager_id"]
    if current == row["agent_id"]:
        circle = " -> ".join([*chain, current])
        return f"manager_id {manager!r}: agents may not manage each other in a circle ({circle})"
    return f"manager_id {manager!r} is rejected itself ({rows[manager][0]})"


def _check_references(
    session: Session,
    run: _Import,
    table: str,
    valid: list[tuple[Location, dict[str, str], dict[str, Any]]],
) -> list[tuple[Location, dict[str, str], dict[str, Any]]]:
    """The rows of ``valid`` whose references (``REFERENCES``) exist; the others go to
    ``run.unknown``, with the first reference that does not.

    A reference exists if it names a row that is stored or imported: a valid row of this
    import's files (``run.seen``) not itself refused for its references (``run.refused``).
    Customers name their agent, policies and relations their customer, events their customer
    and maybe their policy.
    """
    references = REFERENCES[table]
    if not references:
        return valid
    known: dict[str, tuple[Mapping[str, Any], Mapping[str, Location], Mapping[str, Any]]] = {}
    for column, target in references:
        this_import = run.seen.get(target, {})
        named = {r[column] for _, _, r in valid if r.get(column)} - this_import.keys()
        known[column] = (this_import, run.refused[target], _existing_ids(session, target, named))
    kept = []
    for where, raw, row in valid:
        for column, _ in references:
            value = row.get(column)
            if not value:
                continue
            imported, refused, stored = known[column]
            if value in refused:
                reason = f"{column} {value!r} is rejected itself ({refused[value]})"
            elif value not in imported and value not in stored:
                reason = f"unknown {column} {value!r}"
            else:
                continue
            run.unknown[table].append(Problem(where, reason, row=raw))
            run.refused[table][row[ID_COLUMN[table]]] = where
            break
        else:
            kept.append((where, raw, row))
    return kept


def import_csv(
    store: Store,
    files: dict[str, Path],
    *,
    skip_invalid: bool = False,
    rejects_path: Path | None = None,
    check_event: Callable[[str, dict[str, Any] | None], list[str]] | None = None,
) -> ImportReport:
    """Import CSV files keyed by table (``agent``, ``customer``, ``policy``, ``event``,
    ``relation``: ``TABLES``, read in that order) in one transaction.

    ``check_event(type, payload)`` lists what is wrong with an event beyond its form (the
    declared event types, ``rules.event_types.EventTypes.problems``); such rows are rejected.

    Consent changes of existing customers are returned in ``report.consent_changes`` (source
    ``import:FILE``): the caller records them in the ledger
    (``ledger.consent.record_consent_changes``), so an opt-out delivered as a CSV counts as
    one.

    A customers file of ``PHONE_HELPER_BYTES`` or more starts a helper process
    (``multiprocessing``'s spawn), which imports the caller's main module again: a script
    that calls this must keep its work under ``if __name__ == "__main__":``.
    """
    report = ImportReport()
    run = _Import(report, skip_invalid, check_event)
    try:
        with store.session() as session, bulk_page_cache(session):
            for table in TABLES:
                if table in files:
                    run.import_file(session, table, Path(files[table]))
            for reading, _ in run.files:
                report.file_errors.extend(reading.file_errors)
            report.rejected = run.rejected()
            if report.file_errors or (report.rejected and not skip_invalid):
                raise _Discard
    except _Discard:
        report.inserted.clear()
        report.updated.clear()
        report.consent_changes.clear()
        return report
    report.written = True
    if report.rejected and rejects_path is not None:
        write_rejects(rejects_path, report.rejected)
        report.rejects_file = rejects_path
    return report


def write_rejects(path: Path, problems: list[Problem]) -> None:
    """One CSV of rejected rows: where, why, and the row's own fields."""
    columns: list[str] = []
    for p in problems:
        for c in p.row or {}:
            if c not in columns:
                columns.append(c)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "line", "reason", *columns])
        for p in problems:
            writer.writerow(
                [
                    p.location.file,
                    p.location.line or "",
                    p.reason,
                    *[(p.row or {}).get(c, "") for c in columns],
                ]
            )
