"""What auditors ask of the ledger: search, a touch's history, export, and verification.

Recipients are masked in everything this module returns. ``verify`` walks the hash chain
(``ledger.chain``) and the anchors written outside the database, and names the first place
where the ledger differs from what was written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from .ledger import chain
from .ledger.models import Attempt, TouchCurrent, TouchEvent, TouchRow
from .mask import mask_recipient
from .render import RenderedMessage
from .store.db import Store
from .vocab import Channel

PAGE = 1000


# -- anchors ---------------------------------------------------------------------------------


def _anchor_mac(key: bytes, record: dict[str, Any]) -> str:
    message = f"{record['seq']}|{record['chain_hash']}|{record['at']}|{record['run_id']}"
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).hexdigest()


def anchor_key() -> bytes | None:
    """The anchor signing key, from ``$CARE_ANCHOR_KEY`` (never stored in the database)."""
    value = os.environ.get("CARE_ANCHOR_KEY")
    return value.encode("utf-8") if value else None


def write_anchor(
    store: Store, path: Path, *, run_id: str, now: dt.datetime, key: bytes | None
) -> dict[str, Any] | None:
    """Append the chain head to the anchor file (one JSON line, HMAC-signed when keyed)."""
    with store.read_session() as session:
        seq, chain_hash = chain.head(session)
    if seq == 0:
        return None
    record: dict[str, Any] = {
        "seq": seq,
        "chain_hash": chain_hash,
        "at": now.astimezone(dt.timezone.utc).isoformat(),
        "run_id": run_id,
    }
    record["hmac"] = _anchor_mac(key, record) if key else None
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return record


# -- verification ----------------------------------------------------------------------------


@dataclass
class VerifyReport:
    ok: bool = True
    entries: int = 0
    anchors: int = 0
    problem: str | None = None
    warnings: list[str] = field(default_factory=list)

    def fail(self, problem: str) -> VerifyReport:
        self.ok = False
        self.problem = problem
        return self


def verify(
    store: Store, *, anchor_file: Path | None = None, key: bytes | None = None
) -> VerifyReport:
    """Check every ledger row against the chain, the chain's links, and the anchors."""
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
                return report.fail(
                    f"{table} row {unchained} is not in the chain: it was added outside the "
                    f"ledger ({rows} rows, {chained} chained)"
                )
        head_seq, _ = chain.head(session)
        if anchor_file is not None:
            _check_anchors(session, anchor_file, key, head_seq, report)
    return report


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


def _check_anchors(
    session: Any, path: Path, key: bytes | None, head_seq: int, report: VerifyReport
) -> None:
    if not path.exists():
        report.warnings.append(f"no anchor file at {path}: the newest rows cannot be checked")
        return
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            report.fail(f"{path}:{number}: not a valid anchor record")
            return
        if key is not None:
            if not record.get("hmac") or not hmac.compare_digest(
                record["hmac"], _anchor_mac(key, record)
            ):
                report.fail(f"{path}:{number}: anchor signature does not match (forged or edited)")
                return
        elif record.get("hmac"):
            report.warnings.append(
                "anchors are signed but CARE_ANCHOR_KEY is not set: signatures not checked"
            )
        seq = int(record["seq"])
        entry = session.get(chain.ChainEntry, seq)
        if entry is None or seq > head_seq:
            report.fail(
                f"{path}:{number}: the ledger was cut back: anchor of {record['at']} names chain "
                f"entry {seq}, the ledger ends at {head_seq}"
            )
            return
        if entry.chain_hash != record["chain_hash"]:
            report.fail(
                f"{path}:{number}: chain entry {seq} differs from its anchor of {record['at']}"
            )
            return
        report.anchors += 1
    if key is None and lines:
        report.warnings.append("CARE_ANCHOR_KEY is not set: anchors are not authenticated")


# -- search and export -------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    first: dt.date | None = None
    last: dt.date | None = None
    customer_id: str | None = None
    rule_id: str | None = None
    channel: str | None = None
    status: str | None = None


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
    from .ledger import Ledger

    ledger = Ledger(store)
    yielded = 0
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


def touch_detail(store: Store, touch_id: int) -> dict[str, Any] | None:
    """One touch with every attempt (content, hashes, masked recipient) and its history."""
    from .ledger import Ledger

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
                "subject": a.subject,
                "body": a.body,
                "html": a.html,
                "created_at": _iso(a.created_at),
                "run_id": a.run_id,
            }
            for a in attempts
        ],
        "history": [
            {
                "at": _iso(e.at),
                "status": e.status,
                "reason": e.reason,
                "provider_message_id": e.provider_message_id,
                "detail": e.detail,
                "run_id": e.run_id,
            }
            for e in events
        ],
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
