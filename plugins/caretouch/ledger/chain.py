"""The hash chain that makes the ledger tamper-evident (SPEC section 7, docs/audit.md).

Every ledger row (touch, attempt, status event, provider event, consent change, anchor) gets
one entry in ``ledger_chain``, in the order the rows were committed. An entry holds the
SHA-256 of the row's canonical form and ``chain_hash = SHA-256(previous chain_hash ||
row_hash)``. Editing a row changes its row hash; deleting, inserting or reordering rows breaks
the links; truncating the newest rows is caught by the anchors (``ledger.anchors``).

A writer chains only the rows it inserted itself: ``watermark`` notes the newest id of every
chained table when its transaction begins, ``own_rows`` finds its rows above it, and
``seal`` hashes them, then takes the chain lock only to link them to the head. A row
inserted by anyone else (plain SQL) is therefore never chained, and ``care audit verify``
keeps reporting it. Rows inserted in bulk through ``insert_rows`` (a plan's touches and
status events) are hashed from the values inserted, which ``own_rows`` then need not read
back; it still looks for every row of the transaction, so one inserted any other way is
chained all the same.

Canonical form of a row: a JSON object of every non-NULL column except the message content
(subject, body, html: retention may erase them; their ``content_hash`` is covered instead),
keys sorted, no spaces, UTF-8; dates as ``YYYY-MM-DD``, instants in UTC as
``YYYY-MM-DDTHH:MM:SS.ffffffZ``, JSON columns in the same canonical form; the table name is
hashed first so a row cannot be replayed as a row of another table.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import secrets
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, DateTime, Index, Integer, String, func, select, text
from sqlalchemy.orm import Mapped, Session, mapped_column

from ..store.db import among
from ..store.models import ConsentEvent
from .models import AnchorRow, Attempt, LedgerBase, ProviderEventRow, TouchEvent, TouchRow
from .sql import CHUNK, allocate_ids, copy_rows, insert_returning

GENESIS = "0" * 64
# In the order ``seal`` chains a transaction's rows (new tables go last: the order of the
# rows already chained must not change).
CHAINED: dict[str, Any] = {
    TouchRow.__tablename__: TouchRow,
    Attempt.__tablename__: Attempt,
    TouchEvent.__tablename__: TouchEvent,
    ProviderEventRow.__tablename__: ProviderEventRow,
    ConsentEvent.__tablename__: ConsentEvent,
    AnchorRow.__tablename__: AnchorRow,
}
# Tables that joined the chain after stores existed: ``adopt_unchained_tables`` chains the
# rows an older store holds, once.
ADOPTABLE = frozenset({ConsentEvent.__tablename__})
# Not covered by the row hash: retention may erase them (content_hash stays).
CONTENT_COLUMNS = frozenset({"subject", "body", "html"})
# Any constant: the PostgreSQL advisory lock that serialises writers of the chain.
_PG_LOCK = 730_214_559
# ``Session.info`` key: the rows this transaction inserted through ``insert_rows``, by table
# and id, as inserted (``own_rows`` hashes them without reading them back).
_INSERTED = "caretouch.ledger.inserted"
# ``Session.info`` key: row hashes ``insert_rows`` computed as it inserted, by (table, id).
_HASHED = "caretouch.ledger.hashed"
# Stands for a JSON value in a serialised row until its text is spliced in: a NUL (which no
# value stored on PostgreSQL holds) and 128 random bits, new in every process.
_PLACEHOLDER = "\x00" + secrets.token_hex(16) + ":"


class ChainEntry(LedgerBase):
    __tablename__ = "ledger_chain"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    table_name: Mapped[str] = mapped_column(String(32), nullable=False)
    row_id: Mapped[int] = mapped_column(Integer, nullable=False)
    row_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    chain_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (Index("ix_ledger_chain_table_row", "table_name", "row_id", unique=True),)


# Per chained table, its JSON columns: their values are what ``json.loads`` made of the
# stored text (read back, or ``insert_rows``'s round trip), which serialises as it is.
_JSON_COLUMNS = {
    table: frozenset(c.name for c in model.__table__.columns if isinstance(c.type, JSON))
    for table, model in CHAINED.items()
}
# Values that serialise as they are: most columns of most rows (checked by exact type first,
# which is what a festival's millions of row hashes spend their time on).
_PLAIN = frozenset({str, int, float, bool, type(None)})


@functools.lru_cache(maxsize=4096)
def _instant_text(value: dt.datetime) -> str:
    """An instant in the canonical form (a day's rows share a few: the writer's ``now``, the
    send times), worked out once for each."""
    aware = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    return aware.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@functools.lru_cache(maxsize=4096)
def _day_text(value: dt.date) -> str:
    return value.isoformat()


def _canonical_value(value: Any) -> Any:
    if type(value) in _PLAIN:
        return value
    if isinstance(value, dt.datetime):
        return _instant_text(value)
    if isinstance(value, dt.date):
        return _day_text(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [v if type(v) in _PLAIN else _canonical_value(v) for v in value]
    return value


def canonical(table: str, row: Mapping[Any, Any]) -> bytes:
    """The canonical serialisation of one ledger row (see the module docstring).

    Columns whose value is NULL are left out, so that a nullable column added to a table
    later does not change the hash of the rows written before it existed. A JSON column's
    value is taken as decoded from JSON text (string keys, lists, plain values).
    """
    decoded = _JSON_COLUMNS.get(table, frozenset())
    body = {
        k: v if type(v) in _PLAIN or k in decoded else _canonical_value(v)
        for k, v in row.items()
        if v is not None and k not in CONTENT_COLUMNS
    }
    return (
        table + "\n" + json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    ).encode("utf-8")


def row_hash(table: str, row: Mapping[Any, Any]) -> str:
    return hashlib.sha256(canonical(table, row)).hexdigest()


def content_hash(channel: str, subject: str | None, body: str, html: str | None) -> str:
    """An attempt's ``content_hash``: the SHA-256 of its channel, subject, body and html, each
    followed by a NUL (what ``render.RenderedMessage.content_hash`` computes for a message)."""
    h = hashlib.sha256()
    for part in (channel, subject or "", body, html or ""):
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def link(previous: str, this_row: str) -> str:
    return hashlib.sha256((previous + this_row).encode("ascii")).hexdigest()


def row_dict(obj: Any) -> dict[str, Any]:
    return {c.name: getattr(obj, c.key) for c in obj.__table__.columns}


@dataclass(frozen=True)
class Watermark:
    """Per chained table, the highest row id known when a write transaction began: the
    transaction's own rows are above it (``own_rows``)."""

    ids: dict[str, int]


def lock(session: Session) -> None:
    """Take the chain lock until the transaction ends: PostgreSQL's advisory transaction
    lock (SQLite: BEGIN IMMEDIATE already holds the database). ``seal`` takes it to link a
    transaction's rows to the head; ``writer.write(serial=True)`` at the start."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})


def watermark(session: Session) -> Watermark:
    """The newest row of every chained table, in one round trip, at the start of a write.

    The higher of the newest row and the newest chained row: where a row was deleted and
    its id handed out again (SQLite reuses the highest rowid), the new row is not chained in
    place of the old one, so verify reports the change instead of a failed write.
    """
    columns = []
    for table, model in CHAINED.items():
        columns.append(select(func.max(model.id)).scalar_subquery())
        columns.append(
            select(func.max(ChainEntry.row_id))
            .where(ChainEntry.table_name == table)
            .scalar_subquery()
        )
    found = session.execute(select(*columns)).one()
    return Watermark(
        {
            table: max(int(found[2 * i] or 0), int(found[2 * i + 1] or 0))
            for i, table in enumerate(CHAINED)
        }
    )


def insert_rows(
    session: Session,
    model: Any,
    rows: Sequence[Mapping[str, Any]],
    *,
    string_keyed: Collection[str] = (),
) -> list[int]:
    """Insert new rows of a chained table in bulk and return their ids, in order.

    PostgreSQL: ids taken from the table's sequence in one round trip, then ``COPY``;
    elsewhere one ``INSERT`` with many parameter sets, ``RETURNING`` the ids. Instants are
    stored in UTC (naive ones are taken as UTC, as the canonical form has it), so that the
    values kept for ``own_rows`` are what reading the rows back would give. A row that
    breaks a unique constraint fails the whole transaction (IntegrityError).

    ``string_keyed``: JSON columns whose values have string keys only, at every depth (what
    ``codec.encode`` makes). For such a value, serialising what reading it back gives, in
    canonical form, is the same as serialising the value itself in canonical form (keys
    sorted, no spaces), so the row is hashed at once with that text spliced in, without
    decoding the stored text again. It is stored as any JSON value is, keys in their order."""
    if not rows:
        return []
    table = model.__table__
    instants = [c.name for c in table.columns if isinstance(c.type, DateTime)]
    documents = [c for c in _JSON_COLUMNS[table.name] if c not in string_keyed]
    stored = []  # what is inserted: JSON columns as their text
    kept = []  # what reading the rows back would give: JSON columns decoded from it
    texts = []  # per row, the canonical text of its string-keyed JSON columns
    for row in rows:
        row = dict(row)
        for name in instants:
            value = row.get(name)
            if value is not None:
                row[name] = _utc(value)
        decoded = dict(row)
        for name in documents:
            value = row.get(name)
            if value is not None:
                row[name] = dumped = json.dumps(value)
                decoded[name] = json.loads(dumped)
        canonical_texts = {}
        for name in string_keyed:
            value = row.get(name)
            if value is not None:
                # Stored as SQLAlchemy's JSON type stores it (readers see its keys in the
                # order given); hashed in canonical form, serialised from the value itself.
                row[name] = json.dumps(value)
                canonical_texts[name] = _json_text(value)
        stored.append(row)
        kept.append(decoded)
        texts.append(canonical_texts)
    ids = allocate_ids(session, table, len(stored))
    if ids is None:
        ids = insert_returning(session, table, stored, json_text=True)
    else:
        for row, row_id in zip(stored, ids, strict=True):
            row["id"] = row_id
        copy_rows(session, table, stored, json_text=True)
    inserted = session.info.setdefault(_INSERTED, {}).setdefault(table.name, {})
    hashes = session.info.setdefault(_HASHED, {})
    for row, row_id, canonical_texts in zip(kept, ids, texts, strict=True):
        row["id"] = row_id
        inserted[row_id] = row
        if string_keyed:
            hashes[(table.name, row_id)] = _spliced_hash(table.name, row, canonical_texts)
    return ids


def _json_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _spliced_hash(table: str, row: Mapping[str, Any], texts: Mapping[str, str]) -> str:
    """``row_hash`` of a row whose columns ``texts`` hold JSON values given as their
    canonical text: the rest is serialised with a placeholder for each, replaced by it."""
    body = {
        k: v if type(v) in _PLAIN else _canonical_value(v)
        for k, v in row.items()
        if v is not None and k not in CONTENT_COLUMNS and k not in texts
    }
    for name in texts:
        body[name] = _PLACEHOLDER + name
    serialised = _json_text(body)
    for name, document in texts.items():
        serialised = serialised.replace(_json_text(_PLACEHOLDER + name), document, 1)
    return hashlib.sha256((table + "\n" + serialised).encode("utf-8")).hexdigest()


def note_inserted(session: Session, model: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """Note rows this transaction inserted itself (with their ids), for ``own_rows`` to
    hash as they are instead of reading them back: for a table without JSON columns, whose
    instants are all in UTC (any other row is left to be read back)."""
    table = model.__table__
    if _JSON_COLUMNS[table.name]:
        return
    instants = [c.name for c in table.columns if isinstance(c.type, DateTime)]
    inserted = session.info.setdefault(_INSERTED, {}).setdefault(table.name, {})
    for row in rows:
        if all(row.get(name) is None or row[name].tzinfo is dt.timezone.utc for name in instants):
            inserted[int(row["id"])] = dict(row)


def _utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    if value.tzinfo is dt.timezone.utc:
        return value
    return value.astimezone(dt.timezone.utc)


def own_rows(session: Session, since: Watermark) -> dict[str, list[Mapping[str, Any]]]:
    """The ledger rows this transaction inserted, by table, in id order, each as a mapping
    of column name to value.

    Above the watermark; on PostgreSQL, where other writers insert at the same time, also
    those whose ``xmin`` is this transaction's id (a ledger write uses no savepoints: rows
    inserted in one would carry the subtransaction's id and stay unchained, which verify
    would report). On SQLite the transaction holds the database, so every row above the
    watermark is its own. Rows inserted through ``insert_rows`` are taken as inserted; only
    their ids are read, to find any other row of the transaction, which is read whole.
    """
    session.flush()
    postgres = session.get_bind().dialect.name == "postgresql"
    inserted: dict[str, dict[int, dict[str, Any]]] = session.info.pop(_INSERTED, {})
    mine: dict[str, list[Mapping[str, Any]]] = {}
    for table, model in CHAINED.items():
        columns = model.__table__.c
        known = inserted.get(table, {})
        ids = select(columns.id).where(columns.id > since.ids[table]).order_by(columns.id)
        if postgres:
            ids = ids.where(text(f"{table}.xmin = pg_current_xact_id()::xid"))
        found = [int(i) for i in session.scalars(ids)]
        unknown = [i for i in found if i not in known]
        # An id at or below the watermark (SQLite hands out again the id of a deleted
        # newest row) is not chained in place of the old row: verify reports the change.
        rows: dict[int, Mapping[str, Any]] = {
            i: row for i, row in known.items() if i > since.ids[table]
        }
        for start in range(0, len(unknown), CHUNK):
            # Plain rows, not ORM objects: hashing needs the columns only.
            for row in session.execute(
                select(model.__table__).where(
                    among(session, columns.id, unknown[start : start + CHUNK])
                )
            ):
                rows[int(row.id)] = dict(row._mapping)
        if rows:
            mine[table] = [rows[i] for i in sorted(rows)]
    return mine


def head(session: Session) -> tuple[int, str]:
    last = session.execute(
        select(ChainEntry.seq, ChainEntry.chain_hash).order_by(ChainEntry.seq.desc()).limit(1)
    ).first()
    return (int(last[0]), str(last[1])) if last else (0, GENESIS)


def seal(session: Session, now: dt.datetime, own: Mapping[str, Sequence[Mapping[str, Any]]]) -> int:
    """Chain the ledger rows this transaction wrote (``own_rows``); returns how many.

    The row hashes are computed first, outside any lock; then the chain lock is taken, the
    hashes are linked to the chain's head and the entries inserted. The lock is held until
    the transaction commits, so the chain's order is the order writers commit in.
    """
    known = session.info.pop(_HASHED, {})
    hashed = [
        (table, row["id"], known.get((table, row["id"])) or row_hash(table, row))
        for table in CHAINED
        for row in own.get(table, ())
    ]
    if not hashed:
        return 0
    lock(session)
    _, previous = head(session)
    entries = []
    for table, row_id, digest in hashed:
        previous = link(previous, digest)
        entries.append(
            {
                "table_name": table,
                "row_id": row_id,
                "row_hash": digest,
                "chain_hash": previous,
                "at": now,
            }
        )
    copy_rows(session, ChainEntry.__table__, entries)
    return len(entries)


def adopt_unchained_tables(session: Session) -> dict[str, int]:
    """Chain every row of an ``ADOPTABLE`` table that has no chain entry at all; returns
    how many were chained, by table.

    For a store made before ``consent_events`` was chained: ``care store init`` adopts its
    rows once. A table with a single chain entry is never adopted again, so rows inserted by
    plain SQL later stay unchained. Each entry is stamped with its row's own ``at``.
    """
    lock(session)
    session.flush()
    _, previous = head(session)
    adopted: dict[str, int] = {}
    for table, model in CHAINED.items():
        if table not in ADOPTABLE or session.scalar(
            select(ChainEntry.seq).where(ChainEntry.table_name == table).limit(1)
        ):
            continue
        count = 0
        for obj in session.scalars(select(model).order_by(model.id)):
            digest = row_hash(table, row_dict(obj))
            previous = link(previous, digest)
            session.add(
                ChainEntry(
                    table_name=table, row_id=obj.id, row_hash=digest, chain_hash=previous, at=obj.at
                )
            )
            count += 1
        if count:
            session.flush()
            adopted[table] = count
    return adopted


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
