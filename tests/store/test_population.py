"""The population generator shared by the demo and the benchmarks (store/population.py)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from caretouch.dates import month_day
from caretouch.store.models import CANONICAL_COLUMNS
from caretouch.store.population import BAD_EMAILS, BAD_PHONES, Mix, Population

TODAY = dt.date(2026, 11, 23)


def _people(seed: int, n: int, mix: Mix | None = None) -> Population:
    pop = Population(TODAY, seed, mix)
    for number in range(1, n + 1):
        pop.random_policies(pop.customer(number))
    return pop


def test_same_seed_same_population() -> None:
    assert _people(3, 200).csv_rows() == _people(3, 200).csv_rows()
    assert _people(3, 200).csv_rows() != _people(4, 200).csv_rows()


def test_csv_rows_have_the_canonical_columns() -> None:
    rows = _people(5, 300).csv_rows()
    for table, key in (("customers", "customer"), ("policies", "policy"), ("events", "event")):
        assert rows[table], table
        assert all(tuple(r) == CANONICAL_COLUMNS[key] for r in rows[table])


def test_mix_without_bad_addresses() -> None:
    mix = Mix(missing_phone=0.2, bad_phone=0.0, missing_email=0.2, bad_email=0.0, lunar=0.0)
    people = _people(7, 500, mix).customers
    assert not any(p.phone in BAD_PHONES or p.email in BAD_EMAILS for p in people)
    assert any(p.phone == "" for p in people) and any(p.email == "" for p in people)
    assert all(p.birthday_calendar == "gregorian" for p in people)


def test_values_are_typed_rows_with_derived_keys() -> None:
    pop = _people(11, 300)
    person = next(p for p in pop.customers if p.birth_date and p.policies and not p.phone)
    row = person.values()
    assert row["birth_md"] == month_day(person.birth_date)
    assert row["phone"] is None
    policy = next(p for p in pop.policies if p.premium)
    assert policy.values()["start_md"] == month_day(policy.start_date)
    assert isinstance(policy.values()["premium"], Decimal)
    event = pop.events[0]
    stored = event.values("E1")
    assert stored["occurred_at"].utcoffset() == dt.timedelta(0)
    assert stored["occurred_at"] == event.occurred_at


# --- agents, segments and families ---------------------------------------------------------


def test_agents_one_per_200_customers_of_the_customers_locale() -> None:
    pop = _people(13, 1000)
    pop.agents_and_relations()
    agents = {a.agent_id: a for a in pop.agents}
    assert len(agents) == 5
    assert len(_staffed(3, 100).agents) == 3  # at least three
    assert {a.locale for a in pop.agents} == {"zh-CN", "zh-TW", "en"}
    for c in pop.customers:
        assert agents[c.agent_id].locale == c.locale
    head = pop.agents[0]
    assert head.manager_id == ""
    assert all(a.manager_id in agents for a in pop.agents[1:])
    # Some agents manage others, and no agent manages itself.
    assert {a.manager_id for a in pop.agents[1:]} >= {head.agent_id}
    assert all(a.manager_id != a.agent_id for a in pop.agents)


def _staffed(seed: int, n: int) -> Population:
    pop = _people(seed, n)
    pop.agents_and_relations()
    return pop


def test_agents_and_families_do_not_change_the_other_draws() -> None:
    plain = _people(17, 400).csv_rows()
    staffed = _staffed(17, 400)
    rows = staffed.csv_rows()
    assert rows["policies"] == plain["policies"]
    assert rows["events"] == plain["events"]
    strip = ("agent_id", "segment")
    assert [{k: v for k, v in c.items() if k not in strip} for c in rows["customers"]] == [
        {k: v for k, v in c.items() if k not in strip} for c in plain["customers"]
    ]
    # Drawing goes on as before after them too.
    assert staffed.customer(401).csv_row() | {"agent_id": "", "segment": ""} == (
        _people(17, 400).customer(401).csv_row()
    )
    assert rows == _staffed(17, 400).csv_rows()
    assert rows != _staffed(18, 400).csv_rows()


def test_relations_rows_and_values() -> None:
    pop = _staffed(19, 600)
    rows = pop.csv_rows()
    assert all(tuple(r) == CANONICAL_COLUMNS["agent"] for r in rows["agents"])
    assert all(tuple(r) == CANONICAL_COLUMNS["relation"] for r in rows["relations"])
    kinds = {r.kind for r in pop.relatives}
    assert kinds == {"spouse", "child", "parent"}
    assert all(r.birth_date is None or r.birth_date < TODAY for r in pop.relatives)
    lunar = next(r for r in pop.relatives if r.birthday_calendar == "lunar")
    assert lunar.values()["birth_lunar_md"] is not None
    assert lunar.customer.locale != "en"
    dated = next(r for r in pop.relatives if r.birth_date and r.birthday_calendar == "gregorian")
    assert dated.values()["birth_md"] == month_day(dated.birth_date)
    assert dated.values()["birth_lunar_md"] is None
    assert 0.25 <= len({r.customer.customer_id for r in pop.relatives}) / 600 <= 0.45
    assert pop.agents[0].values()["manager_id"] is None


def test_a_staffed_population_imports_without_a_problem(sqlite_store, tmp_path) -> None:
    import csv

    from caretouch.store.importer import import_csv

    rows = _staffed(23, 300).csv_rows()
    paths = {}
    for name, table in (
        ("agents", "agent"),
        ("customers", "customer"),
        ("policies", "policy"),
        ("events", "event"),
        ("relations", "relation"),
    ):
        path = tmp_path / f"{name}.csv"
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=CANONICAL_COLUMNS[table])
            writer.writeheader()
            writer.writerows(rows[name])
        paths[table] = path
    report = import_csv(sqlite_store, paths)
    assert report.written, [str(p) for p in report.rejected[:5]]
    assert report.inserted["agent"] == 3
    assert report.inserted["relation"] == len(rows["relations"])
