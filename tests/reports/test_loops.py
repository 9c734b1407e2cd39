"""The managers' report (issue 16): satisfaction, NPS, complaint timeliness, premiums and
churn, tasks per agent and problem customers, each equal to a count taken straight from the
store and the ledger with SQL here; the quarterly period; a CSV of every table, equal to the
page; a task closed in its window counts on time among the service obligations.

The store and the ledger are filled through the real paths: events through the inbox
(``events.inbox.submit``, with the declared event types), the daily run (``run_day``, what
``care run`` does) with the shipped complaint rules and two complaint_received rules of the
test's own (an acknowledgement message, a call-back task for the agent), and the agents'
outcomes through ``run.tasks.complete_task`` (``care task done``)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, update

from caretouch.config import CareConfig
from caretouch.events.inbox import Incoming, submit
from caretouch.ledger.models import Attempt, TouchCurrent, TouchEvent, TouchRow
from caretouch.ledger.tasks import tasks
from caretouch.reports.figures import Period, TaskLife, compute
from caretouch.reports.loops import GRACE_DAYS_DEFAULT, PROBLEMS_LISTED, compute_loops
from caretouch.reports.service_report import build_report, csv_path, tables, write_report
from caretouch.run.day import run_day
from caretouch.run.engine import CareEngine, open_engine
from caretouch.run.tasks import complete_task
from caretouch.schema.migrate import upgrade
from caretouch.signals.churn import assess
from caretouch.store.db import Store, open_store
from caretouch.store.models import Customer, Event, InsurancePolicy
from caretouch.vocab import RiskLevel, TaskOutcome
from conftest import (
    RULES_DIR,
    TEMPLATES_DIR,
    Care,
    cli_url,
    customer_row,
    insert_agents_and_relations,
    load_rows,
    pg_schema_store,
    policy_row,
    utc,
)

NOVEMBER = Period.month("2026-11")
SHANGHAI = ZoneInfo("Asia/Shanghai")
SENT_LIKE = ("sent", "delivered", "undelivered", "bounced")
AGENT_CLOSED = ("done", "no_answer", "declined")
ACK, CALLBACK = "complaint-ack", "complaint-callback"
FOLLOW_UPS = ("complaint-follow-up", "complaint-follow-up-call")

RECEIVED_RULES = f"""version: 1
rules:
  - id: {ACK}
    description: The complaint is acknowledged by text the local day it comes in.
    trigger:
      kind: event
      type: complaint_received
      delay_days: 0
    audience:
      customer.status: active
    channels: [sms]
    template: complaint_ack
    category: service
    priority: 90
    send_time: "09:00"
  - id: {CALLBACK}
    description: Their own agent calls back within three days of the complaint.
    trigger:
      kind: event
      type: complaint_received
      delay_days: 0
    audience:
      all:
        - customer.status: active
        - customer.agent_id: {{is_null: false}}
    channels: [agent_task]
    task:
      kind: call
      brief: callback_brief
      expires_days: 3
    template: complaint_ack
    category: service
    priority: 85
    send_time: "09:00"
    # One touch a day: the acknowledgement goes first, the call the next day.
    defer_days: 2
"""
BRIEF = {
    "zh-CN": "给{{ customer.name }}回电（投诉{{ event.payload.get('case_id') }}）。",
    "zh-TW": "給{{ customer.name }}回電（投訴{{ event.payload.get('case_id') }}）。",
    "en": "Call {{ customer.name }} back (complaint {{ event.payload.get('case_id') }}).",
}
ACK_TEXT = {
    "zh-CN": "您的投诉已收到（{{ event.payload.get('case_id') }}）。回复1-5评价。",
    "zh-TW": "您的投訴已收到（{{ event.payload.get('case_id') }}）。回覆1-5評價。",
    "en": "We received your complaint ({{ event.payload.get('case_id') }}). Reply 1-5.",
}


def local(day: dt.date, hour: int = 8) -> str:
    return dt.datetime.combine(day, dt.time(hour), SHANGHAI).isoformat()


def nov(day: int) -> dt.date:
    return dt.date(2026, 11, day)


class Scenario:
    """A month of complaints, answers, tasks and premiums (see ``fill``)."""

    def __init__(self, store: Store, home: Path) -> None:
        self.store = store
        self.home = home
        rules = home / "rules"
        rules.mkdir()
        for name in (
            "policy.yaml",
            "events.yaml",
            "complaint-follow-up.yaml",
            "complaint-follow-up-call.yaml",
        ):
            shutil.copy(RULES_DIR / name, rules / name)
        (rules / "complaint-received.yaml").write_text(RECEIVED_RULES, encoding="utf-8")
        templates = home / "templates"
        shutil.copytree(TEMPLATES_DIR, templates)
        (templates / "complaint_ack").mkdir()
        for locale, text in ACK_TEXT.items():
            (templates / "complaint_ack" / f"sms.{locale}.txt").write_text(text, encoding="utf-8")
        (templates / "callback_brief").mkdir()
        for locale, text in BRIEF.items():
            brief = templates / "callback_brief" / f"agent_task.{locale}.txt"
            brief.write_text(text, encoding="utf-8")
        self.rules, self.templates = rules, templates
        config = CareConfig(
            store.url, rules, templates, home / "outbox", anchor_file=home / "a.jsonl"
        )
        self.engine: CareEngine = open_engine(config, store=store)
        assert self.engine.ruleset.errors == []
        self.n = 0

    def events(self, *events: dict[str, Any], now: dt.datetime) -> None:
        report = submit(
            self.store,
            [Incoming(e) for e in events],
            source="api",
            now=now,
            event_types=self.engine.ruleset.event_types,
        )
        assert report.dead == [], report.dead

    def event(self, type_: str, customer_id: str, at: str, **payload: Any) -> dict[str, Any]:
        self.n += 1
        return {
            "event_id": f"V{self.n:03d}",
            "type": type_,
            "customer_id": customer_id,
            "occurred_at": at,
            "payload": payload,
        }

    def task_of(self, customer_id: str, rule_id: str) -> int:
        [task] = [
            t.touch_id
            for t in tasks(self.store)
            if t.customer_id == customer_id and t.rule_id == rule_id
        ]
        return task

    def close(
        self, touch_id: int, outcome: TaskOutcome, at: dt.datetime, score: int | None
    ) -> None:
        complete_task(
            self.store,
            str(touch_id),
            outcome,
            by="agent",
            run_id=f"done-{touch_id}",
            now=at,
            satisfaction=score,
        )

    def sms_of(self, customer_id: str, rule_id: str) -> int:
        with self.store.read_session() as session:
            return session.execute(
                select(TouchRow.id).where(
                    TouchRow.customer_id == customer_id, TouchRow.rule_id == rule_id
                )
            ).scalar_one()


def fill(store: Store, home: Path) -> Scenario:
    """K1 (A, agent AG1): complaint on 3 November, acknowledged (the call-back waits a day:
    one touch a day), called back and reached on the 4th (satisfaction 5), resolved on the 5th, the follow-up call done on the 8th
    (satisfaction 4); replied 5 to the acknowledgement. K2 (B, AG1): complaint on the 10th,
    the call-back not answered; still open; a premium lapsed. K3 (C, AG2): complaint on the
    12th, the call-back expired; resolved on the 20th, the follow-up text answered 2. K4 (C,
    no agent): complaint on the 15th, acknowledged, wrote a message back. K5 (B, AG2, no
    consent): complaint on the 16th, not reachable. K6 (A, AG2): resolved on the 20th, the
    call expired. K7 (B, AG1): resolved on the 26th, the call still open. K8: left (inactive).
    Premiums: K1 overdue, K2 lapsed, K3 paid, K6 due in December, K7's marked lapsed. NPS:
    four answers, one out of range. A complaint in October and one in December (the quarter)."""
    insert_agents_and_relations(
        store, agents=[{"agent_id": "AG1", "name": "张伟"}, {"agent_id": "AG2", "name": "李娜"}]
    )
    load_rows(
        store,
        customers=[
            customer_row("K1", tier="A", agent_id="AG1"),
            customer_row("K2", tier="B", agent_id="AG1"),
            customer_row("K3", tier="C", agent_id="AG2"),
            customer_row("K4", tier="C"),
            customer_row(
                "K5", tier="B", agent_id="AG2", consent_sms="false", consent_email="false"
            ),
            customer_row("K6", tier="A", agent_id="AG2"),
            customer_row("K7", tier="B", agent_id="AG1"),
            customer_row("K8", tier="C", status="inactive"),
        ],
        policies=[policy_row(f"P{c}", f"K{c}", start_date="2020-01-15") for c in (1, 2, 3, 6, 7)],
    )
    # The premium schedule (the importer learns these columns in another piece of work).
    schedule = {
        "P1": (nov(10), nov(9), "active"),  # overdue 20 days on the 30th
        "P2": (dt.date(2026, 9, 1), None, "active"),  # unpaid 90 days: lapsed
        "P3": (nov(20), dt.date(2027, 11, 19), "active"),  # paid
        "P6": (dt.date(2026, 12, 15), None, "active"),  # not due yet
        "P7": (dt.date(2026, 8, 1), None, "lapsed"),  # marked lapsed
    }
    with store.session() as session:
        for policy_id, (due, paid, status) in schedule.items():
            session.execute(
                update(InsurancePolicy)
                .where(InsurancePolicy.policy_id == policy_id)
                .values(
                    premium_due_date=due,
                    paid_through=paid,
                    payment_frequency="annual",
                    status=status,
                )
            )
    s = Scenario(store, home)
    later = utc(2026, 12, 31)
    received = {
        "K1": nov(3),
        "K2": nov(10),
        "K3": nov(12),
        "K4": nov(15),
        "K5": nov(16),
    }
    s.events(
        *(
            s.event("complaint_received", c, local(d), case_id=f"CS-{c}", category="billing")
            for c, d in received.items()
        ),
        s.event("complaint_received", "K4", local(dt.date(2026, 10, 20)), case_id="CS-K4-OCT"),
        s.event("complaint_received", "K2", local(dt.date(2026, 12, 2)), case_id="CS-K2-DEC"),
        s.event("complaint_resolved", "K1", local(nov(5)), case_id="CS-K1"),
        s.event("complaint_resolved", "K3", local(nov(20)), case_id="CS-K3"),
        s.event("complaint_resolved", "K6", local(nov(20)), case_id="CS-K6"),
        s.event("complaint_resolved", "K7", local(nov(26)), case_id="CS-K7"),
        s.event("nps_recorded", "K1", local(nov(6)), score=10),
        s.event("nps_recorded", "K3", local(nov(7)), score=9),
        s.event("nps_recorded", "K4", local(nov(8)), score=7),
        s.event("nps_recorded", "K6", local(nov(9)), score=3),
        s.event("nps_recorded", "K7", local(nov(9)), score=11),  # out of range: ignored
        # 1 December 07:00 in Shanghai is 30 November 23:00 UTC: December, locally.
        s.event("nps_recorded", "K2", local(dt.date(2026, 12, 1), 7), score=0),
        now=later,
    )
    for n in range(33):
        day = dt.date(2026, 10, 30) + dt.timedelta(days=n)
        run_day(s.engine, day, run_id=f"run-{day}", now=utc(day.year, day.month, day.day, 3))
        if day == nov(3):
            s.events(
                s.event(
                    "reply_satisfied",
                    "K1",
                    local(day, 14),
                    score=5,
                    touch_id=s.sms_of("K1", ACK),
                    rule_id=ACK,
                ),
                now=utc(2026, 11, 3, 7),
            )
        if day == nov(4):
            s.close(s.task_of("K1", CALLBACK), TaskOutcome.REACHED, utc(2026, 11, 4, 6), 5)
        if day == nov(8):
            task = s.task_of("K1", "complaint-follow-up-call")
            s.close(task, TaskOutcome.REACHED, utc(2026, 11, 8, 8), 4)
        if day == nov(11):
            s.close(s.task_of("K2", CALLBACK), TaskOutcome.NO_ANSWER, utc(2026, 11, 11, 6), None)
        if day == nov(15):
            s.events(
                s.event(
                    "reply_message",
                    "K4",
                    local(day, 15),
                    text="谢谢",
                    touch_id=s.sms_of("K4", ACK),
                    rule_id=ACK,
                ),
                now=utc(2026, 11, 15, 8),
            )
        if day == nov(23):
            s.events(
                s.event(
                    "reply_unsatisfied",
                    "K3",
                    local(day, 16),
                    score=2,
                    touch_id=s.sms_of("K3", "complaint-follow-up"),
                    rule_id="complaint-follow-up",
                    case_id="CS-K3",
                ),
                now=utc(2026, 11, 23, 9),
            )
    with store.session() as session:
        session.execute(
            update(Customer).where(Customer.customer_id == "K8").values(status="inactive")
        )
    return s


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def scenario(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scenario]:
    home = tmp_path_factory.mktemp(f"loops-{request.param}")
    if request.param == "postgres":
        with pg_schema_store() as store:
            yield fill(store, home)
        return
    store = open_store(f"sqlite:///{home / 'care.db'}")
    upgrade(store)
    yield fill(store, home)
    store.dispose()


# -- counts straight from the store and the ledger -------------------------------------------


def bounds(period: Period) -> tuple[dt.datetime, dt.datetime]:
    """The period's local days (every customer here is in Shanghai) as UTC instants."""
    return (
        dt.datetime.combine(period.first, dt.time(), SHANGHAI).astimezone(dt.timezone.utc),
        dt.datetime.combine(period.last + dt.timedelta(days=1), dt.time(), SHANGHAI).astimezone(
            dt.timezone.utc
        ),
    )


def events_in(store: Store, period: Period, *types: str) -> list[Any]:
    start, end = bounds(period)
    with store.read_session() as session:
        return session.execute(
            select(Event.event_id, Event.type, Event.customer_id, Event.payload)
            .where(Event.type.in_(types), Event.occurred_at >= start, Event.occurred_at < end)
            .order_by(Event.occurred_at)
        ).all()


def touches_of(store: Store, *rule_ids: str) -> list[Any]:
    """(touch id, rule, business event id, channel, current status) of the rules' touches."""
    with store.read_session() as session:
        return session.execute(
            select(
                TouchRow.id,
                TouchRow.rule_id,
                TouchRow.event_id,
                func.coalesce(TouchCurrent.channel, TouchRow.channel),
                TouchCurrent.status,
            )
            .join(TouchCurrent, TouchCurrent.touch_id == TouchRow.id)
            .where(TouchRow.rule_id.in_(rule_ids))
        ).all()


def task_rows(store: Store) -> dict[int, dict[str, Any]]:
    """Every task: its assignment's detail, its current status, and its closing event."""
    found: dict[int, dict[str, Any]] = {}
    with store.read_session() as session:
        for touch_id, status, detail, at, current in session.execute(
            select(
                TouchEvent.touch_id,
                TouchEvent.status,
                TouchEvent.detail,
                TouchEvent.at,
                TouchCurrent.status,
            )
            .join(TouchCurrent, TouchCurrent.touch_id == TouchEvent.touch_id)
            .join(Attempt, Attempt.id == TouchEvent.attempt_id)
            .where(Attempt.channel == "agent_task")
            .order_by(TouchEvent.id)
        ):
            row = found.setdefault(touch_id, {"status": current})
            at = at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)
            if status == "assigned":
                row.update(detail)
            if status in AGENT_CLOSED:
                row["closed"] = at.astimezone(SHANGHAI).date()
                row["satisfaction"] = (detail or {}).get("satisfaction")
            if status in (*AGENT_CLOSED, "expired"):
                row.setdefault("ended", at.astimezone(SHANGHAI).date())
    return found


def test_satisfaction_and_nps_equal_the_answers_recorded(scenario: Scenario) -> None:
    store = scenario.store
    loops = compute_loops(store, NOVEMBER, scenario.engine.ruleset)
    replies = events_in(store, NOVEMBER, "reply_satisfied", "reply_unsatisfied")
    first, last = NOVEMBER.first, NOVEMBER.last
    task_scores = [
        t["satisfaction"]
        for t in task_rows(store).values()
        if t.get("satisfaction") is not None and first <= t["closed"] <= last
    ]
    scores = [r.payload["score"] for r in replies] + task_scores
    sat = loops.satisfaction
    assert (sat.from_replies, sat.from_tasks) == (len(replies), len(task_scores))
    assert sat.answers == len(scores) >= 4
    assert sat.average == pytest.approx(sum(scores) / len(scores))
    assert sat.satisfied == sum(1 for s in scores if s >= 4)
    # Response rate: the SMS due in November that went out, and those a reply names.
    start, _ = bounds(NOVEMBER)
    with store.read_session() as session:
        went_out = set(
            session.scalars(
                select(TouchRow.id)
                .join(TouchCurrent, TouchCurrent.touch_id == TouchRow.id)
                .where(
                    TouchRow.occurrence >= first,
                    TouchRow.occurrence <= last,
                    func.coalesce(TouchCurrent.channel, TouchRow.channel) == "sms",
                    TouchCurrent.status.in_(SENT_LIKE),
                )
            )
        )
        named = {
            (p or {}).get("touch_id")
            for p in session.scalars(
                select(Event.payload).where(
                    Event.type.in_(("reply_satisfied", "reply_unsatisfied", "reply_message")),
                    Event.occurred_at >= start,
                )
            )
        }
    assert (sat.asked, sat.answered) == (len(went_out), len(went_out & named))
    assert 0 < sat.answered < sat.asked
    # NPS: promoters minus detractors among the answers of 0-10 recorded in November.
    nps_scores = [e.payload["score"] for e in events_in(store, NOVEMBER, "nps_recorded")]
    valid = [n for n in nps_scores if 0 <= n <= 10]
    nps = loops.nps
    assert (nps.answers, nps.ignored) == (len(valid), len(nps_scores) - len(valid))
    assert nps.score == pytest.approx(
        100 * (sum(n >= 9 for n in valid) - sum(n <= 6 for n in valid)) / len(valid)
    )
    # 1 December 07:00 local (30 November UTC) is December's.
    december = compute_loops(store, Period.month("2026-12"), scenario.engine.ruleset)
    assert december.nps.answers == len(events_in(store, Period.month("2026-12"), "nps_recorded"))
    assert december.nps.answers == 1 and december.nps.detractors == 1
    october = compute_loops(store, Period.month("2026-10"), scenario.engine.ruleset)
    assert october.nps.score is None  # not collected


def test_complaint_timeliness_is_what_the_rules_owe(scenario: Scenario) -> None:
    store = scenario.store
    loops = compute_loops(store, NOVEMBER, scenario.engine.ruleset)
    c = loops.complaints
    received = events_in(store, NOVEMBER, "complaint_received")
    resolved = events_in(store, NOVEMBER, "complaint_resolved")
    with store.read_session() as session:
        active = session.scalar(select(func.count()).where(Customer.status == "active"))
        agents = dict(session.execute(select(Customer.customer_id, Customer.agent_id)).all())
    assert (c.received, c.resolved, c.active_customers) == (len(received), len(resolved), active)
    assert c.rate == pytest.approx(1000 * len(received) / active)
    by_event: dict[str, list[Any]] = defaultdict(list)
    for t in touches_of(store, ACK, CALLBACK, *FOLLOW_UPS):
        by_event[t.event_id].append(t)
    ids = {e.event_id for e in received}
    ack = [t for e in ids for t in by_event[e] if t.rule_id == ACK]
    assert c.acknowledged.owed == len({t.event_id for t in ack})
    assert c.acknowledged.kept == len({t.event_id for t in ack if t[4] in SENT_LIKE})
    assert 0 < c.acknowledged.kept < c.acknowledged.owed  # K5 has no channel
    lives = task_rows(store)
    calls = [t for e in ids for t in by_event[e] if t.rule_id == CALLBACK]
    in_window = {
        t.event_id
        for t in calls
        if t.id in lives
        and "closed" in lives[t.id]
        and lives[t.id]["closed"] <= dt.date.fromisoformat(lives[t.id]["expires"])
    }
    reached = {t.event_id for t in calls if t[4] == "done"}
    assert c.called_back.owed == len({t.event_id for t in calls})
    assert (c.called_back.kept, c.reached) == (len(in_window), len(reached))
    assert c.reached < c.called_back.kept < c.called_back.owed  # no answer; expired
    assert c.no_agent == sum(1 for e in received if not agents[e.customer_id]) == 1
    # Second follow-up: the message went out or the agent closed the task.
    resolved_ids = {e.event_id for e in resolved}
    follow = [t for e in resolved_ids for t in by_event[e] if t.rule_id in FOLLOW_UPS]
    done = {t.event_id for t in follow if t[4] in SENT_LIKE or t[4] in AGENT_CLOSED}
    assert (c.followed_up.owed, c.followed_up.kept) == (
        len({t.event_id for t in follow}),
        len(done),
    )
    assert 0 < c.followed_up.kept < c.followed_up.owed
    # Open at the end of the 30th: the last word on each case by then.
    _, end = bounds(NOVEMBER)
    with store.read_session() as session:
        rows = session.execute(
            select(Event.customer_id, Event.type, Event.payload)
            .where(Event.type.like("complaint_%"), Event.occurred_at < end)
            .order_by(Event.occurred_at)
        ).all()
    state = {
        (r.customer_id, r.payload["case_id"]): r.type
        in ("complaint_received", "complaint_reopened")
        for r in rows
    }
    assert c.open_cases == sum(state.values()) > 0
    assert c.open_customers == len({k[0] for k, v in state.items() if v})
    # Each measure says which rule defines it.
    assert {m for m, _ in c.definitions} == {"acknowledged", "called back", "second follow-up"}


def test_premiums_churn_and_tasks_per_agent(scenario: Scenario) -> None:
    store = scenario.store
    loops = compute_loops(store, NOVEMBER, scenario.engine.ruleset)
    p = loops.premiums
    end = NOVEMBER.last
    with store.read_session() as session:
        policies = session.execute(
            select(
                InsurancePolicy.status,
                InsurancePolicy.premium_due_date,
                InsurancePolicy.paid_through,
            ).where(InsurancePolicy.premium_due_date.is_not(None))
        ).all()
        statuses = Counter(session.scalars(select(Customer.status)))
    scheduled = [r for r in policies if r.status in ("active", "lapsed")]
    unpaid = [
        r
        for r in scheduled
        if (r.paid_through is None or r.paid_through < r.premium_due_date)
        and r.premium_due_date <= end
    ]
    lapsed = [
        r
        for r in scheduled
        if r.status == "lapsed"
        or (r in unpaid and (end - r.premium_due_date).days > GRACE_DAYS_DEFAULT)
    ]
    assert (p.scheduled, p.lapsed, p.overdue) == (
        len(scheduled),
        len(lapsed),
        len([r for r in unpaid if r not in lapsed]),
    )
    assert p.lapse_rate == pytest.approx(len(lapsed) / len(scheduled)) and p.overdue > 0
    # A longer grace: the 90-day-old premium is only overdue.
    longer = compute_loops(store, NOVEMBER, scenario.engine.ruleset, grace_days=120)
    assert (longer.premiums.lapsed, longer.premiums.overdue) == (p.lapsed - 1, p.overdue + 1)
    high = [
        r
        for r in assess(store, scenario.engine.ruleset.policy, end).values()
        if r.level is RiskLevel.HIGH
    ]
    assert p.high_risk == len(high) > 0
    assert (p.customers, p.active_customers, p.left) == (
        sum(statuses.values()),
        statuses["active"],
        sum(statuses.values()) - statuses["active"],
    )
    # Tasks per agent: those due in November, at their status now.
    expected: dict[str, Counter[str]] = defaultdict(Counter)
    for t in task_rows(store).values():
        due = dt.date.fromisoformat(t["due"])
        if not NOVEMBER.first <= due <= end:
            continue
        row = expected[t["agent_id"]]
        row["due"] += 1
        row["open" if t["status"] == "assigned" else t["status"]] += 1
        # Overdue: still assigned at the end of the 30th (all are due by then).
        row["overdue"] += "ended" not in t or t["ended"] > end
    got = {a.agent_id: +a.counts for a in loops.agents}
    assert {a: +c for a, c in expected.items()} == got
    assert sum(c["done"] for c in got.values()) >= 2 and sum(c["expired"] for c in got.values())
    assert sum(c["open"] for c in got.values()) == sum(c["overdue"] for c in got.values()) == 1


def test_problem_customers_say_what_was_done_and_the_outcome(scenario: Scenario) -> None:
    store = scenario.store
    loops = compute_loops(store, NOVEMBER, scenario.engine.ruleset)
    end = NOVEMBER.last
    expected = {e.customer_id for e in events_in(store, NOVEMBER, "complaint_received")}
    expected |= {e.customer_id for e in events_in(store, NOVEMBER, "reply_unsatisfied")}
    with store.read_session() as session:
        expected |= set(
            session.scalars(
                select(InsurancePolicy.customer_id).where(
                    InsurancePolicy.premium_due_date <= end,
                    InsurancePolicy.status.in_(("active", "lapsed")),
                    (InsurancePolicy.paid_through.is_(None))
                    | (InsurancePolicy.paid_through < InsurancePolicy.premium_due_date),
                )
            )
        )
    expected |= {
        c
        for c, r in assess(store, scenario.engine.ruleset.policy, end).items()
        if r.level is RiskLevel.HIGH
    }
    listed = {p.customer_id: p for p in loops.problems}
    assert set(listed) == expected and loops.problems_total == len(expected) <= PROBLEMS_LISTED
    k1, k3 = listed["K1"], listed["K3"]
    # What was done: their touches due in November, with the tasks' outcomes.
    assert any(d.startswith(f"{CALLBACK} 2026-11-03 (agent_task): done") for d in k1.done)
    assert any("satisfaction 5" in d for d in k1.done)
    assert k1.cases == ["CS-K1: closed"] and listed["K2"].cases == ["CS-K2: open"]
    # The outcome: the latest score by the end of November (K1's task score of the 8th
    # came after the reply of the 3rd; K3 answered 2).
    assert (k1.latest_score, k3.latest_score) == (4, 2)
    assert any(w.startswith("premium lapsed") for w in listed["K2"].why)
    order = [p.risk_score for p in loops.problems]
    assert order == sorted(order, reverse=True)


def test_a_task_closed_in_its_window_is_an_obligation_kept(scenario: Scenario) -> None:
    """The complaint follow-up call (a service rule whose touches are tasks): closed by the
    agent in its window on time, still assigned waiting, expired missed."""
    store = scenario.store
    figures = compute(store, NOVEMBER, scenario.engine.ruleset)
    [calls] = [o for o in figures.obligations if o.rule_id == "complaint-follow-up-call"]
    with store.read_session() as session:
        statuses = Counter(
            session.scalars(
                select(TouchCurrent.status)
                .join(TouchRow, TouchRow.id == TouchCurrent.touch_id)
                .where(
                    TouchRow.rule_id == "complaint-follow-up-call",
                    TouchRow.occurrence >= NOVEMBER.first,
                    TouchRow.occurrence <= NOVEMBER.last,
                )
            )
        )
    assert dict(calls.outcomes) == {
        "on_time": sum(statuses[s] for s in AGENT_CLOSED),
        "waiting": statuses["assigned"],
        "missed": statuses["expired"],
    }
    assert calls.outcomes["on_time"] and calls.outcomes["waiting"] and calls.outcomes["missed"]
    assert [m[2] for m in calls.missed] == ["expired"]
    assert "as a task, on time when the agent closes it" in calls.definition
    # The complaint follow-up figure counts the calls too.
    assert figures.follow_ups["on_time"] >= calls.outcomes["on_time"]


# -- the quarter ---------------------------------------------------------------------------


def test_quarters() -> None:
    q = Period.quarter("2026Q4")
    assert (q.kind, q.first, q.last) == ("quarter", dt.date(2026, 10, 1), dt.date(2026, 12, 31))
    assert q.previous() == Period.quarter("2026Q3")
    assert Period.quarter("2027Q1").previous().label == "2026Q4"
    assert Period.quarter("2024Q1").last == dt.date(2024, 3, 31)
    assert Period.of_quarter(dt.date(2026, 5, 31)).label == "2026Q2"
    assert len(Period.quarter("2026Q3").days) == 92
    for bad in ("2026Q5", "2026Q0", "2026-Q4", "2026q4", "26Q4", "2026Q", "Q4"):
        with pytest.raises(ValueError, match="not a quarter"):
            Period.quarter(bad)


def test_the_quarter_holds_its_months(scenario: Scenario) -> None:
    ruleset = scenario.engine.ruleset
    quarter = compute_loops(scenario.store, Period.quarter("2026Q4"), ruleset)
    months = [
        compute_loops(scenario.store, Period.month(f"2026-{m}"), ruleset)
        for m in ("10", "11", "12")
    ]
    assert quarter.complaints.received == sum(m.complaints.received for m in months)
    assert quarter.complaints.received == len(
        events_in(scenario.store, Period.quarter("2026Q4"), "complaint_received")
    )
    assert quarter.satisfaction.answers == sum(m.satisfaction.answers for m in months)
    assert quarter.nps.answers == sum(m.nps.answers for m in months)


# -- the CSVs and the page ------------------------------------------------------------------


class _Grid(HTMLParser):
    """The cells of each table with an id, as text."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table = dict(attrs).get("id")
            if self._table:
                self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._table and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _same(page: str, csv_value: str) -> bool:
    if page == "–":
        return csv_value == ""
    plain = page.replace(",", "").rstrip("%")
    try:
        return float(plain) == pytest.approx(float(csv_value))
    except ValueError:
        return page == csv_value


def test_every_table_is_a_csv_equal_to_the_page(scenario: Scenario, tmp_path: Path) -> None:
    store = scenario.store
    out = tmp_path / "r" / "care-report-2026-11.html"
    page, report = write_report(
        store,
        NOVEMBER,
        tmp_path / "unused",
        generated_at=utc(2026, 12, 5, 6),
        output=out,
        ruleset=scenario.engine.ruleset,
    )
    names = list(tables(report))
    for table in (
        "kpis",
        "by-rule",
        "by-channel",
        "by-tier",
        "obligations",
        "service-per-tier",
        "satisfaction",
        "nps",
        "complaints",
        "premiums-churn",
        "tasks-per-agent",
        "problem-customers",
    ):
        assert table in names
    assert [c.url for c in report.csv_files] == [str(csv_path(page, n)) for n in names]
    files = {n: tmp_path / "r" / f"care-report-2026-11-{n}.csv" for n in names}
    assert all(f.is_file() for f in files.values())
    grid = _Grid()
    grid.feed(out.read_text(encoding="utf-8"))
    loops = report.loops
    assert loops is not None
    for name in (
        "satisfaction",
        "nps",
        "complaints",
        "premiums-churn",
        "tasks-per-agent",
        "problem-customers",
    ):
        rows = list(csv.reader(io.StringIO(files[name].read_text(encoding="utf-8"))))
        shown = grid.tables[f"t-{name}"]
        assert shown[0] == rows[0]  # the header
        assert len(shown) == len(rows) > 1, name
        for page_row, csv_row in zip(shown[1:], rows[1:], strict=True):
            assert all(_same(p, c) for p, c in zip(page_row, csv_row, strict=True)), (
                name,
                page_row,
                csv_row,
            )
    # The CSV's numbers are the figures.
    complaints = {r[0]: r for r in csv.reader(io.StringIO(files["complaints"].read_text()))}
    assert complaints["acknowledged"][1:3] == [
        str(loops.complaints.acknowledged.kept),
        str(loops.complaints.acknowledged.owed),
    ]
    by_rule = {r[0]: r for r in csv.reader(io.StringIO(files["by-rule"].read_text()))}
    assert by_rule[ACK][1] == str(report.now.count(rule_id=ACK))
    agents = {r[0]: r for r in csv.reader(io.StringIO(files["tasks-per-agent"].read_text()))}
    assert agents["AG1"][1] == str(
        next(a for a in loops.agents if a.agent_id == "AG1").counts["due"]
    )
    # No names, phone numbers or addresses in the problem customers (ids only).
    text = files["problem-customers"].read_text(encoding="utf-8")
    assert "王芳" not in text and "@" not in text and not re.search(r"\+\d{8,}", text)
    assert {r[0] for r in list(csv.reader(io.StringIO(text)))[1:]} == {
        p.customer_id for p in loops.problems
    }
    # The page's key figures include satisfaction and the complaint timeliness.
    html = out.read_text(encoding="utf-8")
    card = re.search(r'id="kpi-acknowledged".*?class="value">([^<]*)<', html, re.S)
    assert card is not None and card.group(1) == (
        f"{loops.complaints.acknowledged.kept} of {loops.complaints.acknowledged.owed}"
    )


def test_care_report_quarter_writes_the_page_and_its_csvs(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'care.db'}")
    upgrade(store)
    (tmp_path / "home").mkdir()
    s = fill(store, tmp_path / "home")
    care = Care(tmp_path, store_url=cli_url(store), rules=s.rules, templates=s.templates)
    out = tmp_path / "q" / "care-report-2026Q4.html"
    result = care("report", "--quarter", "2026Q4", "--output", str(out))
    assert result.exit_code == 0, result.output
    report = build_report(store, Period.quarter("2026Q4"), s.engine.ruleset)
    loops = report.loops
    assert loops is not None
    assert result.output.startswith("quarter 2026Q4: ")
    assert (
        f"{loops.complaints.received:,} complaint(s): "
        f"{loops.complaints.acknowledged.kept}/{loops.complaints.acknowledged.owed} acknowledged"
    ) in result.output
    assert f"satisfaction {loops.satisfaction.average:.2f}" in result.output
    wrote = [
        line[len("wrote ") :] for line in result.output.splitlines() if line.startswith("wrote ")
    ]
    assert wrote[0] == str(out) and len(wrote) == 1 + len(tables(report))
    assert all(Path(w).is_file() for w in wrote)
    assert "Care report, quarter 2026Q4 (2026-10-01 to 2026-12-31)" in out.read_text()
    bad = care("report", "--quarter", "2026Q5")
    assert bad.exit_code == 2 and "not a quarter" in bad.output
    both = care("report", "--quarter", "2026Q4", "--month", "2026-11")
    assert both.exit_code == 2 and "give one of" in both.output
    store.dispose()


def test_a_task_is_kept_when_closed_by_its_expiry_day() -> None:
    """The window of a task is its due day to its expiry day, local: closed on the expiry
    day it is on time; the day after (before the run expired it), late; never, not kept."""
    due, expires = nov(10), nov(13)

    def life(*changes: tuple[str, dt.date]) -> TaskLife:
        found = TaskLife(1, "r", "C1", "E1", due, "AG1", due, expires)
        found.changes = [(s, d, {}, utc(d.year, d.month, d.day)) for s, d in changes]
        return found

    assert life(("assigned", due), ("no_answer", expires)).closed_in_window
    assert not life(("assigned", due), ("done", expires + dt.timedelta(days=1))).closed_in_window
    assert not life(("assigned", due), ("expired", expires + dt.timedelta(days=1))).closed_in_window
    still = life(("assigned", due), ("done", nov(20)))
    assert (still.status_at(nov(19)), still.status_at(nov(20)), still.status) == (
        "assigned",
        "done",
        "done",
    )


def test_problem_customers_past_the_limit_are_counted(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    import caretouch.reports.loops as loops_module

    everyone = compute_loops(scenario.store, NOVEMBER, scenario.engine.ruleset)
    monkeypatch.setattr(loops_module, "PROBLEMS_LISTED", 2)
    report = build_report(scenario.store, NOVEMBER, scenario.engine.ruleset)
    loops = report.loops
    assert loops is not None
    assert [p.customer_id for p in loops.problems] == [p.customer_id for p in everyone.problems[:2]]
    assert loops.problems_total == everyone.problems_total > 2
    more = loops.problems_total - 2
    assert f"... and {more:,} more." in report.html(generated_at=utc(2026, 12, 5, 6))
