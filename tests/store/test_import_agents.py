"""Agents and relations in the CSV import (issue 15): their rows, the references between them
and customers, all-or-nothing, --skip-invalid, re-import and the CLI.

Every test that touches a store runs on SQLite and on PostgreSQL (the ``store`` fixture).
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from lunardate import LunarDate
from sqlalchemy import func, select

from caretouch.dates import lunar_month_day, month_day
from caretouch.store.db import Store
from caretouch.store.importer import import_csv
from caretouch.store.models import CANONICAL_COLUMNS, Agent, Customer, Relation
from conftest import Care, cli_url, customer_row, event_row, policy_row

AGENT_COLUMNS = CANONICAL_COLUMNS["agent"]
RELATION_COLUMNS = CANONICAL_COLUMNS["relation"]
CUSTOMER_COLUMNS = CANONICAL_COLUMNS["customer"]


def agent_row(agent_id: str = "A1", **overrides: str) -> dict[str, str]:
    row = {
        "agent_id": agent_id,
        "name": f"Agent {agent_id}",
        "phone": "+8613800138000",
        "email": f"{agent_id.lower()}@agency.example.com",
        "timezone": "Asia/Shanghai",
        "manager_id": "",
    }
    row.update(overrides)
    return row


def relation_row(relation_id: str = "R1", customer_id: str = "C1", **overrides: str) -> dict:
    row = {
        "relation_id": relation_id,
        "customer_id": customer_id,
        "kind": "child",
        "name": "小明",
        "birth_date": "2015-06-01",
        "birthday_calendar": "gregorian",
    }
    row.update(overrides)
    return row


def write_csv(path: Path, rows: list[dict[str, str]], columns: tuple[str, ...]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([row.get(c, "") for c in columns])
    return path


def files(
    tmp_path: Path,
    *,
    agents: list[dict[str, str]] | None = None,
    customers: list[dict[str, str]] | None = None,
    relations: list[dict[str, str]] | None = None,
) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for table, rows, columns in (
        ("agent", agents, AGENT_COLUMNS),
        ("customer", customers, CUSTOMER_COLUMNS),
        ("relation", relations, RELATION_COLUMNS),
    ):
        if rows is not None:
            out[table] = write_csv(tmp_path / f"{table}s.csv", rows, columns)
    return out


def rows_of(store: Store, model: Any, key: str) -> dict[str, dict[str, Any]]:
    with store.session() as session:
        return {
            getattr(o, key): {c.name: getattr(o, c.name) for c in model.__table__.columns}
            for o in session.scalars(select(model)).all()
        }


def count(store: Store, model: Any) -> int:
    with store.session() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def nothing_written(store: Store) -> bool:
    return count(store, Agent) == count(store, Customer) == count(store, Relation) == 0


# --- a valid import ------------------------------------------------------------------------


def test_agents_customers_and_relations_are_imported_together(store: Store, tmp_path: Path) -> None:
    lunar = LunarDate(1990, 8, 15)
    # lunardate 0.3 renamed toSolarDate (kept, deprecated) to to_solar_date.
    lunar_birth = (getattr(lunar, "to_solar_date", None) or lunar.toSolarDate)()
    paths = files(
        tmp_path,
        # The manager comes after the agent it manages: the whole file is read first.
        agents=[
            agent_row("A2", manager_id="A1", phone="+86 138-0013-8001", timezone=""),
            agent_row("A1", email="", phone=""),
        ],
        customers=[
            customer_row("C1", agent_id="A2", segment="Group"),
            customer_row("C2", agent_id="A1"),
            customer_row("C3"),
        ],
        relations=[
            relation_row("R1", "C1", kind="child", birth_date="2016-02-29"),
            relation_row(
                "R2",
                "C1",
                kind="spouse",
                birth_date=lunar_birth.isoformat(),
                birthday_calendar="lunar",
            ),
            relation_row("R3", "C2", kind="parent", birth_date=""),
        ],
    )
    report = import_csv(store, paths)
    assert report.ok and report.written, [str(p) for p in report.rejected]
    assert report.inserted == {"agent": 2, "customer": 3, "relation": 3}
    assert list(report.inserted) == ["agent", "customer", "relation"]  # the import's order

    agents = rows_of(store, Agent, "agent_id")
    assert agents["A2"]["manager_id"] == "A1"
    assert agents["A2"]["phone"] == "+8613800138001"  # normalised like a customer's
    assert agents["A2"]["timezone"] is None
    assert agents["A1"]["email"] is None and agents["A1"]["manager_id"] is None

    customers = rows_of(store, Customer, "customer_id")
    assert customers["C1"]["agent_id"] == "A2"
    assert customers["C1"]["segment"] == "group"  # lower-cased
    assert customers["C3"]["agent_id"] is None and customers["C3"]["segment"] is None

    relations = rows_of(store, Relation, "relation_id")
    assert relations["R1"]["kind"] == "child"
    assert relations["R1"]["birth_md"] == month_day(dt.date(2016, 2, 29)) == 229
    assert relations["R1"]["birth_lunar_md"] is None
    assert relations["R2"]["birthday_calendar"] == "lunar"
    assert relations["R2"]["birth_lunar_md"] == lunar_month_day(lunar_birth) == 815
    assert relations["R3"]["birth_date"] is None and relations["R3"]["birth_md"] is None


def test_references_to_stored_rows_are_accepted(store: Store, tmp_path: Path) -> None:
    first = files(tmp_path, agents=[agent_row("A1")], customers=[customer_row("C1")])
    assert import_csv(store, first).written
    later = tmp_path / "later"
    later.mkdir()
    paths = files(
        later,
        agents=[agent_row("A2", manager_id="A1")],
        relations=[relation_row("R1", "C1")],
    )
    paths["customer"] = write_csv(
        later / "customers.csv", [customer_row("C2", agent_id="A1")], CUSTOMER_COLUMNS
    )
    report = import_csv(store, paths)
    assert report.written, [str(p) for p in report.rejected]
    assert rows_of(store, Agent, "agent_id")["A2"]["manager_id"] == "A1"
    assert rows_of(store, Customer, "customer_id")["C2"]["agent_id"] == "A1"
    assert set(rows_of(store, Relation, "relation_id")) == {"R1"}


def test_an_agent_with_a_bad_phone_or_email_is_imported_with_warnings(
    store: Store, tmp_path: Path
) -> None:
    paths = files(tmp_path, agents=[agent_row("A1", phone="12345", email="no-at-sign")])
    report = import_csv(store, paths)
    assert report.written
    assert [str(w) for w in report.warnings] == [
        f"{paths['agent']}:2: warning: phone is not a valid E.164 number",
        f"{paths['agent']}:2: warning: email address is not valid: "
        "no email will be sent to this agent",
    ]
    # Warnings name the column, never the agent's phone or address.
    assert not any("12345" in str(w) or "no-at-sign" in str(w) for w in report.warnings)


# --- bad input: FILE:LINE, nothing written -------------------------------------------------

BAD = [
    pytest.param(
        {"customers": [customer_row("C1", agent_id="A9")]},
        "customer",
        2,
        "unknown agent_id 'A9'",
        id="customer-unknown-agent",
    ),
    pytest.param(
        {"agents": [agent_row("A1"), agent_row("A2", manager_id="A7")]},
        "agent",
        3,
        "unknown manager_id 'A7'",
        id="unknown-manager",
    ),
    pytest.param(
        {"agents": [agent_row("A1", manager_id="A1")]},
        "agent",
        2,
        "manager_id: agent 'A1' may not be its own manager",
        id="self-manager",
    ),
    pytest.param(
        {"relations": [relation_row("R1", "C1"), relation_row("R2", "C8")]},
        "relation",
        3,
        "unknown customer_id 'C8'",
        id="relation-unknown-customer",
    ),
    pytest.param(
        {"relations": [relation_row("R1", "C1", kind="cousin")]},
        "relation",
        2,
        "kind: 'cousin' is not one of spouse, child, parent",
        id="bad-kind",
    ),
    pytest.param(
        {"relations": [relation_row("R1", "C1", kind="")]},
        "relation",
        2,
        "kind is required (one of spouse, child, parent)",
        id="no-kind",
    ),
    pytest.param(
        {
            "relations": [
                relation_row("R1", "C1", birth_date="1850-01-01", birthday_calendar="lunar")
            ]
        },
        "relation",
        2,
        "birth_date 1850-01-01 is outside the lunar calendar's range",
        id="lunar-out-of-range",
    ),
    pytest.param(
        {"relations": [relation_row("R1", "C1", birth_date="", birthday_calendar="lunar")]},
        "relation",
        2,
        "birthday_calendar is lunar but birth_date is empty",
        id="lunar-without-date",
    ),
    pytest.param(
        {"agents": [agent_row("A1", timezone="Mars/Olympus")]},
        "agent",
        2,
        "timezone: 'Mars/Olympus' is not an IANA time zone",
        id="bad-timezone",
    ),
    pytest.param(
        {"agents": [agent_row("A1", name="")]}, "agent", 2, "name is required", id="no-name"
    ),
    pytest.param(
        {"agents": [agent_row("A" * 65)]},
        "agent",
        2,
        "agent_id is longer than 64 characters",
        id="long-id",
    ),
    pytest.param(
        {"agents": [agent_row("A1"), agent_row("A1")]},
        "agent",
        3,
        "duplicate agent_id 'A1' (also on line 2)",
        id="duplicate-agent",
    ),
    pytest.param(
        {"customers": [customer_row("C1", segment="s" * 33)]},
        "customer",
        2,
        "segment is longer than 32 characters",
        id="long-segment",
    ),
]


@pytest.mark.parametrize(("bad", "table", "line", "reason"), BAD)
def test_bad_input_is_refused_with_its_place_and_nothing_is_written(
    store: Store, tmp_path: Path, bad: dict, table: str, line: int, reason: str
) -> None:
    # The bad file given, with good ones around it (their customer's agent is A0, if the
    # agents file is the good one).
    agent = "" if "agents" in bad else "A0"
    given = {"agents": [agent_row("A0")], "customers": [customer_row("C1", agent_id=agent)]}
    given.update(bad)
    paths = files(tmp_path, **given)
    report = import_csv(store, paths)
    assert not report.written
    problems = [str(p) for p in report.rejected]
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{paths[table]}:{line}: {reason}"), problems
    assert nothing_written(store)


def test_agents_managing_each_other_in_a_circle_are_refused(store: Store, tmp_path: Path) -> None:
    paths = files(
        tmp_path,
        agents=[
            agent_row("A1", manager_id="A2"),
            agent_row("A2", manager_id="A1"),
            agent_row("A3", manager_id="A1"),
        ],
    )
    report = import_csv(store, paths)
    assert not report.written
    problems = [str(p) for p in report.rejected]
    where = paths["agent"]
    assert problems == [
        f"{where}:2: manager_id 'A2': agents may not manage each other in a circle "
        "(A1 -> A2 -> A1)",
        f"{where}:3: manager_id 'A1': agents may not manage each other in a circle "
        "(A2 -> A1 -> A2)",
        f"{where}:4: manager_id 'A1' is rejected itself ({where}:2)",
    ]
    assert nothing_written(store)


def test_a_stored_agent_does_not_excuse_a_broken_file(store: Store, tmp_path: Path) -> None:
    assert import_csv(store, files(tmp_path, agents=[agent_row("A1")])).written
    other = tmp_path / "other"
    other.mkdir()
    paths = files(other, agents=[agent_row("A1", name="Renamed"), agent_row("A2", manager_id="X")])
    report = import_csv(store, paths)
    assert not report.written
    assert rows_of(store, Agent, "agent_id")["A1"]["name"] == "Agent A1"


# --- --skip-invalid and re-import ----------------------------------------------------------


def test_skip_invalid_writes_the_rest_and_refuses_customers_of_rejected_agents(
    store: Store, tmp_path: Path
) -> None:
    paths = files(
        tmp_path,
        agents=[
            agent_row("A1"),
            agent_row("A2", manager_id="NOBODY"),
            agent_row("A3", manager_id="A2"),  # its manager is rejected: so is it
            agent_row("A4", timezone="Nowhere"),
        ],
        customers=[
            customer_row("C1", agent_id="A1"),
            customer_row("C2", agent_id="A2"),
            customer_row("C3", agent_id="A4"),
            customer_row("C4"),
        ],
        relations=[
            relation_row("R1", "C1"),
            relation_row("R2", "C2"),  # its customer is rejected
            relation_row("R3", "C4", kind="sibling"),
        ],
    )
    rejects = tmp_path / "rejects.csv"
    report = import_csv(store, paths, skip_invalid=True, rejects_path=rejects)
    assert report.written
    assert set(rows_of(store, Agent, "agent_id")) == {"A1"}
    assert set(rows_of(store, Customer, "customer_id")) == {"C1", "C4"}
    assert set(rows_of(store, Relation, "relation_id")) == {"R1"}
    assert report.inserted == {"agent": 1, "customer": 2, "relation": 1}
    a, c, r = paths["agent"], paths["customer"], paths["relation"]
    assert sorted(str(p) for p in report.rejected) == sorted(
        [
            f"{a}:5: timezone: 'Nowhere' is not an IANA time zone (e.g. Asia/Shanghai)",
            f"{r}:4: kind: 'sibling' is not one of spouse, child, parent",
            f"{a}:3: unknown manager_id 'NOBODY'",
            f"{a}:4: manager_id 'A2' is rejected itself ({a}:3)",
            f"{c}:3: agent_id 'A2' is rejected itself ({a}:3)",
            f"{c}:4: unknown agent_id 'A4'",
            f"{r}:3: customer_id 'C2' is rejected itself ({c}:3)",
        ]
    )
    with rejects.open(encoding="utf-8", newline="") as handle:
        rejected = list(csv.DictReader(handle))
    assert len(rejected) == 7
    assert {row["agent_id"] for row in rejected if row["file"] == str(a)} == {"A2", "A3", "A4"}


def test_reimport_updates_and_missing_columns_keep_their_values(
    store: Store, tmp_path: Path
) -> None:
    paths = files(
        tmp_path,
        agents=[agent_row("A1"), agent_row("A2", manager_id="A1")],
        customers=[customer_row("C1", agent_id="A1")],
        relations=[relation_row("R1", "C1", birth_date="2015-06-01")],
    )
    assert import_csv(store, paths).written
    again = tmp_path / "again"
    again.mkdir()
    # Only some columns: the others keep their stored values.
    agents = write_csv(
        again / "agents.csv", [{"agent_id": "A2", "name": "Li Na"}], ("agent_id", "name")
    )
    relations = write_csv(
        again / "relations.csv",
        [{"relation_id": "R1", "birth_date": "2016-03-08"}],
        ("relation_id", "birth_date"),
    )
    customers = write_csv(
        again / "customers.csv",
        [{"customer_id": "C1", "agent_id": "A2"}],
        ("customer_id", "agent_id"),
    )
    report = import_csv(store, {"agent": agents, "customer": customers, "relation": relations})
    assert report.written, [str(p) for p in report.rejected]
    assert report.updated == {"agent": 1, "customer": 1, "relation": 1}
    assert report.inserted == {"agent": 0, "customer": 0, "relation": 0}
    a2 = rows_of(store, Agent, "agent_id")["A2"]
    assert (a2["name"], a2["manager_id"], a2["timezone"]) == ("Li Na", "A1", "Asia/Shanghai")
    r1 = rows_of(store, Relation, "relation_id")["R1"]
    assert (r1["birth_date"], r1["birth_md"], r1["kind"]) == (dt.date(2016, 3, 8), 308, "child")
    c1 = rows_of(store, Customer, "customer_id")["C1"]
    assert (c1["agent_id"], c1["name"]) == ("A2", customer_row("C1")["name"])


# --- the command line ----------------------------------------------------------------------


def test_cli_imports_agents_and_relations(care: Care, store: Store, tmp_path: Path) -> None:
    paths = files(
        tmp_path,
        agents=[agent_row("A1"), agent_row("A2", manager_id="A1")],
        customers=[customer_row("C1", agent_id="A2")],
        relations=[relation_row("R1", "C1")],
    )
    care.store_url = cli_url(store)
    result = care(
        "store",
        "import",
        "--relations",
        str(paths["relation"]),
        "--customers",
        str(paths["customer"]),
        "--agents",
        str(paths["agent"]),
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "agent: 2 inserted, 0 updated",
        "customer: 1 inserted, 0 updated",
        "relation: 1 inserted, 0 updated",
    ]
    assert count(store, Agent) == 2 and count(store, Relation) == 1


def test_cli_refuses_a_customer_of_an_unknown_agent(
    care: Care, store: Store, tmp_path: Path
) -> None:
    paths = files(
        tmp_path,
        agents=[agent_row("A1")],
        customers=[customer_row("C1", agent_id="A1"), customer_row("C2", agent_id="A5")],
    )
    care.store_url = cli_url(store)
    result = care(
        "store", "import", "--agents", str(paths["agent"]), "--customers", str(paths["customer"])
    )
    assert result.exit_code == 1
    assert f"{paths['customer']}:3: unknown agent_id 'A5'" in result.stderr.splitlines()
    assert "nothing was imported" in result.stderr
    assert "Traceback" not in result.output
    assert nothing_written(store)


# --- chunks and chains of references ---------------------------------------------------------


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    """Chunks of 3 rows and bulk lookups of 2 ids, so a few rows cross every boundary."""
    from caretouch.store import importer

    monkeypatch.setattr(importer, "CHUNK", 3)
    monkeypatch.setattr(importer, "_LOOKUP", 2)
    return 3


def test_managers_named_chunks_later_and_customers_across_chunks(
    store: Store, tmp_path: Path, small_chunks: int
) -> None:
    # Each agent is managed by the next one, the last by nobody: every manager comes later.
    agents = [agent_row(f"A{n}", manager_id=f"A{n + 1}" if n < 7 else "") for n in range(1, 8)]
    customers = [customer_row(f"C{n}", agent_id=f"A{n % 7 + 1}") for n in range(1, 11)]
    report = import_csv(store, files(tmp_path, agents=agents, customers=customers))
    assert report.written, [str(p) for p in report.rejected]
    stored = rows_of(store, Agent, "agent_id")
    assert {a: r["manager_id"] for a, r in stored.items()} == {
        f"A{n}": f"A{n + 1}" if n < 7 else None for n in range(1, 8)
    }
    assert count(store, Customer) == 10


def test_an_event_of_a_policy_refused_for_its_customer_is_refused_too(
    store: Store, tmp_path: Path
) -> None:
    paths = {
        "policy": write_csv(
            tmp_path / "policies.csv",
            [policy_row("P1", "NOBODY"), policy_row("P2", "C1")],
            CANONICAL_COLUMNS["policy"],
        ),
        "event": write_csv(
            tmp_path / "events.csv",
            [event_row("E1", "C1", policy_id="P1"), event_row("E2", "C1", policy_id="P2")],
            CANONICAL_COLUMNS["event"],
        ),
        "customer": write_csv(tmp_path / "customers.csv", [customer_row("C1")], CUSTOMER_COLUMNS),
    }
    report = import_csv(store, paths, skip_invalid=True)
    assert report.written
    assert [str(p) for p in report.rejected] == [
        f"{paths['policy']}:2: unknown customer_id 'NOBODY'",
        f"{paths['event']}:2: policy_id 'P1' is rejected itself ({paths['policy']}:2)",
    ]
    assert report.inserted == {"customer": 1, "policy": 1, "event": 1}
