"""CSV import into the customer store (SPEC section 4): validation, all-or-nothing, the CLI.

Every test that touches a store runs on SQLite and on PostgreSQL (the ``store`` fixture).
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from lunardate import LunarDate
from sqlalchemy import func, select

from caretouch.store.db import Store
from caretouch.store.importer import import_csv
from caretouch.store.models import CANONICAL_COLUMNS, Customer, Event, InsurancePolicy
from conftest import Care, cli_url, customer_row, event_row, load_rows, policy_row

ROOT = Path(__file__).resolve().parents[2]
CARE = ROOT / ".venv" / "bin" / "care"

CUSTOMER_COLUMNS = CANONICAL_COLUMNS["customer"]
POLICY_COLUMNS = CANONICAL_COLUMNS["policy"]
EVENT_COLUMNS = CANONICAL_COLUMNS["event"]


# --- helpers -------------------------------------------------------------------------------


def write_csv(
    path: Path,
    rows: list[dict[str, str]],
    columns: tuple[str, ...] | list[str] | None = None,
    *,
    encoding: str = "utf-8",
) -> Path:
    """A CSV file with ``columns`` as its header (default: the first row's keys)."""
    header = list(columns if columns is not None else rows[0])
    with path.open("w", encoding=encoding, newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow([row.get(c, "") for c in header])
    return path


def csv_line(row: dict[str, str], columns: tuple[str, ...]) -> str:
    """One CSV record (without its line ending), quoted as ``csv`` would."""
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([row.get(c, "") for c in columns])
    return buf.getvalue()[:-1]


def table_rows(store: Store, model: Any, key: str) -> dict[str, dict[str, Any]]:
    """Every row of a store table as plain dicts, keyed by its id column."""
    with store.session() as session:
        objs = session.scalars(select(model)).all()
        return {
            getattr(o, key): {c.name: getattr(o, c.name) for c in model.__table__.columns}
            for o in objs
        }


def count(store: Store, model: Any) -> int:
    with store.session() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def files(
    tmp_path: Path,
    customers: list[dict[str, str]] | None = None,
    policies: list[dict[str, str]] | None = None,
    events: list[dict[str, str]] | None = None,
) -> dict[str, Path]:
    out: dict[str, Path] = {}
    if customers is not None:
        out["customer"] = write_csv(tmp_path / "customers.csv", customers, CUSTOMER_COLUMNS)
    if policies is not None:
        out["policy"] = write_csv(tmp_path / "policies.csv", policies, POLICY_COLUMNS)
    if events is not None:
        out["event"] = write_csv(tmp_path / "events.csv", events, EVENT_COLUMNS)
    return out


def assert_store_empty(store: Store) -> None:
    assert count(store, Customer) == 0
    assert count(store, InsurancePolicy) == 0
    assert count(store, Event) == 0


# --- a clean import ------------------------------------------------------------------------


def test_clean_import_writes_every_row_with_counts_and_types(store: Store, tmp_path: Path) -> None:
    paths = files(
        tmp_path,
        customers=[
            customer_row("C1"),
            customer_row(
                "C2",
                name="John O'Brien",
                locale="en",
                timezone="America/Los_Angeles",
                tier="A",
                consent_sms="false",
                consent_marketing="yes",
                birth_date="",
            ),
            customer_row("C3", timezone="", tier="", locale="", status="inactive"),
        ],
        policies=[
            policy_row("P1", "C1", renewal_date="2027-01-15"),
            policy_row("P2", "C2", premium="", status="lapsed"),
        ],
        events=[
            event_row("E1", "C1", policy_id="P1", payload='{"channel": "app", "amount": 12}'),
            event_row(
                "E2",
                "C2",
                type="complaint_resolved",
                occurred_at="2026-11-20T08:15:00Z",
                payload="",  # an empty payload is stored as NULL
            ),
        ],
    )
    report = import_csv(store, paths)

    assert report.ok and report.written
    assert report.rejected == []
    assert report.inserted == {"customer": 3, "policy": 2, "event": 2}
    assert report.updated == {"customer": 0, "policy": 0, "event": 0}

    customers = table_rows(store, Customer, "customer_id")
    assert set(customers) == {"C1", "C2", "C3"}
    c1, c2, c3 = customers["C1"], customers["C2"], customers["C3"]
    assert c1["name"] == "王芳"
    assert c1["birth_date"] == dt.date(1990, 11, 23)
    assert c1["consent_sms"] is True and c1["consent_marketing"] is False
    assert c2["name"] == "John O'Brien"
    assert c2["birth_date"] is None
    assert c2["consent_sms"] is False and c2["consent_marketing"] is True
    assert (c2["locale"], c2["timezone"], c2["tier"]) == ("en", "America/Los_Angeles", "A")
    # Empty optional fields take the documented defaults; an empty time zone stays empty.
    assert (c3["locale"], c3["timezone"], c3["tier"], c3["status"]) == (
        "zh-CN",
        None,
        "C",
        "inactive",
    )

    policies = table_rows(store, InsurancePolicy, "policy_id")
    assert policies["P1"]["renewal_date"] == dt.date(2027, 1, 15)
    assert policies["P1"]["premium"] == Decimal("1200.00")
    assert policies["P2"]["premium"] is None and policies["P2"]["renewal_date"] is None
    assert policies["P2"]["status"] == "lapsed"

    events = table_rows(store, Event, "event_id")
    assert events["E1"]["payload"] == {"channel": "app", "amount": 12}
    assert events["E2"]["payload"] is None
    # Stored as UTC (SQLite hands back naive datetimes, which the store always writes in UTC).
    occurred = {
        k: (
            v["occurred_at"].replace(tzinfo=dt.timezone.utc)
            if v["occurred_at"].tzinfo is None
            else v["occurred_at"]
        )
        for k, v in events.items()
    }
    assert occurred["E1"] == dt.datetime(2026, 11, 22, 2, 0, tzinfo=dt.timezone.utc)
    assert occurred["E2"] == dt.datetime(2026, 11, 20, 8, 15, tzinfo=dt.timezone.utc)


def test_derived_month_day_keys_are_set(store: Store, tmp_path: Path) -> None:
    lunar_birth = dt.date(1990, 11, 23)
    expected_lunar = LunarDate.from_solar_date(1990, 11, 23)
    assert (expected_lunar.month, expected_lunar.day) == (10, 7)
    paths = files(
        tmp_path,
        customers=[
            customer_row("G", birth_date="1990-11-23"),
            customer_row("L", birth_date=lunar_birth.isoformat(), birthday_calendar="lunar"),
            customer_row("LEAP", birth_date="2000-02-29"),
            customer_row("NONE", birth_date=""),
            # Born in the leap fourth month of 2020: counts as the regular fourth month.
            customer_row("LM", birth_date="2020-06-01", birthday_calendar="lunar"),
        ],
        policies=[
            policy_row("P1", "G", start_date="2020-01-15"),
            policy_row("P2", "G", start_date="2024-02-29"),
            policy_row("P3", "G", start_date="2021-12-31", renewal_date="2022-12-31"),
        ],
    )
    report = import_csv(store, paths)
    assert report.ok, [str(p) for p in report.rejected]

    customers = table_rows(store, Customer, "customer_id")
    assert (customers["G"]["birth_md"], customers["G"]["birth_lunar_md"]) == (1123, None)
    assert (customers["L"]["birth_md"], customers["L"]["birth_lunar_md"]) == (1123, 1007)
    assert (customers["LEAP"]["birth_md"], customers["LEAP"]["birth_lunar_md"]) == (229, None)
    assert (customers["NONE"]["birth_md"], customers["NONE"]["birth_lunar_md"]) == (None, None)
    leap_month = LunarDate.from_solar_date(2020, 6, 1)
    assert leap_month.is_leap_month and leap_month.month == 4
    assert customers["LM"]["birth_lunar_md"] == 400 + leap_month.day

    policies = table_rows(store, InsurancePolicy, "policy_id")
    assert {k: v["start_md"] for k, v in policies.items()} == {"P1": 115, "P2": 229, "P3": 1231}


def test_reimport_keeps_derived_keys_in_step(store: Store, tmp_path: Path) -> None:
    import_csv(store, files(tmp_path, customers=[customer_row("C1", birth_date="1990-11-23")]))
    report = import_csv(
        store,
        files(
            tmp_path,
            customers=[
                customer_row("C1", birth_date="1985-04-19", birthday_calendar="lunar"),
            ],
        ),
    )
    assert report.updated == {"customer": 1} and report.inserted == {"customer": 0}
    c1 = table_rows(store, Customer, "customer_id")["C1"]
    assert c1["birth_md"] == 419
    assert c1["birth_lunar_md"] == 230  # lunar 1985-02-30


# --- all or nothing, with physical line numbers --------------------------------------------


def test_one_bad_row_writes_nothing_and_every_bad_row_is_reported_by_physical_line(
    store: Store, tmp_path: Path
) -> None:
    cols = CUSTOMER_COLUMNS
    lines = [
        ",".join(cols),  # 1
        csv_line(customer_row("C1"), cols),  # 2
        csv_line(customer_row("C2", name="Wang\nFang"), cols),  # 3-4: a quoted field on two lines
        csv_line(customer_row("C3", birth_date="2023-02-29"), cols),  # 5
        "",  # 6: a blank line is skipped but still counted
        csv_line(customer_row("C4", consent_sms="maybe"), cols),  # 7
        csv_line(customer_row("C5"), cols),  # 8
        csv_line(customer_row("C6", birth_date="2026-13-01"), cols),  # 9
    ]
    assert lines[2].count("\n") == 1 and '"Wang\nFang"' in lines[2]
    path = tmp_path / "customers.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    report = import_csv(store, {"customer": path})

    assert not report.ok and not report.written
    assert [str(p) for p in report.rejected] == [
        f"{path}:5: birth_date: '2023-02-29' is not a real date (YYYY-MM-DD)",
        f"{path}:7: consent_sms: 'maybe' is not true or false",
        f"{path}:9: birth_date: '2026-13-01' is not a real date (YYYY-MM-DD)",
    ]
    assert report.inserted == {} and report.updated == {}
    assert_store_empty(store)


def test_a_bad_row_in_one_file_blocks_the_valid_rows_of_every_file(
    store: Store, tmp_path: Path
) -> None:
    # An existing customer is not changed by a refused import either.
    import_csv(store, files(tmp_path, customers=[customer_row("C0", name="Old Name")]))
    paths = files(
        tmp_path,
        customers=[customer_row("C0", name="New Name"), customer_row("C1")],
        policies=[policy_row("P1", "C1")],
        events=[event_row("E1", "C1", occurred_at="2026-11-22T10:00:00")],
    )
    report = import_csv(store, paths)
    assert not report.written
    assert [str(p) for p in report.rejected] == [
        f"{paths['event']}:2: occurred_at: '2026-11-22T10:00:00' has no UTC offset (e.g. +08:00)"
    ]
    assert set(table_rows(store, Customer, "customer_id")) == {"C0"}
    assert table_rows(store, Customer, "customer_id")["C0"]["name"] == "Old Name"
    assert count(store, InsurancePolicy) == 0 and count(store, Event) == 0


BAD_ROWS = [
    # (id, table, overrides of the bad row, the reason expected)
    (
        "feb29-common-year",
        "customer",
        {"birth_date": "2023-02-29"},
        "birth_date: '2023-02-29' is not a real date (YYYY-MM-DD)",
    ),
    (
        "month-13",
        "customer",
        {"birth_date": "2026-13-01"},
        "birth_date: '2026-13-01' is not a real date (YYYY-MM-DD)",
    ),
    (
        "policy-impossible-start",
        "policy",
        {"start_date": "2023-02-29"},
        "start_date: '2023-02-29' is not a real date (YYYY-MM-DD)",
    ),
    (
        "bad-boolean",
        "customer",
        {"consent_email": "oui"},
        "consent_email: 'oui' is not true or false",
    ),
    (
        "status-typo",
        "customer",
        {"status": "actve"},
        "status: 'actve' is not one of active, inactive (did you mean 'active'?)",
    ),
    (
        "calendar-typo",
        "customer",
        {"birthday_calendar": "lunr"},
        "birthday_calendar: 'lunr' is not one of gregorian, lunar (did you mean 'lunar'?)",
    ),
    (
        "policy-status-typo",
        "policy",
        {"status": "lapsd"},
        "status: 'lapsd' is not one of active, lapsed, cancelled (did you mean 'lapsed'?)",
    ),
    ("tier-unknown", "customer", {"tier": "Z"}, "tier: 'Z' is not one of A, B, C, D"),
    (
        "bad-timezone",
        "customer",
        {"timezone": "Asia/Shangai"},
        "timezone: 'Asia/Shangai' is not an IANA time zone (e.g. Asia/Shanghai)",
    ),
    ("name-missing", "customer", {"name": "  "}, "name is required"),
    (
        "lunar-1850",
        "customer",
        {"birth_date": "1850-05-05", "birthday_calendar": "lunar"},
        "birth_date 1850-05-05 is outside the lunar calendar's range (1900-01-31 to 2099-12-31)",
    ),
    (
        "lunar-without-birth-date",
        "customer",
        {"birth_date": "", "birthday_calendar": "lunar"},
        "birthday_calendar is lunar but birth_date is empty",
    ),
    (
        "renewal-before-start",
        "policy",
        {"start_date": "2020-01-15", "renewal_date": "2019-01-15"},
        "renewal_date 2019-01-15 is before start_date 2020-01-15",
    ),
    ("premium-not-a-number", "policy", {"premium": "abc"}, "premium: 'abc' is not a number"),
    (
        "premium-negative",
        "policy",
        {"premium": "-5"},
        "premium: '-5' must be a non-negative amount",
    ),
    (
        "frequency-not-in-vocabulary",
        "policy",
        {"payment_frequency": "yearly"},
        "payment_frequency: 'yearly' is not one of annual, semi-annual, quarterly, monthly, single",
    ),
    (
        "paid-through-not-a-date",
        "policy",
        {"paid_through": "2026-02-30"},
        "paid_through: '2026-02-30' is not a real date (YYYY-MM-DD)",
    ),
    (
        "premium-due-not-a-date",
        "policy",
        {"premium_due_date": "next month"},
        "premium_due_date: 'next month' is not a real date (YYYY-MM-DD)",
    ),
    (
        "premium-due-before-start",
        "policy",
        {"start_date": "2020-01-15", "premium_due_date": "2019-01-15"},
        "premium_due_date 2019-01-15 is before start_date 2020-01-15",
    ),
    ("policy-unknown-customer", "policy", {"customer_id": "C404"}, "unknown customer_id 'C404'"),
    ("event-unknown-customer", "event", {"customer_id": "C404"}, "unknown customer_id 'C404'"),
    ("event-unknown-policy", "event", {"policy_id": "P404"}, "unknown policy_id 'P404'"),
    (
        "event-no-offset",
        "event",
        {"occurred_at": "2026-11-22T10:00:00"},
        "occurred_at: '2026-11-22T10:00:00' has no UTC offset (e.g. +08:00)",
    ),
    (
        "event-not-a-timestamp",
        "event",
        {"occurred_at": "yesterday"},
        "occurred_at: 'yesterday' is not an ISO 8601 timestamp",
    ),
    ("payload-array", "event", {"payload": "[1, 2]"}, "payload must be a JSON object"),
    ("payload-string", "event", {"payload": '"hello"'}, "payload must be a JSON object"),
    ("payload-broken-json", "event", {"payload": "{oops"}, "payload is not valid JSON:"),
    # Bounded before it is parsed (docs/events.md, "Limits"): deeper would crash every run.
    (
        "payload-900-deep",
        "event",
        {"payload": '{"a":' * 899 + "{}" + "}" * 899},
        "too_deep: payload is nested 900 levels deep; at most 16 are accepted",
    ),
    (
        "payload-30000-deep",
        "event",
        {"payload": "[" * 30_000 + "]" * 30_000},
        "too_large: payload is 60,000 bytes; at most 32,768 are accepted",
    ),
    (
        "payload-many-keys",
        "event",
        {"payload": "{" + ",".join(f'"k{i}":{i}' for i in range(1001)) + "}"},
        "too_many_items: payload has more than 1,000 keys and list items",
    ),
]


@pytest.mark.parametrize(
    ("table", "overrides", "reason"),
    [case[1:] for case in BAD_ROWS],
    ids=[case[0] for case in BAD_ROWS],
)
def test_each_kind_of_bad_row_is_refused_with_its_reason(
    store: Store, tmp_path: Path, table: str, overrides: dict[str, str], reason: str
) -> None:
    # Line 2 of every file is valid; the bad row is line 3 of its file. Policies and events
    # belong to C1, so a refused C2 does not drag them along.
    customers = [customer_row("C1"), customer_row("C2")]
    policies = [policy_row("P1", "C1"), policy_row("P2", "C1")]
    events = [event_row("E1", "C1"), event_row("E2", "C1")]
    bad = {"customer": customers, "policy": policies, "event": events}[table]
    bad[1] = {**bad[1], **overrides}
    paths = files(tmp_path, customers=customers, policies=policies, events=events)

    report = import_csv(store, paths)

    assert not report.written
    assert len(report.rejected) == 1, [str(p) for p in report.rejected]
    problem = report.rejected[0]
    assert str(problem).startswith(f"{paths[table]}:3: {reason}")
    assert problem.row is not None and all(problem.row[k] == v for k, v in overrides.items())
    assert_store_empty(store)


def test_unknown_header_column_is_refused_with_did_you_mean(store: Store, tmp_path: Path) -> None:
    row = customer_row("C1")
    row["birth_dat"] = row.pop("birth_date")
    path = write_csv(tmp_path / "customers.csv", [row])
    report = import_csv(store, {"customer": path})
    assert not report.written
    assert (len(report.file_errors), report.rejected) == (1, [])
    message = str(report.file_errors[0])
    assert message.startswith(
        f"{path}:1: unknown column 'birth_dat' (did you mean 'birth_date'?); customer columns are: "
    )
    assert_store_empty(store)


def test_missing_required_column_is_refused_for_new_rows(store: Store, tmp_path: Path) -> None:
    row = customer_row("C1")
    del row["name"]
    path = write_csv(tmp_path / "customers.csv", [row])
    report = import_csv(store, {"customer": path})
    assert not report.written
    assert [str(p) for p in report.rejected] == [f"{path}:2: name is required"]
    assert_store_empty(store)


def test_missing_id_column_is_refused(store: Store, tmp_path: Path) -> None:
    row = customer_row("C1")
    del row["customer_id"]
    path = write_csv(tmp_path / "customers.csv", [row])
    report = import_csv(store, {"customer": path})
    assert not report.written
    assert [str(p) for p in report.file_errors] == [
        f"{path}:1: missing required column 'customer_id'"
    ]


def test_a_partial_file_updates_existing_policies(store: Store, tmp_path: Path) -> None:
    load_rows(store, customers=[customer_row("C1")], policies=[policy_row("P1", "C1")])
    path = tmp_path / "status.csv"
    path.write_text("policy_id,status\nP1,lapsed\n", encoding="utf-8")
    report = import_csv(store, {"policy": path})
    assert report.ok and report.updated == {"policy": 1}
    p1 = table_rows(store, InsurancePolicy, "policy_id")["P1"]
    assert (p1["status"], p1["product"], str(p1["start_date"])) == (
        "lapsed",
        "安心医疗险",
        "2020-01-15",
    )


def test_optional_columns_may_be_left_out(store: Store, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "customers.csv", [{"customer_id": "C1", "name": "Ann Lee"}])
    report = import_csv(store, {"customer": path})
    assert report.ok and report.inserted == {"customer": 1}
    c1 = table_rows(store, Customer, "customer_id")["C1"]
    assert (c1["birthday_calendar"], c1["locale"], c1["tier"], c1["status"]) == (
        "gregorian",
        "zh-CN",
        "C",
        "active",
    )
    assert (c1["consent_sms"], c1["consent_email"], c1["consent_marketing"]) == (
        False,
        False,
        False,
    )


def test_duplicate_id_in_one_file_is_refused(store: Store, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "customers.csv",
        [customer_row("C1"), customer_row("C2"), customer_row("C1", name="Other")],
        CUSTOMER_COLUMNS,
    )
    report = import_csv(store, {"customer": path})
    assert not report.written
    assert [str(p) for p in report.rejected] == [
        f"{path}:4: duplicate customer_id 'C1' (also on line 2)"
    ]
    assert_store_empty(store)


def test_wrong_number_of_fields_is_refused(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    path.write_text(
        ",".join(CUSTOMER_COLUMNS)
        + "\n"
        + csv_line(customer_row("C1"), CUSTOMER_COLUMNS)
        + ",extra\n",
        encoding="utf-8",
    )
    report = import_csv(store, {"customer": path})
    assert not report.written
    width = len(CUSTOMER_COLUMNS)
    assert [str(p) for p in report.rejected] == [
        f"{path}:2: expected {width} fields, found {width + 1}"
    ]


def test_policy_may_reference_a_customer_already_in_the_store(store: Store, tmp_path: Path) -> None:
    import_csv(store, files(tmp_path, customers=[customer_row("C1")]))
    report = import_csv(
        store,
        files(
            tmp_path,
            policies=[policy_row("P1", "C1")],
            events=[event_row("E1", "C1", policy_id="P1")],
        ),
    )
    assert report.ok, [str(p) for p in report.rejected]
    assert report.inserted == {"policy": 1, "event": 1}


# --- --skip-invalid ------------------------------------------------------------------------


def test_skip_invalid_writes_valid_rows_and_a_rejects_file(store: Store, tmp_path: Path) -> None:
    paths = files(
        tmp_path,
        customers=[
            customer_row("C1"),
            customer_row("C2", status="actve"),
            customer_row("C3", name='Li, "Lei"'),
        ],
        policies=[
            policy_row("P1", "C1"),
            policy_row("P2", "C2"),  # its customer was rejected
            policy_row("P3", "C3", start_date="2023-02-29"),
        ],
        events=[event_row("E1", "C3"), event_row("E2", "C1", payload="[]")],
    )
    rejects = tmp_path / "rejects.csv"

    report = import_csv(store, paths, skip_invalid=True, rejects_path=rejects)

    assert report.written and not report.ok
    assert report.inserted == {"customer": 2, "policy": 1, "event": 1}
    assert set(table_rows(store, Customer, "customer_id")) == {"C1", "C3"}
    assert set(table_rows(store, InsurancePolicy, "policy_id")) == {"P1"}
    assert set(table_rows(store, Event, "event_id")) == {"E1"}
    assert report.rejects_file == rejects

    with rejects.open(encoding="utf-8", newline="") as handle:
        rejected = list(csv.DictReader(handle))
    by_where = {(r["file"], r["line"]): r for r in rejected}
    assert set(by_where) == {
        (str(paths["customer"]), "3"),
        (str(paths["policy"]), "3"),
        (str(paths["policy"]), "4"),
        (str(paths["event"]), "3"),
    }
    c2 = by_where[(str(paths["customer"]), "3")]
    assert "did you mean 'active'?" in c2["reason"]
    # The original fields, as they were in the file.
    for column, value in customer_row("C2", status="actve").items():
        assert c2[column] == value
    assert by_where[(str(paths["policy"]), "3")]["reason"] == "unknown customer_id 'C2'"
    assert by_where[(str(paths["policy"]), "3")]["policy_id"] == "P2"
    assert "not a real date" in by_where[(str(paths["policy"]), "4")]["reason"]
    assert by_where[(str(paths["policy"]), "4")]["start_date"] == "2023-02-29"
    assert by_where[(str(paths["event"]), "3")]["reason"] == "payload must be a JSON object"
    assert by_where[(str(paths["event"]), "3")]["payload"] == "[]"


def test_skip_invalid_with_nothing_invalid_writes_no_rejects_file(
    store: Store, tmp_path: Path
) -> None:
    rejects = tmp_path / "rejects.csv"
    report = import_csv(
        store,
        files(tmp_path, customers=[customer_row("C1")]),
        skip_invalid=True,
        rejects_path=rejects,
    )
    assert report.ok and report.written and report.inserted == {"customer": 1}
    assert not rejects.exists() and report.rejects_file is None


# --- re-import updates ---------------------------------------------------------------------


def test_reimport_updates_existing_rows_and_reports_updated_vs_inserted(
    store: Store, tmp_path: Path
) -> None:
    first = import_csv(
        store,
        files(
            tmp_path,
            customers=[customer_row("C1"), customer_row("C2", name="李雷")],
            policies=[policy_row("P1", "C1")],
        ),
    )
    assert first.inserted == {"customer": 2, "policy": 1}
    assert first.updated == {"customer": 0, "policy": 0}

    second = import_csv(
        store,
        files(
            tmp_path,
            customers=[
                customer_row("C1", name="王芳芳", consent_sms="false", tier="A"),
                customer_row("C3", name="韩梅梅"),
            ],
            policies=[policy_row("P1", "C1", renewal_date="2027-01-15", status="cancelled")],
        ),
    )
    assert second.ok
    assert second.inserted == {"customer": 1, "policy": 0}
    assert second.updated == {"customer": 1, "policy": 1}

    customers = table_rows(store, Customer, "customer_id")
    assert set(customers) == {"C1", "C2", "C3"}
    assert customers["C1"]["name"] == "王芳芳"
    assert customers["C1"]["consent_sms"] is False
    assert customers["C1"]["tier"] == "A"
    assert customers["C2"]["name"] == "李雷"  # untouched
    policy = table_rows(store, InsurancePolicy, "policy_id")["P1"]
    assert (policy["renewal_date"], policy["status"]) == (dt.date(2027, 1, 15), "cancelled")
    assert count(store, InsurancePolicy) == 1


# --- warnings, encodings -------------------------------------------------------------------


def test_invalid_phone_and_email_are_imported_with_a_warning(store: Store, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "customers.csv",
        [
            customer_row("C1", phone="12345"),
            customer_row("C2", email="not-an-email"),
            customer_row("C3"),
        ],
        CUSTOMER_COLUMNS,
    )
    report = import_csv(store, {"customer": path})
    assert report.ok and report.written
    assert report.inserted == {"customer": 3}
    assert [str(w) for w in report.warnings] == [
        f"{path}:2: warning: phone is not a valid E.164 number: SMS will not be used",
        f"{path}:3: warning: email address is not valid: email will not be used",
    ]
    customers = table_rows(store, Customer, "customer_id")
    assert customers["C1"]["phone"] == "12345"
    assert customers["C2"]["email"] == "not-an-email"


def test_utf8_bom_header_is_understood(store: Store, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "customers.csv", [customer_row("C1")], CUSTOMER_COLUMNS, encoding="utf-8-sig"
    )
    assert path.read_bytes().startswith(b"\xef\xbb\xbfcustomer_id,")
    report = import_csv(store, {"customer": path})
    assert report.ok, [str(p) for p in report.rejected]
    assert table_rows(store, Customer, "customer_id")["C1"]["name"] == "王芳"


def test_a_file_that_is_not_utf8_is_a_file_error_at_its_first_bad_line(
    sqlite_store: Store, tmp_path: Path
) -> None:
    path = tmp_path / "customers.csv"
    good = "\n".join(csv_line(customer_row(f"C{i}"), CUSTOMER_COLUMNS) for i in range(1, 4))
    path.write_bytes(
        (",".join(CUSTOMER_COLUMNS) + "\n" + good + "\n").encode("utf-8")
        + csv_line(customer_row("C9", name="Zoë"), CUSTOMER_COLUMNS).encode("latin-1")
        + b"\n"
    )
    # A wrongly encoded export is refused whole, even with skip_invalid: its "valid" rows
    # are only those whose bytes happen to decode.
    for skip in (False, True):
        report = import_csv(sqlite_store, {"customer": path}, skip_invalid=skip)
        assert not report.written and report.rejected == []
        assert [str(p) for p in report.file_errors] == [
            f"{path}:5: not UTF-8 text (export or save the file as UTF-8)"
        ]
    assert count(sqlite_store, Customer) == 0


def test_missing_file_is_reported_not_raised(sqlite_store: Store, tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    report = import_csv(sqlite_store, {"customer": path})
    assert not report.written
    assert [str(p) for p in report.file_errors] == [
        f"{path}: cannot read: No such file or directory"
    ]


def test_empty_file_is_reported(sqlite_store: Store, tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    path.write_text("", encoding="utf-8")
    report = import_csv(sqlite_store, {"customer": path})
    assert not report.written
    assert [str(p) for p in report.file_errors] == [f"{path}:1: empty file (no header row)"]


# --- the command line ----------------------------------------------------------------------


def test_cli_import_success_exit_0_with_counts(care: Care, store: Store, tmp_path: Path) -> None:
    paths = files(
        tmp_path,
        customers=[customer_row("C1"), customer_row("C2", phone="123")],
        policies=[policy_row("P1", "C1")],
        events=[event_row("E1", "C1")],
    )
    care.store_url = cli_url(store)
    result = care(
        "store",
        "import",
        "--customers",
        str(paths["customer"]),
        "--policies",
        str(paths["policy"]),
        "--events",
        str(paths["event"]),
    )
    assert result.exit_code == 0, result.output
    assert "customer: 2 inserted, 0 updated" in result.stdout
    assert "policy: 1 inserted, 0 updated" in result.stdout
    assert "event: 1 inserted, 0 updated" in result.stdout
    # The warning goes to stderr, with its place.
    assert f"{paths['customer']}:3: warning: phone is not a valid E.164 number" in result.stderr
    assert "Traceback" not in result.output
    assert set(table_rows(store, Customer, "customer_id")) == {"C1", "C2"}

    again = care("store", "import", "--customers", str(paths["customer"]))
    assert again.exit_code == 0
    assert "customer: 0 inserted, 2 updated" in again.stdout


def test_cli_import_invalid_exit_1_messages_on_stderr(
    care: Care, store: Store, tmp_path: Path
) -> None:
    paths = files(
        tmp_path,
        customers=[
            customer_row("C1"),
            customer_row("C2", status="actve"),
            customer_row("C3", birth_date="2023-02-29"),
        ],
    )
    care.store_url = cli_url(store)
    result = care("store", "import", "--customers", str(paths["customer"]))
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert (
        f"{paths['customer']}:3: status: 'actve' is not one of active, inactive (did you mean 'active'?)"
        in lines
    )
    assert (
        f"{paths['customer']}:4: birth_date: '2023-02-29' is not a real date (YYYY-MM-DD)" in lines
    )
    assert "nothing was imported" in result.stderr
    assert "Traceback" not in result.output
    assert count(store, Customer) == 0


def test_cli_skip_invalid_writes_rejects(care: Care, sqlite_store: Store, tmp_path: Path) -> None:
    paths = files(tmp_path, customers=[customer_row("C1"), customer_row("C2", tier="Q")])
    rejects = tmp_path / "out" / "rejects.csv"
    rejects.parent.mkdir()
    care.store_url = sqlite_store.url
    result = care(
        "store",
        "import",
        "--customers",
        str(paths["customer"]),
        "--skip-invalid",
        "--rejects",
        str(rejects),
    )
    assert result.exit_code == 0, result.output
    assert "customer: 1 inserted, 0 updated" in result.stdout
    assert f"{paths['customer']}:3: tier: 'Q' is not one of A, B, C, D" in result.stderr
    with rejects.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["line"], r["customer_id"], r["tier"]) for r in rows] == [("3", "C2", "Q")]
    assert set(table_rows(sqlite_store, Customer, "customer_id")) == {"C1"}


def test_cli_without_files_is_a_usage_error(care: Care, sqlite_store: Store) -> None:
    care.store_url = sqlite_store.url
    result = care("store", "import")
    assert result.exit_code == 2
    assert "give at least one of --agents, --customers" in result.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(None, "cannot read", id="missing-file"),
        pytest.param("customer_id,nmae\nC1,Ann\n", "did you mean 'name'", id="bad-header"),
        pytest.param(b"\xff\xfe\x00garbage", ":1:", id="binary-file"),
    ],
)
def test_care_binary_reports_bad_input_without_a_traceback(
    tmp_path: Path, content: str | bytes | None, expected: str
) -> None:
    path = tmp_path / "customers.csv"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    elif isinstance(content, bytes):
        path.write_bytes(content)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARE_")}
    proc = subprocess.run(
        [
            str(CARE) if CARE.exists() else sys.executable,
            *([] if CARE.exists() else ["-m", "caretouch.cli"]),
            "--store",
            f"sqlite:///{tmp_path / 'care.db'}",
            "store",
            "import",
            "--customers",
            str(path),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    assert expected in proc.stderr
    assert str(path) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_reimport_with_fewer_columns_keeps_the_others(store: Store, tmp_path: Path) -> None:
    full = tmp_path / "full.csv"
    full.write_text(
        ",".join(CUSTOMER_COLUMNS)
        + "\n"
        + csv_line(
            customer_row("C1", tier="A", birth_date="1970-03-03", birthday_calendar="lunar"),
            CUSTOMER_COLUMNS,
        )
        + "\n",
        encoding="utf-8",
    )
    assert import_csv(store, {"customer": full}).ok
    before = table_rows(store, Customer, "customer_id")["C1"]
    partial = tmp_path / "names.csv"
    partial.write_text("customer_id,name\nC1,New Name\nC2,Brand New\n", encoding="utf-8")
    report = import_csv(store, {"customer": partial})
    assert report.ok and report.updated == {"customer": 1} and report.inserted == {"customer": 1}
    after = table_rows(store, Customer, "customer_id")
    assert after["C1"]["name"] == "New Name"
    for column in (
        "tier",
        "birth_date",
        "birthday_calendar",
        "consent_sms",
        "birth_lunar_md",
        "phone",
    ):
        assert after["C1"][column] == before[column], column
    assert after["C2"]["tier"] == "C" and after["C2"]["consent_sms"] is False


# --- NUL characters ------------------------------------------------------------------------

NUL_TABLES = {
    "customer": (CUSTOMER_COLUMNS, lambda i: customer_row(f"C{i}", phone=f"+86138{i:08d}")),
    "policy": (POLICY_COLUMNS, lambda i: policy_row(f"P{i}", "C0")),
    "event": (EVENT_COLUMNS, lambda i: event_row(f"E{i}", "C0", payload='{"a": "b"}')),
}


@pytest.mark.parametrize("table", list(NUL_TABLES))
def test_a_nul_in_any_field_is_a_row_error(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture, table: str
) -> None:
    """PostgreSQL cannot store a NUL (its error carried the row's phone and email into the
    traceback); SQLite would keep it. On both, each such row is a FILE:LINE error."""
    load_rows(store, customers=[customer_row("C0")])
    columns, make = NUL_TABLES[table]
    rows = []
    for i, column in enumerate(columns, start=1):
        row = make(i)
        row[column] = (row[column] or "x") + "\x00" + "wang.fang@example.com"
        rows.append(row)
    rows.append(make(len(columns) + 1))  # a clean row, after them
    name = {"customer": "customers", "policy": "policies", "event": "events"}[table]
    path = write_csv(tmp_path / f"{name}.csv", rows, columns)

    report = import_csv(store, {table: path})

    assert not report.written
    assert [str(p) for p in report.rejected] == [
        f"{path}:{line}: {column} contains a NUL character (\\x00), which the store cannot hold"
        for line, column in enumerate(columns, start=2)
    ]
    assert "wang.fang@example.com" not in caplog.text
    # With --skip-invalid the clean row is written, the others go to the rejects file.
    rejects = tmp_path / "rejects.csv"
    report = import_csv(store, {table: path}, skip_invalid=True, rejects_path=rejects)
    assert report.written and sum(report.inserted.values()) == 1
    with rejects.open(encoding="utf-8", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == len(columns)
    assert "\x00" not in rejects.read_text(encoding="utf-8")


def test_a_nul_escaped_in_an_event_payload_is_a_row_error(store: Store, tmp_path: Path) -> None:
    load_rows(store, customers=[customer_row("C1")])
    payload = '{"claim_no": "CL-1\\u0000", "items": [{"note": "ok"}, {"note": "\\u0000"}]}'
    paths = files(tmp_path, events=[event_row("E1", "C1", payload=payload)])
    report = import_csv(store, paths)
    assert [str(p) for p in report.rejected] == [
        f"{paths['event']}:2: payload.claim_no contains a NUL character (\\x00), "
        "which the store cannot hold"
    ]
    assert count(store, Event) == 0


def test_cli_import_reports_nul_rows_without_a_traceback(care: Care, tmp_path: Path) -> None:
    assert care("store", "init").exit_code == 0
    path = write_csv(
        tmp_path / "customers.csv",
        [customer_row("C1"), customer_row("C2", name="王\x00芳")],
        CUSTOMER_COLUMNS,
    )
    result = care("store", "import", "--customers", str(path))
    assert result.exit_code == 1
    assert f"{path}:3: name contains a NUL character" in result.output
    assert "Traceback" not in result.output and "+8613812348000" not in result.output


# --- chunks: a file is read, checked and written CHUNK rows at a time ----------------------


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    """Chunks of 3 rows and bulk lookups of 2 ids, so a few rows cross every boundary."""
    from caretouch.store import importer

    monkeypatch.setattr(importer, "CHUNK", 3)
    monkeypatch.setattr(importer, "_LOOKUP", 2)
    return 3


def test_an_error_after_the_first_chunk_still_writes_nothing(
    store: Store, tmp_path: Path, small_chunks: int
) -> None:
    customers = [customer_row(f"C{n}") for n in range(1, 8)]
    customers[small_chunks] = customer_row(f"C{small_chunks + 1}", tier="E")  # row CHUNK + 1
    report = import_csv(store, files(tmp_path, customers=customers))

    assert not report.written and report.inserted == {} and report.consent_changes == []
    assert [str(p) for p in report.rejected] == [
        f"{tmp_path / 'customers.csv'}:{small_chunks + 2}: tier: 'E' is not one of A, B, C, D"
    ]
    assert_store_empty(store)


def test_an_error_in_the_last_chunk_rolls_back_the_updates_and_consents_of_the_first(
    store: Store, tmp_path: Path, small_chunks: int
) -> None:
    import_csv(store, files(tmp_path, customers=[customer_row(f"C{n}") for n in range(1, 8)]))
    changed = [customer_row(f"C{n}", name="改名", consent_sms="false") for n in range(1, 8)]
    changed[-1]["birth_date"] = "1980-02-30"
    report = import_csv(store, files(tmp_path, customers=changed))

    assert not report.written and report.consent_changes == []
    assert [p.location.line for p in report.rejected] == [8]
    stored = table_rows(store, Customer, "customer_id")
    assert {c["name"] for c in stored.values()} == {"王芳"}
    assert all(c["consent_sms"] is True for c in stored.values())


def test_skip_invalid_across_chunks_writes_every_valid_row_with_counts_and_consents(
    store: Store, tmp_path: Path, small_chunks: int
) -> None:
    import_csv(store, files(tmp_path, customers=[customer_row(f"C{n}") for n in range(1, 5)]))
    rows = [customer_row(f"C{n}", consent_sms="false" if n % 2 else "true") for n in range(1, 9)]
    rows[4] = customer_row("C5", locale="fr")  # line 6, in the second chunk
    rows.append(customer_row("C2", name="again"))  # line 10: a duplicate two chunks later
    report = import_csv(
        store,
        files(tmp_path, customers=rows),
        skip_invalid=True,
        rejects_path=tmp_path / "rejects.csv",
    )

    assert report.written
    assert [(p.location.line, p.reason) for p in report.rejected] == [
        (6, "locale: 'fr' is not one of zh-CN, zh-TW, en"),
        (10, "duplicate customer_id 'C2' (also on line 3)"),
    ]
    assert report.inserted == {"customer": 3} and report.updated == {"customer": 4}
    assert set(table_rows(store, Customer, "customer_id")) == {f"C{n}" for n in range(1, 9)} - {
        "C5"
    }
    # C1 and C3 withdrew SMS (C5 was refused; C6-C8 are new): both changes, with the before.
    assert sorted(
        (c.customer_id, c.purpose.value, c.before, c.granted) for c in report.consent_changes
    ) == [
        ("C1", "sms", True, False),
        ("C3", "sms", True, False),
    ]
    assert table_rows(store, Customer, "customer_id")["C2"]["name"] == "王芳"


def test_read_problems_of_a_file_come_before_its_row_problems_whatever_the_chunk(
    store: Store, tmp_path: Path, small_chunks: int
) -> None:
    path = write_csv(
        tmp_path / "customers.csv",
        [customer_row("C1", tier="Z"), *[customer_row(f"C{n}") for n in range(2, 7)]],
        CUSTOMER_COLUMNS,
    )
    with path.open("a", encoding="utf-8") as handle:
        handle.write("C9,short\n")
    report = import_csv(store, {"customer": path})

    assert [p.location.line for p in report.rejected] == [8, 2]
    assert_store_empty(store)


def test_references_reach_rows_of_any_chunk_and_the_store(
    store: Store, tmp_path: Path, small_chunks: int
) -> None:
    load_rows(store, customers=[customer_row("C0")], policies=[policy_row("P0", "C0")])
    customers = [customer_row(f"C{n}") for n in range(1, 8)]
    customers[1]["tier"] = "E"  # C2 is refused: nothing may refer to it
    policies = [policy_row(f"P{n}", f"C{8 - n}") for n in range(1, 8)] + [
        policy_row("P8", "C0"),
        policy_row("P9", "C99"),
    ]
    events = [
        event_row("E1", "C7", policy_id="P1"),
        event_row("E2", "C0", policy_id="P0"),
        event_row("E3", "C1", policy_id="P77"),
        event_row("E4", "C2"),
        event_row("E5", "C0", policy_id="P8"),
    ]
    report = import_csv(
        store,
        files(tmp_path, customers=customers, policies=policies, events=events),
        skip_invalid=True,
        rejects_path=tmp_path / "rejects.csv",
    )

    assert [(Path(p.location.file).name, p.location.line, p.reason) for p in report.rejected] == [
        ("customers.csv", 3, "tier: 'E' is not one of A, B, C, D"),
        ("policies.csv", 7, "unknown customer_id 'C2'"),
        ("policies.csv", 10, "unknown customer_id 'C99'"),
        ("events.csv", 4, "unknown policy_id 'P77'"),
        ("events.csv", 5, "unknown customer_id 'C2'"),
    ]
    assert report.inserted == {"customer": 6, "policy": 7, "event": 3}


def test_a_partial_file_across_chunks_keeps_the_stored_columns(
    store: Store, tmp_path: Path, small_chunks: int
) -> None:
    load_rows(store, customers=[customer_row(f"C{n}", tier="A") for n in range(1, 8)])
    path = write_csv(
        tmp_path / "names.csv",
        [{"customer_id": f"C{n}", "name": f"新{n}"} for n in range(1, 9)],
        ["customer_id", "name"],
    )
    report = import_csv(store, {"customer": path})

    assert (
        report.written and report.inserted == {"customer": 1} and report.updated == {"customer": 7}
    )
    stored = table_rows(store, Customer, "customer_id")
    assert [stored[f"C{n}"]["tier"] for n in range(1, 9)] == ["A"] * 7 + ["C"]
    assert stored["C7"]["name"] == "新7" and stored["C7"]["consent_sms"] is True
    assert report.consent_changes == []


PHONE_CASES = [
    ("+8613812348000", "+8613812348000", False),
    ("+86 138-1234-8000", "+8613812348000", False),  # normalised
    ("+86 138 1234 800", "+86 138 1234 800", True),  # too short: kept, with a warning
    ("(555) 123-4567", "(555) 123-4567", True),
    ("+1 650-555-0100 ext 2", "+1 650-555-0100 ext 2", True),
    ("", None, False),
]


def _phone_import(store: Store, tmp_path: Path) -> tuple[Any, dict[str, Any]]:
    rows = [customer_row(f"C{n}", phone=cell) for n, (cell, _, _) in enumerate(PHONE_CASES)]
    report = import_csv(store, files(tmp_path, customers=rows))
    stored = table_rows(store, Customer, "customer_id")
    return report, {cid: row["phone"] for cid, row in stored.items()}


def _expected_phones(tmp_path: Path) -> tuple[list[str], dict[str, Any]]:
    warnings = [
        f"{tmp_path / 'customers.csv'}:{n + 2}: warning: phone is not a valid E.164 number: "
        "SMS will not be used"
        for n, (_, _, warn) in enumerate(PHONE_CASES)
        if warn
    ]
    return warnings, {f"C{n}": stored for n, (_, stored, _) in enumerate(PHONE_CASES)}


def test_phones_checked_by_the_helper_process_are_stored_and_warned_as_in_process(
    sqlite_store: Store, tmp_path: Path, small_chunks: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from caretouch.store import importer

    monkeypatch.setattr(importer, "PHONE_HELPER_BYTES", 0)
    given: list[bool] = []
    parse = importer.parse_customer

    def spy(raw: dict[str, str], phones: Any = None) -> Any:
        given.append(bool(phones))
        return parse(raw, phones)

    monkeypatch.setattr(importer, "parse_customer", spy)
    report, phones = _phone_import(sqlite_store, tmp_path)

    assert report.written
    assert ([str(w) for w in report.warnings], phones) == _expected_phones(tmp_path)
    assert given and all(given)  # every chunk's numbers came from the helper


def test_phones_are_checked_in_process_when_the_helper_cannot_start(
    sqlite_store: Store, tmp_path: Path, small_chunks: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from caretouch.store import importer

    class NoProcesses:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def submit(self, *args: Any) -> Any:
            raise AssertionError("daemonic processes are not allowed to have children")

        def shutdown(self, **kwargs: Any) -> None:
            pass

    monkeypatch.setattr(importer, "PHONE_HELPER_BYTES", 0)
    monkeypatch.setattr(importer, "ProcessPoolExecutor", NoProcesses)
    report, phones = _phone_import(sqlite_store, tmp_path)

    assert report.written
    assert ([str(w) for w in report.warnings], phones) == _expected_phones(tmp_path)


def test_bulk_writes_keep_every_value_across_chunks(
    store: Store, tmp_path: Path, small_chunks: int
) -> None:
    """PostgreSQL writes each chunk with COPY into a staging table: text that COPY would
    misread (tabs, backslashes, newlines, a literal \\N), payloads and amounts must come back
    as given, on the first import and on the re-import that updates every row."""
    names = ["Tab\there", "back\\slash", "new\nline", "\\N", "引号\"'", "  trimmed  ", "Zoë"]
    customers = [customer_row(f"C{n}", name=name) for n, name in enumerate(names, 1)]
    policies = [policy_row(f"P{n}", f"C{n}", premium=f"{n}00.5{n}") for n in range(1, 8)]
    events = [
        event_row(f"E{n}", f"C{n}", payload=json_payload)
        for n, json_payload in enumerate(
            ['{"amount": 12, "note": "a\\tb \\\\ 王"}', "", '{"nested": {"list": [1, "x"]}}'] * 2,
            1,
        )
    ]
    paths = files(tmp_path, customers=customers, policies=policies, events=events)
    assert import_csv(store, paths).written
    again = import_csv(store, paths)  # every row again: updates through the staging table

    assert again.updated == {"customer": 7, "policy": 7, "event": 6}
    stored = table_rows(store, Customer, "customer_id")
    assert [stored[f"C{n}"]["name"] for n in range(1, 8)] == [n.strip() for n in names]
    premiums = table_rows(store, InsurancePolicy, "policy_id")
    assert premiums["P7"]["premium"] == Decimal("700.57")
    payloads = {k: v["payload"] for k, v in table_rows(store, Event, "event_id").items()}
    assert payloads["E1"] == {"amount": 12, "note": "a\tb \\ 王"}
    assert payloads["E2"] is None
    assert payloads["E6"] == {"nested": {"list": [1, "x"]}}
    assert count(store, Customer) == 7 and count(store, Event) == 6


def test_without_temporary_tables_postgresql_imports_with_the_plain_upsert(
    pg_store: Store, tmp_path: Path, small_chunks: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A role without PostgreSQL's TEMPORARY privilege (revoked from PUBLIC) cannot COPY into
    a staging table: the chunks go through ``upsert``, with the same result."""
    from caretouch.store import write

    with pg_store.session() as session:
        assert write.may_create_temporary_tables(session) is True  # the test role's default
    monkeypatch.setattr(write, "may_create_temporary_tables", lambda session: False)
    copied: list[int] = []
    monkeypatch.setattr(write, "_bound", lambda rows, *a: copied.append(len(rows)) or [])
    customers = [customer_row(f"C{n}", name=f"名{n}") for n in range(1, 8)]
    report = import_csv(pg_store, files(tmp_path, customers=customers))

    assert report.written and report.inserted == {"customer": 7} and copied == []
    stored = table_rows(pg_store, Customer, "customer_id")
    assert [stored[f"C{n}"]["name"] for n in range(1, 8)] == [f"名{n}" for n in range(1, 8)]


def test_a_premium_schedule_is_imported_and_updated_alone(store: Store, tmp_path: Path) -> None:
    """premium_due_date, payment_frequency and paid_through: optional; a file of
    ``policy_id,paid_through`` moves paid_through and keeps the rest (docs/store.md)."""
    paths = files(
        tmp_path,
        customers=[customer_row("C1")],
        policies=[
            policy_row(
                "P1",
                "C1",
                product="平安福终身寿险",
                premium_due_date="2027-01-15",
                payment_frequency="semi-annual",
                paid_through="2027-01-14",
            ),
            policy_row("P2", "C1"),
        ],
    )
    assert import_csv(store, paths).written
    policies = table_rows(store, InsurancePolicy, "policy_id")
    assert (
        policies["P1"]["premium_due_date"],
        policies["P1"]["payment_frequency"],
        policies["P1"]["paid_through"],
    ) == (dt.date(2027, 1, 15), "semi-annual", dt.date(2027, 1, 14))
    assert (
        policies["P2"]["premium_due_date"],
        policies["P2"]["payment_frequency"],
        policies["P2"]["paid_through"],
    ) == (None, None, None)
    update = write_csv(tmp_path / "paid.csv", [{"policy_id": "P1", "paid_through": "2027-07-14"}])
    assert import_csv(store, {"policy": update}).written
    after = table_rows(store, InsurancePolicy, "policy_id")["P1"]
    assert (after["premium_due_date"], after["payment_frequency"], after["paid_through"]) == (
        dt.date(2027, 1, 15),
        "semi-annual",
        dt.date(2027, 7, 14),
    )
