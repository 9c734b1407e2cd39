"""Anchors: the chain head written outside the database, and recorded in it (docs/audit.md).

Where anchors go is ``$CARE_ANCHOR_FILE`` (``storage.anchors``), one of two kinds:

- a **local ``.jsonl`` file** (a plain path or ``file://``; development, and deployments
  whose workers share a disk): one JSON line per anchor, appended under an exclusive
  ``flock``;
- a **folder URL** (``s3://bucket/care``, or a local folder): one object per anchor,
  ``<folder>/anchors/<n, 10 digits>-<hash>.json``, written once and never replaced (an
  exclusive create; S3's conditional put), on ``s3://`` under S3 Object Lock retention
  (``$CARE_ANCHOR_LOCK_MODE`` until ``$CARE_ANCHOR_RETENTION_DAYS`` after the run). Object
  storage cannot append: each anchor is a fact of its own.

Each anchor record (a line, or an object's content) is::

    {"n": 7, "seq": 1840, "chain_hash": "...", "prev": "<hash of anchor 6>",
     "at": "2026-11-23T12:00:03.000000Z", "run_id": "...", "hash": "...", "hmac": "..."}

- ``hash`` is the SHA-256 of ``caretouch-anchor|n|seq|chain_hash|prev|at|run_id``, and
  ``prev`` the previous anchor's ``hash`` (64 zeros for the first): the anchors form a chain
  of their own, so an anchor removed, inserted, reordered or edited breaks it.
- ``hmac`` is the HMAC-SHA256 of the same text under ``$CARE_ANCHOR_KEY``, a key that is not
  in the database: without it nobody can write an anchor that verifies. It is null when no
  key is set, and every command that writes or checks anchors then warns (outside
  development, a folder URL, the configuration refuses to start without the key).
- Every anchor is also a row of ``ledger_anchors``, chained like every ledger row. The ledger
  thus knows how many anchors exist (a deleted or cut-back file is detected), and the file
  knows the ledger's head (a ledger cut back past an anchor is detected). Someone able to
  rewrite both the store and the file consistently is not detected; keep the file where the
  database's administrators cannot rewrite it.

Writing: the anchor row is committed first, under the chain lock (which numbers anchors
without gaps); then every anchor the ledger holds beyond the last one written is written, in
order. Concurrent writers therefore write in order (a file under its lock; an object that
another writer created first is the same anchor, and checked to be), and an anchor left out
by a crash between the two steps is written by the next writer.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..config import CareConfig
from ..errors import CareError
from ..storage import Location, Retention
from ..storage import at as location_of
from ..store.db import Store
from . import chain, writer
from .models import AnchorRow

log = logging.getLogger(__name__)

KEY_ENV = "CARE_ANCHOR_KEY"
UNSIGNED = (
    f"{KEY_ENV} is not set: anchors are NOT signed, so anyone who can write the anchor file "
    "can forge them; set it to a secret kept outside the database (docs/audit.md)"
)
_TAIL = 65536  # bytes read from the end of the file to find its last anchor
FOLDER = "anchors"  # a folder location's anchor objects: <folder>/anchors/<n>-<hash>.json


class AnchorError(CareError):
    """The anchor file and the ledger disagree, so no anchor was appended."""


def anchor_key(config: CareConfig | None = None) -> bytes | None:
    """The anchor signing key, from ``$CARE_ANCHOR_KEY`` (never stored in the database), as
    ``config`` (else ``CareConfig.from_env()``) has it."""
    secret = (config or CareConfig.from_env()).anchor_key
    return secret.get_secret_value().encode("utf-8") if secret is not None else None


def is_file(place: Location) -> bool:
    """Whether anchors at ``place`` are lines of a ``.jsonl`` file (else objects)."""
    return place.url.endswith(".jsonl")


def object_name(record: Mapping[str, Any]) -> str:
    """An anchor object's name: its number (10 digits, so names sort in order), its hash."""
    return f"{int(record['n']):010d}-{record['hash']}.json"


def retention(config: CareConfig, place: Location, now: dt.datetime) -> Retention | None:
    """The S3 Object Lock retention of an anchor written at ``now`` to ``place``: on
    ``s3://`` (with ``$CARE_ANCHOR_RETENTION_DAYS`` > 0) ``$CARE_ANCHOR_LOCK_MODE`` until
    that many days after ``now``; None elsewhere."""
    if is_file(place) or not place.url.lower().startswith(("s3://", "s3a://")):
        return None
    if config.anchor_retention_days == 0:
        return None
    until = now + dt.timedelta(days=config.anchor_retention_days)
    return Retention(config.anchor_lock_mode, until.astimezone(dt.timezone.utc))


def instant(value: dt.datetime) -> str:
    """An anchor's ``at``: UTC, microseconds, ``Z`` (a naive value is taken as UTC)."""
    aware = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    return aware.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _message(record: Mapping[str, Any]) -> bytes:
    return (
        f"caretouch-anchor|{record['n']}|{record['seq']}|{record['chain_hash']}|"
        f"{record['prev']}|{record['at']}|{record['run_id']}"
    ).encode()


def anchor_hash(record: Mapping[str, Any]) -> str:
    """The hash the next anchor links to (covers everything but the signature)."""
    return hashlib.sha256(_message(record)).hexdigest()


def anchor_mac(key: bytes, record: Mapping[str, Any]) -> str:
    return hmac.new(key, _message(record), hashlib.sha256).hexdigest()


def legacy_mac(key: bytes, record: Mapping[str, Any]) -> str:
    """The signature of an anchor written before anchors were linked (no ``n``/``prev``)."""
    message = f"{record['seq']}|{record['chain_hash']}|{record['at']}|{record['run_id']}"
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).hexdigest()


def as_record(row: AnchorRow) -> dict[str, Any]:
    """The anchor file's line for a ``ledger_anchors`` row."""
    return {
        "n": row.number,
        "seq": row.seq,
        "chain_hash": row.chain_hash,
        "prev": row.prev_hash,
        "at": instant(row.at),
        "run_id": row.run_id,
        "hash": row.anchor_hash,
        "hmac": row.hmac,
    }


def record(store: Store, *, run_id: str, now: dt.datetime, key: bytes | None) -> AnchorRow | None:
    """Record an anchor of the chain head in the ledger; None when the ledger is empty or
    nothing was written since the last anchor (whose own row is then the head)."""
    # Serial: the anchor numbers itself after the last one and names the chain's head.
    with writer.write(store, now, serial=True) as session:
        seq, chain_hash = chain.head(session)
        if seq == 0:
            return None
        last = session.scalars(
            select(AnchorRow).order_by(AnchorRow.number.desc()).limit(1)
        ).one_or_none()
        if last is not None:
            own = session.scalar(
                select(chain.ChainEntry.seq).where(
                    chain.ChainEntry.table_name == AnchorRow.__tablename__,
                    chain.ChainEntry.row_id == last.id,
                )
            )
            if own == seq:
                return None
        fields: dict[str, Any] = {
            "n": last.number + 1 if last else 1,
            "seq": seq,
            "chain_hash": chain_hash,
            "prev": last.anchor_hash if last else chain.GENESIS,
            "at": instant(now),
            "run_id": run_id,
        }
        row = AnchorRow(
            number=fields["n"],
            seq=seq,
            chain_hash=chain_hash,
            prev_hash=fields["prev"],
            anchor_hash=anchor_hash(fields),
            hmac=anchor_mac(key, fields) if key else None,
            at=now,
            run_id=run_id,
        )
        session.add(row)
        session.flush()
    return row


def _last_line(handle: Any, path: Path) -> dict[str, Any] | None:
    """The last anchor of an open (binary) anchor file, or None if it is empty."""
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    if size == 0:
        return None
    handle.seek(max(0, size - _TAIL))
    tail = handle.read()
    if not tail.endswith(b"\n"):
        raise AnchorError(
            f"{path}: the last line is incomplete (a crash while it was written?): remove it by "
            "hand, then run `care audit verify`"
        )
    lines = [line for line in tail.splitlines() if line.strip()]
    if not lines:
        return None
    try:
        last = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        raise AnchorError(f"{path}: the last line is not an anchor record ({exc})") from None
    if not isinstance(last, dict):
        raise AnchorError(f"{path}: the last line is not an anchor record")
    return last


def _ledger_check(session: Session, where: str, last: Mapping[str, Any] | None) -> int:
    """The number of the last anchor written at ``where`` (``last``), checked to be the
    ledger's anchor of that number (else ``AnchorError``: nothing is written)."""
    # A file of anchors from before they were linked has no "n": linked ones follow it.
    have = int(last["n"]) if last is not None and "n" in last else 0
    if have:
        mine = session.scalars(select(AnchorRow).where(AnchorRow.number == have)).one_or_none()
        if mine is None:
            raise AnchorError(
                f"{where} ends with anchor {have}, which the ledger does not record: the "
                "ledger was cut back, or the anchors belong to another store; no anchor "
                "written (run `care audit verify`)"
            )
        if mine.anchor_hash != last.get("hash"):  # type: ignore[union-attr]
            raise AnchorError(
                f"{where}: its anchor {have} is not the ledger's anchor {have}: the anchors "
                "belong to another store, or one of them was altered; no anchor written "
                "(run `care audit verify`)"
            )
    return have


def _missing(session: Session, have: int) -> list[dict[str, Any]]:
    return [
        as_record(row)
        for row in session.scalars(
            select(AnchorRow).where(AnchorRow.number > have).order_by(AnchorRow.number)
        )
    ]


def sync_file(store: Store, path: Path) -> list[dict[str, Any]]:
    """Append to the anchor file every anchor the ledger records beyond the file's last one;
    returns the records appended. Raises ``AnchorError`` if the file's last anchor is not the
    ledger's anchor of that number (the ledger was cut back, or it is another store's file).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # released when the file is closed
        last = _last_line(handle, path)
        with store.read_session() as session:
            missing = _missing(session, _ledger_check(session, str(path), last))
        if missing:
            handle.write(
                "".join(json.dumps(r, sort_keys=True) + "\n" for r in missing).encode("utf-8")
            )
            handle.flush()
            os.fsync(handle.fileno())
    return missing


def _parse(data: bytes, where: str) -> dict[str, Any]:
    try:
        parsed = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AnchorError(f"{where}: not an anchor record ({exc})") from None
    if not isinstance(parsed, dict):
        raise AnchorError(f"{where}: not an anchor record")
    return parsed


def sync_objects(
    store: Store, place: Location, *, keep: Retention | None = None
) -> list[dict[str, Any]]:
    """Write, one object each, every anchor the ledger records beyond the last anchor object
    in ``place``'s ``anchors/`` folder; returns the records written. An object is never
    replaced: one that exists already (a concurrent writer's) must be the same anchor, else
    ``AnchorError``. ``keep``: the objects' S3 Object Lock retention."""
    folder = place.child(FOLDER)
    objects = folder.objects(".json")
    last = _parse(objects[-1].read_bytes(), objects[-1].url) if objects else None
    with store.read_session() as session:
        missing = _missing(session, _ledger_check(session, folder.url, last))
    for rec in missing:
        target = folder.child(object_name(rec))
        data = (json.dumps(rec, sort_keys=True) + "\n").encode("utf-8")
        try:
            target.create(data, retention=keep)
        except FileExistsError:
            if _parse(target.read_bytes(), target.url) != rec:
                raise AnchorError(
                    f"{target}: an anchor object of that name exists and is not the ledger's "
                    f"anchor {rec['n']}; it was not replaced (run `care audit verify`)"
                ) from None
        except OSError as exc:
            raise AnchorError(f"{target}: cannot be written ({exc})") from None
    return missing


def sync(store: Store, place: Location, *, keep: Retention | None = None) -> list[dict[str, Any]]:
    """Write every anchor the ledger records and ``place`` lacks (``sync_file`` for a
    ``.jsonl`` file, else ``sync_objects``)."""
    if is_file(place):
        path = place.local_path
        if path is None:  # refused by the configuration too
            raise AnchorError(
                f"{place}: an anchor file must be local (object storage cannot append)"
            )
        return sync_file(store, path)
    return sync_objects(store, place, keep=keep)


def write(
    store: Store,
    place: Location | str | Path,
    *,
    run_id: str,
    now: dt.datetime,
    key: bytes | None,
    keep: Retention | None = None,
) -> dict[str, Any] | None:
    """Anchor the chain head: record it in the ledger, then write it (and any anchor
    ``place`` lacks) there. Returns the new anchor's record, or None when there was nothing
    new to anchor. ``keep``: S3 Object Lock retention of anchor objects."""
    place = location_of(place)
    if key is None:
        log.warning("%s", UNSIGNED)
    row = record(store, run_id=run_id, now=now, key=key)
    written = sync(store, place, keep=keep)
    others = [r["n"] for r in written if row is None or r["n"] != row.number]
    if others:
        log.warning(
            "%s lacked anchor(s) %s recorded in the ledger: wrote them (left out by a crash "
            "or a concurrent run, or the anchors were cut back or replaced)",
            place,
            _span(others),
        )
    return as_record(row) if row is not None else None


def anchor_run(
    store: Store,
    place: Location | str | Path,
    *,
    run_id: str,
    now: dt.datetime,
    config: CareConfig | None = None,
) -> None:
    """The end of every command and DAG run that writes the ledger: ``write`` with the key
    and retention of ``config`` (else the environment's). When the anchors and the ledger
    disagree, or the anchors cannot be written, nothing more is written and the error is
    logged, not raised: the run's work is done and recorded, and ``care audit verify`` names
    the problem."""
    config = config or CareConfig.from_env()
    place = location_of(place, config)
    try:
        write(
            store,
            place,
            run_id=run_id,
            now=now,
            key=anchor_key(config),
            keep=retention(config, place, now),
        )
    except AnchorError as exc:
        log.error("anchor NOT written: %s", exc)


def _span(numbers: list[int]) -> str:
    return str(numbers[0]) if len(numbers) == 1 else f"{numbers[0]}-{numbers[-1]}"


# -- checking ------------------------------------------------------------------------------


@dataclass
class AnchorCheck:
    """What ``check`` found: the first problem (None: the anchors hold), warnings, how many
    anchors matched, and how many chain entries follow the last one."""

    problem: str | None = None
    warnings: list[str] = field(default_factory=list)
    anchors: int = 0
    unanchored: int = 0

    def fail(self, problem: str) -> AnchorCheck:
        self.problem = problem
        return self


_FIELDS = {"n": int, "seq": int, "chain_hash": str, "prev": str, "at": str, "run_id": str}


def _entries(place: Location) -> tuple[list[tuple[str, str]] | None, str]:
    """The anchor records at ``place``, each with where it is (``file:line``, or the
    object's URL), or None when there are none; and what "none" is called."""
    if is_file(place):
        try:
            text = place.read_text()
        except FileNotFoundError:
            return None, f"no anchor file at {place}"
        except (OSError, UnicodeDecodeError) as exc:
            raise AnchorError(f"{place}: the anchor file cannot be read ({exc})") from None
        lines = [line for line in text.splitlines() if line.strip()]
        entries = [(f"{place}:{n}", line) for n, line in enumerate(lines, start=1)]
        return entries or None, f"the anchor file {place} is empty"
    folder = place.child(FOLDER)
    try:
        # Only .json objects: a local writer's temporary files end in .tmp.
        entries = [(o.url, data.decode("utf-8", "replace")) for o, data in folder.read_all(".json")]
    except OSError as exc:
        raise AnchorError(f"{folder}: the anchors cannot be read ({exc})") from None
    return entries or None, f"no anchor objects in {folder}"


def check(
    session: Session,
    place: Location | str | Path,
    key: bytes | None,
    *,
    allow_unanchored: bool = False,
) -> AnchorCheck:
    """Check the anchors at ``place`` (a ``.jsonl`` file's lines, or a folder's anchor
    objects) against the chain and the ledger's own record of the anchors.

    Fails on: no anchors while the ledger records some; no anchors while the ledger has
    chained rows (unless ``allow_unanchored``); an anchor edited, forged, removed, inserted or
    reordered (its hash, link, number or signature); an object that is not an anchor; an
    anchor naming a chain entry the ledger no longer has, or one that differs; anchors the
    ledger does not record (the ledger was cut back) or recorded but missing (the anchors
    were cut back).
    """
    place = location_of(place)
    result = AnchorCheck()
    if key is None:
        result.warnings.append(UNSIGNED)
    head_seq, _ = chain.head(session)
    recorded = list(session.scalars(select(AnchorRow).order_by(AnchorRow.number)))
    try:
        lines, what = _entries(place)
    except AnchorError as exc:
        return result.fail(str(exc))
    path = place
    if not lines:
        if recorded:
            return result.fail(
                f"{what}, but the ledger records {len(recorded)} anchor(s), the last of "
                f"{instant(recorded[-1].at)}: the file was deleted, emptied or moved"
            )
        if head_seq and not allow_unanchored:
            return result.fail(
                f"{what}, and the ledger has {head_seq} chained row(s): without an anchor, rows "
                "removed from the end of the ledger cannot be detected (--allow-unanchored "
                "checks the chain alone)"
            )
        if head_seq:
            result.warnings.append(f"{what}: rows removed from the end cannot be detected")
        result.unanchored = head_seq
        return result
    previous = chain.GENESIS
    expected = 1
    legacy = 0
    last_seq = 0
    signed: list[int] = []
    unsigned: list[int] = []
    for where, line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            return result.fail(f"{where}: not a valid anchor record")
        if not isinstance(rec, dict):
            return result.fail(f"{where}: not a valid anchor record")
        if "n" not in rec:
            if not is_file(place):
                return result.fail(f"{where}: not a valid anchor record (fields missing)")
            if expected > 1:
                return result.fail(f"{where}: an unlinked (old format) anchor after linked ones")
            problem = _check_legacy(session, rec, key, head_seq, where)
            if problem:
                return result.fail(problem)
            legacy += 1
            last_seq = int(rec["seq"])
            continue
        if any(not isinstance(rec.get(k), t) for k, t in _FIELDS.items()):
            return result.fail(f"{where}: not a valid anchor record (fields missing)")
        n, seq, at = rec["n"], rec["seq"], rec["at"]
        if n != expected:
            return result.fail(
                f"{where}: anchor {n} where anchor {expected} was expected: anchors were "
                "removed, inserted or reordered"
            )
        if rec.get("hash") != anchor_hash(rec):
            return result.fail(f"{where}: anchor {n} was edited (its hash does not match)")
        if rec["prev"] != previous:
            return result.fail(
                f"{where}: anchor {n} does not link to anchor {n - 1}: anchors were removed, "
                "inserted or reordered"
            )
        mac = rec.get("hmac")
        if key is not None:
            if mac:
                if not hmac.compare_digest(str(mac), anchor_mac(key, rec)):
                    return result.fail(
                        f"{where}: anchor signature does not match (forged or edited)"
                    )
                signed.append(n)
            elif signed:
                return result.fail(
                    f"{where}: anchor {n} is not signed, though anchor {signed[-1]} is "
                    "(forged, or written without CARE_ANCHOR_KEY)"
                )
            else:
                unsigned.append(n)
        problem = _check_head(session, seq, str(rec["chain_hash"]), head_seq, where, at)
        if problem:
            return result.fail(problem)
        if seq < last_seq:
            return result.fail(
                f"{where}: anchor {n} names an older chain entry than the one before"
            )
        if n > len(recorded):
            return result.fail(
                f"{where}: the ledger was cut back: it records {len(recorded)} anchor(s), not "
                f"anchor {n} of {at}"
            )
        mine = recorded[n - 1]
        if (
            mine.number != n
            or mine.anchor_hash != rec["hash"]
            or (mine.hmac or None) != (mac or None)
        ):
            return result.fail(f"{where}: anchor {n} differs from the ledger's record of it")
        previous = rec["hash"]
        last_seq = seq
        expected += 1
        result.anchors += 1
    result.anchors += legacy
    if len(recorded) >= expected:
        return result.fail(
            f"{path} ends at anchor {expected - 1}, but the ledger records {len(recorded)} "
            f"anchor(s), the last of {instant(recorded[-1].at)}: the file was cut back (or the "
            "run writing it stopped before appending; the next anchor appends them)"
        )
    if unsigned:
        result.warnings.append(
            f"anchor(s) {_span(unsigned)} were written without {KEY_ENV}: not authenticated"
        )
    if legacy:
        result.warnings.append(
            f"{legacy} anchor(s) in the old format (not linked, not recorded in the ledger) "
            "were checked against the chain only"
        )
    # Rows written since the last anchor, the anchor's own row not counted.
    result.unanchored = max(0, head_seq - last_seq - (1 if expected > 1 else 0))
    return result


def _check_head(
    session: Session, seq: int, chain_hash: str, head_seq: int, where: str, at: object
) -> str | None:
    entry = session.get(chain.ChainEntry, seq) if seq <= head_seq else None
    if entry is None:
        return (
            f"{where}: the ledger was cut back: anchor of {at} names chain entry {seq}, the "
            f"ledger ends at {head_seq}"
        )
    if entry.chain_hash != chain_hash:
        return f"{where}: chain entry {seq} differs from its anchor of {at}"
    return None


def _check_legacy(
    session: Session, rec: dict[str, Any], key: bytes | None, head_seq: int, where: str
) -> str | None:
    try:
        seq, chain_hash = int(rec["seq"]), str(rec["chain_hash"])
        if key is not None and not (
            rec.get("hmac") and hmac.compare_digest(str(rec["hmac"]), legacy_mac(key, rec))
        ):
            return f"{where}: anchor signature does not match (forged or edited)"
    except (KeyError, TypeError, ValueError):
        return f"{where}: not a valid anchor record"
    return _check_head(session, seq, chain_hash, head_seq, where, rec.get("at"))
