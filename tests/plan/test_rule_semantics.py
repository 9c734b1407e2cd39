"""The shipped rules (SPEC sections 5 and 6) through the real planner, on SQLite and PostgreSQL.

Each table row is (description, customer, policies, events, day) -> the touches planned, each as
(rule_id, customer_id, decision, reason, channel, send_at in UTC). A property test then plans
random stores and checks the contact policy's laws against an independent oracle.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import phonenumbers
import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lunardate import LunarDate
from sqlalchemy import delete

from caretouch.dates import LeapDayPolicy, anniversary_in_year, lunar_birthday_in_year
from caretouch.plan import plan_day
from caretouch.plan.touch import Touch
from caretouch.rules.loader import RuleSet
from caretouch.schema.migrate import upgrade
from caretouch.store.db import Store, open_store
from caretouch.store.models import Customer, Event, InsurancePolicy
from caretouch.vocab import Channel, Decision
from conftest import customer_row, event_row, load_rows, pg_schema_store, policy_row, utc

SH = "Asia/Shanghai"
LA = "America/Los_Angeles"
D = dt.date

Expected = tuple[str, str, str, "str | None", "str | None", dt.datetime]


def send(rule: str, at: dt.datetime, channel: str = "sms", cid: str = "C1") -> Expected:
    return (rule, cid, "send", None, channel, at)


def capped(rule: str, at: dt.datetime, channel: str = "sms", cid: str = "C1") -> Expected:
    return (rule, cid, "suppress", "frequency_cap", channel, at)


def deferred(rule: str, at: dt.datetime, channel: str = "sms", cid: str = "C1") -> Expected:
    return (rule, cid, "suppress", "deferred", channel, at)


def missed(rule: str, at: dt.datetime, channel: str = "sms", cid: str = "C1") -> Expected:
    return (rule, cid, "suppress", "obligation_missed", channel, at)


def no_contact(rule: str, at: dt.datetime, cid: str = "C1") -> Expected:
    return (rule, cid, "suppress", "no_contact", None, at)


@dataclass(frozen=True)
class Case:
    id: str
    day: dt.date
    expected: list[Expected]
    customer: dict[str, str] = field(default_factory=dict)  # overrides of C1
    policies: list[dict[str, str]] = field(default_factory=list)
    events: list[dict[str, str]] = field(default_factory=list)
    others: list[dict[str, str]] = field(default_factory=list)  # more customers


# C1 by default: born 1990-11-23, Asia/Shanghai, reachable by SMS and email, active.
CASES = [
    # --- birthday: 09:00 local --------------------------------------------------------------
    Case("birthday-shanghai", D(2026, 11, 23), [send("birthday", utc(2026, 11, 23, 1, 0))]),
    Case("birthday-not-the-day-before", D(2026, 11, 22), []),
    Case("birthday-not-the-day-after", D(2026, 11, 24), []),
    Case(
        "birthday-los-angeles-pst",
        D(2026, 11, 23),
        [send("birthday", utc(2026, 11, 23, 17, 0))],
        customer={"timezone": LA},
    ),
    Case(
        "birthday-los-angeles-pdt",
        D(2026, 7, 4),
        [send("birthday", utc(2026, 7, 4, 16, 0))],
        customer={"timezone": LA, "birth_date": "1985-07-04"},
    ),
    Case(
        "birthday-london-bst",
        D(2026, 7, 4),
        [send("birthday", utc(2026, 7, 4, 8, 0))],
        customer={"timezone": "Europe/London", "birth_date": "1985-07-04"},
    ),
    Case(
        "birthday-empty-timezone-is-shanghai",
        D(2026, 11, 23),
        [send("birthday", utc(2026, 11, 23, 1, 0))],
        customer={"timezone": ""},
    ),
    Case(
        "birthday-on-us-dst-start-day",
        D(2026, 3, 8),
        [send("birthday", utc(2026, 3, 8, 16, 0))],
        customer={"timezone": LA, "birth_date": "1970-03-08"},
    ),
    # --- 29 February ------------------------------------------------------------------------
    Case(
        "feb29-birth-on-feb28-common-year",
        D(2027, 2, 28),
        [send("birthday", utc(2027, 2, 28, 1, 0))],
        customer={"birth_date": "2000-02-29"},
    ),
    Case("feb29-birth-not-on-mar1", D(2027, 3, 1), [], customer={"birth_date": "2000-02-29"}),
    Case(
        "feb29-birth-on-feb29-leap-year",
        D(2028, 2, 29),
        [send("birthday", utc(2028, 2, 29, 1, 0))],
        customer={"birth_date": "2000-02-29"},
    ),
    Case(
        "feb29-birth-not-on-feb28-leap-year",
        D(2028, 2, 28),
        [],
        customer={"birth_date": "2000-02-29"},
    ),
    Case(
        "feb28-birth-on-feb28-common-year",
        D(2027, 2, 28),
        [send("birthday", utc(2027, 2, 28, 1, 0))],
        customer={"birth_date": "1999-02-28"},
    ),
    # --- lunar birthdays --------------------------------------------------------------------
    Case(
        "lunar-birthday-on-the-lunar-day",  # 1990-11-23 is lunar 10/7; lunar 10/7 2026 = 11-15
        D(2026, 11, 15),
        [send("birthday", utc(2026, 11, 15, 1, 0))],
        customer={"birthday_calendar": "lunar"},
    ),
    Case(
        "lunar-birthday-not-on-the-gregorian-day",
        D(2026, 11, 23),
        [],
        customer={"birthday_calendar": "lunar"},
    ),
    Case(
        "lunar-day-30-on-day-29-of-a-short-month",  # 1985-04-19 = lunar 2/30; 2026 2/29 = 04-16
        D(2026, 4, 16),
        [send("birthday", utc(2026, 4, 16, 1, 0))],
        customer={"birthday_calendar": "lunar", "birth_date": "1985-04-19"},
    ),
    Case(
        "lunar-day-30-not-on-the-next-day",
        D(2026, 4, 17),
        [],
        customer={"birthday_calendar": "lunar", "birth_date": "1985-04-19"},
    ),
    Case(
        "lunar-regular-month-in-a-leap-year",  # 1990-07-31 = lunar 6/10; 2025 6/10 = 07-04
        D(2025, 7, 4),
        [send("birthday", utc(2025, 7, 4, 1, 0))],
        customer={"birthday_calendar": "lunar", "birth_date": "1990-07-31"},
    ),
    Case(
        "lunar-leap-month-never-matches",  # leap 6/10 of 2025 = 08-03
        D(2025, 8, 3),
        [],
        customer={"birthday_calendar": "lunar", "birth_date": "1990-07-31"},
    ),
    Case(
        "lunar-birthday-in-los-angeles",
        D(2026, 11, 15),
        [send("birthday", utc(2026, 11, 15, 17, 0))],
        customer={"birthday_calendar": "lunar", "timezone": LA},
    ),
    # --- audience and channels --------------------------------------------------------------
    Case("inactive-customer-no-candidate", D(2026, 11, 23), [], customer={"status": "inactive"}),
    Case(
        "no-sms-consent-falls-back-to-email",
        D(2026, 11, 23),
        [send("birthday", utc(2026, 11, 23, 1, 0), "email")],
        customer={"consent_sms": "false"},
    ),
    Case(
        "bad-phone-falls-back-to-email",
        D(2026, 11, 23),
        [send("birthday", utc(2026, 11, 23, 1, 0), "email")],
        customer={"phone": "12345"},
    ),
    Case(
        "bad-phone-and-no-email-no-contact",
        D(2026, 11, 23),
        [no_contact("birthday", utc(2026, 11, 23, 1, 0))],
        customer={"phone": "12345", "email": ""},
    ),
    Case(
        "bad-email-and-no-sms-consent-no-contact",
        D(2026, 11, 23),
        [no_contact("birthday", utc(2026, 11, 23, 1, 0))],
        customer={"email": "not-an-email", "consent_sms": "false"},
    ),
    Case(
        "no-consent-at-all-no-contact",
        D(2026, 11, 23),
        [no_contact("birthday", utc(2026, 11, 23, 1, 0))],
        customer={"consent_sms": "false", "consent_email": "false"},
    ),
    Case(
        "marketing-consent-not-needed-for-care",
        D(2026, 11, 23),
        [send("birthday", utc(2026, 11, 23, 1, 0))],
        customer={"consent_marketing": "false"},
    ),
    # --- renewal-reminder: 30, 7 and 1 days before, 10:00 local ---------------------------
    *[
        Case(
            f"renewal-{label}",
            day,
            expected,
            customer={"birth_date": "1990-06-15"},
            policies=[policy_row("P1", "C1", start_date="2026-01-05", renewal_date="2027-01-05")],
        )
        for label, day, expected in [
            (
                "30-days-across-year-end",
                D(2026, 12, 6),
                [send("renewal-reminder", utc(2026, 12, 6, 2))],
            ),
            (
                "7-days-across-year-end",
                D(2026, 12, 29),
                [send("renewal-reminder", utc(2026, 12, 29, 2))],
            ),
            ("1-day", D(2027, 1, 4), [send("renewal-reminder", utc(2027, 1, 4, 2))]),
            ("not-2-days", D(2027, 1, 3), []),
            ("not-31-days", D(2026, 12, 5), []),
            ("not-29-days", D(2026, 12, 7), []),
            ("not-on-the-day", D(2027, 1, 5), []),
        ]
    ],
    Case(
        "renewal-los-angeles",
        D(2026, 12, 29),
        [send("renewal-reminder", utc(2026, 12, 29, 18))],
        customer={"birth_date": "1990-06-15", "timezone": LA},
        policies=[policy_row("P1", "C1", start_date="2026-01-05", renewal_date="2027-01-05")],
    ),
    Case(
        "renewal-lapsed-policy-none",
        D(2026, 12, 29),
        [],
        customer={"birth_date": "1990-06-15"},
        policies=[policy_row("P1", "C1", renewal_date="2027-01-05", status="lapsed")],
    ),
    Case(
        "renewal-cancelled-policy-none",
        D(2026, 12, 29),
        [],
        customer={"birth_date": "1990-06-15"},
        policies=[policy_row("P1", "C1", renewal_date="2027-01-05", status="cancelled")],
    ),
    Case(
        "renewal-inactive-customer-none",
        D(2026, 12, 29),
        [],
        customer={"birth_date": "1990-06-15", "status": "inactive"},
        policies=[policy_row("P1", "C1", renewal_date="2027-01-05")],
    ),
    Case(
        "renewal-no-contact",
        D(2026, 12, 29),
        [no_contact("renewal-reminder", utc(2026, 12, 29, 2))],
        customer={"birth_date": "1990-06-15", "phone": "", "email": ""},
        policies=[policy_row("P1", "C1", renewal_date="2027-01-05")],
    ),
    # --- annual-review: start anniversary, years >= 1, no renewal date, email first --------
    Case(
        "annual-review-on-start-anniversary",
        D(2026, 1, 15),
        [send("annual-review", utc(2026, 1, 15, 2), "email")],
        customer={"birth_date": "1990-06-15"},
        policies=[policy_row("P1", "C1", start_date="2020-01-15")],
    ),
    Case(
        "annual-review-first-anniversary",
        D(2021, 1, 15),
        [send("annual-review", utc(2021, 1, 15, 2), "email")],
        customer={"birth_date": "1990-06-15"},
        policies=[policy_row("P1", "C1", start_date="2020-01-15")],
    ),
    Case(
        "annual-review-not-in-the-start-year",
        D(2026, 1, 15),
        [],
        customer={"birth_date": "1990-06-15"},
        policies=[policy_row("P1", "C1", start_date="2026-01-15")],
    ),
    Case(
        "annual-review-not-with-a-renewal-date",
        D(2026, 1, 15),
        [],
        customer={"birth_date": "1990-06-15"},
        policies=[policy_row("P1", "C1", start_date="2020-01-15", renewal_date="2027-01-15")],
    ),
    Case(
        "annual-review-not-for-a-lapsed-policy",
        D(2026, 1, 15),
        [],
        customer={"birth_date": "1990-06-15"},
        policies=[policy_row("P1", "C1", start_date="2020-01-15", status="lapsed")],
    ),
    Case(
        "annual-review-not-the-day-after",
        D(2026, 1, 16),
        [],
        customer={"birth_date": "1990-06-15"},
        policies=[policy_row("P1", "C1", start_date="2020-01-15")],
    ),
    Case(
        "annual-review-feb29-start-on-feb28",
        D(2027, 2, 28),
        [send("annual-review", utc(2027, 2, 28, 2), "email")],
        customer={"birth_date": "1990-06-15"},
        policies=[policy_row("P1", "C1", start_date="2024-02-29")],
    ),
    Case(
        "annual-review-email-refused-falls-back-to-sms",
        D(2026, 1, 15),
        [send("annual-review", utc(2026, 1, 15, 2), "sms")],
        customer={"birth_date": "1990-06-15", "consent_email": "false"},
        policies=[policy_row("P1", "C1", start_date="2020-01-15")],
    ),
    # --- thank-you: the local day after a purchase, 10:00 local -----------------------------
    *[
        Case(
            f"thank-you-{label}",
            day,
            expected,
            customer={"birth_date": "1990-06-15", "timezone": tz},
            events=[event_row("E1", "C1", occurred_at=at)],
        )
        for label, tz, at, day, expected in [
            # 23:30 in Shanghai = 15:30Z: the Shanghai day is the 22nd, due on the 23rd.
            (
                "sh-2330-due-next-day",
                SH,
                "2026-11-22T23:30:00+08:00",
                D(2026, 11, 23),
                [send("thank-you", utc(2026, 11, 23, 2), "email")],
            ),
            ("sh-2330-not-same-day", SH, "2026-11-22T23:30:00+08:00", D(2026, 11, 22), []),
            ("sh-2330-not-two-days-later", SH, "2026-11-22T23:30:00+08:00", D(2026, 11, 24), []),
            # The same instant is 07:30 on the 22nd in Los Angeles: due on the 23rd, LA time.
            (
                "la-same-instant-due-next-local-day",
                LA,
                "2026-11-22T15:30:00Z",
                D(2026, 11, 23),
                [send("thank-you", utc(2026, 11, 23, 18), "email")],
            ),
            ("la-same-instant-not-two-days-later", LA, "2026-11-22T15:30:00Z", D(2026, 11, 24), []),
            # 00:30 on the 22nd in Shanghai is 16:30Z on the 21st: Shanghai 23rd, LA 22nd.
            (
                "sh-0030-due-next-day",
                SH,
                "2026-11-22T00:30:00+08:00",
                D(2026, 11, 23),
                [send("thank-you", utc(2026, 11, 23, 2), "email")],
            ),
            ("sh-0030-not-by-utc-date", SH, "2026-11-22T00:30:00+08:00", D(2026, 11, 22), []),
            (
                "la-same-instant-0830-21st",
                LA,
                "2026-11-22T00:30:00+08:00",
                D(2026, 11, 22),
                [send("thank-you", utc(2026, 11, 22, 18), "email")],
            ),
            ("la-same-instant-not-23rd", LA, "2026-11-22T00:30:00+08:00", D(2026, 11, 23), []),
            # Local midnight, Shanghai.
            (
                "sh-2359",
                SH,
                "2026-11-22T23:59:59+08:00",
                D(2026, 11, 23),
                [send("thank-you", utc(2026, 11, 23, 2), "email")],
            ),
            ("sh-0000-next-day", SH, "2026-11-23T00:00:00+08:00", D(2026, 11, 23), []),
            (
                "sh-0000-due-after",
                SH,
                "2026-11-23T00:00:00+08:00",
                D(2026, 11, 24),
                [send("thank-you", utc(2026, 11, 24, 2), "email")],
            ),
            # Local midnight, Los Angeles.
            (
                "la-2359",
                LA,
                "2026-11-22T23:59:00-08:00",
                D(2026, 11, 23),
                [send("thank-you", utc(2026, 11, 23, 18), "email")],
            ),
            ("la-2359-not-24th", LA, "2026-11-22T23:59:00-08:00", D(2026, 11, 24), []),
            (
                "la-0001",
                LA,
                "2026-11-23T00:01:00-08:00",
                D(2026, 11, 24),
                [send("thank-you", utc(2026, 11, 24, 18), "email")],
            ),
            ("la-0001-not-23rd", LA, "2026-11-23T00:01:00-08:00", D(2026, 11, 23), []),
            # An offset that is not the customer's own: 10:00 at -05:00 = 23:00 in Shanghai.
            (
                "foreign-offset",
                SH,
                "2026-11-22T10:00:00-05:00",
                D(2026, 11, 23),
                [send("thank-you", utc(2026, 11, 23, 2), "email")],
            ),
            (
                "empty-timezone-is-shanghai",
                "",
                "2026-11-22T23:30:00+08:00",
                D(2026, 11, 23),
                [send("thank-you", utc(2026, 11, 23, 2), "email")],
            ),
        ]
    ],
    Case(
        "thank-you-not-for-other-event-types",
        D(2026, 11, 23),
        [],
        customer={"birth_date": "1990-06-15"},
        events=[
            event_row("E1", "C1", type="claim_settled", occurred_at="2026-11-22T12:00:00+08:00")
        ],
    ),
    Case(
        "thank-you-not-for-inactive-customer",
        D(2026, 11, 23),
        [],
        customer={"birth_date": "1990-06-15", "status": "inactive"},
        events=[event_row("E1", "C1", occurred_at="2026-11-22T12:00:00+08:00")],
    ),
    # --- the daily cap (policy.yaml caps.per_day = 1): higher priority wins -----------------
    Case(
        "birthday-and-renewal-renewal-wins",
        D(2026, 11, 23),
        [
            send("renewal-reminder", utc(2026, 11, 23, 2)),
            capped("birthday", utc(2026, 11, 23, 1)),
        ],
        policies=[policy_row("P1", "C1", renewal_date="2026-11-30")],
    ),
    Case(
        "birthday-and-thank-you-thank-you-wins",
        D(2026, 11, 23),
        [
            send("thank-you", utc(2026, 11, 23, 2), "email"),
            capped("birthday", utc(2026, 11, 23, 1)),
        ],
        events=[event_row("E1", "C1", occurred_at="2026-11-22T12:00:00+08:00")],
    ),
    Case(
        "annual-review-and-birthday-review-wins",
        D(2026, 11, 23),
        [
            send("annual-review", utc(2026, 11, 23, 2), "email"),
            capped("birthday", utc(2026, 11, 23, 1)),
        ],
        policies=[policy_row("P1", "C1", start_date="2015-11-23")],
    ),
    Case(
        # The reminder of the day before P1's renewal cannot wait; P2's (7 days before) can.
        "two-renewals-one-send-one-deferred",
        D(2026, 11, 23),
        [
            send("renewal-reminder", utc(2026, 11, 23, 2)),
            deferred("renewal-reminder", utc(2026, 11, 23, 2)),
        ],
        customer={"birth_date": "1990-06-15"},
        policies=[
            policy_row("P1", "C1", renewal_date="2026-11-24"),
            policy_row("P2", "C1", renewal_date="2026-11-30"),
        ],
    ),
    # --- service obligations (service rules): deferred within their window, never dropped -
    Case(
        # The field test (issue 11, item 20): a complaint follow-up on a renewal reminder's day.
        "complaint-follow-up-deferred-by-a-renewal-reminder",
        D(2026, 11, 23),
        [
            send("renewal-reminder", utc(2026, 11, 23, 2)),
            deferred("complaint-follow-up", utc(2026, 11, 23, 2)),
        ],
        customer={"birth_date": "1990-06-15"},
        policies=[policy_row("P1", "C1", renewal_date="2026-11-30")],
        events=[
            event_row(
                "E1", "C1", type="complaint_resolved", occurred_at="2026-11-20T15:00:00+08:00"
            )
        ],
    ),
    Case(
        "complaint-follow-up-beats-a-birthday",
        D(2026, 11, 23),
        [
            send("complaint-follow-up", utc(2026, 11, 23, 2)),
            capped("birthday", utc(2026, 11, 23, 1)),
        ],
        events=[
            event_row(
                "E1", "C1", type="complaint_resolved", occurred_at="2026-11-20T15:00:00+08:00"
            )
        ],
    ),
    Case(
        "claim-settled-deferred-by-the-last-renewal-reminder",
        D(2026, 11, 23),
        [
            send("renewal-reminder", utc(2026, 11, 23, 2)),
            deferred("claim-settled", utc(2026, 11, 23, 1)),
        ],
        customer={"birth_date": "1990-06-15"},
        policies=[policy_row("P1", "C1", renewal_date="2026-11-24")],
        events=[
            event_row("E1", "C1", type="claim_settled", occurred_at="2026-11-23T08:00:00+08:00")
        ],
    ),
    Case(
        # Two reminders of the day before a renewal: neither can wait, one is flagged.
        "two-last-day-renewals-one-missed",
        D(2026, 11, 23),
        [
            send("renewal-reminder", utc(2026, 11, 23, 2)),
            missed("renewal-reminder", utc(2026, 11, 23, 2)),
        ],
        customer={"birth_date": "1990-06-15"},
        policies=[
            policy_row("P1", "C1", renewal_date="2026-11-24"),
            policy_row("P2", "C1", renewal_date="2026-11-24"),
        ],
    ),
    Case(
        "annual-review-deferred-by-a-renewal-reminder",
        D(2026, 11, 23),
        [
            send("renewal-reminder", utc(2026, 11, 23, 2)),
            deferred("annual-review", utc(2026, 11, 23, 2), "email"),
        ],
        customer={"birth_date": "1990-06-15"},
        policies=[
            policy_row("P1", "C1", renewal_date="2026-12-23"),
            policy_row("P2", "C1", start_date="2015-11-23"),
        ],
    ),
    Case(
        "the-cap-is-per-customer",
        D(2026, 11, 23),
        [
            send("birthday", utc(2026, 11, 23, 1)),
            send("birthday", utc(2026, 11, 23, 17), cid="C2"),
        ],
        others=[customer_row("C2", timezone=LA)],
    ),
    Case(
        "an-unreachable-touch-does-not-use-the-cap",
        D(2026, 11, 23),
        [
            no_contact("birthday", utc(2026, 11, 23, 1)),
            no_contact("renewal-reminder", utc(2026, 11, 23, 2)),
        ],
        customer={"phone": "", "email": ""},
        policies=[policy_row("P1", "C1", renewal_date="2026-11-30")],
    ),
]


def as_tuple(t: Touch) -> Expected:
    return (
        t.rule.id,
        t.customer_id,
        t.decision.value,
        t.reason.value if t.reason else None,
        t.channel.value if t.channel else None,
        t.send_at,
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_shipped_rule_semantics(store: Store, shipped_rules: RuleSet, case: Case) -> None:
    load_rows(
        store,
        customers=[customer_row("C1", **case.customer), *case.others],
        policies=case.policies,
        events=case.events,
    )
    touches = plan_day(store, shipped_rules, case.day)
    assert sorted(map(as_tuple, touches), key=repr) == sorted(case.expected, key=repr)
    for t in touches:
        assert t.occurrence == case.day
        assert t.send_at.utcoffset() == dt.timedelta(0)


def test_case_ids_are_unique() -> None:
    assert len({c.id for c in CASES}) == len(CASES)


def test_the_subject_of_each_rule(store: Store, shipped_rules: RuleSet) -> None:
    load_rows(
        store,
        customers=[customer_row("C1"), customer_row("C2", birth_date="1990-06-15")],
        policies=[
            policy_row("P1", "C1", renewal_date="2026-11-30"),
            policy_row("P2", "C2", start_date="2010-11-23"),
        ],
        events=[event_row("E1", "C2", policy_id="P2", occurred_at="2026-11-22T09:00:00+08:00")],
    )
    touches = plan_day(store, shipped_rules, D(2026, 11, 23))
    got = {(t.rule.id, t.as_json()["policy_id"], t.as_json()["event_id"]) for t in touches}
    assert got == {
        ("birthday", None, None),
        ("renewal-reminder", "P1", None),
        ("annual-review", "P2", None),
        ("thank-you", "P2", "E1"),
    }
    keys = {t.rule.id: t.key for t in touches}
    assert keys["birthday"] == "birthday|customer:C1|2026-11-23"
    assert keys["renewal-reminder"] == "renewal-reminder|policy:P1|2026-11-23"
    assert keys["annual-review"] == "annual-review|policy:P2|2026-11-23"
    assert keys["thank-you"] == "thank-you|event:E1|2026-11-23"


def test_planning_writes_nothing_and_is_repeatable(store: Store, shipped_rules: RuleSet) -> None:
    load_rows(
        store,
        customers=[customer_row("C1")],
        policies=[policy_row("P1", "C1", renewal_date="2026-11-30")],
    )
    first = [t.as_json() for t in plan_day(store, shipped_rules, D(2026, 11, 23))]
    second = [t.as_json() for t in plan_day(store, shipped_rules, D(2026, 11, 23))]
    assert first == second and len(first) == 2


# --- the JSON line -------------------------------------------------------------------------

JSON_KEYS = {
    "rule_id",
    "customer_id",
    "policy_id",
    "event_id",
    "occurrence",
    "channel",
    "send_at",
    "decision",
    "reason",
}


def test_json_line_shape(store: Store, shipped_rules: RuleSet) -> None:
    load_rows(
        store,
        customers=[customer_row("C1", timezone=LA)],
        policies=[policy_row("P1", "C1", renewal_date="2026-11-30")],
        events=[event_row("E1", "C1", occurred_at="2026-11-22T12:00:00-08:00")],
    )
    lines = [json.dumps(t.as_json()) for t in plan_day(store, shipped_rules, D(2026, 11, 23))]
    objs = {o["rule_id"]: o for o in map(json.loads, lines)}
    for obj in objs.values():
        assert set(obj) == JSON_KEYS
        assert obj["send_at"].endswith("Z")
        assert dt.datetime.fromisoformat(obj["send_at"].replace("Z", "+00:00")).utcoffset() == (
            dt.timedelta(0)
        )
        assert obj["occurrence"] == "2026-11-23"
        assert obj["decision"] in ("send", "suppress")
        assert obj["channel"] in ("sms", "email", None)
    assert objs["renewal-reminder"] == {
        "rule_id": "renewal-reminder",
        "customer_id": "C1",
        "policy_id": "P1",
        "event_id": None,
        "occurrence": "2026-11-23",
        "channel": "sms",
        "send_at": "2026-11-23T18:00:00Z",
        "decision": "send",
        "reason": None,
    }
    assert objs["birthday"] == {
        "rule_id": "birthday",
        "customer_id": "C1",
        "policy_id": None,
        "event_id": None,
        "occurrence": "2026-11-23",
        "channel": "sms",
        "send_at": "2026-11-23T17:00:00Z",
        "decision": "suppress",
        "reason": "frequency_cap",
    }
    assert objs["thank-you"]["event_id"] == "E1"
    assert objs["thank-you"]["reason"] == "frequency_cap"


def test_json_line_of_a_no_contact_touch(store: Store, shipped_rules: RuleSet) -> None:
    load_rows(store, customers=[customer_row("C1", phone="", email="")])
    (touch,) = plan_day(store, shipped_rules, D(2026, 11, 23))
    assert touch.as_json() == {
        "rule_id": "birthday",
        "customer_id": "C1",
        "policy_id": None,
        "event_id": None,
        "occurrence": "2026-11-23",
        "channel": None,
        "send_at": "2026-11-23T01:00:00Z",
        "decision": "suppress",
        "reason": "no_contact",
    }


# --- property: random stores, one day ----------------------------------------------------

ZONES = [
    "",
    "Asia/Shanghai",
    "America/Los_Angeles",
    "America/New_York",
    "Europe/London",
    "Australia/Sydney",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "America/St_Johns",
    "Pacific/Kiritimati",  # UTC+14
    "Pacific/Pago_Pago",  # UTC-11
]
VALID_PHONES = ["+8613812348000", "+14155552671", "+447911123456", "+61412345678"]
INVALID_PHONES = ["12345", "+86123", "13812348000", "+1555"]
VALID_EMAILS = ["wang.fang@example.com", "a.b@example.org"]
INVALID_EMAILS = ["not-an-email", "a@b", "@example.com"]
DAYS = [
    D(2026, 11, 23),
    D(2027, 2, 28),
    D(2028, 2, 29),
    D(2026, 3, 8),  # US DST starts
    D(2026, 11, 1),  # US DST ends
    D(2026, 3, 29),  # EU DST starts
    D(2026, 12, 31),
    D(2027, 1, 1),
    D(2025, 8, 3),  # in the leap sixth lunar month of 2025
    D(2026, 4, 16),  # day 29 of a 29-day lunar month: day-30 births are greeted
]
RULE_PRIORITY = {
    "birthday": 30,
    "renewal-reminder": 90,
    "annual-review": 60,
    "thank-you": 70,
    "complaint-follow-up": 80,
    "claim-settled": 85,
}
# Service rules are obligations; their windows (defer_days) as shipped.
OBLIGATION_WINDOW = {
    "renewal-reminder": 3,
    "annual-review": 7,
    "complaint-follow-up": 2,
    "claim-settled": 2,
}
DEFAULT_ZONE = "Asia/Shanghai"
QUIET_START, QUIET_END = dt.time(21, 0), dt.time(8, 0)


def window_days(t: Touch, policies: list[dict], day: dt.date) -> int:
    """Days after ``day`` an obligation may still go: its defer_days, and a renewal reminder
    never on or after the renewal date."""
    window = OBLIGATION_WINDOW[t.rule.id]
    if t.rule.id == "renewal-reminder":
        (p,) = [p for p in policies if p["policy_id"] == t.as_json()["policy_id"]]
        window = min(window, (dt.date.fromisoformat(p["renewal_date"]) - day).days - 1)
    return window


def _same_md(day: dt.date, year: int) -> dt.date:
    try:
        return day.replace(year=year)
    except ValueError:  # 29 February into a common year
        return dt.date(year, 2, 28)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dt.date, list[dict], list[dict], list[dict]]:
    day = draw(st.sampled_from(DAYS))
    customers: list[dict[str, str]] = []
    policies: list[dict[str, str]] = []
    events: list[dict[str, str]] = []
    for i in range(draw(st.integers(1, 6))):
        cid = f"C{i}"
        calendar = draw(st.sampled_from(["gregorian", "gregorian", "gregorian", "lunar"]))
        kind = draw(st.sampled_from(["today", "today", "feb29", "random", "none"]))
        year = draw(st.integers(1940, day.year - 1))
        if kind == "today" and calendar == "lunar":
            ld = LunarDate.from_solar_date(day.year, day.month, day.day)
            try:
                birth: dt.date | None = LunarDate(year, ld.month, ld.day, False).to_solar_date()
            except ValueError:
                birth = dt.date(year, 6, 1)
            birth = min(birth, day - dt.timedelta(days=1))
        elif kind == "today":
            birth = _same_md(day, year)
        elif kind == "feb29":
            birth = dt.date(draw(st.sampled_from([1960, 1988, 2000, 2004])), 2, 29)
        elif kind == "random":
            birth = draw(st.dates(dt.date(1940, 1, 1), day - dt.timedelta(days=1)))
        else:
            birth = None
            calendar = "gregorian"
        phone = draw(st.sampled_from([*VALID_PHONES, *INVALID_PHONES, ""]))
        email = draw(st.sampled_from([*VALID_EMAILS, *INVALID_EMAILS, ""]))
        customers.append(
            customer_row(
                cid,
                birth_date=birth.isoformat() if birth else "",
                birthday_calendar=calendar,
                timezone=draw(st.sampled_from(ZONES)),
                phone=phone,
                email=email,
                status=draw(st.sampled_from(["active", "active", "active", "inactive"])),
                consent_sms=str(draw(st.booleans())).lower(),
                consent_email=str(draw(st.booleans())).lower(),
                consent_marketing=str(draw(st.booleans())).lower(),
            )
        )
        for j in range(draw(st.integers(0, 2))):
            start_year = draw(st.integers(day.year - 6, day.year))
            start = (
                _same_md(day, start_year)
                if draw(st.booleans())
                else draw(st.dates(dt.date(2015, 1, 1), day))
            )
            renewal_in = draw(st.sampled_from([None, None, None, 1, 7, 30, 2, 29, 31, 0]))
            renewal = day + dt.timedelta(days=renewal_in) if renewal_in is not None else None
            if renewal is not None and renewal < start:
                renewal = None
            policies.append(
                policy_row(
                    f"P{i}_{j}",
                    cid,
                    start_date=start.isoformat(),
                    renewal_date=renewal.isoformat() if renewal else "",
                    status=draw(st.sampled_from(["active", "active", "lapsed", "cancelled"])),
                )
            )
        for j in range(draw(st.integers(0, 2))):
            minutes = draw(st.integers(-3 * 24 * 60, 24 * 60))
            instant = dt.datetime.combine(day, dt.time(), dt.timezone.utc) + dt.timedelta(
                minutes=minutes
            )
            offset = dt.timezone(dt.timedelta(hours=draw(st.sampled_from([-8, 0, 8, 14]))))
            events.append(
                event_row(
                    f"E{i}_{j}",
                    cid,
                    type=draw(
                        st.sampled_from(
                            [
                                "policy_purchased",
                                "policy_purchased",
                                "claim_settled",
                                "complaint_resolved",
                            ]
                        )
                    ),
                    occurred_at=instant.astimezone(offset).isoformat(),
                )
            )
    return day, customers, policies, events


def _phone_ok(phone: str) -> bool:
    if not phone.startswith("+"):
        return False
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(phone, None))
    except phonenumbers.NumberParseException:
        return False


def _email_ok(email: str) -> bool:
    if not email:
        return False
    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


def usable_channels(c: dict[str, str]) -> set[str]:
    usable = set()
    if c["consent_sms"] == "true" and _phone_ok(c["phone"]):
        usable.add("sms")
    if c["consent_email"] == "true" and _email_ok(c["email"]):
        usable.add("email")
    return usable


def oracle(
    day: dt.date, customers: list[dict], policies: list[dict], events: list[dict]
) -> set[tuple[str, str]]:
    """(rule id, subject id) of every candidate touch due on ``day``, computed independently."""
    due: set[tuple[str, str]] = set()
    by_id = {c["customer_id"]: c for c in customers}
    for c in customers:
        if c["status"] != "active" or not c["birth_date"]:
            continue
        birth = dt.date.fromisoformat(c["birth_date"])
        if c["birthday_calendar"] == "lunar":
            ld = LunarDate.from_solar_date(day.year, day.month, day.day)
            hit = birth < day and lunar_birthday_in_year(birth, ld.year) == day
        else:
            hit = birth <= day and anniversary_in_year(birth, day.year, LeapDayPolicy.FEB28) == day
        if hit:
            due.add(("birthday", c["customer_id"]))
    for p in policies:
        c = by_id[p["customer_id"]]
        if c["status"] != "active" or p["status"] != "active":
            continue
        if p["renewal_date"]:
            if (dt.date.fromisoformat(p["renewal_date"]) - day).days in (30, 7, 1):
                due.add(("renewal-reminder", p["policy_id"]))
        else:
            start = dt.date.fromisoformat(p["start_date"])
            if (
                day.year - start.year >= 1
                and anniversary_in_year(start, day.year, LeapDayPolicy.FEB28) == day
            ):
                due.add(("annual-review", p["policy_id"]))
    # Event rules: type -> (rule id, local days after the event's local date).
    event_rules = {
        "policy_purchased": ("thank-you", 1),
        "complaint_resolved": ("complaint-follow-up", 3),
        "claim_settled": ("claim-settled", 0),
    }
    for e in events:
        c = by_id[e["customer_id"]]
        if c["status"] != "active" or e["type"] not in event_rules:
            continue
        rule_id, delay = event_rules[e["type"]]
        zone = ZoneInfo(c["timezone"] or DEFAULT_ZONE)
        local = dt.datetime.fromisoformat(e["occurred_at"]).astimezone(zone).date()
        if local + dt.timedelta(days=delay) == day:
            due.add((rule_id, e["event_id"]))
    return due


def subject_id(t: Touch) -> str:
    j = t.as_json()
    if t.rule.id == "birthday":
        return str(j["customer_id"])
    if t.rule.id in ("thank-you", "complaint-follow-up", "claim-settled"):
        return str(j["event_id"])
    return str(j["policy_id"])


def _clear(store: Store) -> None:
    with store.session() as session:
        for model in (Event, InsurancePolicy, Customer):
            session.execute(delete(model))


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def module_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    """One store for every hypothesis example (emptied before each)."""
    if request.param == "sqlite":
        store = open_store(f"sqlite:///{tmp_path_factory.mktemp('prop') / 'care.db'}")
        upgrade(store)
        yield store
        store.dispose()
        return
    with pg_schema_store() as store:
        yield store


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenario=scenarios())
def test_contact_policy_laws_on_random_stores(
    module_store: Store, shipped_rules: RuleSet, scenario: Any
) -> None:
    day, customers, policies, events = scenario
    _clear(module_store)
    load_rows(module_store, customers=customers, policies=policies, events=events)
    touches = plan_day(module_store, shipped_rules, day)
    by_id = {c["customer_id"]: c for c in customers}

    # Exactly the touches due, no more, no fewer, each once.
    planned = [(t.rule.id, subject_id(t)) for t in touches]
    assert len(planned) == len(set(planned))
    assert set(planned) == oracle(day, customers, policies, events)

    sends: dict[str, list[Touch]] = defaultdict(list)
    for t in touches:
        c = by_id[t.customer_id]
        rule = shipped_rules.by_id(t.rule.id)
        usable = usable_channels(c)
        first_usable = next((ch.value for ch in rule.channels if ch.value in usable), None)
        assert t.occurrence == day
        if t.decision is Decision.SEND:
            assert t.reason is None
            assert t.channel is not None
            assert t.channel.value == first_usable
            if t.channel is Channel.SMS:
                assert c["consent_sms"] == "true" and _phone_ok(c["phone"])
            else:
                assert c["consent_email"] == "true" and _email_ok(c["email"])
            sends[t.customer_id].append(t)
        else:
            assert t.reason is not None
            if first_usable is None:
                assert t.reason.value == "no_contact" and t.channel is None
            elif t.rule.id in OBLIGATION_WINDOW:
                # A service obligation is deferred within its window, flagged on its last day.
                expected = "deferred" if window_days(t, policies, day) > 0 else "obligation_missed"
                assert t.reason.value == expected
            else:
                assert t.reason.value == "frequency_cap"
        # Sent at the rule's local time on the local day, never in quiet hours.
        zone = ZoneInfo(c["timezone"] or DEFAULT_ZONE)
        local = t.send_at.astimezone(zone)
        assert local.date() == day
        assert local.time() == rule.send_time
        assert local.time() == (
            dt.time(9) if rule.id in ("birthday", "claim-settled") else dt.time(10)
        )
        assert not (local.time() >= QUIET_START or local.time() < QUIET_END)

    # At most one send per customer: a service obligation on the last day of its window if
    # there is one, else the highest-priority reachable touch.
    held = ("frequency_cap", "deferred", "obligation_missed")
    for cid in {t.customer_id for t in touches}:
        reachable = [
            t
            for t in touches
            if t.customer_id == cid and (t.decision is Decision.SEND or t.reason.value in held)  # type: ignore[union-attr]
        ]
        assert len(sends[cid]) == (1 if reachable else 0)
        if reachable:
            last_chance = [
                t
                for t in reachable
                if t.rule.id in OBLIGATION_WINDOW and window_days(t, policies, day) <= 0
            ]
            first = last_chance or reachable
            assert any(sends[cid][0] is t for t in first)
            assert sends[cid][0].rule.priority == max(RULE_PRIORITY[t.rule.id] for t in first)
