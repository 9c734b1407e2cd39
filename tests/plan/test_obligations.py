"""Service obligations and occasions over consecutive days (issue 11, items 20 and 22).

Each table row is (rules, policy, customer rows, consecutive days) -> the decision of every
candidate touch on each day's plan, then the ledger's final word on each touch. Days are run
the way ``care run --date D`` runs them (plan with the ledger as history, record, send) at
11:00 in Shanghai, through the real planner, ledger and outbox, on SQLite and PostgreSQL.
Send-time cases (a dispatcher that was down, quiet hours) follow the table, step by step.

A touch is labelled ``rule/subject@occurrence`` (the customer, policy or event it is about;
the date as MM-DD): a deferred touch keeps the occurrence it was first due on.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from test_contact_policy import (  # the helpers of the contact-policy tables
    at_11_shanghai,
    engine_for,
    explain,
    ledger_explain,
    make_rules,
    plan,
    rule_yaml,
    state_of,
)

from caretouch.ledger import Ledger
from caretouch.plan.touch import Touch
from caretouch.render.templates import TemplateStore
from caretouch.reports.run_summary import RunSummary
from caretouch.rules.loader import load_rules
from caretouch.run.day import pending_ids, run_day
from caretouch.run.send import send_touches
from caretouch.store.db import Store
from caretouch.vocab import SuppressionReason, TouchStatus
from conftest import RULES_DIR, TEMPLATES_DIR, customer_row, event_row, load_rows, policy_row, utc

D = dt.date
PER_DAY_1 = "version: 1\ncaps:\n  per_day: 1\n"
NOT_A_BIRTHDAY = "1990-06-15"


def label(t: Touch) -> str:
    return f"{t.rule.id}/{t.subject_id}@{t.occurrence:%m-%d}"


def complaint(event_id: str, resolved: str, customer: str = "C1") -> dict[str, str]:
    return event_row(event_id, customer, type="complaint_resolved", occurred_at=resolved)


def campaign_yaml(
    *, schedule: str, occasion: str | None, priority: int = 40, defer_days: int = 0
) -> str:
    """A copy of the shipped VIP Spring Festival campaign, with changes (a cron schedule
    gives the send time: the campaign's own ``send_time`` is left out then)."""
    text = (RULES_DIR / "campaigns" / "spring-festival-vip.yaml").read_text("utf-8")
    drop = ("schedule:", "occasion:", "priority:", "defer_days:")
    if " " in schedule:
        drop += ("send_time:",)
    lines = [line for line in text.splitlines() if not line.startswith(drop)]
    lines += [f"schedule: {schedule}", f"priority: {priority}"]
    if occasion:
        lines.append(f"occasion: {occasion}")
    if defer_days:
        lines.append(f"defer_days: {defer_days}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Row:
    id: str
    days: dict[dt.date, dict[str, str]]  # plan day -> {label: "send" or reason word}
    final: dict[str, str]  # label -> "sent" or the reason it ended suppressed with
    customers: list[dict[str, str]] = field(default_factory=lambda: [customer_row("C1")])
    policies: list[dict[str, str]] = field(default_factory=list)
    events: list[dict[str, str]] = field(default_factory=list)
    shipped: tuple[str, ...] = ("complaint-follow-up", "renewal-reminder", "birthday")
    policy: str | None = None  # policy.yaml; None: the shipped one
    rules: dict[str, str] = field(default_factory=dict)  # extra rule files
    campaigns: dict[str, str] = field(default_factory=dict)  # campaign files


SF = D(2027, 2, 6)  # Spring Festival 2027
TIER_A_MARKETING = customer_row("C1", tier="A", birth_date=NOT_A_BIRTHDAY, consent_marketing="true")
VIP = (RULES_DIR / "campaigns" / "spring-festival-vip.yaml").read_text("utf-8")
VIP_CARE = rule_yaml(
    "vip-care",
    dates=["2026-11-23", "2026-11-24", "2026-11-25"],
    category="care",
    priority=95,
)

ROWS = [
    # --- item 20: a service obligation is deferred, never silently dropped -----------------
    Row(
        # The field test: the follow-up of a complaint resolved on 20 November is due on the
        # 23rd, the day of a renewal reminder (priority 90 > 80; caps.per_day = 1). It waits.
        "follow-up-on-a-renewal-reminder-day-goes-the-next-day",
        {
            D(2026, 11, 23): {
                "renewal-reminder/P1@11-23": "send",
                "complaint-follow-up/E1@11-23": "deferred",
            },
            D(2026, 11, 24): {"complaint-follow-up/E1@11-23": "send"},
            D(2026, 11, 25): {},
        },
        {"renewal-reminder/P1@11-23": "sent", "complaint-follow-up/E1@11-23": "sent"},
        customers=[customer_row("C1", birth_date=NOT_A_BIRTHDAY)],
        policies=[policy_row("P1", "C1", renewal_date="2026-11-30")],
        events=[complaint("E1", "2026-11-20T15:00:00+08:00")],
    ),
    Row(
        # A higher-priority care rule wins while the follow-up can wait; on the last day of
        # the follow-up's window (defer_days 2) the obligation goes first.
        "last-chance-obligation-beats-higher-priority-care",
        {
            D(2026, 11, 23): {
                "vip-care/C1@11-23": "send",
                "complaint-follow-up/E1@11-23": "deferred",
            },
            D(2026, 11, 24): {
                "vip-care/C1@11-24": "send",
                "complaint-follow-up/E1@11-23": "deferred",
            },
            D(2026, 11, 25): {
                "complaint-follow-up/E1@11-23": "send",
                "vip-care/C1@11-25": "frequency_cap",
            },
        },
        {
            "complaint-follow-up/E1@11-23": "sent",
            "vip-care/C1@11-23": "sent",
            "vip-care/C1@11-24": "sent",
            "vip-care/C1@11-25": "frequency_cap",
        },
        customers=[customer_row("C1", birth_date=NOT_A_BIRTHDAY)],
        events=[complaint("E1", "2026-11-20T15:00:00+08:00")],
        policy=PER_DAY_1,
        rules={"vip-care.yaml": VIP_CARE},
    ),
    Row(
        # ... unless another obligation on its last day outranks it: the reminder of the day
        # before a renewal. The follow-up is then flagged, not dropped as a frequency_cap.
        "obligation-missed-when-its-window-runs-out",
        {
            D(2026, 11, 23): {
                "vip-care/C1@11-23": "send",
                "complaint-follow-up/E1@11-23": "deferred",
            },
            D(2026, 11, 24): {
                "vip-care/C1@11-24": "send",
                "complaint-follow-up/E1@11-23": "deferred",
            },
            D(2026, 11, 25): {
                "renewal-reminder/P1@11-25": "send",
                "complaint-follow-up/E1@11-23": "obligation_missed",
                "vip-care/C1@11-25": "frequency_cap",
            },
            D(2026, 11, 26): {},
        },
        {
            "complaint-follow-up/E1@11-23": "obligation_missed",
            "renewal-reminder/P1@11-25": "sent",
        },
        customers=[customer_row("C1", birth_date=NOT_A_BIRTHDAY)],
        policies=[policy_row("P1", "C1", renewal_date="2026-11-26")],
        events=[complaint("E1", "2026-11-20T15:00:00+08:00")],
        policy=PER_DAY_1,
        rules={"vip-care.yaml": VIP_CARE},
    ),
    Row(
        # A renewal reminder is deferred too, but never to the renewal date: the 7-day one
        # has a 3-day window, the one of the day before none.
        "renewal-reminders-wait-but-not-past-the-renewal",
        {
            D(2026, 11, 23): {
                "renewal-reminder/P1@11-23": "send",  # the day before its renewal
                "renewal-reminder/P2@11-23": "deferred",  # 7 days before
            },
            D(2026, 11, 24): {"renewal-reminder/P2@11-23": "send"},
        },
        {"renewal-reminder/P1@11-23": "sent", "renewal-reminder/P2@11-23": "sent"},
        customers=[customer_row("C1", birth_date=NOT_A_BIRTHDAY)],
        policies=[
            policy_row("P1", "C1", renewal_date="2026-11-24"),
            policy_row("P2", "C1", renewal_date="2026-11-30"),
        ],
    ),
    Row(
        # Capacity: the day's one SMS goes to tier D's reminder of the day before its renewal
        # (it cannot wait) rather than to tier A's birthday greeting.
        "capacity-serves-a-last-chance-obligation-before-tiers",
        {
            D(2026, 11, 23): {
                "renewal-reminder/P1@11-23": "send",
                "birthday/CA@11-23": "capacity",
            },
        },
        {"renewal-reminder/P1@11-23": "sent", "birthday/CA@11-23": "capacity"},
        customers=[
            customer_row("CA", tier="A", phone="+8613812348001"),
            customer_row("CD", tier="D", birth_date=NOT_A_BIRTHDAY, phone="+8613812348002"),
        ],
        policies=[policy_row("P1", "CD", renewal_date="2026-11-24")],
        policy="version: 1\ncaps:\n  per_day: 5\ncapacity:\n  sms:\n    per_day: 1\n",
    ),
    Row(
        # ... while an obligation that can still wait gives way to higher tiers, deferred.
        "capacity-defers-an-obligation-that-can-wait",
        {
            D(2026, 11, 23): {
                "birthday/CA@11-23": "send",
                "renewal-reminder/P1@11-23": "deferred",
            },
            D(2026, 11, 24): {"renewal-reminder/P1@11-23": "send"},
        },
        {"renewal-reminder/P1@11-23": "sent", "birthday/CA@11-23": "sent"},
        customers=[
            customer_row("CA", tier="A", phone="+8613812348001"),
            customer_row("CD", tier="D", birth_date=NOT_A_BIRTHDAY, phone="+8613812348002"),
        ],
        policies=[policy_row("P1", "CD", renewal_date="2026-11-30")],
        policy="version: 1\ncaps:\n  per_day: 5\ncapacity:\n  sms:\n    per_day: 1\n",
    ),
    Row(
        # A blackout day for service holds the claim notice back; it goes the next day.
        "blackout-defers-an-obligation",
        {
            D(2026, 11, 23): {"claim-settled/E1@11-23": "deferred"},
            D(2026, 11, 24): {"claim-settled/E1@11-23": "send"},
        },
        {"claim-settled/E1@11-23": "sent"},
        customers=[customer_row("C1", birth_date=NOT_A_BIRTHDAY)],
        events=[
            event_row("E1", "C1", type="claim_settled", occurred_at="2026-11-23T08:00:00+08:00")
        ],
        shipped=("claim-settled",),
        policy="version: 1\nblackout:\n  categories: [service]\n  dates: [2026-11-23]\n",
    ),
    # --- item 22: one greeting per occasion per customer --------------------------------
    Row(
        # The field test: tier A gets the VIP campaign on Spring Festival; the generic
        # greeting, held back by the cap, used to be deferred and sent the next day.
        "vip-campaign-then-no-generic-greeting",
        {
            SF: {
                "spring-festival-vip/C1@02-06": "send",
                "holiday-greeting/C1@02-06": "occasion_taken",
            },
            SF + dt.timedelta(days=1): {},
            SF + dt.timedelta(days=2): {},
        },
        {"spring-festival-vip/C1@02-06": "sent", "holiday-greeting/C1@02-06": "occasion_taken"},
        customers=[TIER_A_MARKETING],
        shipped=("holiday-greeting", "birthday"),
        campaigns={"spring-festival-vip.yaml": VIP},
    ),
    Row(
        # The occasion is taken only by a greeting that goes: a renewal reminder of the day
        # before its renewal takes the day, the campaign (no defer_days) is capped, and the
        # generic greeting, deferred, greets the festival the next day.
        "generic-greeting-when-the-campaign-cannot-go",
        {
            SF: {
                "renewal-reminder/P1@02-06": "send",
                "spring-festival-vip/C1@02-06": "frequency_cap",
                "holiday-greeting/C1@02-06": "deferred",
            },
            SF + dt.timedelta(days=1): {"holiday-greeting/C1@02-06": "send"},
        },
        {
            "spring-festival-vip/C1@02-06": "frequency_cap",
            "holiday-greeting/C1@02-06": "sent",
        },
        customers=[TIER_A_MARKETING],
        policies=[policy_row("P1", "C1", renewal_date="2027-02-07")],
        shipped=("holiday-greeting", "renewal-reminder"),
        campaigns={"spring-festival-vip.yaml": VIP},
    ),
    Row(
        # Both deferred: the next day they compete again, and the campaign (40) takes the
        # occasion from the generic greeting (10), which is not sent as well.
        "deferred-campaign-takes-the-occasion-the-next-day",
        {
            SF: {
                "renewal-reminder/P1@02-06": "send",
                "spring-festival-vip/C1@02-06": "deferred",
                "holiday-greeting/C1@02-06": "deferred",
            },
            SF + dt.timedelta(days=1): {
                "spring-festival-vip/C1@02-06": "send",
                "holiday-greeting/C1@02-06": "occasion_taken",
            },
            SF + dt.timedelta(days=2): {},
        },
        {
            "spring-festival-vip/C1@02-06": "sent",
            "holiday-greeting/C1@02-06": "occasion_taken",
        },
        customers=[TIER_A_MARKETING],
        policies=[policy_row("P1", "C1", renewal_date="2027-02-07")],
        shipped=("holiday-greeting", "renewal-reminder"),
        campaigns={
            "spring-festival-vip.yaml": campaign_yaml(
                schedule="spring_festival", occasion="holiday", defer_days=1
            )
        },
    ),
    Row(
        # Greeted on the eve (a campaign naming the occasion spring_festival): not again on
        # the festival, although the caps would allow it.
        "greeted-on-the-eve-not-again-on-the-festival",
        {
            SF - dt.timedelta(days=1): {"spring-festival-vip/C1@02-05": "send"},
            SF: {"holiday-greeting/C1@02-06": "occasion_taken"},
        },
        {"spring-festival-vip/C1@02-05": "sent", "holiday-greeting/C1@02-06": "occasion_taken"},
        customers=[TIER_A_MARKETING],
        shipped=("holiday-greeting",),
        campaigns={
            "spring-festival-vip.yaml": campaign_yaml(
                schedule="lunar_new_years_eve", occasion="spring_festival"
            )
        },
        policy="version: 1\ncaps:\n  per_day: 1\n",
    ),
    Row(
        # Without an occasion on the campaign, the same customer is greeted twice.
        "without-an-occasion-greeted-twice",
        {
            SF - dt.timedelta(days=1): {"spring-festival-vip/C1@02-05": "send"},
            SF: {"holiday-greeting/C1@02-06": "send"},
        },
        {"spring-festival-vip/C1@02-05": "sent", "holiday-greeting/C1@02-06": "sent"},
        customers=[TIER_A_MARKETING],
        shipped=("holiday-greeting",),
        campaigns={
            "spring-festival-vip.yaml": campaign_yaml(schedule="lunar_new_years_eve", occasion=None)
        },
        policy="version: 1\ncaps:\n  per_day: 1\n",
    ),
    Row(
        # Occasions are per festival and year: greeted by the campaign on Spring Festival,
        # the customer still gets the generic greeting on Mid-Autumn.
        "another-festival-is-another-occasion",
        {
            SF: {
                "spring-festival-vip/C1@02-06": "send",
                "holiday-greeting/C1@02-06": "occasion_taken",
            },
            D(2027, 9, 15): {"holiday-greeting/C1@09-15": "send"},
        },
        {"spring-festival-vip/C1@02-06": "sent", "holiday-greeting/C1@09-15": "sent"},
        customers=[TIER_A_MARKETING],
        shipped=("holiday-greeting",),
        campaigns={"spring-festival-vip.yaml": VIP},
    ),
]


def rules_of(row: Row, tmp_path: Path) -> Path:
    rules = make_rules(tmp_path, row.policy, row.rules, shipped=row.shipped)
    if row.campaigns:
        (rules / "campaigns").mkdir()
        for name, text in row.campaigns.items():
            (rules / "campaigns" / name).write_text(text, encoding="utf-8")
    return rules


def labelled(touches: list[Touch]) -> dict[str, Touch]:
    out = {label(t): t for t in touches}
    assert len(out) == len(touches)
    return out


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_decisions_over_consecutive_days(store: Store, tmp_path: Path, row: Row) -> None:
    load_rows(store, customers=row.customers, policies=row.policies, events=row.events)
    rules = rules_of(row, tmp_path)
    engine = engine_for(store, rules, tmp_path)
    keys: dict[str, str] = {}
    for day, expected in sorted(row.days.items()):
        touches = labelled(plan(store, rules, day))
        got = {name: t.reason.value if t.reason else "send" for name, t in touches.items()}
        assert got == expected, (day, {n: explain(t) for n, t in touches.items()})
        keys.update({name: t.key for name, t in touches.items()})
        run_day(engine, day, run_id=f"run-{day}", now=at_11_shanghai(day))
    states = {s.row.touch_key: s for d in row.days for s in Ledger(store).states_for_day(d)}
    final = {
        name: "sent" if states[key].status is TouchStatus.SENT else str(states[key].reason)
        for name, key in keys.items()
    }
    assert {name: final.get(name) for name in row.final} == row.final
    # Never an obligation dropped as a mere cap: sent, or flagged.
    for name, outcome in final.items():
        if name.split("/")[0] in ("complaint-follow-up", "renewal-reminder", "claim-settled"):
            assert outcome in ("sent", "obligation_missed"), name


def test_every_table_row_runs_on_days_of_its_own() -> None:
    assert len({r.id for r in ROWS}) == len(ROWS)
    assert all(r.days for r in ROWS)


# --- the run summary and the explanation flag a missed obligation --------------------------


def test_a_missed_obligation_is_flagged_in_the_run_summary(store: Store, tmp_path: Path) -> None:
    row = next(r for r in ROWS if r.id == "obligation-missed-when-its-window-runs-out")
    load_rows(store, customers=row.customers, policies=row.policies, events=row.events)
    rules = rules_of(row, tmp_path)
    engine = engine_for(store, rules, tmp_path)
    summaries = {}
    for day in sorted(row.days):
        report = run_day(engine, day, run_id=f"run-{day}", now=at_11_shanghai(day))
        summaries[day] = RunSummary.from_ledger(
            engine.ledger,
            run_id=f"run-{day}",
            kind="care run",
            day=day,
            finished_at=at_11_shanghai(day),
            this_run=report.as_dict(),
        )
    key = "complaint-follow-up|event:E1|2026-11-23"
    for day, summary in summaries.items():
        flagged = [m["touch_key"] for m in summary.obligations_missed]
        assert flagged == ([key] if day == D(2026, 11, 25) else []), day
    summary = summaries[D(2026, 11, 25)]
    assert summary.as_dict()["obligations_missed"][0]["touch_key"] == key
    text = summary.render()
    assert "SERVICE OBLIGATIONS MISSED: 1" in text and key in text
    state = state_of(store, key, D(2026, 11, 23))
    why = ledger_explain(store, state)
    assert "obligation missed: a service obligation held back (frequency_cap)" in why
    assert "renewal-reminder (2026-11-25) on 2026-11-25" in why
    # Its window is over: a later plan of its own day does not revive it.
    (again,) = [t for t in plan(store, rules, D(2026, 11, 23)) if t.key == key]
    assert again.reason is SuppressionReason.OBLIGATION_MISSED


# --- at send time: a dispatcher that was down, quiet hours, a full later day ----------------

WINDOW_2H = (RULES_DIR / "policy.yaml").read_text("utf-8") + "sending_window_hours: 2\n"
FOLLOW_UP = "complaint-follow-up|event:E1|2026-11-23"
DUE = D(2026, 11, 23)


def follow_up_setup(store: Store, tmp_path: Path, policy: str | None = None) -> Path:
    load_rows(
        store,
        customers=[customer_row("C1", birth_date="1990-11-24")],  # birthday on the 24th
        events=[complaint("E1", "2026-11-20T15:00:00+08:00")],  # follow-up due on the 23rd
    )
    return make_rules(tmp_path, policy, shipped=("complaint-follow-up", "birthday"))


def test_obligation_past_its_sending_window_is_deferred_then_sent(
    store: Store, tmp_path: Path
) -> None:
    rules = follow_up_setup(store, tmp_path, WINDOW_2H)
    engine = engine_for(store, rules, tmp_path)
    # care_daily plans the 23rd at 12:00 UTC on the 22nd; the dispatcher is then down until
    # 21:30 in Shanghai on the 23rd, long after the two-hour sending window (10:00-12:00).
    run_day(engine, DUE, run_id="plan", now=utc(2026, 11, 22, 12))
    late = send_touches(engine, pending_ids(engine), run_id="late", now=utc(2026, 11, 23, 13, 30))
    assert (late.sent, late.suppressed) == (0, 1)
    state = state_of(store, FOLLOW_UP, DUE)
    assert (state.status, state.reason) == (TouchStatus.SUPPRESSED, "deferred")
    why = ledger_explain(store, state)
    assert "held back at send time (too_late)" in why
    assert "competes again when 2026-11-24 is planned" in why
    # A later plan of the 23rd does not pull it back to a day that is over ...
    (again,) = [t for t in plan(store, rules, DUE) if t.key == FOLLOW_UP]
    assert again.reason is SuppressionReason.DEFERRED
    assert "the send step deferred it to 2026-11-24" in explain(again)
    run_day(engine, DUE, run_id="replan", now=utc(2026, 11, 23, 14))
    assert state_of(store, FOLLOW_UP, DUE).reason == "deferred"
    # ... the plan of the 24th takes it up: it outranks the birthday (80 > 30) and goes.
    nxt = D(2026, 11, 24)
    decided = {t.key: t for t in plan(store, rules, nxt)}
    assert decided[FOLLOW_UP].reason is None
    assert decided["birthday|customer:C1|2026-11-24"].reason is SuppressionReason.FREQUENCY_CAP
    assert run_day(engine, nxt, run_id="next", now=at_11_shanghai(nxt)).sent == 1
    state = state_of(store, FOLLOW_UP, DUE)
    assert state.status is TouchStatus.SENT
    (attempt,) = Ledger(store).attempts(state.id)
    assert attempt.created_at.replace(tzinfo=dt.timezone.utc) == at_11_shanghai(nxt)


def test_obligation_whose_window_passed_at_send_time_is_missed(
    store: Store, tmp_path: Path
) -> None:
    rules = follow_up_setup(store, tmp_path)
    engine = engine_for(store, rules, tmp_path)
    run_day(engine, DUE, run_id="plan", now=utc(2026, 11, 22, 12))
    # The dispatcher comes back at 11:00 on the 26th; the window (defer_days 2) ended the 25th.
    late = send_touches(engine, pending_ids(engine), run_id="back", now=utc(2026, 11, 26, 3))
    assert (late.sent, late.suppressed) == (0, 1)
    state = state_of(store, FOLLOW_UP, DUE)
    assert (state.status, state.reason) == (TouchStatus.SUPPRESSED, "obligation_missed")
    assert "obligation missed: a service obligation, its window is over" in ledger_explain(
        store, state
    )
    assert [m["touch_key"] for m in Ledger(store).missed_obligations("back")] == [FOLLOW_UP]
    (again,) = [t for t in plan(store, rules, DUE) if t.key == FOLLOW_UP]
    assert again.reason is SuppressionReason.OBLIGATION_MISSED  # final: never revived


def test_obligation_held_into_a_full_day_competes_on_that_day(store: Store, tmp_path: Path) -> None:
    """Planned for the 23rd, the follow-up meets the dispatcher only at 08:30 on the 24th, a
    day whose one place (caps.per_day=1) the plan gave to the birthday greeting. Rather than
    be dropped as a late frequency_cap, it competes on the 24th, and wins (80 > 30)."""
    rules = follow_up_setup(store, tmp_path)
    engine = engine_for(store, rules, tmp_path)
    run_day(engine, DUE, run_id="plan-23", now=utc(2026, 11, 22, 12))
    run_day(engine, D(2026, 11, 24), run_id="plan-24", now=utc(2026, 11, 23, 12))
    early = send_touches(engine, pending_ids(engine), run_id="early", now=utc(2026, 11, 24, 0, 30))
    assert early.sent == 0
    state = state_of(store, FOLLOW_UP, DUE)
    assert (state.status, state.reason) == (TouchStatus.SUPPRESSED, "deferred")
    assert "held back at send time (frequency_cap): sent late, on 2026-11-24" in ledger_explain(
        store, state
    )
    # The dispatcher plans the dates in effect, then sends (here at 10:30 in Shanghai).
    run_day(engine, D(2026, 11, 24), run_id="dispatch", now=utc(2026, 11, 24, 2, 30))
    states = {
        s.row.rule_id: s for d in (DUE, D(2026, 11, 24)) for s in Ledger(store).states_for_day(d)
    }
    assert states["complaint-follow-up"].status is TouchStatus.SENT
    assert (states["birthday"].status, states["birthday"].reason) == (
        TouchStatus.SUPPRESSED,
        "frequency_cap",
    )


# --- occasions: validation ---------------------------------------------------------------


def test_occasion_holiday_needs_a_calendar_with_holidays(tmp_path: Path) -> None:
    bad = rule_yaml("greet", dates=["11-23"]) + "    occasion: holiday\n"
    wrong = rule_yaml("greet2", holidays=["mid_autumn"]) + "    occasion: Mid Autumn\n"
    rules = make_rules(tmp_path, None, {"greet.yaml": bad, "greet2.yaml": wrong}, shipped=())
    ruleset = load_rules(rules, TemplateStore(TEMPLATES_DIR))
    errors = sorted(str(e) for e in ruleset.errors)
    bad_line = bad.splitlines().index("    occasion: holiday") + 1
    wrong_line = wrong.splitlines().index("    occasion: Mid Autumn") + 1
    assert errors[0].startswith(f"{rules / 'greet.yaml'}:{bad_line}:15: occasion: holiday ")
    assert f"{rules / 'greet2.yaml'}:{wrong_line}:15: " in errors[1]
    assert errors[1].endswith(
        "'Mid Autumn' has the wrong form (lower-case letters, digits, - or _, starting with a "
        "letter)"
    )
    assert ruleset.rules == []


def test_campaign_occasion_holiday_is_its_schedules_festival(tmp_path: Path) -> None:
    rules = make_rules(tmp_path, None, shipped=())
    (rules / "campaigns").mkdir()
    (rules / "campaigns" / "sf.yaml").write_text(
        campaign_yaml(schedule="spring_festival", occasion="holiday"), encoding="utf-8"
    )
    cron = campaign_yaml(schedule='"0 10 * * 1"', occasion="holiday")
    (rules / "campaigns" / "weekly.yaml").write_text(cron, encoding="utf-8")
    ruleset = load_rules(rules, TemplateStore(TEMPLATES_DIR))
    assert ruleset.by_id("sf").occasion_on(SF) == ("spring_festival", 2027)
    (error,) = [str(e) for e in ruleset.errors]
    line = cron.splitlines().index("occasion: holiday") + 1
    assert error.startswith(f"{rules / 'campaigns' / 'weekly.yaml'}:{line}:11: occasion: holiday")
    # The shipped ones.
    shipped = load_rules(RULES_DIR, TemplateStore(TEMPLATES_DIR))
    assert shipped.by_id("holiday-greeting").occasion_on(SF) == ("spring_festival", 2027)
    assert shipped.by_id("holiday-greeting").occasion_on(D(2026, 9, 25)) == ("mid_autumn", 2026)
    assert shipped.by_id("spring-festival-vip").occasion_on(SF) == ("spring_festival", 2027)
