"""Shared fixtures: stores on SQLite and on the real PostgreSQL, shipped rules, a clock.

PostgreSQL tests run against 127.0.0.1:5432 (user postgres, database test), each in a schema
of its own that is dropped afterwards. Where the server is unreachable they are skipped with
the reason, except under CI=true, where they fail: CI must prove the PostgreSQL path.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from caretouch.render.templates import TemplateStore
from caretouch.rules.loader import RuleSet, load_rules
from caretouch.schema.migrate import upgrade
from caretouch.store.db import Store, open_store

ROOT = Path(__file__).resolve().parents[1]
RULES_DIR = ROOT / "care_rules"
TEMPLATES_DIR = ROOT / "templates"
PG_URL = os.environ.get("CARE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# Run summaries (care run, the DAGs) go to a scratch directory, not to reports/ of the checkout;
# tests that read them set their own.
os.environ.setdefault("CARE_REPORTS_DIR", tempfile.mkdtemp(prefix="care-reports-"))


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _pg_available() -> str | None:
    """None when PostgreSQL answers, else the reason it does not."""
    from sqlalchemy import create_engine, text

    try:
        engine = create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception as exc:  # any failure to connect is a reason to skip
        return (
            f"PostgreSQL at {PG_URL} unreachable: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        )
    return None


_PG_REASON: list[str | None] = []


def require_postgres() -> None:
    if not _PG_REASON:
        _PG_REASON.append(_pg_available())
    reason = _PG_REASON[0]
    if reason is not None:
        if in_ci():
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    store = open_store(f"sqlite:///{tmp_path / 'care.db'}")
    upgrade(store)
    yield store
    store.dispose()


@contextmanager
def pg_schema_store(*, migrate: bool = True) -> Iterator[Store]:
    """A store on the real PostgreSQL, in a schema of its own, dropped afterwards; migrated
    to the current schema unless ``migrate`` is False (then empty)."""
    require_postgres()
    from sqlalchemy import create_engine, text

    schema = f"care_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    store = open_store(PG_URL, connect_args={"options": f"-csearch_path={schema}"})
    if migrate:
        upgrade(store)
    try:
        yield store
    finally:
        store.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def pg_store() -> Iterator[Store]:
    with pg_schema_store() as store:
        yield store


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> Store:
    """The same test on SQLite and on PostgreSQL."""
    if request.param == "postgres":
        return request.getfixturevalue("pg_store")  # type: ignore[no-any-return]
    return request.getfixturevalue("sqlite_store")  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def templates() -> TemplateStore:
    return TemplateStore(TEMPLATES_DIR)


@pytest.fixture(scope="session")
def shipped_rules(templates: TemplateStore) -> RuleSet:
    ruleset = load_rules(RULES_DIR, templates)
    assert ruleset.errors == []
    return ruleset


def customer_row(customer_id: str = "C1", **overrides: Any) -> dict[str, str]:
    """A valid customers.csv row (strings, as in a CSV), reachable on both channels."""
    row = {
        "customer_id": customer_id,
        "name": "王芳",
        "birth_date": "1990-11-23",
        "birthday_calendar": "gregorian",
        "phone": "+8613812348000",
        "email": "wang.fang@example.com",
        "locale": "zh-CN",
        "timezone": "Asia/Shanghai",
        "tier": "B",
        "status": "active",
        "consent_sms": "true",
        "consent_email": "true",
        "consent_marketing": "false",
        "agent_id": "",
        "segment": "",
    }
    row.update({k: str(v) if not isinstance(v, str) else v for k, v in overrides.items()})
    return row


def policy_row(policy_id: str = "P1", customer_id: str = "C1", **overrides: Any) -> dict[str, str]:
    row = {
        "policy_id": policy_id,
        "customer_id": customer_id,
        "product": "安心医疗险",
        "start_date": "2020-01-15",
        "renewal_date": "",
        "status": "active",
        "premium": "1200.00",
        "premium_due_date": "",
        "payment_frequency": "",
        "paid_through": "",
    }
    row.update(overrides)
    return row


def event_row(event_id: str = "E1", customer_id: str = "C1", **overrides: Any) -> dict[str, str]:
    row = {
        "event_id": event_id,
        "type": "policy_purchased",
        "customer_id": customer_id,
        "policy_id": "",
        "occurred_at": "2026-11-22T10:00:00+08:00",
        "payload": "",
    }
    row.update(overrides)
    if "payload" not in overrides:
        # The required payload field care_rules/events.yaml declares for the type.
        required = {"complaint_resolved": "case_id", "claim_settled": "claim_id"}.get(row["type"])
        if required:
            row["payload"] = json.dumps({required: f"N-{event_id}"})
    return row


def load_rows(
    store: Store,
    customers: list[dict[str, str]] = (),  # type: ignore[assignment]
    policies: list[dict[str, str]] = (),  # type: ignore[assignment]
    events: list[dict[str, str]] = (),  # type: ignore[assignment]
) -> None:
    """Write CSV-shaped rows through the importer's own parsers (so derived keys are set)."""
    from caretouch.store.importer import ID_COLUMN, MODELS, PARSERS
    from caretouch.store.write import upsert

    with store.session() as session:
        for table, rows in (("customer", customers), ("policy", policies), ("event", events)):
            parsed = [PARSERS[table](r)[0] for r in rows]
            upsert(session, MODELS[table], ID_COLUMN[table], parsed)


def insert_agents_and_relations(
    store: Store,
    agents: list[dict[str, Any]] = (),  # type: ignore[assignment]
    relations: list[dict[str, Any]] = (),  # type: ignore[assignment]
) -> None:
    """Insert agents and relations directly (their CSV import is another piece of work):
    each row gives the columns it needs (``agent_id``, ``name``; ``relation_id``,
    ``customer_id``, ``kind``, ``name``, ``birth_date`` as a date), and a relation's derived
    month-day keys are computed here as the store derives a customer's."""
    from sqlalchemy import insert

    from caretouch.dates import lunar_month_day, month_day
    from caretouch.store.models import Agent, Relation

    rows = []
    for r in relations:
        row = {"birthday_calendar": "gregorian", "kind": "child", **r}
        birth, lunar = row.get("birth_date"), row["birthday_calendar"] == "lunar"
        row["birth_md"] = month_day(birth) if birth else None
        row["birth_lunar_md"] = lunar_month_day(birth) if lunar and birth else None
        rows.append(row)
    with store.session() as session:
        if agents:
            session.execute(insert(Agent), list(agents))
        if rows:
            session.execute(insert(Relation), rows)


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.timezone.utc)


# -- the command line --------------------------------------------------------------------------


class Care:
    """The ``care`` command with a test's own places given as global options, instead of the
    ``--store ... --anchors`` preamble each CLI test would copy: the store ``HOME/care.db``
    (or ``store_url``), the shipped rules and templates, ``HOME/outbox`` and
    ``HOME/anchors.jsonl``. ``care("plan", "--date", DAY)`` returns click's ``Result``;
    exceptions propagate. Change a place for the rest of a test by setting its attribute
    (``care.rules = broken``), or for one call (``care("validate", rules=broken)``);
    ``env`` adds environment variables (to ``self.env``, those of every call)."""

    def __init__(
        self,
        home: Path,
        *,
        store_url: str | None = None,
        rules: Path = RULES_DIR,
        templates: Path = TEMPLATES_DIR,
        env: dict[str, str] | None = None,
    ) -> None:
        self.home = home
        self.store_url = store_url or f"sqlite:///{home / 'care.db'}"
        self.rules = rules
        self.templates = templates
        self.outbox = home / "outbox"
        self.anchors = home / "anchors.jsonl"
        self.env = dict(env or {})

    def options(self, **places: Path | str) -> list[str]:
        """The global options, ``places`` (store, rules, templates, outbox, anchors) changed."""
        values = {
            "store": self.store_url,
            "rules": self.rules,
            "templates": self.templates,
            "outbox": self.outbox,
            "anchors": self.anchors,
            **places,
        }
        return [word for name, value in values.items() for word in (f"--{name}", str(value))]

    def __call__(
        self, *args: str, env: dict[str, str] | None = None, **places: Path | str
    ) -> Result:
        from caretouch.cli import main

        return CliRunner().invoke(
            main,
            [*self.options(**places), *args],
            env={**self.env, **(env or {})},
            catch_exceptions=False,
        )


def cli_url(store: Store) -> str:
    """A URL the CLI can open that reaches ``store``'s database (and PostgreSQL schema)."""
    if store.is_sqlite:
        return store.url
    with store.engine.connect() as conn:
        schema = conn.exec_driver_sql("select current_schema()").scalar_one()
    return f"{PG_URL}?options=-csearch_path%3D{schema}"


@pytest.fixture
def care(tmp_path: Path) -> Care:
    """``care`` on a store in ``tmp_path`` (not created: run ``store init`` or fill one)."""
    return Care(tmp_path)


@pytest.fixture
def provider_sim() -> Iterator[Any]:
    """The Twilio + SendGrid simulator (tests/provider_sim.py), started, without faults;
    change them with ``provider_sim.set_faults(...)``.

    Here and not in tests/channels/conftest.py: two conftest modules would both be imported
    as ``conftest``, and ``from conftest import ...`` in other tests would find the wrong one.
    """
    from provider_sim import ProviderSim

    with ProviderSim(seed=20261123) as sim:
        yield sim


# -- masking -----------------------------------------------------------------------------------

_MASKED_PHONE = re.compile(r"\+(\d{1,3}) ([0-9*]*\*[0-9*]*)")  # "+852 ****2077"
# Eight-digit national numbers (Hong Kong, Macau, Singapore): a mask keeping 3 + 4 digits of
# them shows 7 of 8 ("+852 976*2077").
SHORT_NUMBERS = ["+85297622077", "+85366123456", "+6591234567"]


def badly_masked(text: str) -> list[str]:
    """Masked phone numbers in ``text`` that hide fewer than max(4, a third) of the digits."""
    return [
        m.group(0)
        for m in _MASKED_PHONE.finditer(text)
        if m.group(2).count("*") < max(4, math.ceil(len(m.group(2)) / 3))
    ]
