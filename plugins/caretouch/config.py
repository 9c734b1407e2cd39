"""Where things are: the store, the rules, the templates, the outbox.

Built from CLI options or environment variables; the CLI and the Airflow glue use the same.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

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
