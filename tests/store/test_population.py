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
