"""Smoke test of bench/scale_out.py: tiny sizes, 1 and 2 processes, nothing sent twice."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from conftest import PG_URL, require_postgres

BENCH = Path(__file__).resolve().parents[2] / "bench"

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _load_bench() -> object:
    # The script imports _common and send_throughput from bench/, and its worker processes
    # (spawned) import it again by name: it must be importable as ``scale_out``.
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module("scale_out")


def test_the_scale_out_benchmark_sends_each_touch_once_with_one_and_two_processes() -> None:
    require_postgres()
    bench = _load_bench()
    result = bench.main(  # type: ignore[attr-defined]
        ["--touches", "60", "--processes", "1,2", "--store-url", PG_URL, "--timeout", "120"]
    )
    rows = result["rows"]
    assert [r["processes"] for r in rows] == [1, 2]
    for r in rows:
        assert r["crashes"] == 0, r["exit_codes"]
        assert r["duplicates"] == 0 and r["ledger_duplicates"] == 0
        assert r["ledger_sent"] == r["planned"] == r["at_provider"] == 60
        assert r["writes"] > 0 and r["hold_p95"] > 0
    assert [s["exit"] for s in result["cli_starts"]] == [0, 0, 0, 0]
