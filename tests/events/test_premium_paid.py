"""A premium_paid event moves its policy's paid_through and premium due date, in the
transaction that stores the event, on every intake path; bad ones are dead-lettered with the
reason. Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from caretouch.events.inbox import Incoming, read_csv, submit
from caretouch.rules.event_types import load_event_types
from caretouch.store.db import Store
from caretouch.store.importer import import_csv
from caretouch.store.models import Event, EventDeadLetter, InsurancePolicy
from conftest import RULES_DIR, customer_row, load_rows, policy_row, utc

NOW = utc(2026, 11, 23, 3, 0)
D = dt.date


def paid(
    event_id: str = "PAY1",
    paid_through: str | None = "2027-12-22",
    policy_id: str | None = "P1",
    customer_id: str = "C1",
    **payload: Any,
) -> dict[str, Any]:
    body = {"amount": "5200.00", "paid_on": "2026-11-20", **payload}
    if paid_through is not None:
        body["paid_through"] = paid_through
    raw = {
        "event_id": event_id,
        "type": "premium_paid",
        "customer_id": customer_id,
        "policy_id": policy_id,
        "occurred_at": "2026-11-22T10:00:00+08:00",
        "payload": body,
    }
    return {k: v for k, v in raw.items() if v is not None}


@pytest.fixture
def policies(store: Store) -> Store:
    load_rows(
        store,
        customers=[customer_row("C1"), customer_row("C2")],
        policies=[
            policy_row(
                "P1",
                "C1",
                product="平安福终身寿险",
                start_date="2020-12-23",
                premium_due_date="2026-12-23",
                payment_frequency="annual",
                paid_through="2026-12-22",
            ),
            policy_row(
                "P2",
                "C2",
                product="少儿教育金",
                start_date="2024-01-31",
                premium_due_date="2026-11-30",
                payment_frequency="monthly",
                paid_through="2026-10-30",
            ),
            policy_row("P3", "C1", product="金瑞人生年金险", start_date="2026-11-01",
                       premium_due_date="2026-11-01", payment_frequency="single"),
        ],
    )  # fmt: skip
    return store


def schedule(store: Store, policy_id: str) -> tuple[Any, Any]:
    with store.read_session() as session:
        row = session.execute(
            select(InsurancePolicy.paid_through, InsurancePolicy.premium_due_date).where(
                InsurancePolicy.policy_id == policy_id
            )
        ).one()
    return row.paid_through, row.premium_due_date


def letters(store: Store) -> list[str]:
    with store.read_session() as session:
        return list(session.scalars(select(EventDeadLetter.reason).order_by(EventDeadLetter.id)))


def events(store: Store) -> list[str]:
    with store.read_session() as session:
        return list(session.scalars(select(Event.event_id).order_by(Event.event_id)))


def test_a_payment_moves_paid_through_and_the_due_date_once(policies: Store) -> None:
    report = submit(policies, [Incoming(paid())], source="api", now=NOW)
    assert report.accepted == ["PAY1"] and report.dead == []
    assert schedule(policies, "P1") == (D(2027, 12, 22), D(2027, 12, 23))
    # A replay (another path, the same event): counted, nothing changes.
    again = submit(policies, [Incoming(json.dumps(paid()))], source="stream", now=NOW)
    assert again.duplicates == ["PAY1"]
    assert schedule(policies, "P1") == (D(2027, 12, 22), D(2027, 12, 23))
    assert events(policies) == ["PAY1"]


def test_paid_through_never_moves_back(policies: Store) -> None:
    submit(policies, [Incoming(paid("PAY1", "2028-12-22"))], source="api", now=NOW)
    assert schedule(policies, "P1") == (D(2028, 12, 22), D(2028, 12, 23))
    # An older payment arriving late is recorded, and changes nothing.
    late = submit(policies, [Incoming(paid("PAY0", "2027-12-22"))], source="api", now=NOW)
    assert late.accepted == ["PAY0"]
    assert schedule(policies, "P1") == (D(2028, 12, 22), D(2028, 12, 23))


def test_monthly_and_single_premiums(policies: Store) -> None:
    # Two months paid at once: due on the schedule's day, the month after.
    submit(
        policies,
        [Incoming(paid("M1", "2026-12-30", policy_id="P2", customer_id="C2"))],
        source="api",
        now=NOW,
    )
    assert schedule(policies, "P2") == (D(2026, 12, 30), D(2027, 1, 30))
    # A single premium paid: no due date any more.
    submit(policies, [Incoming(paid("S1", "2099-12-31", policy_id="P3"))], source="api", now=NOW)
    assert schedule(policies, "P3") == (D(2099, 12, 31), None)


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (paid(policy_id=None), "premium_paid needs policy_id"),
        (paid(policy_id="P404"), "unknown policy_id 'P404'"),
        (paid(policy_id="P2"), "policy_id 'P2' is not a policy of customer 'C1'"),
        (paid(paid_through=None), "premium_paid needs payload.paid_through"),
        (paid(paid_through="next year"), "premium_paid needs payload.paid_through"),
    ],
    ids=["no-policy", "unknown-policy", "another-customers-policy", "no-date", "not-a-date"],
)
def test_a_payment_that_cannot_move_a_policy_is_dead_lettered(
    policies: Store, event: dict[str, Any], reason: str
) -> None:
    good = paid("GOOD", "2027-12-22")
    report = submit(policies, [Incoming(event, "api:1"), Incoming(good)], source="api", now=NOW)
    # The bad one is kept with its reason; the good one of the same batch goes through.
    assert report.accepted == ["GOOD"]
    assert [ref for ref, _ in report.dead] == ["api:1"]
    (letter,) = letters(policies)
    assert reason in letter
    assert events(policies) == ["GOOD"]
    assert schedule(policies, "P2")[0] == D(2026, 10, 30)


def test_declared_types_refuse_a_payment_without_paid_through(policies: Store) -> None:
    types, errors = load_event_types(RULES_DIR)
    assert errors == []
    report = submit(
        policies, [Incoming(paid(paid_through=None))], source="api", now=NOW, event_types=types
    )
    assert report.accepted == [] and len(report.dead) == 1
    assert "paid_through" in letters(policies)[0]
    assert schedule(policies, "P1") == (D(2026, 12, 22), D(2026, 12, 23))


def test_the_events_csv_carries_payments(policies: Store, tmp_path: Path) -> None:
    path = tmp_path / "payments.csv"
    rows = [
        "event_id,type,customer_id,policy_id,occurred_at,payload",
        'R-1001,premium_paid,C1,P1,2026-11-22T10:00:00+08:00,"{""paid_through"": ""2027-12-22"", ""amount"": ""5200.00""}"',
        'R-1002,premium_paid,C1,P2,2026-11-22T10:00:00+08:00,"{""paid_through"": ""2027-12-22""}"',
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    report = submit(policies, read_csv(path), source="csv", now=NOW)
    assert report.accepted == ["R-1001"]
    assert report.dead == [(f"{path}:3", "policy_id 'P2' is not a policy of customer 'C1' "
                                         "(it belongs to another customer)")]  # fmt: skip
    assert schedule(policies, "P1") == (D(2027, 12, 22), D(2027, 12, 23))


def test_the_store_import_of_events_moves_policies_too(policies: Store, tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    rows = [
        "event_id,type,customer_id,policy_id,occurred_at,payload",
        'R-1,premium_paid,C1,P1,2026-11-22T10:00:00+08:00,"{""paid_through"": ""2027-12-22""}"',
        'R-2,premium_paid,C1,,2026-11-22T10:00:00+08:00,"{""paid_through"": ""2027-12-22""}"',
        'R-3,premium_paid,C1,P2,2026-11-22T10:00:00+08:00,"{""paid_through"": ""2027-12-22""}"',
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    report = import_csv(policies, {"event": path}, skip_invalid=True)
    assert report.written and report.inserted["event"] == 1
    reasons = {p.location.line: p.reason for p in report.rejected}
    assert reasons[3].startswith("premium_paid needs policy_id")
    assert reasons[4].startswith("policy_id 'P2' is not a policy of customer 'C1'")
    assert schedule(policies, "P1") == (D(2027, 12, 22), D(2027, 12, 23))
    # Without skip_invalid nothing is imported, and no policy moves.
    again = import_csv(policies, {"event": path})
    assert not again.written


def test_concurrent_payments_keep_the_latest(policies: Store) -> None:
    """Payments of one policy submitted at once (several hosts): whatever the order, the
    policy ends paid through the latest of them, its due date the one after."""
    throughs = [f"{2027 + i}-12-22" for i in range(6)]
    barrier = threading.Barrier(len(throughs))
    failures: list[BaseException] = []

    def pay(i: int, through: str) -> None:
        try:
            barrier.wait()
            submit(policies, [Incoming(paid(f"C{i}", through))], source="api", now=NOW)
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=pay, args=(i, t)) for i, t in enumerate(throughs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert schedule(policies, "P1") == (D(2032, 12, 22), D(2032, 12, 23))
    assert len(events(policies)) == len(throughs)


def test_a_payment_of_a_policy_imported_with_it(store: Store, tmp_path: Path) -> None:
    """Policies and their payments in one store import: the policies are written first, so
    the payments move them; a refused import moves nothing and reports only real problems."""
    load_rows(store, customers=[customer_row("C1")])
    policies = tmp_path / "policies.csv"
    policies.write_text(
        "policy_id,customer_id,product,start_date,premium_due_date,payment_frequency,paid_through\n"
        "P7,C1,平安福终身寿险,2020-12-23,2026-12-23,quarterly,2026-12-22\n",
        encoding="utf-8",
    )
    events_csv = tmp_path / "events.csv"
    events_csv.write_text(
        "event_id,type,customer_id,policy_id,occurred_at,payload\n"
        'R-7,premium_paid,C1,P7,2026-11-22T10:00:00+08:00,"{""paid_through"": ""2027-03-22""}"\n',
        encoding="utf-8",
    )
    report = import_csv(store, {"policy": policies, "event": events_csv})
    assert report.written and report.rejected == []
    assert schedule(store, "P7") == (D(2027, 3, 22), D(2027, 3, 23))


def test_a_policy_the_database_will_not_update_dead_letters_the_payment(
    policies: Store,
) -> None:
    """The database refuses the update (here a trigger; in a deployment, a view it cannot
    update): the payment is dead-lettered with the reason, the rest of the batch goes in."""
    from sqlalchemy import text

    with policies.session() as session:
        if session.get_bind().dialect.name == "sqlite":
            session.execute(
                text(
                    "CREATE TRIGGER policies_read_only BEFORE UPDATE ON policies "
                    "BEGIN SELECT RAISE(ABORT, 'policies are read-only here'); END"
                )
            )
        else:
            session.execute(
                text(
                    "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
                    "RAISE EXCEPTION 'policies are read-only here'; END $$ LANGUAGE plpgsql"
                )
            )
            session.execute(
                text(
                    "CREATE TRIGGER policies_read_only BEFORE UPDATE ON policies "
                    "FOR EACH ROW EXECUTE FUNCTION refuse()"
                )
            )
    other = {
        "event_id": "BUY1",
        "type": "policy_purchased",
        "customer_id": "C2",
        "policy_id": "P2",
        "occurred_at": "2026-11-22T10:00:00+08:00",
        "payload": {"channel": "agent"},
    }
    report = submit(policies, [Incoming(paid(), "api:1"), Incoming(other)], source="api", now=NOW)
    assert report.accepted == ["BUY1"]
    assert [ref for ref, _ in report.dead] == ["api:1"]
    (letter,) = letters(policies)
    assert letter.startswith("the payment could not be recorded on its policy:")
    assert "read-only" in letter
    assert events(policies) == ["BUY1"]
    assert schedule(policies, "P1") == (D(2026, 12, 22), D(2026, 12, 23))
