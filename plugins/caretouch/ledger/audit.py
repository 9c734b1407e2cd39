"""What auditors ask of the ledger: search, a touch's history, export, and verification.

Recipients are masked in everything this module returns. ``verify`` walks the hash chain
(``ledger.chain``) and the anchors (``ledger.anchors``), and names the first place where the
ledger differs from what was written. The CLI (``care audit``) and the web view call these
same functions: filters are checked by ``make_filters``, exports written by ``CsvExport``,
a touch shown by ``touch_detail``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, inspect, select

from ..errors import CareError
from ..mask import mask_recipient, scrub
from ..render.templates import RenderedMessage
from ..store.db import Store, append_only_gaps
from ..store.models import ConsentEvent, Customer
from ..suggest import did_you_mean
from ..vocab import Channel, TouchStatus
from . import anchors, chain
from .anchors import AnchorError, anchor_key
from .models import Attempt, TouchCurrent, TouchEvent, TouchRow

__all__ = [
    "AnchorError",
    "CsvExport",
    "Filters",
    "InvalidFilter",
    "VerifyReport",
    "anchor_key",
    "erase_content",
    "make_filters",
    "touch_detail",
    "touches",
    "verify",
    "write_anchor",
]

PAGE = 1000
# Ledger row ids are 64-bit integers on SQLite and PostgreSQL; a larger number names no row,
# and handed to the database it would fail the query (OverflowError, "out of range").
ROW_ID_MAX = 2**63 - 1


# -- anchors ---------------------------------------------------------------------------------


def write_anchor(
    store: Store, path: Path, *, run_id: str, now: dt.datetime, key: bytes | None
) -> dict[str, Any] | None:
    """Anchor the chain head: recorded in the ledger and appended to the anchor file, linked
    to the previous anchor and HMAC-signed when keyed (``ledger.anchors``). Warns when
    unsigned; raises ``AnchorError`` when the file and the ledger disagree."""
    return anchors.write(store, path, run_id=run_id, now=now, key=key)


# -- verification ----------------------------------------------------------------------------


@dataclass
class VerifyReport:
    ok: bool = True
    entries: int = 0
    anchors: int = 0
    unanchored: int = 0  # chain entries written after the last anchor
    problem: str | None = None
    warnings: list[str] = field(default_factory=list)

    def fail(self, problem: str) -> VerifyReport:
        self.ok = False
        self.problem = problem
        return self


def verify(
    store: Store,
    *,
    anchor_file: Path | None = None,
    key: bytes | None = None,
    allow_unanchored: bool = False,
) -> VerifyReport:
    """Check every ledger row against the chain, the chain's links, the customers' consent
    flags against their last recorded change, and the anchors (``ledger.anchors.check``;
    skipped when ``anchor_file`` is None)."""
    report = VerifyReport()
    previous = chain.GENESIS
    with store.read_session() as session:
        batch: list[chain.ChainEntry] = []
        for entry in chain.entries(session):
            batch.append(entry)
            if len(batch) >= 2000:
                previous = _check_batch(session, batch, previous, report)
                if not report.ok:
                    return report
                batch = []
        if batch:
            previous = _check_batch(session, batch, previous, report)
            if not report.ok:
                return report
        for table, model in chain.CHAINED.items():
            rows = session.scalar(select(func.count()).select_from(model)) or 0
            chained = (
                session.scalar(
                    select(func.count())
                    .select_from(chain.ChainEntry)
                    .where(chain.ChainEntry.table_name == table)
                )
                or 0
            )
            if rows != chained:
                unchained = session.scalar(
                    select(model.id)
                    .where(
                        model.id.not_in(
                            select(chain.ChainEntry.row_id).where(
                                chain.ChainEntry.table_name == table
                            )
                        )
                    )
                    .order_by(model.id)
                    .limit(1)
                )
                hint = (
                    " (a store from before consent changes were chained: run `care store "
                    "init` once)"
                    if table in chain.ADOPTABLE and chained == 0
                    else ""
                )
                return report.fail(
                    f"{table} row {unchained} is not in the chain: it was added outside the "
                    f"ledger ({rows} rows, {chained} chained){hint}"
                )
        if not _check_consent_flags(session, report):
            return report
        report.warnings.extend(
            f"{gap}: the database no longer refuses edits of the ledger (the chain still "
            "detects them); run `care store init` as the schema's owner"
            for gap in append_only_gaps(session.connection())
        )
        if anchor_file is not None:
            found = anchors.check(session, anchor_file, key, allow_unanchored=allow_unanchored)
            report.warnings.extend(found.warnings)
            report.anchors = found.anchors
            report.unanchored = found.unanchored
            if found.problem:
                return report.fail(found.problem)
    return report


def _check_consent_flags(session: Any, report: VerifyReport) -> bool:
    """The customers' consent flags must be what their last recorded change set: a flag
    flipped in the database directly has no consent event behind it. Where ``customers`` is
    a view of the deployment's own data, its flags may change elsewhere: a warning only."""
    newest = (
        select(func.max(ConsentEvent.id).label("id"))
        .group_by(ConsentEvent.customer_id, ConsentEvent.purpose)
        .subquery()
    )
    rows = session.execute(
        select(
            ConsentEvent, Customer.consent_sms, Customer.consent_email, Customer.consent_marketing
        )
        .join(newest, ConsentEvent.id == newest.c.id)
        .join(Customer, Customer.customer_id == ConsentEvent.customer_id)
        .order_by(ConsentEvent.id)
    )
    on = {True: "on", False: "off"}
    for event, sms, email, marketing in rows:
        flag = {"sms": sms, "email": email, "marketing": marketing}.get(event.purpose)
        if flag is None or bool(flag) == bool(event.granted):
            continue
        problem = (
            f"customer {event.customer_id}: consent_{event.purpose} is {on[bool(flag)]} in "
            f"customers, but its last recorded change (consent_events row {event.id}, "
            f"{_iso(event.at)}, {event.source}) set it {on[bool(event.granted)]}: it was "
            "changed outside Caretouch"
        )
        if "customers" in set(inspect(session.connection()).get_view_names()):
            report.warnings.append(problem + " (customers is a view: changed at its source?)")
            return True
        report.fail(problem)
        return False
    return True


def _check_batch(
    session: Any, batch: list[chain.ChainEntry], previous: str, report: VerifyReport
) -> str:
    wanted: dict[str, list[int]] = {}
    for entry in batch:
        wanted.setdefault(entry.table_name, []).append(entry.row_id)
    rows: dict[tuple[str, int], Any] = {}
    for table, ids in wanted.items():
        model = chain.CHAINED.get(table)
        if model is None:
            report.fail(f"chain entry names an unknown table {table!r}")
            return previous
        for obj in session.scalars(select(model).where(model.id.in_(ids))):
            rows[(table, obj.id)] = obj
    for entry in batch:
        place = f"{entry.table_name} row {entry.row_id} (chain entry {entry.seq})"
        obj = rows.get((entry.table_name, entry.row_id))
        if obj is None:
            report.fail(f"{place} was deleted")
            return previous
        if chain.row_hash(entry.table_name, chain.row_dict(obj)) != entry.row_hash:
            report.fail(f"{place} was changed after it was written")
            return previous
        if chain.link(previous, entry.row_hash) != entry.chain_hash:
            report.fail(
                f"the chain breaks at entry {entry.seq} ({place}): an earlier entry was "
                "removed, inserted or reordered"
            )
            return previous
        if isinstance(obj, Attempt) and obj.body is not None:
            message = RenderedMessage(Channel(obj.channel), obj.body, obj.subject, obj.html)
            if message.content_hash() != obj.content_hash:
                report.fail(f"{place}: the message content no longer matches its content_hash")
                return previous
        previous = entry.chain_hash
        report.entries += 1
    return previous


# -- search and export -------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    first: dt.date | None = None
    last: dt.date | None = None
    customer_id: str | None = None
    rule_id: str | None = None
    channel: str | None = None
    status: str | None = None


class InvalidFilter(CareError):
    """A search filter that is not well formed: the CLI exits 2, the web view answers 422."""


MAX_FILTER = 128  # characters of a text filter (customer, rule)


def _filter_day(value: str | dt.date | None, name: str) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    text = value.strip()
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise InvalidFilter(f"{name}: {text[:20]!r} is not a date (YYYY-MM-DD)") from None


def _filter_word(value: str | None, name: str, allowed: list[str]) -> str | None:
    text = _filter_text(value, name)
    if text is not None and text not in allowed:
        raise InvalidFilter(
            f"{name}: {text[:20]!r} is not one of {', '.join(allowed)}"
            + did_you_mean(text, allowed)
        )
    return text


def _filter_text(value: str | None, name: str) -> str | None:
    text = (value or "").strip()
    if len(text) > MAX_FILTER:
        raise InvalidFilter(f"{name}: at most {MAX_FILTER} characters")
    if any(ch < " " or ch == "\x7f" for ch in text):
        # No id holds one; and PostgreSQL refuses a NUL in a query parameter outright (nul.py).
        raise InvalidFilter(f"{name}: control characters are not allowed")
    return text or None


def make_filters(
    *,
    first: str | dt.date | None = None,
    last: str | dt.date | None = None,
    customer_id: str | None = None,
    rule_id: str | None = None,
    channel: str | None = None,
    status: str | None = None,
) -> Filters:
    """Filters from what an auditor typed (CLI options, the web view's form), checked: dates
    are YYYY-MM-DD and ``from`` is not after ``to``, channel and status are words of their
    vocabularies (with a did-you-mean); raises ``InvalidFilter`` naming the filter."""
    day_from, day_to = _filter_day(first, "from"), _filter_day(last, "to")
    if day_from and day_to and day_from > day_to:
        raise InvalidFilter(f"from: {day_from} is after to: {day_to} (nothing can match)")
    return Filters(
        first=day_from,
        last=day_to,
        customer_id=_filter_text(customer_id, "customer"),
        rule_id=_filter_text(rule_id, "rule"),
        channel=_filter_word(channel, "channel", [c.value for c in Channel]),
        status=_filter_word(status, "status", [s.value for s in TouchStatus]),
    )


def rule_ids_in_ledger(store: Store) -> list[str]:
    """Every rule id the ledger has touches of (rules since renamed or deleted included)."""
    with store.read_session() as session:
        return sorted(session.scalars(select(TouchRow.rule_id).distinct()))


def _query(filters: Filters, after: int) -> Any:
    q = select(TouchRow).where(TouchRow.id > after)
    if filters.first:
        q = q.where(TouchRow.occurrence >= filters.first)
    if filters.last:
        q = q.where(TouchRow.occurrence <= filters.last)
    if filters.customer_id:
        q = q.where(TouchRow.customer_id == filters.customer_id)
    if filters.rule_id:
        q = q.where(TouchRow.rule_id == filters.rule_id)
    if filters.channel:
        q = q.where(TouchRow.channel == filters.channel)
    if filters.status:
        # The current status is kept, indexed by (status, touch_id), in touch_current: paging
        # in that index's order needs no sort of all the matches.
        q = q.join(TouchCurrent, TouchCurrent.touch_id == TouchRow.id).where(
            TouchCurrent.status == filters.status, TouchCurrent.touch_id > after
        )
        return q.order_by(TouchCurrent.touch_id)
    return q.order_by(TouchRow.id)


def touches(
    store: Store, filters: Filters, *, after: int = 0, limit: int | None = None
) -> Iterator[dict[str, Any]]:
    """Touches matching ``filters`` in id order (keyset pagination: pass the last id as
    ``after``), each with its current status and last attempt; recipients masked."""
    from . import Ledger

    ledger = Ledger(store)
    yielded = 0
    if after > ROW_ID_MAX:  # nothing is after it (and the database cannot take the number)
        return
    after = max(after, 0)
    while True:
        with store.read_session() as session:
            size = PAGE if limit is None else min(PAGE, limit - yielded)
            rows = session.scalars(_query(filters, after).limit(size)).all()
            if not rows:
                return
            states = {s.id: s for s in ledger._states(session, rows)}
            attempts: dict[int, Attempt] = {}
            for a in session.scalars(
                select(Attempt)
                .where(Attempt.touch_id.in_([r.id for r in rows]))
                .order_by(Attempt.id)
            ):
                attempts[a.touch_id] = a
            sent_at: dict[int, dt.datetime] = {}
            for touch_id, at in session.execute(
                select(TouchEvent.touch_id, func.max(TouchEvent.at))
                .where(TouchEvent.touch_id.in_([r.id for r in rows]), TouchEvent.status == "sent")
                .group_by(TouchEvent.touch_id)
            ):
                sent_at[touch_id] = at
        for row in rows:
            after = row.id
            state = states[row.id]
            if filters.status and state.status.value != filters.status:
                continue
            attempt = attempts.get(row.id)
            yield {
                "touch_id": row.id,
                "touch_key": row.touch_key,
                "rule_id": row.rule_id,
                "rule_hash": row.rule_hash,
                "customer_id": row.customer_id,
                "policy_id": row.policy_id,
                "event_id": row.event_id,
                "occurrence": row.occurrence.isoformat(),
                "channel": attempt.channel if attempt else row.channel,
                "status": state.status.value,
                "reason": state.reason,
                "recipient": mask_recipient(attempt.recipient) if attempt else None,
                "template_id": row.template_id,
                "template_hash": attempt.template_hash if attempt else None,
                "content_hash": attempt.content_hash if attempt else None,
                "locale": row.locale,
                "sent_at": _iso(sent_at.get(row.id)),
                "run_id": row.run_id,
            }
            yielded += 1
            if limit is not None and yielded >= limit:
                return


# -- export ------------------------------------------------------------------------------------

EXPORT_COLUMNS = (
    "touch_id",
    "touch_key",
    "rule_id",
    "rule_hash",
    "customer_id",
    "policy_id",
    "event_id",
    "occurrence",
    "channel",
    "status",
    "reason",
    "recipient",
    "template_id",
    "template_hash",
    "content_hash",
    "locale",
    "sent_at",
    "run_id",
)
# A spreadsheet runs a cell starting with one of these as a formula (OWASP, CSV injection),
# a masked phone number "+86 138****8000" included; the full-width forms too, which
# spreadsheets in CJK locales may take for the ASCII ones.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def csv_cell(value: Any) -> str:
    """One CSV cell, neutralised: a leading apostrophe keeps a would-be formula as text."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


class CsvExport:
    """The touches matching ``filters`` as CSV (``EXPORT_COLUMNS``, a header even when
    nothing matches, CRLF lines, cells neutralised by ``csv_cell``), in chunks of about
    64 KB: ``touches`` reads the ledger page by page, so memory stays constant. ``rows``
    counts the touches written so far. ``care audit export`` and the web view's export.
    """

    def __init__(self, store: Store, filters: Filters) -> None:
        self.store = store
        self.filters = filters
        self.rows = 0

    def __iter__(self) -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(EXPORT_COLUMNS)
        for row in touches(self.store, self.filters):
            writer.writerow([csv_cell(row.get(column)) for column in EXPORT_COLUMNS])
            self.rows += 1
            if buffer.tell() > 65536:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()


# -- one touch ---------------------------------------------------------------------------------


def find_touch_id(store: Store, ref: int | str) -> int | None:
    """A touch's id from its id or its idempotency key (``rule|kind:subject|YYYY-MM-DD``)."""
    if isinstance(ref, int) or str(ref).strip().isdigit():
        touch_id = int(ref)
        # No such row (and the database cannot take the number).
        return touch_id if 0 <= touch_id <= ROW_ID_MAX else None
    with store.read_session() as session:
        found = session.scalar(select(TouchRow.id).where(TouchRow.touch_key == str(ref).strip()))
    return int(found) if found is not None else None


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed(v) for v in value]
    return value


def decision_facts(detail: Any) -> dict[str, Any]:
    """What a status event's ``detail`` says about the decision: ``why`` (the planner's or
    the sender's explanation, naming the policy clause, e.g. ``caps.per_day=1
    (care_rules/policy.yaml:15:3)``), ``consent`` (the customer's consent when it was
    decided, ``sms on, email off, marketing off``, or None where not recorded) and ``other``
    (the rest of the detail: a provider's answer, ...). Addresses in it are masked."""
    if not isinstance(detail, dict):
        return {"why": [], "consent": None, "other": _scrubbed(detail) or None}
    explain = detail.get("explain") or []
    why = [scrub(str(line)) for line in (explain if isinstance(explain, list) else [explain])]
    consent = detail.get("consent")
    consent_text = (
        ", ".join(f"{purpose} {'on' if granted else 'off'}" for purpose, granted in consent.items())
        if isinstance(consent, dict)
        else None
    )
    other = {k: _scrubbed(v) for k, v in detail.items() if k not in ("explain", "consent")}
    return {"why": why, "consent": consent_text, "other": other or None}


def touch_detail(store: Store, ref: int | str) -> dict[str, Any] | None:
    """One touch, by id or idempotency key, with every attempt (content, hashes, masked
    recipient) and its history; each history entry with its ``decision_facts``, and the
    touch with those of the decision behind its current status (``why``, ``consent``).

    Phone numbers and email addresses are masked in everything, message content included
    (its ``content_hash`` is of the message as sent). ``care audit show`` and the web view's
    touch page both show this."""
    from . import Ledger

    touch_id = find_touch_id(store, ref)
    if touch_id is None:
        return None
    ledger = Ledger(store)
    with store.read_session() as session:
        row = session.get(TouchRow, touch_id)
        if row is None:
            return None
        (state,) = ledger._states(session, [row])
        attempts = session.scalars(
            select(Attempt).where(Attempt.touch_id == touch_id).order_by(Attempt.attempt_no)
        ).all()
        events = session.scalars(
            select(TouchEvent).where(TouchEvent.touch_id == touch_id).order_by(TouchEvent.id)
        ).all()
    history = [
        {
            "at": _iso(e.at),
            "status": e.status,
            "reason": scrub(e.reason) if e.reason else None,
            "provider_message_id": e.provider_message_id,
            "run_id": e.run_id,
            **decision_facts(e.detail),
        }
        for e in events
    ]
    # The decision behind the current status: the newest event that explains one.
    decided: dict[str, Any] = next(
        (h for h in reversed(history) if h["why"] or h["consent"] is not None),
        {"why": [], "consent": None},
    )
    return {
        "touch_id": row.id,
        "touch_key": row.touch_key,
        "rule_id": row.rule_id,
        "rule_hash": row.rule_hash,
        "category": row.category,
        "priority": row.priority,
        "customer_id": row.customer_id,
        "policy_id": row.policy_id,
        "event_id": row.event_id,
        "occurrence": row.occurrence.isoformat(),
        "send_at": _iso(state.send_at),
        "timezone": row.timezone,
        "locale": row.locale,
        "tier": row.tier,
        "status": state.status.value,
        "reason": state.reason,
        "why": decided["why"],
        "consent": decided["consent"],
        "run_id": row.run_id,
        "attempts": [
            {
                "attempt_no": a.attempt_no,
                "channel": a.channel,
                "transport": a.transport,
                "recipient": mask_recipient(a.recipient),
                "template_id": a.template_id,
                "template_hash": a.template_hash,
                "content_hash": a.content_hash,
                "subject": scrub(a.subject) if a.subject is not None else None,
                "body": scrub(a.body) if a.body is not None else None,
                "html": scrub(a.html) if a.html is not None else None,
                "created_at": _iso(a.created_at),
                "run_id": a.run_id,
            }
            for a in attempts
        ],
        "history": history,
    }


def erase_content(store: Store, before: dt.datetime) -> int:
    """Retention: erase message content of attempts made before ``before``; hashes stay, so
    the chain still verifies. Returns how many attempts were erased."""
    from sqlalchemy import update

    with store.session() as session:
        result = session.execute(
            update(Attempt)
            .where(Attempt.created_at < before, Attempt.body.is_not(None))
            .values(subject=None, body=None, html=None)
        )
        return int(result.rowcount or 0)


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    aware = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    return aware.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
