"""Property tests of the contact policy (issue 4, "Done when") over whole simulated weeks.

Hypothesis draws customers (tiers, time zones from UTC-10 to UTC+13, valid and broken
addresses, consents including marketing), their policies and purchases, a random
``policy.yaml`` (caps overall, per category and per channel, an SMS capacity, blackout dates)
and three generated calendar rules beside the shipped ones (a marketing one, a care one that
may greet the occasion ``mid_autumn``, and a service one, with random dates, priorities, send
times and ``defer_days``); purchases, resolved complaints and settled claims. Then consecutive
days are run the way
production does: each day is planned at 12:00 UTC the day before (``run_day``), and the
dispatcher sends (and, in ``dispatch`` mode, re-plans) at instants 3 or 6 hours apart; some
customers opt out (``record_consent``) before the first plan, some withdraw marketing consent
along the way. The ledger must then show that:

(a) no customer got more touches than a cap allows, in any local day or 7-day window;
(b) nothing was sent in the customer's quiet hours (21:00-08:00 local), nor after its sending
    window (24 or 2 hours after its send time);
(c) every message used a channel with a valid address and consent at that moment, marketing
    only with marketing consent, never a channel the customer had withdrawn;
(d) every candidate the planner produced ended with a recorded status, every suppression with
    a reason of the closed set, and nothing waits as ``deferred`` past its window once a day
    after it was planned;
(e) a touch went out no later than the last day of its window (occurrence + defer_days, for a
    renewal reminder never on or after the renewal date) +1 day of sending window;
(f) the SMS capacity of a local day was never exceeded;
(g) a service obligation (every ``service`` rule's touch) never ends suppressed by a cap,
    capacity, blackout, quiet hours or lateness: it is sent, still waiting within its window,
    unreachable (``no_contact``, ``opted_out``), or flagged ``obligation_missed``, and a plan
    flags it only on or after the last day of its window;
(h) no customer got two messages greeting one occasion (holiday-greeting's Mid-Autumn and a
    care note with ``occasion: mid_autumn``).

Each example uses a fresh SQLite store in a temporary directory.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock
from zoneinfo import ZoneInfo

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

import caretouch.run.day as day_module
from caretouch.config import CareConfig
from caretouch.dates import aware_utc
from caretouch.ledger.consent import record_consent
from caretouch.ledger.models import Attempt, TouchEvent, TouchRow
from caretouch.plan.touch import Touch
from caretouch.run.day import dispatch, pending_ids, run_day
from caretouch.run.engine import open_engine
from caretouch.run.send import send_touches
from caretouch.schema.migrate import upgrade
from caretouch.store.consent import Purpose
from caretouch.store.db import open_store
from caretouch.store.models import Customer
from caretouch.vocab import SuppressionReason
from conftest import RULES_DIR, TEMPLATES_DIR, customer_row, event_row, load_rows, policy_row

START = dt.date(2026, 9, 21)  # a week around Mid-Autumn (25 September 2026)
N_DAYS = 8
DAYS = [START + dt.timedelta(days=i) for i in range(N_DAYS)]
END = DAYS[-1]
QUIET_START, QUIET_END = dt.time(21, 0), dt.time(8, 0)

# UTC-10 .. UTC+13 (Tonga all year; Auckland from 27 September 2026), half and quarter hours.
ZONES = [
    "Pacific/Honolulu",
    "America/Los_Angeles",
    "America/New_York",
    "UTC",
    "Europe/London",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Shanghai",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Pacific/Auckland",
    "Pacific/Tongatapu",
    "",  # none recorded: the default zone (Asia/Shanghai) applies
]
DEFAULT_ZONE = "Asia/Shanghai"
VALID_PHONES = ["+8613812345678", "+447911123456", "+819012345678", "+61412345678", "+14155550123"]
INVALID_PHONES = ["", "+86123", "13812345678", "+86 138 1234 5678", "+999123456789"]
INVALID_EMAILS = ["", "not-an-email", "a@b", "x@@example.com"]
SHIPPED = [
    "annual-review",
    "birthday",
    "claim-settled",
    "complaint-follow-up",
    "holiday-greeting",
    "renewal-reminder",
    "thank-you",
]
# The shipped rules' defer_days (others: 0) and which are service obligations.
SHIPPED_DEFER = {
    "holiday-greeting": 2,
    "renewal-reminder": 3,
    "annual-review": 7,
    "complaint-follow-up": 2,
    "claim-settled": 2,
}
SHIPPED_SERVICE = {"renewal-reminder", "annual-review", "complaint-follow-up", "claim-settled"}
MID_AUTUMN = dt.date(2026, 9, 25)
EVENT_TYPES = ["policy_purchased", "policy_purchased", "complaint_resolved", "claim_settled"]
REASONS = {r.value for r in SuppressionReason}


def _phone_ok(phone: str) -> bool:
    if not phone.startswith("+") or not phone[1:].isdigit():
        return False
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(phone, None))
    except phonenumbers.NumberParseException:
        return False


def _email_ok(email: str) -> bool:
    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


assert all(_phone_ok(p) for p in VALID_PHONES) and not any(map(_phone_ok, INVALID_PHONES))
assert not any(_email_ok(e) for e in INVALID_EMAILS if e)


# --- the generated world ----------------------------------------------------------------------


@dataclass
class Cust:
    id: str
    tier: str
    zone: str
    phone: str
    email: str
    consent: dict[str, bool]  # sms, email, marketing
    birth: dt.date

    @property
    def zone_info(self) -> ZoneInfo:
        return ZoneInfo(self.zone or DEFAULT_ZONE)

    def valid(self, channel: str) -> bool:
        return _phone_ok(self.phone) if channel == "sms" else _email_ok(self.email)


@dataclass
class CapSpec:
    per_day: int | None = None
    per_7_days: int | None = None


@dataclass
class CalendarRule:
    id: str
    category: str
    dates: list[dt.date]
    priority: int
    defer_days: int
    channels: list[str]
    send_time: str
    occasion: str | None = None


@dataclass
class World:
    customers: list[Cust]
    policies: list[dict[str, str]]
    events: list[dict[str, str]]
    caps: CapSpec
    category_caps: dict[str, CapSpec]
    channel_caps: dict[str, CapSpec]
    sms_capacity: int | None
    blackout_categories: list[str]
    blackout_dates: list[dt.date]
    rules: list[CalendarRule]
    opt_outs: list[tuple[str, str]]  # (customer, purpose) withdrawn before the first plan
    withdrawals: list[tuple[int, str]]  # (instant index, customer): marketing withdrawn then
    step_hours: int
    phase_minutes: int
    mode: str  # "daily": plan once a day; "dispatch": the dispatcher also re-plans
    # sending_window_hours: 24 (the default) or short, so that touches go too_late and meet
    # quiet hours that outlast their window (a service obligation is then deferred).
    window_hours: int = 24

    def defer_days(self, rule_id: str) -> int:
        for r in self.rules:
            if r.id == rule_id:
                return r.defer_days
        return SHIPPED_DEFER.get(rule_id, 0)

    def is_obligation(self, rule_id: str) -> bool:
        generated = {r.id: r.category == "service" for r in self.rules}
        return generated.get(rule_id, rule_id in SHIPPED_SERVICE)

    def last_day(self, row: TouchRow) -> dt.date:
        """The last local day the touch may go out (independently of the engine)."""
        last = row.occurrence + dt.timedelta(days=self.defer_days(row.rule_id))
        if row.rule_id == "renewal-reminder":
            (policy,) = [p for p in self.policies if p["policy_id"] == row.policy_id]
            renewal = dt.date.fromisoformat(policy["renewal_date"])
            last = min(last, renewal - dt.timedelta(days=1))
        return max(last, row.occurrence)

    def occasion(self, row: TouchRow) -> str | None:
        """The occasion a touch greets: Mid-Autumn for the festival greeting of 25 September
        (the one festival of the simulated days) and for a care note that names it."""
        if row.rule_id == "holiday-greeting":
            assert row.occurrence == MID_AUTUMN
            return "mid_autumn"
        for r in self.rules:
            if r.id == row.rule_id:
                return r.occasion
        return None

    def policy_yaml(self) -> str:
        def cap(c: CapSpec, indent: str) -> list[str]:
            out = []
            if c.per_day is not None:
                out.append(f"{indent}per_day: {c.per_day}")
            if c.per_7_days is not None:
                out.append(f"{indent}per_7_days: {c.per_7_days}")
            return out

        lines = ["version: 1", "caps:", *cap(self.caps, "  ")]
        if self.category_caps:
            lines.append("  categories:")
            for name, c in self.category_caps.items():
                lines += [f"    {name}:", *cap(c, "      ")]
        if self.channel_caps:
            lines.append("  channels:")
            for name, c in self.channel_caps.items():
                lines += [f"    {name}:", *cap(c, "      ")]
        if self.blackout_categories:
            lines += [
                "blackout:",
                f"  categories: [{', '.join(self.blackout_categories)}]",
                f"  dates: [{', '.join(d.isoformat() for d in self.blackout_dates)}]",
            ]
        if self.sms_capacity is not None:
            lines += ["capacity:", "  sms:", f"    per_day: {self.sms_capacity}"]
        if self.window_hours != 24:
            lines.append(f"sending_window_hours: {self.window_hours}")
        return "\n".join(lines) + "\n"

    def rule_yaml(self, r: CalendarRule) -> str:
        lines = [
            "version: 1",
            "rules:",
            f"  - id: {r.id}",
            f"    description: generated {r.category} rule",
            "    trigger:",
            "      kind: calendar",
            f"      dates: [{', '.join(d.isoformat() for d in r.dates)}]",
            "    audience:",
            "      customer.status: active",
            f"    channels: [{', '.join(r.channels)}]",
            "    template: holiday_greeting",
            f"    category: {r.category}",
            f"    priority: {r.priority}",
            f'    send_time: "{r.send_time}"',
            f"    defer_days: {r.defer_days}",
        ]
        if r.occasion:
            lines.append(f"    occasion: {r.occasion}")
        return "\n".join(lines) + "\n"


def _cap(per_day: tuple[int, int], per_week: tuple[int, int]) -> st.SearchStrategy[CapSpec]:
    return st.builds(
        CapSpec,
        per_day=st.none() | st.integers(*per_day),
        per_7_days=st.none() | st.integers(*per_week),
    ).filter(lambda c: c.per_day is not None or c.per_7_days is not None)


@st.composite
def worlds(draw: Callable[..., Any]) -> World:
    n = draw(st.integers(2, 7))
    customers = []
    policies: list[dict[str, str]] = []
    events: list[dict[str, str]] = []
    for i in range(n):
        cid = f"C{i}"
        near = draw(st.sampled_from(DAYS))
        birth = (
            near.replace(year=draw(st.integers(1960, 2000)))
            if draw(st.booleans())
            else dt.date(1980, 3, 3)
        )
        customers.append(
            Cust(
                id=cid,
                tier=draw(st.sampled_from("ABCD")),
                zone=draw(st.sampled_from(ZONES)),
                phone=draw(st.sampled_from(VALID_PHONES + INVALID_PHONES[:2] + VALID_PHONES))
                if draw(st.integers(0, 4))
                else draw(st.sampled_from(INVALID_PHONES)),
                email=f"c{i}@example.com"
                if draw(st.integers(0, 3))
                else draw(st.sampled_from(INVALID_EMAILS)),
                consent={
                    "sms": draw(st.integers(0, 4)) > 0,
                    "email": draw(st.integers(0, 4)) > 0,
                    "marketing": draw(st.booleans()),
                },
                birth=birth,
            )
        )
        for j in range(draw(st.integers(0, 2))):
            day = draw(st.sampled_from(DAYS))
            if draw(st.booleans()):  # a renewal reminder 30, 7 or 1 days before
                renewal = day + dt.timedelta(days=draw(st.sampled_from([1, 7, 30])))
                policies.append(
                    policy_row(f"P{i}-{j}", cid, start_date="2024-01-10", renewal_date=str(renewal))
                )
            else:  # an annual review on a policy anniversary
                start = day.replace(year=draw(st.integers(2015, 2025)))
                policies.append(policy_row(f"P{i}-{j}", cid, start_date=str(start)))
        for j in range(draw(st.integers(0, 2))):
            hours = draw(st.integers(-48, 24 * (N_DAYS - 1)))
            occurred = dt.datetime.combine(START, dt.time(12), dt.timezone.utc) + dt.timedelta(
                hours=hours
            )
            events.append(
                event_row(
                    f"E{i}-{j}",
                    cid,
                    type=draw(st.sampled_from(EVENT_TYPES)),
                    occurred_at=occurred.isoformat(),
                )
            )

    category_caps = {
        name: draw(_cap((1, 2), (1, 4)))
        for name in ("service", "care", "marketing")
        if draw(st.integers(0, 2)) == 0
    }
    channel_caps = {
        name: draw(_cap((1, 2), (1, 4)))
        for name in ("sms", "email")
        if draw(st.integers(0, 2)) == 0
    }
    blackout_categories = draw(
        st.lists(st.sampled_from(["service", "care", "marketing"]), unique=True, max_size=2)
    )
    blackout_dates = sorted(draw(st.sets(st.sampled_from(DAYS), min_size=1, max_size=3)))

    sms_capacity = draw(st.none() | st.integers(1, 4))
    # Evening send times meet quiet hours and go out (or give way) the next local morning. A
    # late send does not check that day's SMS capacity (see the xfail test at the end), so
    # they are drawn only when there is no capacity.
    evening = ["18:00", "20:30"] if sms_capacity is None else []

    def calendar_rule(
        rule_id: str, category: str, times: list[str], occasions: list[str | None]
    ) -> CalendarRule:
        return CalendarRule(
            id=rule_id,
            category=category,
            dates=sorted(draw(st.sets(st.sampled_from(DAYS), min_size=1, max_size=4))),
            priority=draw(st.sampled_from([10, 30, 50, 70, 90])),
            defer_days=draw(st.integers(0, 3)),
            channels=draw(st.sampled_from([["sms", "email"], ["email", "sms"], ["sms"]])),
            send_time=draw(st.sampled_from(times)),
            occasion=draw(st.sampled_from(occasions)),
        )

    rules = [
        calendar_rule("promo", "marketing", ["09:00", "10:00", "11:30"], [None]),
        calendar_rule(
            "care-note", "care", ["08:00", "09:00", "14:00", *evening], [None, "mid_autumn"]
        ),
        calendar_rule("notice", "service", ["09:00", "10:00", "14:00", *evening], [None]),
    ]
    mode = draw(st.sampled_from(["daily", "daily", "dispatch"]))
    # Instants 3 or 6 hours apart (the dispatcher may be late).
    step = 6 if mode == "dispatch" else draw(st.sampled_from([3, 6]))
    n_instants = (N_DAYS + 2) * 24 // step
    ids = st.sampled_from([c.id for c in customers])
    # Channel opt-outs are recorded before the first plan; mid-run, only marketing is withdrawn:
    # a channel consent changed between plan and send makes the runner switch channels
    # (see test_contact_policy.py, the xfail tests on capacity).
    opt_outs = draw(
        st.lists(st.tuples(ids, st.sampled_from(["sms", "email", "marketing"])), max_size=3)
    )
    withdrawals = draw(st.lists(st.tuples(st.integers(0, n_instants - 1), ids), max_size=2))
    return World(
        customers=customers,
        policies=policies,
        events=events,
        caps=CapSpec(
            per_day=draw(st.integers(1, 3)), per_7_days=draw(st.none() | st.integers(1, 5))
        ),
        category_caps=category_caps,
        channel_caps=channel_caps,
        sms_capacity=sms_capacity,
        blackout_categories=blackout_categories,
        blackout_dates=blackout_dates,
        rules=rules,
        opt_outs=opt_outs,
        withdrawals=withdrawals,
        step_hours=step,
        phase_minutes=draw(st.sampled_from([0, 15, 45, 90])),
        mode=mode,
        window_hours=draw(st.sampled_from([24, 24, 2])),
    )


# --- running the world ------------------------------------------------------------------------


@dataclass
class Run:
    candidates: dict[str, list[tuple[dt.date, str, str | None]]]  # key -> (plan day, decision..)
    planned_days: set[dt.date]
    plan_log: list[tuple[dt.datetime, dt.date]]  # (when, local date planned)
    missed_on: dict[str, list[dt.date]]  # key -> plan days that decided it missed (not sealed)
    consent_log: list[tuple[dt.datetime, str, str, bool]]  # (at, customer, purpose, granted)
    last_instant: dt.datetime
    rows: dict[int, TouchRow]
    events: dict[int, list[TouchEvent]]
    attempts: list[Attempt]


def run_world(world: World, root: Path) -> Run:
    rules = root / "rules"
    rules.mkdir()
    for schema in RULES_DIR.glob("*.json"):
        shutil.copy(schema, rules / schema.name)
    for stem in [*SHIPPED, "events"]:  # events.yaml: the event types thank-you needs
        shutil.copy(RULES_DIR / f"{stem}.yaml", rules / f"{stem}.yaml")
    (rules / "policy.yaml").write_text(world.policy_yaml(), encoding="utf-8")
    for r in world.rules:
        (rules / f"{r.id}.yaml").write_text(world.rule_yaml(r), encoding="utf-8")
    config = CareConfig(
        f"sqlite:///{root / 'care.db'}",
        rules,
        TEMPLATES_DIR,
        root / "outbox",
        anchor_file=root / "ledger-anchors.jsonl",
    )
    store = open_store(config.store_url)
    upgrade(store)
    engine = open_engine(config, store=store)
    try:
        assert [str(e) for e in engine.ruleset.errors] == []
        load_rows(
            store,
            customers=[
                customer_row(
                    c.id,
                    tier=c.tier,
                    timezone=c.zone,
                    phone=c.phone,
                    email=c.email,
                    birth_date=c.birth.isoformat(),
                    consent_sms=str(c.consent["sms"]).lower(),
                    consent_email=str(c.consent["email"]).lower(),
                    consent_marketing=str(c.consent["marketing"]).lower(),
                )
                for c in world.customers
            ],
            policies=world.policies,
            events=world.events,
        )
        # The importer normalises addresses (e.g. "+86 138 1234 5678" to E.164): what the
        # engine sees is what is stored.
        with store.read_session() as session:
            for cust in world.customers:
                stored = session.scalars(
                    select(Customer).where(Customer.customer_id == cust.id)
                ).one()
                cust.phone, cust.email = stored.phone or "", stored.email or ""

        candidates: dict[str, list[tuple[dt.date, str, str | None]]] = defaultdict(list)
        plan_log: list[tuple[dt.datetime, dt.date]] = []
        missed_on: dict[str, list[dt.date]] = defaultdict(list)
        clock: list[dt.datetime] = []
        real_plan_day = day_module.plan_day

        def recording_plan_day(store: Any, ruleset: Any, day: dt.date, **kw: Any) -> list[Touch]:
            plan_log.append((clock[-1], day))
            touches: list[Touch] = real_plan_day(store, ruleset, day, **kw)
            for t in touches:
                sealed = any("recorded as missed" in line for line in t.explain)
                if t.reason is SuppressionReason.OBLIGATION_MISSED and not sealed:
                    missed_on[t.key].append(day)
                candidates[t.key].append(
                    (day, t.decision.value, t.reason.value if t.reason else None)
                )
            return touches

        base = dt.datetime.combine(START - dt.timedelta(days=1), dt.time(12), dt.timezone.utc)
        step = dt.timedelta(hours=world.step_hours)
        phase = dt.timedelta(minutes=world.phase_minutes)
        sends = [base + phase + k * step for k in range((N_DAYS + 2) * 24 // world.step_hours)]
        plans = {base + dt.timedelta(days=i): day for i, day in enumerate(DAYS)}
        changes: dict[int, list[tuple[str, str, bool]]] = defaultdict(list)
        for index, cid in world.withdrawals:
            changes[index].append((cid, "marketing", False))
        consent_log: list[tuple[dt.datetime, str, str, bool]] = []
        before = base - dt.timedelta(hours=1)
        for cid, purpose in world.opt_outs:
            record_consent(store, cid, {Purpose(purpose): False}, source="cli", at=before)
            consent_log.append((before, cid, purpose, False))
        timeline = sorted(
            [(t, 0, None) for t in plans] + [(t, 1, i) for i, t in enumerate(sends)],
            key=lambda x: (x[0], x[1]),
        )
        with mock.patch.object(day_module, "plan_day", recording_plan_day):
            for now, kind, index in timeline:
                clock.append(now)
                if kind == 0:
                    day = plans[now]
                    run_day(engine, day, run_id=f"daily:{day}", now=now)
                    continue
                assert index is not None
                for cid, purpose, granted in changes.get(index, []):
                    record_consent(store, cid, {Purpose(purpose): granted}, source="cli", at=now)
                    consent_log.append((now, cid, purpose, granted))
                if world.mode == "dispatch":
                    dispatch(engine, run_id=f"dispatch:{now:%d%H%M}", now=now)
                else:
                    send_touches(engine, pending_ids(engine), run_id=f"send:{now:%d%H%M}", now=now)

        with store.read_session() as session:
            rows = {r.id: r for r in session.scalars(select(TouchRow))}
            events: dict[int, list[TouchEvent]] = defaultdict(list)
            for e in session.scalars(select(TouchEvent).order_by(TouchEvent.id)):
                events[e.touch_id].append(e)
            attempts = list(session.scalars(select(Attempt).order_by(Attempt.id)))
        planned_days = {day for decisions in candidates.values() for day, _, _ in decisions}
        return Run(
            dict(candidates),
            planned_days,
            plan_log,
            dict(missed_on),
            consent_log,
            sends[-1],
            rows,
            events,
            attempts,
        )
    finally:
        store.dispose()


# --- the properties -----------------------------------------------------------------------------


def check(world: World, run: Run) -> None:
    customers = {c.id: c for c in world.customers}
    sent = []  # (attempt, row, local instant)
    for a in run.attempts:
        row = run.rows[a.touch_id]
        local = aware_utc(a.created_at).astimezone(customers[row.customer_id].zone_info)
        sent.append((a, row, local))

    # (a) caps, on the local day of each message.
    caps: list[tuple[str, CapSpec, Callable[[Attempt, TouchRow], bool]]] = [
        ("caps", world.caps, lambda a, r: True)
    ]
    for name, c in world.category_caps.items():
        caps.append((f"caps.categories.{name}", c, lambda a, r, name=name: r.category == name))
    for name, c in world.channel_caps.items():
        caps.append((f"caps.channels.{name}", c, lambda a, r, name=name: a.channel == name))
    for clause, cap, scope in caps:
        per_day: Counter[tuple[str, dt.date]] = Counter()
        for a, row, local in sent:
            if scope(a, row):
                per_day[(row.customer_id, local.date())] += 1
        if cap.per_day is not None:
            for (cid, day), count in per_day.items():
                assert count <= cap.per_day, (
                    f"{clause}.per_day={cap.per_day}: {cid} got {count} on {day}"
                )
        if cap.per_7_days is not None:
            for cid in customers:
                for first in [
                    START - dt.timedelta(days=7) + dt.timedelta(days=i) for i in range(N_DAYS + 10)
                ]:
                    count = sum(per_day[(cid, first + dt.timedelta(days=k))] for k in range(7))
                    assert count <= cap.per_7_days, (
                        f"{clause}.per_7_days={cap.per_7_days}: {cid} got {count} in the 7 days "
                        f"from {first}"
                    )

    # (b) never in quiet hours, never after the sending window of the send time it was
    # planned for (the latest one before the attempt: a deferred touch is planned again).
    window = dt.timedelta(hours=world.window_hours)
    for a, row, local in sent:
        t = local.time()
        assert QUIET_END <= t < QUIET_START, f"{row.touch_key} sent at {local} (quiet hours)"
        planned = [
            aware_utc(e.send_at)
            for e in run.events[row.id]
            if e.status == "planned"
            and e.send_at is not None
            and e.id < min(x.id for x in run.events[row.id] if x.attempt_id == a.id)
        ]
        send_at = planned[-1] if planned else aware_utc(row.send_at)
        assert aware_utc(a.created_at) <= send_at + window, (
            f"{row.touch_key} sent at {a.created_at}, planned for {send_at}"
        )

    # (c) a valid address and consent at that moment; marketing with marketing consent.
    def consent_at(cid: str, purpose: str, when: dt.datetime) -> bool:
        value = customers[cid].consent[purpose]
        for at, who, what, granted in run.consent_log:
            if who == cid and what == purpose and at <= when:
                value = granted
        return value

    for a, row, _local in sent:
        cust = customers[row.customer_id]
        when = aware_utc(a.created_at)
        assert cust.valid(a.channel), f"{row.touch_key}: {a.channel} address not valid"
        expected = cust.phone if a.channel == "sms" else cust.email
        assert a.recipient == expected
        assert consent_at(cust.id, a.channel, when), f"{row.touch_key}: no {a.channel} consent"
        if row.category == "marketing":
            assert consent_at(cust.id, "marketing", when), f"{row.touch_key}: no marketing consent"

    # (d) every candidate ended with a recorded status; suppressions carry a known reason.
    by_key = {r.touch_key: r for r in run.rows.values()}
    for key, decisions in run.candidates.items():
        assert key in by_key, f"{key} was planned {decisions} but is not in the ledger"
        history = run.events[by_key[key].id]
        assert history, f"{key} has no status"
    for touch_id, history in run.events.items():
        row = run.rows[touch_id]
        for e in history:
            if e.status == "suppressed":
                assert e.reason in REASONS, f"{row.touch_key}: suppressed with {e.reason!r}"
        last = history[-1]
        send_at = (
            max(aware_utc(e.send_at) for e in history if e.send_at is not None)
            if any(e.send_at for e in history)
            else aware_utc(row.send_at)
        )
        if send_at + dt.timedelta(hours=world.window_hours) < run.last_instant:
            assert last.status in ("sent", "suppressed"), (
                f"{row.touch_key} left {last.status} (send at {send_at})"
            )
        if last.status == "suppressed" and last.reason == "deferred":
            window_end = world.last_day(row)
            if world.is_obligation(row.rule_id):
                # Deferred (by a plan, or at send time): the plans of the days after its
                # window, made after it was deferred, record it as missed.
                later = [
                    day
                    for at, day in run.plan_log
                    if at > aware_utc(last.at)
                    and window_end < day <= window_end + dt.timedelta(days=7)
                ]
                assert not later, (
                    f"{row.touch_key} still deferred although its window ended {window_end} "
                    f"and {later[0]} was planned since"
                )
            else:
                assert window_end > max(run.planned_days), (
                    f"{row.touch_key} still deferred although its window ended {window_end}"
                )

    # (e) never sent past the last day of its window (+1 day of sending window).
    for _a, row, local in sent:
        latest = world.last_day(row) + dt.timedelta(days=1)
        assert local.date() <= latest, f"{row.touch_key} sent on {local.date()}"

    # (g) a service obligation is never dropped as a cap, capacity, blackout or late touch,
    # and a plan flags it as missed only when its window has no day left.
    dropped = {"frequency_cap", "capacity", "blackout", "quiet_hours", "too_late"}
    for touch_id, history in run.events.items():
        row = run.rows[touch_id]
        if not world.is_obligation(row.rule_id):
            continue
        last = history[-1]
        assert not (last.status == "suppressed" and last.reason in dropped), (
            f"{row.touch_key}: a service obligation ended {last.reason}"
        )
        for day in run.missed_on.get(row.touch_key, []):
            assert day >= world.last_day(row), (
                f"{row.touch_key} flagged missed by the plan of {day}, its window ends "
                f"{world.last_day(row)}"
            )

    # (h) one greeting per occasion and customer.
    greeted: Counter[tuple[str, str]] = Counter()
    for touch_id in {a.touch_id for a in run.attempts}:
        row = run.rows[touch_id]
        occasion = world.occasion(row)
        if occasion is not None:
            greeted[(row.customer_id, occasion)] += 1
    for (cid, occasion), count in greeted.items():
        assert count <= 1, f"{cid} was greeted {count} times for {occasion}"

    # (f) the SMS capacity of a local day.
    if world.sms_capacity is not None:
        sms_days = Counter(local.date() for a, row, local in sent if a.channel == "sms")
        for day, count in sms_days.items():
            assert count <= world.sms_capacity, (
                f"capacity.sms.per_day={world.sms_capacity}: {count} SMS on {day}"
            )


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(world=worlds())
def test_contact_policy_laws_over_simulated_days(world: World) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run = run_world(world, Path(tmp))
    check(world, run)


def test_the_simulation_sends_and_suppresses() -> None:
    """The harness itself: a fixed world in which messages go out and caps bite."""
    customers = [
        Cust(
            "C0",
            "A",
            "Asia/Shanghai",
            VALID_PHONES[0],
            "c0@example.com",
            {"sms": True, "email": True, "marketing": True},
            dt.date(1990, 9, 22),
        ),
        Cust(
            "C1",
            "D",
            "Pacific/Honolulu",
            VALID_PHONES[4],
            "c1@example.com",
            {"sms": True, "email": False, "marketing": False},
            dt.date(1990, 9, 22),
        ),
    ]
    world = World(
        customers=customers,
        policies=[policy_row("P0", "C0", start_date="2024-01-10", renewal_date="2026-09-23")],
        events=[],
        caps=CapSpec(per_day=1, per_7_days=1),
        category_caps={},
        channel_caps={},
        sms_capacity=None,
        blackout_categories=[],
        blackout_dates=[],
        rules=[CalendarRule("promo", "marketing", [DAYS[4]], 10, 1, ["sms"], "10:00")],
        opt_outs=[],
        withdrawals=[],
        step_hours=3,
        phase_minutes=0,
        mode="daily",
    )
    with tempfile.TemporaryDirectory() as tmp:
        run = run_world(world, Path(tmp))
    check(world, run)
    sent = Counter(run.rows[a.touch_id].rule_id for a in run.attempts)
    # C0: birthday (09-22) beaten by the renewal reminder, the 7-day cap then stops the promo.
    assert sent == {"renewal-reminder": 1, "birthday": 1}
    reasons = {run.rows[i].touch_key: h[-1].reason for i, h in run.events.items() if h[-1].reason}
    assert reasons["birthday|customer:C0|2026-09-22"] == "frequency_cap"
    assert reasons["promo|customer:C0|2026-09-25"] == "frequency_cap"
    assert reasons["promo|customer:C1|2026-09-25"] == "no_contact"


def test_a_touch_held_by_quiet_hours_still_respects_the_next_days_cap() -> None:
    """Care note due 21 September 18:00 in Shanghai; the dispatcher (every 6 hours, at :30
    past 01, 07, 13 and 19 UTC) first sees it at 21:30, in quiet hours, and could send it only
    at 09:30 on the 22nd, the customer's birthday, whose greeting the plan of the 22nd let
    through: caps.per_day=1 counts on the day a message goes out, so the note gives way."""
    world = World(
        customers=[
            Cust(
                "C0",
                "A",
                "Asia/Shanghai",
                VALID_PHONES[0],
                "c0@example.com",
                {"sms": True, "email": True, "marketing": False},
                dt.date(1990, 9, 22),
            )
        ],
        policies=[],
        events=[],
        caps=CapSpec(per_day=1),
        category_caps={},
        channel_caps={},
        sms_capacity=None,
        blackout_categories=[],
        blackout_dates=[],
        rules=[CalendarRule("care-note", "care", [DAYS[0]], 10, 0, ["sms"], "18:00")],
        opt_outs=[],
        withdrawals=[],
        step_hours=6,
        phase_minutes=90,
        mode="daily",
    )
    with tempfile.TemporaryDirectory() as tmp:
        run = run_world(world, Path(tmp))
    check(world, run)
    assert Counter(run.rows[a.touch_id].rule_id for a in run.attempts) == {"birthday": 1}
    (note,) = [h for h in run.events.values() if run.rows[h[0].touch_id].rule_id == "care-note"]
    assert (note[-1].status, note[-1].reason) == ("suppressed", "frequency_cap")


def test_a_touch_held_by_quiet_hours_still_respects_the_next_days_sms_capacity() -> None:
    """C0's care note (21 September, 18:00 Shanghai) is held by quiet hours until 09:30 on the
    22nd; the plan of the 22nd gave the day's only SMS to C1's birthday greeting."""
    world = World(
        customers=[
            Cust(
                "C0",
                "A",
                "Asia/Shanghai",
                VALID_PHONES[0],
                "c0@example.com",
                {"sms": True, "email": True, "marketing": False},
                dt.date(1980, 3, 3),
            ),
            Cust(
                "C1",
                "A",
                "Asia/Shanghai",
                VALID_PHONES[1],
                "c1@example.com",
                {"sms": True, "email": True, "marketing": False},
                dt.date(1990, 9, 22),
            ),
        ],
        policies=[],
        events=[],
        caps=CapSpec(per_day=1),
        category_caps={},
        channel_caps={},
        sms_capacity=1,
        blackout_categories=[],
        blackout_dates=[],
        rules=[CalendarRule("care-note", "care", [DAYS[0]], 10, 0, ["sms"], "18:00")],
        opt_outs=[],
        withdrawals=[],
        step_hours=6,
        phase_minutes=90,
        mode="daily",
    )
    with tempfile.TemporaryDirectory() as tmp:
        run = run_world(world, Path(tmp))
    check(world, run)  # capacity.sms.per_day=1: 2 SMS on 2026-09-22
