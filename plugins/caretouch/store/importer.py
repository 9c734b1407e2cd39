"""``care store import``: CSV files into the store, validated row by row.

By default an import is all-or-nothing: any invalid row means nothing is written, and every
bad row is reported as ``FILE:LINE: reason``. With ``skip_invalid`` the valid rows are written
and the rejected ones go, with their reasons, to a rejects file. Re-importing an id updates it.
Rows that are valid but will never be contacted on some channel (a malformed phone number, say)
are imported with a warning: the contact policy, not the importer, decides who is reachable.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import phonenumbers
from sqlalchemy import select

from ..addresses import email_is_valid, phone_is_valid, timezone_is_valid
from ..bounds import Limits, OutOfBounds
from ..bounds import loads as bounded_loads
from ..dates import LUNAR_FIRST_DAY, LUNAR_LAST_DAY, in_lunar_range, lunar_month_day, month_day
from ..errors import Location
from ..nul import NUL, escape_nul, find_nul, nul_reason
from ..suggest import did_you_mean
from ..vocab import BirthdayCalendar, CustomerStatus, Locale, PolicyStatus, Tier
from .consent import ConsentChange, imported_consent_changes
from .db import Store
from .models import CANONICAL_COLUMNS, Customer, Event, InsurancePolicy
from .write import upsert

# An event's payload holds what templates may show (docs/events.md, "Limits"). Bounded before
# it is parsed: deeper JSON would crash every run that handles it (RecursionError).
PAYLOAD_LIMITS = Limits(max_bytes=32 * 1024, max_depth=16, max_items=1000)
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f", ""}


class RowError(ValueError):
    """One reason a row is invalid."""


def _refuse_nul(raw: dict[str, str]) -> None:
    """A row with a NUL in any field is invalid, whatever the column (docs/store.md)."""
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
    choices = [m.value for m in enum]
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


def parse_customer(raw: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """A typed customer row from CSV strings, and any warnings; raises ``RowError``."""
    _refuse_nul(raw)
    warnings: list[str] = []
    calendar = _choice(
        raw.get("birthday_calendar", ""), "birthday_calendar", BirthdayCalendar, "gregorian"
    )
    birth = _date(raw.get("birth_date", ""), "birth_date")
    if calendar == BirthdayCalendar.LUNAR.value:
        if birth is None:
            raise RowError("birthday_calendar is lunar but birth_date is empty")
        if not in_lunar_range(birth):
            raise RowError(
                f"birth_date {birth} is outside the lunar calendar's range "
                f"({LUNAR_FIRST_DAY} to {LUNAR_LAST_DAY})"
            )
    tz = _text(raw.get("timezone", ""), "timezone", limit=64)
    if tz is not None and not timezone_is_valid(tz):
        raise RowError(f"timezone: {tz!r} is not an IANA time zone (e.g. Asia/Shanghai)")
    phone = normalise_phone(_text(raw.get("phone", ""), "phone", limit=32))
    if phone is not None and not phone_is_valid(phone):
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
        "locale": _choice(raw.get("locale", ""), "locale", Locale, Locale.ZH_CN.value),
        "timezone": tz,
        "tier": _choice(raw.get("tier", ""), "tier", Tier, Tier.C.value),
        "status": _choice(raw.get("status", ""), "status", CustomerStatus, "active"),
        "consent_sms": _bool(raw.get("consent_sms", ""), "consent_sms"),
        "consent_email": _bool(raw.get("consent_email", ""), "consent_email"),
        "consent_marketing": _bool(raw.get("consent_marketing", ""), "consent_marketing"),
    }
    return with_derived_customer(row), warnings


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


def with_derived_customer(row: dict[str, Any]) -> dict[str, Any]:
    """Add the indexed month-day keys the planner looks customers up by."""
    birth = row.get("birth_date")
    row["birth_md"] = month_day(birth) if birth else None
    lunar = birth is not None and row.get("birthday_calendar") == BirthdayCalendar.LUNAR.value
    row["birth_lunar_md"] = lunar_month_day(birth) if lunar and birth else None
    return row


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
    }
    return with_derived_policy(row), []


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
    "customer": parse_customer,
    "policy": parse_policy,
    "event": parse_event,
}
ID_COLUMN = {"customer": "customer_id", "policy": "policy_id", "event": "event_id"}
MODELS = {"customer": Customer, "policy": InsurancePolicy, "event": Event}


@dataclass
class _Parsed:
    table: str
    path: Path
    rows: list[tuple[int, dict[str, str], dict[str, Any]]] = field(default_factory=list)


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


def _fill_missing_columns(
    store: Store, table: str, raw_rows: list[tuple[int, dict[str, str]]]
) -> None:
    """Re-importing an existing id with fewer columns keeps the values of the others.

    A file of ``customer_id,name`` renames customers; it does not reset their consents.
    """
    if not raw_rows:
        return
    missing = [c for c in CANONICAL_COLUMNS[table] if c not in raw_rows[0][1]]
    if not missing:
        return
    model = MODELS[table]
    key = ID_COLUMN[table]
    wanted = [raw.get(key, "").strip() for _, raw in raw_rows]
    existing: dict[str, dict[str, str]] = {}
    columns = [getattr(model, c) for c in (key, *missing)]
    with store.read_session() as session:
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            for values in session.execute(select(*columns).where(getattr(model, key).in_(chunk))):
                existing[values[0]] = {
                    c: _as_csv(v) for c, v in zip(missing, values[1:], strict=True)
                }
    for _, raw in raw_rows:
        known = existing.get(raw.get(key, "").strip())
        if known:
            raw.update(known)


def _consents(store: Store, customer_ids: list[str]) -> dict[str, dict[str, bool]]:
    """Current consent flags of the existing customers among ``customer_ids``."""
    out: dict[str, dict[str, bool]] = {}
    columns = (Customer.consent_sms, Customer.consent_email, Customer.consent_marketing)
    with store.read_session() as session:
        for start in range(0, len(customer_ids), 500):
            chunk = customer_ids[start : start + 500]
            for cid, sms, email, marketing in session.execute(
                select(Customer.customer_id, *columns).where(Customer.customer_id.in_(chunk))
            ):
                out[cid] = {
                    "consent_sms": sms,
                    "consent_email": email,
                    "consent_marketing": marketing,
                }
    return out


def _existing_ids(store: Store, table: str, ids: Iterable[str]) -> set[str]:
    model = MODELS[table]
    column = getattr(model, ID_COLUMN[table])
    found: set[str] = set()
    wanted = list(ids)
    with store.read_session() as session:
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            found.update(session.scalars(select(column).where(column.in_(chunk))))
    return found


def import_csv(
    store: Store,
    files: dict[str, Path],
    *,
    skip_invalid: bool = False,
    rejects_path: Path | None = None,
    check_event: Callable[[str, dict[str, Any] | None], list[str]] | None = None,
) -> ImportReport:
    """Import CSV files keyed by table (``customer``, ``policy``, ``event``) in one transaction.

    ``check_event(type, payload)`` lists what is wrong with an event beyond its form (the
    declared event types, ``rules.event_types.EventTypes.problems``); such rows are rejected.

    Consent changes of existing customers are returned in ``report.consent_changes`` (source
    ``import:FILE``): the caller records them in the ledger
    (``ledger.consent.record_consent_changes``), so an opt-out delivered as a CSV counts as
    one.
    """
    report = ImportReport()
    parsed: dict[str, _Parsed] = {}
    for table in ("customer", "policy", "event"):
        if table not in files:
            continue
        path = Path(files[table])
        result = _Parsed(table, path)
        seen: dict[str, int] = {}
        raw_rows = list(_read_csv(path, table, report))
        _fill_missing_columns(store, table, raw_rows)
        for line, raw in raw_rows:
            where = Location(str(path), line)
            try:
                row, warnings = PARSERS[table](raw)
                if table == "event" and check_event is not None:
                    problems = check_event(row["type"], row["payload"])
                    if problems:
                        raise RowError("; ".join(problems))
            except RowError as exc:
                report.rejected.append(Problem(where, str(exc), row=raw))
                continue
            key = row[ID_COLUMN[table]]
            if key in seen:
                report.rejected.append(
                    Problem(
                        where,
                        f"duplicate {ID_COLUMN[table]} {key!r} (also on line {seen[key]})",
                        row=raw,
                    )
                )
                continue
            seen[key] = line
            report.warnings.extend(Problem(where, w, warning=True) for w in warnings)
            result.rows.append((line, raw, row))
        parsed[table] = result

    _check_references(store, parsed, report)

    if report.file_errors or (report.rejected and not skip_invalid):
        return report
    consents_before = (
        _consents(store, [r["customer_id"] for _, _, r in parsed["customer"].rows])
        if "customer" in parsed
        else {}
    )
    with store.session() as session:
        for table, result in parsed.items():
            rows = [row for _, _, row in result.rows]
            existing = _existing_ids(store, table, [r[ID_COLUMN[table]] for r in rows])
            upsert(session, MODELS[table], ID_COLUMN[table], rows)
            report.updated[table] = len(existing)
            report.inserted[table] = len(rows) - len(existing)
    report.written = True
    if consents_before:
        report.consent_changes = imported_consent_changes(
            consents_before,
            [row for _, _, row in parsed["customer"].rows],
            source=f"import:{parsed['customer'].path.name}",
        )
    if report.rejected and rejects_path is not None:
        write_rejects(rejects_path, report.rejected)
        report.rejects_file = rejects_path
    return report


def _check_references(store: Store, parsed: dict[str, _Parsed], report: ImportReport) -> None:
    """Policies and events must name customers (and policies) that exist or are imported."""
    new_customers = {
        r["customer_id"] for _, _, r in parsed.get("customer", _Parsed("", Path())).rows
    }
    new_policies = {r["policy_id"] for _, _, r in parsed.get("policy", _Parsed("", Path())).rows}
    for table in ("policy", "event"):
        result = parsed.get(table)
        if result is None:
            continue
        wanted_customers = {r["customer_id"] for _, _, r in result.rows} - new_customers
        known_customers = new_customers | _existing_ids(store, "customer", wanted_customers)
        wanted_policies = {r["policy_id"] for _, _, r in result.rows if r.get("policy_id")}
        known_policies = new_policies
        if table == "event":
            known_policies = new_policies | _existing_ids(
                store, "policy", wanted_policies - new_policies
            )
        kept = []
        for line, raw, row in result.rows:
            where = Location(str(result.path), line)
            if row["customer_id"] not in known_customers:
                report.rejected.append(
                    Problem(where, f"unknown customer_id {row['customer_id']!r}", row=raw)
                )
            elif (
                table == "event" and row.get("policy_id") and row["policy_id"] not in known_policies
            ):
                report.rejected.append(
                    Problem(where, f"unknown policy_id {row['policy_id']!r}", row=raw)
                )
            else:
                kept.append((line, raw, row))
        result.rows = kept


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
