"""What the ledger's multi-process tests share: how a spawned process opens the same store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import text

from caretouch.store.db import Store, open_store
from conftest import PG_URL, RULES_DIR, TEMPLATES_DIR


def where(store: Store) -> tuple[str, str | None]:
    """How another process opens the same store: its URL and (PostgreSQL) its schema."""
    if store.engine.dialect.name != "postgresql":
        return store.url, None
    with store.read_session() as session:
        return PG_URL, session.scalar(text("SELECT current_schema()"))


def open_store_at(url: str, schema: str | None) -> Store:
    if schema:
        return open_store(url, connect_args={"options": f"-csearch_path={schema}"})
    return open_store(url)


def open_at(url: str, schema: str | None, workdir: str, rules: Path = RULES_DIR) -> Any:
    """The engine of a process working in ``workdir`` on the store at ``url``/``schema``
    (with the rules in ``rules``)."""
    from caretouch.config import CareConfig
    from caretouch.run.engine import open_engine

    config = CareConfig(url, rules, TEMPLATES_DIR, Path(workdir) / "outbox")
    return open_engine(config, store=open_store_at(url, schema))
