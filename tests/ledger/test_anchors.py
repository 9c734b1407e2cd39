"""Anchors (ledger/anchors.py): each links to the one before and is recorded in the ledger too,
so a deleted, emptied, cut-back, reordered, edited or forged anchor file fails verification, and
so does a ledger cut back past an anchor; an unsigned set-up warns wherever anchors are written
or checked."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from caretouch.config import CareConfig
from caretouch.ledger.anchors import UNSIGNED, anchor_hash, anchor_mac, legacy_mac
from caretouch.ledger.audit import VerifyReport, verify
from caretouch.run.day import plan_and_record, run_day
from caretouch.run.engine import CareEngine, open_engine
from caretouch.schema.migrate import upgrade
from caretouch.store.db import Store
from conftest import RULES_DIR, TEMPLATES_DIR, customer_row, load_rows, utc

DAY = dt.date(2026, 11, 23)
NEXT = dt.date(2026, 11, 24)
KEY = b"anchor-test-key-not-a-secret"


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARE_ANCHOR_KEY", KEY.decode())


def engine_for(store: Store, anchors: Path) -> CareEngine:
    config = CareConfig(store.url, RULES_DIR, TEMPLATES_DIR, anchors.parent / "outbox", anchors)
    engine = open_engine(config, store=store)
    return engine


def two_runs(store: Store, tmp_path: Path) -> CareEngine:
    """Birthdays on two days, a run each: two anchors."""
    customers = [customer_row(f"A{i}", phone=f"+86138{i:08d}") for i in range(3)]
    customers += [
        customer_row(f"B{i}", phone=f"+86139{i:08d}", birth_date="1991-11-24") for i in range(3)
    ]
    load_rows(store, customers=customers)
    engine = engine_for(store, tmp_path / "anchors.jsonl")
    run_day(engine, DAY, run_id="day-1", now=utc(2026, 11, 23, 12))
    run_day(engine, NEXT, run_id="day-2", now=utc(2026, 11, 24, 12))
    return engine


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def write_lines(path: Path, records: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def check(store: Store, tmp_path: Path, **kw: object) -> VerifyReport:
    return verify(store, anchor_file=tmp_path / "anchors.jsonl", key=KEY, **kw)  # type: ignore[arg-type]


def test_anchors_link_up_and_are_recorded_in_the_ledger(
    store: Store, tmp_path: Path, keyed: None
) -> None:
    two_runs(store, tmp_path)
    first, second = lines(tmp_path / "anchors.jsonl")
    assert (first["n"], second["n"]) == (1, 2)
    assert first["prev"] == "0" * 64 and second["prev"] == first["hash"]
    assert second["seq"] > first["seq"]  # type: ignore[operator]
    with store.engine.connect() as conn:
        recorded = conn.exec_driver_sql(
            "SELECT number, anchor_hash, hmac FROM ledger_anchors ORDER BY number"
        ).all()
    assert [tuple(r) for r in recorded] == [
        (1, first["hash"], first["hmac"]),
        (2, second["hash"], second["hmac"]),
    ]
    result = check(store, tmp_path)
    assert result.ok, result.problem
    assert (result.anchors, result.unanchored, result.warnings) == (2, 0, [])


def _drop_last(records: list[dict[str, object]]) -> list[dict[str, object]]:
    return records[:-1]


def _edit_chain_hash(records: list[dict[str, object]]) -> list[dict[str, object]]:
    records[0]["chain_hash"] = "f" * 64
    return records


def _forge_at(records: list[dict[str, object]]) -> list[dict[str, object]]:
    # Edited and re-hashed consistently: only the signature can tell.
    records[1]["at"] = "2026-11-24T00:00:00.000000Z"
    records[1]["hash"] = anchor_hash(records[1])
    return records


def _strip_signature(records: list[dict[str, object]]) -> list[dict[str, object]]:
    records[1]["hmac"] = None
    return records


def _relink_without_first(records: list[dict[str, object]]) -> list[dict[str, object]]:
    # Anchor 1 removed, anchor 2 renumbered and re-linked, signed with a guessed key.
    second = {**records[1], "n": 1, "prev": "0" * 64}
    second["hash"] = anchor_hash(second)
    second["hmac"] = anchor_mac(b"guess", second)
    return [second]


FILE_TAMPERING: list[tuple[str, Callable[[list[dict[str, object]]], object], str]] = [
    ("cut back to anchor 1", _drop_last, "ends at anchor 1, but the ledger records 2 anchor(s)"),
    ("first removed", lambda r: r[1:], "anchor 2 where anchor 1 was expected"),
    ("reordered", lambda r: [r[1], r[0]], "anchor 2 where anchor 1 was expected"),
    ("an anchor edited", _edit_chain_hash, "anchor 1 was edited"),
    ("edited and re-hashed", _forge_at, "signature does not match"),
    ("signature stripped", _strip_signature, "anchor 2 is not signed, though anchor 1 is"),
    ("rebuilt without anchor 1", _relink_without_first, "signature does not match"),
    ("emptied", lambda r: [], "is empty, but the ledger records 2 anchor(s)"),
]


@pytest.mark.parametrize(
    ("tampering", "expected"),
    [(t, e) for _, t, e in FILE_TAMPERING],
    ids=[name for name, _, _ in FILE_TAMPERING],
)
def test_a_tampered_anchor_file_fails(
    sqlite_store: Store,
    tmp_path: Path,
    keyed: None,
    tampering: Callable[[list[dict[str, object]]], list[dict[str, object]]],
    expected: str,
) -> None:
    two_runs(sqlite_store, tmp_path)
    path = tmp_path / "anchors.jsonl"
    write_lines(path, tampering(lines(path)))
    result = check(sqlite_store, tmp_path)
    assert not result.ok and expected in (result.problem or ""), result.problem


@pytest.mark.parametrize("allow_unanchored", [False, True])
def test_a_deleted_anchor_file_fails_even_when_unanchored_is_allowed(
    sqlite_store: Store, tmp_path: Path, keyed: None, allow_unanchored: bool
) -> None:
    two_runs(sqlite_store, tmp_path)
    (tmp_path / "anchors.jsonl").unlink()
    result = check(sqlite_store, tmp_path, allow_unanchored=allow_unanchored)
    assert not result.ok
    assert "no anchor file at" in (result.problem or "")
    assert "the ledger records 2 anchor(s)" in (result.problem or "")


def test_a_ledger_cut_back_past_an_anchor_fails(
    sqlite_store: Store, tmp_path: Path, keyed: None
) -> None:
    two_runs(sqlite_store, tmp_path)
    # The newest row (anchor 2's own record) and its chain entry, removed consistently.
    with sqlite_store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM ledger_anchors WHERE number = 2")
        conn.exec_driver_sql(
            "DELETE FROM ledger_chain WHERE seq = (SELECT max(seq) FROM ledger_chain)"
        )
    assert verify(sqlite_store).ok  # the chain alone cannot tell
    result = check(sqlite_store, tmp_path)
    assert not result.ok
    assert "the ledger was cut back: it records 1 anchor(s), not anchor 2" in (result.problem or "")


def test_rows_without_any_anchor_fail_unless_allowed(
    sqlite_store: Store, tmp_path: Path, keyed: None
) -> None:
    load_rows(sqlite_store, customers=[customer_row("C1")])
    engine = engine_for(sqlite_store, tmp_path / "anchors.jsonl")
    assert verify(sqlite_store, anchor_file=tmp_path / "anchors.jsonl", key=KEY).ok  # empty
    plan_and_record(engine, DAY, run_id="plan-only", now=utc(2026, 11, 23, 1))  # no anchor
    result = check(sqlite_store, tmp_path)
    assert not result.ok
    assert "no anchor file at" in (result.problem or "")
    assert "--allow-unanchored" in (result.problem or "")
    allowed = check(sqlite_store, tmp_path, allow_unanchored=True)
    assert allowed.ok and allowed.unanchored > 0
    assert any("cannot be detected" in w for w in allowed.warnings)


def test_the_next_anchor_restores_a_cut_back_file(
    sqlite_store: Store,
    tmp_path: Path,
    keyed: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = two_runs(sqlite_store, tmp_path)
    path = tmp_path / "anchors.jsonl"
    write_lines(path, lines(path)[:1])
    assert not check(sqlite_store, tmp_path).ok
    load_rows(sqlite_store, customers=[customer_row("D1", birth_date="1992-11-25")])
    with caplog.at_level(logging.WARNING, logger="caretouch.ledger.anchors"):
        run_day(engine, dt.date(2026, 11, 25), run_id="day-3", now=utc(2026, 11, 25, 12))
    assert [r["n"] for r in lines(path)] == [1, 2, 3]
    assert "lacked anchor(s) 2 recorded in the ledger" in caplog.text
    assert check(sqlite_store, tmp_path).ok


def test_an_anchor_file_of_another_store_is_left_alone(
    tmp_path: Path, keyed: None, caplog: pytest.LogCaptureFixture
) -> None:
    from caretouch.store.db import open_store

    shared = tmp_path / "shared.jsonl"
    stores = []
    for name in ("a", "b"):
        store = open_store(f"sqlite:///{tmp_path / name}.db")
        upgrade(store)
        load_rows(store, customers=[customer_row("C1")])
        stores.append(store)
    run_day(engine_for(stores[0], shared), DAY, run_id="a", now=utc(2026, 11, 23, 12))
    before = shared.read_text(encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="caretouch.ledger.anchors"):
        report = run_day(engine_for(stores[1], shared), DAY, run_id="b", now=utc(2026, 11, 23, 12))
    assert report.sent == 1  # the run's work is done and recorded all the same
    assert "anchor NOT written" in caplog.text and "another store" in caplog.text
    assert shared.read_text(encoding="utf-8") == before
    result = verify(stores[1], anchor_file=shared, key=KEY)
    assert not result.ok
    for store in stores:
        store.dispose()


def test_unsigned_anchors_warn_when_written_and_checked(
    sqlite_store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("CARE_ANCHOR_KEY", raising=False)
    with caplog.at_level(logging.WARNING):
        two_runs(sqlite_store, tmp_path)
    assert caplog.text.count("CARE_ANCHOR_KEY is not set") == 2  # once per run
    assert all(r["hmac"] is None for r in lines(tmp_path / "anchors.jsonl"))
    unkeyed = verify(sqlite_store, anchor_file=tmp_path / "anchors.jsonl", key=None)
    assert unkeyed.ok and UNSIGNED in unkeyed.warnings
    # A key set later: the unsigned anchors are named, not taken as signed.
    keyed_now = check(sqlite_store, tmp_path)
    assert keyed_now.ok
    assert "anchor(s) 1-2 were written without CARE_ANCHOR_KEY" in " ".join(keyed_now.warnings)


def test_anchors_in_the_old_unlinked_format_are_still_checked(
    sqlite_store: Store, tmp_path: Path, keyed: None
) -> None:
    two_runs(sqlite_store, tmp_path)
    path = tmp_path / "anchors.jsonl"
    with sqlite_store.engine.connect() as conn:
        seq, chain_hash = conn.exec_driver_sql(
            "SELECT seq, chain_hash FROM ledger_chain WHERE seq = 3"
        ).one()
    old = {"seq": seq, "chain_hash": chain_hash, "at": "2026-11-22T12:00:00+00:00", "run_id": "x"}
    old["hmac"] = legacy_mac(KEY, old)
    write_lines(path, [old, *lines(path)])
    result = check(sqlite_store, tmp_path)
    assert result.ok, result.problem
    assert result.anchors == 3 and any("old format" in w for w in result.warnings)
    wrong = {**old, "chain_hash": "0" * 64}
    write_lines(path, [{**wrong, "hmac": legacy_mac(KEY, wrong)}, *lines(path)[1:]])
    assert "chain entry 3 differs" in (check(sqlite_store, tmp_path).problem or "")
    write_lines(path, [*lines(path)[1:], old])  # an old-format anchor after linked ones
    assert "an unlinked (old format) anchor after linked ones" in (
        check(sqlite_store, tmp_path).problem or ""
    )
