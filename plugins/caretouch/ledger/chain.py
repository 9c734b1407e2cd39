"""The hash chain that makes the ledger tamper-evident (SPEC section 7, docs/audit.md).

Every ledger row (touch, attempt, status event) gets one entry in ``ledger_chain``, in the
order the rows were committed. An entry holds the SHA-256 of the row's canonical form and
``chain_hash = SHA-256(previous chain_hash || row_hash)``. Editing a row changes its row
hash; deleting, inserting or reordering rows breaks the links; truncating the newest rows is
caught by the anchors written outside the database at the end of every run.

Canonical form of a row: a JSON object of every non-NULL column except the message content
(subject, body, html: retention may erase them; their ``content_hash`` is covered instead),
keys sorted, no spaces, UTF-8; dates as ``YYYY-MM-DD``, instants in UTC as
``YYYY-MM-DDTHH:MM:SS.ffffffZ``, JSON columns in the same canonical form; the table name is
hashed first so a row cannot be replayed as a row of another table.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy import DateTime, Index, Integer, String, func, select, text
from sqlalchemy.orm import Mapped, Session, mapped_column

from .models import Attempt, LedgerBase, ProviderEventRow, TouchEvent, TouchRow

GENESIS = "0" * 64
CHAINED: dict[str, Any] = {
    TouchRow.__tablename__: TouchRow,
    Attempt.__tablename__: Attempt,
    TouchEvent.__tablename__: TouchEvent,
    ProviderEventRow.__tablename__: ProviderEventRow,
}
# Not covered by the row hash: retention may erase them (content_hash stays).
CONTENT_COLUMNS = frozenset({"subject", "body", "html"})
# Any constant: the PostgreSQL advisory lock that serialises writers of the chain.
_PG_LOCK = 730_214_559


class ChainEntry(LedgerBase):
    __tablename__ = "ledger_chain"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    table_name: Mapped[str] = mapped_column(String(32), nullable=False)
    row_id: Mapped[int] = mapped_column(Integer, nullable=False)
    row_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    chain_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (Index("ix_ledger_chain_table_row", "table_name", "row_id", unique=True),)


def _canonical_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        return aware.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _canonical_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical_value(v) for v in value]
    return value


def canonical(table: str, row: Mapping[str, Any]) -> bytes:
    """The canonical serialisation of one ledger row (see the module docstring).

    Columns whose value is NULL are left out, so that a nullable column added to a table
    later does not change the hash of the rows written before it existed.
    """
    body = {
        k: _canonical_value(v) for k, v in row.items() if k not in CONTENT_COLUMNS and v is not None
    }
    return (
        table + "\n" + json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    ).encode("utf-8")


def row_hash(table: str, row: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(table, row)).hexdigest()


def link(previous: str, this_row: str) -> str:
    return hashlib.sha256((previous + this_row).encode("ascii")).hexdigest()


def row_dict(obj: Any) -> dict[str, Any]:
    return {c.name: getattr(obj, c.key) for c in obj.__table__.columns}


def lock(session: Session) -> None:
    """Serialise chain writers (SQLite: BEGIN IMMEDIATE already holds the database)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})


def head(session: Session) -> tuple[int, str]:
    last = session.execute(
        select(ChainEntry.seq, ChainEntry.chain_hash).order_by(ChainEntry.seq.desc()).limit(1)
    ).first()
    return (int(last[0]), str(last[1])) if last else (0, GENESIS)


def seal(session: Session, now: dt.datetime) -> int:
    """Chain every ledger row written in this transaction; returns how many were chained.

    Call it at the end of a write transaction that took ``lock`` first: writers are then
    serialised, so the rows not yet chained are exactly this transaction's.
    """
    session.flush()
    _, previous = head(session)
    entries = []
    for table, model in CHAINED.items():
        done = session.scalar(
            select(func.max(ChainEntry.row_id)).where(ChainEntry.table_name == table)
        )
        rows = session.scalars(select(model).where(model.id > (done or 0)).order_by(model.id)).all()
        for obj in rows:
            digest = row_hash(table, row_dict(obj))
            previous = link(previous, digest)
            entries.append(
                {
                    "table_name": table,
                    "row_id": obj.id,
                    "row_hash": digest,
                    "chain_hash": previous,
                    "at": now,
                }
            )
    if entries:
        session.execute(ChainEntry.__table__.insert(), entries)
    return len(entries)


def entries(session: Session, batch: int = 5000) -> Iterator[ChainEntry]:
    """Every chain entry in order, in constant memory."""
    after = 0
    while True:
        chunk = session.scalars(
            select(ChainEntry).where(ChainEntry.seq > after).order_by(ChainEntry.seq).limit(batch)
        ).all()
        if not chunk:
            return
        yield from chunk
        after = chunk[-1].seq
