"""The demo-data generator: deterministic, valid per SPEC section 4, and every rule fires."""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import sys
from collections import Counter
from pathlib import Path
from zoneinfo import ZoneInfo

import phonenumbers
import pytest
from email_validator import EmailNotValidError, validate_email

try:
    import caretouch  # noqa: F401
except ImportError:  # pragma: no cover - the package is installed editable in the venv
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))

from caretouch.dates import (
    LeapDayPolicy,
    anniversary_in_year,
    anniversary_keys,
    lunar_anniversary_keys,
    lunar_month_day,
    month_day,
)
from caretouch.rules.event_types import load_event_types
from caretouch.store.demo import (
    AGENT_COLUMNS,
    CUSTOMER_COLUMNS,
    EVENT_COLUMNS,
    MIN_CUSTOMERS,
    POLICY_COLUMNS,
    RELATION_COLUMNS,
    demo_rows,
    write_demo_csvs,
)
from conftest import RULES_DIR

TODAYS = [
    dt.date(2026, 11, 23),
    dt.date(2027, 2, 28),  # common year: 29 February births are greeted today
    dt.date(2028, 2, 29),
    dt.date(2026, 12, 31),
    dt.date(2026, 1, 1),
]
COLUMNS = {
    "customers": CUSTOMER_COLUMNS,
    "policies": POLICY_COLUMNS,
    "events": EVENT_COLUMNS,
    "agents": AGENT_COLUMNS,
    "relations": RELATION_COLUMNS,
}
ZONES = {
    "",
    "Asia/Shanghai",
    "Asia/Urumqi",
    "Asia/Hong_Kong",
    "Asia/Taipei",
    "Europe/London",
    "America/New_York",
    "America/Los_Angeles",
    "Australia/Sydney",
    "Asia/Singapore",
}
DEFAULT_ZONE = "Asia/Shanghai"


@pytest.fixture(scope="module", params=TODAYS, ids=str)
def store(request: pytest.FixtureRequest) -> tuple[dt.date, dict[str, list[dict[str, str]]]]:
    return request.param, demo_rows(request.param)


def phone_ok(phone: str) -> bool:
    if not phone.startswith("+"):
        return False
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(phone, None))
    except phonenumbers.NumberParseException:
        return False


def email_ok(email: str) -> bool:
    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


def reachable(c: dict[str, str]) -> bool:
    """Active, with a valid address and consent on at least one channel."""
    return c["status"] == "active" and (
        (c["consent_sms"] == "true" and phone_ok(c["phone"]))
        or (c["consent_email"] == "true" and email_ok(c["email"]))
    )


def local_time(event: dict[str, str], customer: dict[str, str]) -> dt.datetime:
    zone = ZoneInfo(customer["timezone"] or DEFAULT_ZONE)
    return dt.datetime.fromisoformat(event["occurred_at"]).astimezone(zone)


def birthday_today(c: dict[str, str], today: dt.date) -> bool:
    if not c["birth_date"]:
        return False
    birth = dt.date.fromisoformat(c["birth_date"])
    if c["birthday_calendar"] == "lunar":
        return lunar_month_day(birth) in lunar_anniversary_keys(today)
    return month_day(birth) in anniversary_keys(today, LeapDayPolicy.FEB28)


def renewal_due(p: dict[str, str], today: dt.date) -> bool:
    return p["status"] == "active" and p["renewal_date"] in {
        (today + dt.timedelta(days=n)).isoformat() for n in (30, 7, 1)
    }


# --- shape and validity ------------------------------------------------------------------


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    today = dt.date(2026, 11, 23)
    assert demo_rows(today, seed=7) == demo_rows(today, seed=7)
    assert demo_rows(today, customers=100, seed=3) == demo_rows(today, customers=100, seed=3)
    assert demo_rows(today, seed=7) != demo_rows(today, seed=8)


def test_default_size_and_policies_per_customer() -> None:
    rows = demo_rows(dt.date(2026, 11, 23))
    assert len(rows["customers"]) == 240
    assert 1.1 <= len(rows["policies"]) / 240 <= 1.5
    assert len(demo_rows(dt.date(2026, 11, 23), customers=500)["customers"]) == 500


def test_too_few_customers_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        demo_rows(dt.date(2026, 11, 23), customers=MIN_CUSTOMERS - 1)
    assert len(demo_rows(dt.date(2026, 11, 23), customers=MIN_CUSTOMERS)["customers"]) == (
        MIN_CUSTOMERS
    )


def test_every_row_has_exactly_the_columns_as_strings(store) -> None:
    _, rows = store
    assert set(rows) == set(COLUMNS)
    for table, columns in COLUMNS.items():
        assert rows[table], table
        for row in rows[table]:
            assert tuple(row) == columns
            assert all(isinstance(v, str) for v in row.values())


def test_ids_are_unique_and_well_formed(store) -> None:
    _, rows = store
    for table, column, prefix in (
        ("customers", "customer_id", "C"),
        ("policies", "policy_id", "P"),
        ("events", "event_id", "E"),
    ):
        ids = [r[column] for r in rows[table]]
        assert len(ids) == len(set(ids)), table
        assert all(re.fullmatch(prefix + r"\d{6}", i) for i in ids), table


def test_references_exist(store) -> None:
    _, rows = store
    customers = {c["customer_id"] for c in rows["customers"]}
    policies = {p["policy_id"]: p for p in rows["policies"]}
    assert all(p["customer_id"] in customers for p in rows["policies"])
    for e in rows["events"]:
        assert e["customer_id"] in customers
        if e["policy_id"]:
            assert policies[e["policy_id"]]["customer_id"] == e["customer_id"]


def test_customer_values_follow_the_store_contract(store) -> None:
    today, rows = store
    for c in rows["customers"]:
        assert c["name"] and c["name"] == c["name"].strip() and len(c["name"]) <= 200
        assert c["birthday_calendar"] in ("gregorian", "lunar")
        if c["birth_date"]:
            birth = dt.date.fromisoformat(c["birth_date"])
            assert dt.date(1950, 1, 1) <= birth < today
        else:
            assert c["birthday_calendar"] == "gregorian"
        assert c["locale"] in ("zh-CN", "zh-TW", "en")
        assert c["timezone"] in ZONES
        if c["timezone"]:
            ZoneInfo(c["timezone"])
        assert c["tier"] in "ABCD" and len(c["tier"]) == 1
        assert c["status"] in ("active", "inactive")
        for flag in ("consent_sms", "consent_email", "consent_marketing"):
            assert c[flag] in ("true", "false")
        if c["email"] and email_ok(c["email"]):
            assert c["email"].rsplit("@", 1)[1] in ("example.com", "example.org", "example.net")


def test_policy_values_follow_the_store_contract(store) -> None:
    today, rows = store
    for p in rows["policies"]:
        assert p["product"]
        start = dt.date.fromisoformat(p["start_date"])
        assert start < today
        if p["renewal_date"]:
            assert dt.date.fromisoformat(p["renewal_date"]) > start
        assert p["status"] in ("active", "lapsed", "cancelled")
        if p["premium"]:
            assert re.fullmatch(r"\d+\.\d\d", p["premium"])
            # One premium as it falls due: the year's, or its share for a shorter period.
            months = {"semi-annual": 6, "quarterly": 3, "monthly": 1}.get(
                p["payment_frequency"], 12
            )
            assert 200 <= round(float(p["premium"]) * 12 / months) <= 20000
    assert any(not p["renewal_date"] for p in rows["policies"])
    assert any(p["renewal_date"] for p in rows["policies"])
    assert {p["status"] for p in rows["policies"]} == {"active", "lapsed", "cancelled"}


TYPES = ("policy_purchased", "complaint_received", "complaint_resolved", "claim_settled")


def test_event_values_follow_the_store_contract(store) -> None:
    today, rows = store
    customers = {c["customer_id"]: c for c in rows["customers"]}
    declared, errors = load_event_types(RULES_DIR)
    assert errors == []
    for e in rows["events"]:
        assert e["type"] in TYPES
        # The payload is as care_rules/events.yaml declares it (the keys templates read).
        assert declared.problems(e["type"], json.loads(e["payload"] or "null")) == []
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:00[+-]\d\d:\d\d", e["occurred_at"])
        when = local_time(e, customers[e["customer_id"]])
        # Before today, but a complaint just received (00:01 today: acknowledged today).
        assert today - dt.timedelta(days=31) <= when.date() <= today
        assert when.date() < today or e["type"] == "complaint_received"
        if e["payload"]:
            payload = json.loads(e["payload"])
            assert isinstance(payload, dict) and payload
            assert e["payload"] == json.dumps(
                payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True
            )
    assert {e["type"] for e in rows["events"]} == set(TYPES)
    # Events are numbered in the order they happened.
    instants = [dt.datetime.fromisoformat(e["occurred_at"]) for e in rows["events"]]
    assert instants == sorted(instants)


def test_importer_accepts_every_row(store) -> None:
    importer = pytest.importorskip("caretouch.store.importer")
    _, rows = store
    for table, parse in (
        ("customers", importer.parse_customer),
        ("policies", importer.parse_policy),
        ("events", importer.parse_event),
    ):
        for row in rows[table]:
            parse(row)  # raises RowError on an invalid row


# --- realism -------------------------------------------------------------------------------


def test_population_mix() -> None:
    customers = demo_rows(dt.date(2026, 11, 23), customers=1000)["customers"]
    share = Counter(c["locale"] for c in customers)
    assert 0.52 <= share["zh-CN"] / 1000 <= 0.68
    assert 0.10 <= share["zh-TW"] / 1000 <= 0.20
    assert 0.19 <= share["en"] / 1000 <= 0.31
    assert 0.06 <= sum(not c["timezone"] for c in customers) / 1000 <= 0.14
    assert 0.02 <= sum(c["status"] == "inactive" for c in customers) / 1000 <= 0.09
    tiers = Counter(c["tier"] for c in customers)
    assert tiers["C"] > tiers["B"] > tiers["A"] and tiers["D"] > tiers["A"]
    assert 0.30 <= sum(c["consent_marketing"] == "true" for c in customers) / 1000 <= 0.50
    assert 0.05 <= sum(c["consent_sms"] == "false" for c in customers) / 1000 <= 0.16
    assert 0.05 <= sum(c["consent_email"] == "false" for c in customers) / 1000 <= 0.16
    chinese = [c for c in customers if c["locale"] != "en"]
    lunar = sum(c["birthday_calendar"] == "lunar" for c in chinese) / len(chinese)
    assert 0.05 <= lunar <= 0.16
    assert not any(c["birthday_calendar"] == "lunar" for c in customers if c["locale"] == "en")
    assert any(not c["birth_date"] for c in customers)
    zones = Counter(c["timezone"] for c in customers)
    assert set(zones) == ZONES


def test_zones_match_locales() -> None:
    customers = demo_rows(dt.date(2026, 11, 23), customers=1000)["customers"]
    allowed = {
        "zh-CN": {"", "Asia/Shanghai", "Asia/Urumqi", "Asia/Hong_Kong", "Asia/Singapore"},
        "zh-TW": {"", "Asia/Taipei", "Asia/Hong_Kong"},
    }
    for c in customers:
        if c["locale"] in allowed:
            assert c["timezone"] in allowed[c["locale"]], c
        else:
            assert c["timezone"] not in ("Asia/Shanghai", "Asia/Urumqi", "Asia/Taipei"), c


def test_names_include_chinese_traditional_english_and_awkward_ones() -> None:
    customers = demo_rows(dt.date(2026, 11, 23))["customers"]
    names = [c["name"] for c in customers]
    assert "{{ 7*7 }}" in names
    assert "<script>alert(1)</script>" in names
    assert any("O'Brien" in n for n in names)
    assert "阿卜杜拉·艾买提" in names
    by_locale = {
        loc: [c["name"] for c in customers if c["locale"] == loc]
        for loc in ("zh-CN", "zh-TW", "en")
    }
    cjk = re.compile(r"^[\u4e00-\u9fff·]+$")
    assert all(cjk.match(n) for n in by_locale["zh-CN"])
    assert all(cjk.match(n) for n in by_locale["zh-TW"])
    traditional = set("陳黃張吳劉楊許鄭謝賴詩麗國瑋")
    assert any(set(n) & traditional for n in by_locale["zh-TW"])
    english = re.compile(r"[A-Z][A-Za-z'.\- ]+ [A-Z][A-Za-z'\-]+")
    plain = [n for n in by_locale["en"] if english.fullmatch(n)]
    assert len(plain) >= len(by_locale["en"]) - 2


def test_most_phones_are_valid_some_bad_some_missing() -> None:
    customers = demo_rows(dt.date(2026, 11, 23), customers=1000)["customers"]
    phones = [c["phone"] for c in customers]
    valid = [p for p in phones if phone_ok(p)]
    bad = [p for p in phones if p and not phone_ok(p)]
    missing = [p for p in phones if not p]
    assert len(valid) >= 850
    assert 20 <= len(bad) <= 90
    assert 20 <= len(missing) <= 90
    # Valid numbers are in E.164 form, with the country of the customer's zone.
    assert all(re.fullmatch(r"\+[1-9]\d{7,14}", p) for p in valid)
    country = {"Asia/Taipei": 886, "Europe/London": 44, "America/New_York": 1, "Asia/Urumqi": 86}
    for c in customers:
        if phone_ok(c["phone"]) and c["timezone"] in country:
            parsed = phonenumbers.parse(c["phone"], None)
            assert parsed.country_code == country[c["timezone"]], c


def test_most_emails_are_valid_some_bad_some_missing() -> None:
    customers = demo_rows(dt.date(2026, 11, 23), customers=1000)["customers"]
    emails = [c["email"] for c in customers]
    valid = [e for e in emails if e and email_ok(e)]
    assert len(valid) >= 850
    assert len(set(valid)) == len(valid)
    assert any(e and not email_ok(e) for e in emails)
    assert any(not e for e in emails)


# --- every shipped rule fires on today -----------------------------------------------------


def test_gregorian_birthdays_today(store) -> None:
    today, rows = store
    due = [
        c
        for c in rows["customers"]
        if c["birthday_calendar"] == "gregorian" and birthday_today(c, today) and reachable(c)
    ]
    assert len(due) >= 8
    # And one birthday nobody can reach, one of an inactive customer.
    others = [c for c in rows["customers"] if birthday_today(c, today) and not reachable(c)]
    assert any(c["status"] == "active" for c in others)
    assert any(c["status"] == "inactive" for c in others)


def test_born_on_29_february(store) -> None:
    today, rows = store
    leaplings = [c for c in rows["customers"] if c["birth_date"][4:] == "-02-29"]
    assert len([c for c in leaplings if reachable(c)]) >= 2
    for c in leaplings:
        dt.date.fromisoformat(c["birth_date"])  # a real date: a leap year
    if today == dt.date(2027, 2, 28):
        due = [c for c in leaplings if birthday_today(c, today) and reachable(c)]
        assert len(due) >= 2


def test_lunar_birthdays_today(store) -> None:
    today, rows = store
    keys = lunar_anniversary_keys(today)
    assert keys  # none of these days is in a lunar leap month
    due = [
        c
        for c in rows["customers"]
        if c["birthday_calendar"] == "lunar" and birthday_today(c, today) and reachable(c)
    ]
    assert len(due) >= 2
    for c in due:
        assert 1950 <= int(c["birth_date"][:4]) <= 2005


def test_lunar_day_30_births_are_greeted_on_day_29_of_a_short_month() -> None:
    today = dt.date(2026, 1, 1)
    while len(lunar_anniversary_keys(today)) < 2:
        today += dt.timedelta(days=1)
    rows = demo_rows(today)
    keys = {
        lunar_month_day(dt.date.fromisoformat(c["birth_date"]))
        for c in rows["customers"]
        if c["birthday_calendar"] == "lunar" and birthday_today(c, today)
    }
    assert set(lunar_anniversary_keys(today)) <= keys


def test_a_day_in_a_lunar_leap_month_still_gives_valid_data() -> None:
    today = dt.date(2025, 8, 1)  # in the leap sixth month of 2025
    assert lunar_anniversary_keys(today) == []
    rows = demo_rows(today)
    lunar = [c for c in rows["customers"] if c["birthday_calendar"] == "lunar"]
    assert lunar and all(c["birth_date"] for c in lunar)


def test_renewal_reminders_today(store) -> None:
    today, rows = store
    customers = {c["customer_id"]: c for c in rows["customers"]}
    for days in (30, 7, 1):
        due = [
            p
            for p in rows["policies"]
            if p["status"] == "active"
            and p["renewal_date"] == (today + dt.timedelta(days=days)).isoformat()
            and reachable(customers[p["customer_id"]])
        ]
        assert len(due) >= 3, days


def test_annual_reviews_today(store) -> None:
    today, rows = store
    customers = {c["customer_id"]: c for c in rows["customers"]}
    due = []
    for p in rows["policies"]:
        start = dt.date.fromisoformat(p["start_date"])
        if (
            p["status"] == "active"
            and not p["renewal_date"]
            and start.year < today.year
            and anniversary_in_year(start, today.year, LeapDayPolicy.FEB28) == today
            and reachable(customers[p["customer_id"]])
        ):
            due.append(start)
    assert len(due) >= 3
    if (today.month, today.day) != (2, 29):
        assert today.replace(year=today.year - 1) in due
    if today == dt.date(2027, 2, 28):
        assert any((d.month, d.day) == (2, 29) for d in due)


def test_thank_you_for_purchases_yesterday(store) -> None:
    today, rows = store
    customers = {c["customer_id"]: c for c in rows["customers"]}
    policies = {p["policy_id"]: p for p in rows["policies"]}
    yesterday = today - dt.timedelta(days=1)
    due = []
    for e in rows["events"]:
        c = customers[e["customer_id"]]
        if e["type"] == "policy_purchased" and reachable(c):
            when = local_time(e, c)
            # The offset written is the customer's own, so the local day reads off the text.
            assert dt.datetime.fromisoformat(e["occurred_at"]).utcoffset() == when.utcoffset()
            if when.date() == yesterday:
                due.append(when)
                assert policies[e["policy_id"]]["start_date"] == yesterday.isoformat()
    assert len(due) >= 4
    assert any((w.hour, w.minute) == (23, 50) for w in due)
    assert len({w.hour for w in due}) >= 4  # spread through the day
    assert len({w.utcoffset() for w in due}) >= 3  # in several zones


def test_a_customer_has_a_birthday_and_a_renewal_reminder_today(store) -> None:
    today, rows = store
    renewing = {p["customer_id"] for p in rows["policies"] if renewal_due(p, today)}
    both = [
        c
        for c in rows["customers"]
        if c["customer_id"] in renewing and birthday_today(c, today) and reachable(c)
    ]
    assert both


def test_a_complaint_was_resolved_three_days_ago(store) -> None:
    today, rows = store
    customers = {c["customer_id"]: c for c in rows["customers"]}
    assert any(
        e["type"] == "complaint_resolved"
        and local_time(e, customers[e["customer_id"]]).date() == today - dt.timedelta(days=3)
        for e in rows["events"]
    )


def test_guaranteed_customers_do_not_depend_on_the_size() -> None:
    today = dt.date(2027, 2, 28)
    small = demo_rows(today, customers=MIN_CUSTOMERS, seed=11)
    assert sum(birthday_today(c, today) and reachable(c) for c in small["customers"]) >= 12


# --- CSV files -----------------------------------------------------------------------------


def test_write_demo_csvs(tmp_path: Path) -> None:
    today = dt.date(2026, 11, 23)
    paths = write_demo_csvs(tmp_path / "demo", today, customers=60, seed=5)
    assert set(paths) == {"customers", "policies", "events", "agents", "relations"}
    expected = demo_rows(today, customers=60, seed=5)
    for table, path in paths.items():
        assert path == tmp_path / "demo" / f"{table}.csv"
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            assert tuple(reader.fieldnames or ()) == COLUMNS[table]
            assert list(reader) == expected[table]
    text = paths["customers"].read_text(encoding="utf-8")
    assert text.startswith(",".join(CUSTOMER_COLUMNS) + "\n")
    assert "{{ 7*7 }}" in text and "阿卜杜拉·艾买提" in text


# --- agents, segments and families ---------------------------------------------------------


def test_every_customer_has_an_agent_and_agents_have_managers(store) -> None:
    _, rows = store
    agents = {a["agent_id"]: a for a in rows["agents"]}
    assert len(agents) >= 3
    assert {c["agent_id"] for c in rows["customers"]} <= set(agents)
    assert all(c["agent_id"] for c in rows["customers"])
    managers = {a["manager_id"] for a in agents.values() if a["manager_id"]}
    assert managers and managers <= set(agents)
    assert sum(not a["manager_id"] for a in agents.values()) == 1  # one head of the agency
    assert all(phone_ok(a["phone"]) and email_ok(a["email"]) for a in agents.values())


def test_about_a_tenth_of_the_customers_are_group_clients() -> None:
    customers = demo_rows(dt.date(2026, 11, 23), customers=1000)["customers"]
    segments = Counter(c["segment"] for c in customers)
    assert set(segments) == {"", "group"}
    assert 0.06 <= segments["group"] / 1000 <= 0.14


def test_relations_name_customers_and_some_birthdays_are_today(store) -> None:
    today, rows = store
    customers = {c["customer_id"] for c in rows["customers"]}
    relations = rows["relations"]
    assert {r["customer_id"] for r in relations} <= customers
    assert {r["kind"] for r in relations} == {"spouse", "child", "parent"}
    assert any(r["birthday_calendar"] == "lunar" for r in relations)
    ids = [r["relation_id"] for r in relations]
    assert len(set(ids)) == len(ids)
    due = {r["kind"] for r in relations if birthday_today(r, today)}
    assert {"child", "parent"} <= due
    if lunar_anniversary_keys(today):
        assert any(
            r["birthday_calendar"] == "lunar" and birthday_today(r, today) for r in relations
        )


def test_agents_leave_the_customers_policies_and_events_as_they_were() -> None:
    """Agents and families are drawn apart: a population without them has the same rows."""
    from caretouch.store.demo import _Demo

    today = dt.date(2026, 11, 23)
    plain = _Demo(today, 240, 7)
    plain.agents_and_relations = lambda: None  # type: ignore[method-assign]
    plain.family_birthdays = lambda reachable: None  # type: ignore[method-assign]
    plain.build()
    before = plain.csv_rows()
    with_agents = _Demo(today, 240, 7)
    with_agents.complaints_open = lambda taken: None  # type: ignore[method-assign]
    with_agents.build()
    after = with_agents.csv_rows()
    for table in ("policies", "events"):
        assert after[table] == before[table]
    strip = ("agent_id", "segment")
    assert [{k: v for k, v in c.items() if k not in strip} for c in after["customers"]] == [
        {k: v for k, v in c.items() if k not in strip} for c in before["customers"]
    ]
    assert before["agents"] == before["relations"] == []


def test_long_term_policies_carry_a_consistent_premium_schedule(store) -> None:
    """Every life, annuity and education policy has a payment frequency; one with regular
    premiums has a due date on its schedule and is paid up to the day before it; a few active
    ones are behind (in the grace period or beyond); term policies renew instead."""
    from caretouch.premiums import add_months
    from caretouch.store.population import GRACE_DAYS
    from caretouch.vocab import PaymentFrequency

    today, rows = store
    long_term = [p for p in rows["policies"] if not p["renewal_date"]]
    assert long_term and all(p["payment_frequency"] for p in long_term)
    assert all(
        not (p["premium_due_date"] or p["payment_frequency"] or p["paid_through"])
        for p in rows["policies"]
        if p["renewal_date"]
    )
    frequencies = Counter(p["payment_frequency"] for p in long_term)
    assert frequencies.most_common(1)[0][0] == "annual" and len(frequencies) >= 3
    behind = 0
    for p in long_term:
        freq = PaymentFrequency(p["payment_frequency"])
        if freq is PaymentFrequency.SINGLE or p["status"] == "cancelled":
            assert not p["premium_due_date"]
            continue
        due = dt.date.fromisoformat(p["premium_due_date"])
        start = dt.date.fromisoformat(p["start_date"])
        assert dt.date.fromisoformat(p["paid_through"]) == due - dt.timedelta(days=1)
        periods = (due.year - start.year) * 12 + due.month - start.month
        assert periods >= 0 and periods % freq.months == 0 and add_months(start, periods) == due
        if p["status"] == "lapsed":
            assert due < today - dt.timedelta(days=GRACE_DAYS) or due == start
            continue
        assert periods > 0
        if due <= today:
            behind += 1
    assert 0 < behind < len(long_term) / 5


def test_premium_reminders_are_due_today(store) -> None:
    """Each premium rule has reachable customers today: 30 and 7 days before the due date,
    7 and 30 after, the lapse warning's 45 after, and one beyond the grace period."""
    from caretouch.store.demo import PREMIUM_OFFSETS

    today, rows = store
    customers = {c["customer_id"]: c for c in rows["customers"]}
    due = Counter(
        (dt.date.fromisoformat(p["premium_due_date"]) - today).days
        for p in rows["policies"]
        if p["status"] == "active"
        and p["premium_due_date"]
        and p["paid_through"] < p["premium_due_date"]
        and customers[p["customer_id"]]["tier"] in "CD"
        and reachable(customers[p["customer_id"]])
    )
    for offset in PREMIUM_OFFSETS:
        assert due[offset] >= PREMIUM_OFFSETS.count(offset), offset


def test_the_complaint_lifecycle_today(store) -> None:
    """A complaint received just after midnight today, one received five days ago and still
    open, one received five days ago and resolved two days ago: customers in the default
    zone whose agent has a manager."""
    today, rows = store
    customers = {c["customer_id"]: c for c in rows["customers"]}
    managers = {a["agent_id"]: a["manager_id"] for a in rows["agents"]}
    received = {
        json.loads(e["payload"])["case_id"]: e
        for e in rows["events"]
        if e["type"] == "complaint_received"
    }
    resolved = {
        json.loads(e["payload"])["case_id"]: e
        for e in rows["events"]
        if e["type"] in ("complaint_resolved", "complaint_closed")
    }
    days = Counter(
        (today - local_time(e, customers[e["customer_id"]]).date()).days for e in received.values()
    )
    assert days == Counter({0: 1, 5: 2})
    for case, e in received.items():
        customer = customers[e["customer_id"]]
        assert managers[customer["agent_id"]], case
        assert set(json.loads(e["payload"])) == {"case_id", "channel", "category", "severity"}
    # Of the two received five days ago, one was resolved since; the other is open.
    [case] = [c for c in received if c in resolved]
    age = (today - local_time(received[case], customers[received[case]["customer_id"]]).date()).days
    assert age == 5
    when = local_time(resolved[case], customers[resolved[case]["customer_id"]]).date()
    assert when == today - dt.timedelta(days=2)


def test_the_complaint_cases_leave_the_rest_as_it_was() -> None:
    from caretouch.store.demo import _Demo

    today = dt.date(2026, 11, 23)
    plain = _Demo(today, 240, 7)
    plain.complaints_open = lambda taken: None  # type: ignore[method-assign]
    plain.build()
    before = plain.csv_rows()
    after = demo_rows(today)
    for table in ("customers", "policies", "agents", "relations"):
        assert after[table] == before[table]

    def strip(rows: list[dict[str, str]]) -> list[tuple[str, ...]]:
        return [(e["type"], e["customer_id"], e["occurred_at"]) for e in rows]

    extra = [e for e in strip(after["events"]) if e not in strip(before["events"])]
    assert len(after["events"]) == len(before["events"]) + 4 == len(before["events"]) + len(extra)
