"""Where things are: the store, the rules, the templates, the outbox.

Built from CLI options or environment variables; the CLI and the Airflow glue use the same.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigurationError
from .store.db import store_url_from_env


@dataclass(frozen=True)
class CareConfig:
    store_url: str
    rules_dir: Path
    templates_dir: Path
    outbox_dir: Path
    # Chain heads written at the end of every run, outside the database (docs/audit.md).
    anchor_file: Path = Path("ledger-anchors.jsonl")
    # Run summaries (JSON, one per run) and the monthly and weekly reports (docs/operations.md).
    reports_dir: Path = Path("reports")

    @classmethod
    def from_env(
        cls,
        *,
        store: str | None = None,
        rules: str | Path | None = None,
        templates: str | Path | None = None,
        outbox: str | Path | None = None,
        anchors: str | Path | None = None,
    ) -> CareConfig:
        env = os.environ
        return cls(
            store_url=store_url_from_env(store),
            rules_dir=Path(rules or env.get("CARE_RULES_DIR") or "care_rules"),
            templates_dir=Path(templates or env.get("CARE_TEMPLATES_DIR") or "templates"),
            outbox_dir=Path(outbox or env.get("CARE_OUTBOX_DIR") or "outbox"),
            anchor_file=Path(anchors or env.get("CARE_ANCHOR_FILE") or "ledger-anchors.jsonl"),
            reports_dir=Path(env.get("CARE_REPORTS_DIR") or "reports"),
        )

    def check_destinations(self, *, outbox: bool = False) -> None:
        """Before a run's work: the places it writes at the end (run summaries, ledger
        anchors and, with ``outbox``, message files) can be written; missing folders are
        created. Raises ``ConfigurationError`` naming the place and its setting."""
        places = [
            (self.reports_dir / "runs", True, "reports folder (CARE_REPORTS_DIR)"),
            (self.anchor_file, False, "anchor file (--anchors, CARE_ANCHOR_FILE)"),
        ]
        if outbox:
            places.append((self.outbox_dir, True, "outbox folder (--outbox, CARE_OUTBOX_DIR)"))
        for path, folder, what in places:
            problem = unwritable(path, folder=folder)
            if problem:
                raise ConfigurationError(f"{what}: {problem}")


def unwritable(path: Path, *, folder: bool = False, create: bool = True) -> str | None:
    """Why ``path`` (a file, or with ``folder`` a folder) cannot be written, or None.

    Missing folders on the way are created unless ``create`` is false. The check really
    writes (a temporary file, removed at once), so permissions, read-only file systems and
    full disks are caught as they would be at the end of a long computation."""
    where = path if folder else path.parent
    if folder and path.exists() and not path.is_dir():
        return f"{path} exists and is not a folder"
    if not folder and path.is_dir():
        return f"{path} is a folder, not a file"
    if not where.is_dir():
        if not create:
            return f"folder {where} does not exist"
        try:
            where.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"cannot create folder {where}: {exc.strerror or exc}"
    try:
        with tempfile.TemporaryFile(dir=where):
            pass
    except OSError as exc:
        return f"cannot write in {where}: {exc.strerror or exc}"
    if not folder and path.exists() and not os.access(path, os.W_OK):
        return f"{path} is not writable"
    return None
