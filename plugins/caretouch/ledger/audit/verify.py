"""Verification: every ledger row against the hash chain, the chain's links, the customers'
consent flags against their last recorded change, and the anchors.

``verify`` walks the chain (``ledger.chain``) and the anchors (``ledger.anchors``) and names
the first place where the ledger differs from what was written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, inspect, select

from ...storage import Location
from ...store.db import Store, append_only_gaps
from ...store.models import ConsentEvent, Customer
from .. import anchors, chain
from ..models import Attempt
from .search import iso


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
    anchor_file: Location | str | Path | None = None,
    key: bytes | None = None,
    allow_unanchored: bool = False,
) -> VerifyReport:
    """Check every ledger row against the chain, the chain's links, the customers' consent
    flags against their last recorded change, and the anchors (``ledger.anchors.check``;
    skipped when ``anchor_file``, a ``.jsonl`` file or a folder of anchor objects
    (``storage.Location``, URL or path), is None)."""
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
            f"{iso(event.at)}, {event.source}) set it {on[bool(event.granted)]}: it was "
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
            content = chain.content_hash(obj.channel, obj.subject, obj.body, obj.html)
            if content != obj.content_hash:
                report.fail(f"{place}: the message content no longer matches its content_hash")
                return previous
        previous = entry.chain_hash
        report.entries += 1
    return previous
