"""The engine's layers and walls (pyproject.toml [tool.importlinter], docs/architecture.md)
hold: a part importing a part above it, or the core importing Airflow, fails the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_every_import_contract_is_kept() -> None:
    result = lint_imports()
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_a_wrong_import_breaks_a_contract(tmp_path: Path) -> None:
    # The check can fail: a config naming a layer order the engine breaks is refused.
    config = tmp_path / "contracts.ini"
    config.write_text(
        "[importlinter]\nroot_package = caretouch\n\n"
        "[importlinter:contract:upside-down]\nname = upside down\ntype = layers\n"
        "containers = caretouch\nlayers =\n    store\n    cli\n",
        encoding="utf-8",
    )
    result = lint_imports("--config", str(config))
    assert result.returncode != 0
    assert "caretouch.cli" in result.stdout and "1 broken" in result.stdout


def test_no_contract_lists_exceptions() -> None:
    # Issue 12 removed every breach; an ignore_imports entry would be a wall with a hole.
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    assert any(c["type"] == "acyclic_siblings" for c in contracts)
    holes = {c["name"]: c["ignore_imports"] for c in contracts if c.get("ignore_imports")}
    assert not holes, holes
