"""The contact policy at send time (``plan.contact``'s send-time half, called by
``run.prepare``): timing, and the recipient re-checked against the customer's data."""

from __future__ import annotations

import dataclasses
import datetime as dt

from caretouch.plan.contact import PlannedSend, recipient, send_timing
from caretouch.rules.contact_policy import load_policy
from caretouch.rules.loader import RuleSet
from caretouch.store.models import Customer
from caretouch.vocab import Category, Channel, SuppressionReason
from conftest import RULES_DIR, utc

POLICY = load_policy(RULES_DIR / "policy.yaml")  # Asia/Shanghai, quiet 21:00-08:00, 24 h window
# 10:00 in Shanghai.
DUE = PlannedSend(
    key="k",
    customer_id="C1",
    rule_id="birthday",
    category=Category.CARE,
    channel=Channel.SMS,
    timezone="Asia/Shanghai",
    send_at=utc(2026, 11, 23, 2, 0),
    occurrence=dt.date(2026, 11, 23),
)


def test_send_timing_waits_sends_or_holds_back() -> None:
    assert send_timing(POLICY, DUE, utc(2026, 11, 23, 1, 0)) is SuppressionReason.DEFERRED
    assert send_timing(POLICY, DUE, utc(2026, 11, 23, 3, 0)) is None
    # 22:00 local: quiet hours end at 08:00, within the window: wait.
    assert send_timing(POLICY, DUE, utc(2026, 11, 23, 14, 0)) is SuppressionReason.DEFERRED
    assert send_timing(POLICY, DUE, utc(2026, 11, 24, 3, 0)) is SuppressionReason.TOO_LATE
    # A 2-hour window from 20:00 local: the quiet hours from 21:00 outlast it.
    short = dataclasses.replace(POLICY, sending_window_hours=2)
    evening = dataclasses.replace(DUE, send_at=utc(2026, 11, 23, 12, 0))
    assert send_timing(short, evening, utc(2026, 11, 23, 13, 30)) is SuppressionReason.QUIET_HOURS


def customer(**changes: object) -> Customer:
    values: dict[str, object] = {
        "customer_id": "C1",
        "status": "active",
        "phone": "+8613812345678",
        "email": "c1@example.com",
        "consent_sms": True,
        "consent_email": True,
        "consent_marketing": False,
    }
    return Customer(**{**values, **changes})


def test_recipient_is_rechecked_against_the_customer_now(shipped_rules: RuleSet) -> None:
    rule = shipped_rules.by_id("birthday")  # sms, then email
    now = recipient(POLICY, rule, DUE, customer())
    assert (now.channel, now.address, now.reason) == (Channel.SMS, "+8613812345678", None)
    gone = recipient(POLICY, rule, DUE, None)
    assert (gone.channel, gone.reason) == (None, SuppressionReason.NO_CONTACT)
    inactive = recipient(POLICY, rule, DUE, customer(status="inactive"))
    assert inactive.reason is SuppressionReason.NO_CONTACT
    # SMS consent withdrawn since the plan: email is usable, but the next plan decides.
    switched = recipient(POLICY, rule, DUE, customer(consent_sms=False))
    assert (switched.channel, switched.reason) == (None, SuppressionReason.DEFERRED)
    assert switched.why.startswith("planned for sms, now only email is usable")
    nothing = recipient(POLICY, rule, DUE, customer(consent_sms=False, consent_email=False))
    assert nothing.reason is SuppressionReason.NO_CONTACT
