"""The agents' daily digest: each agent's open and overdue tasks by email (the outbox here),
once per agent and day, and the tasks overdue for N days in their manager's digest."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from agent_tasks import task_dirs, task_rule
from ledger_processes import run_processes, where
from sqlalchemy import select, update

from caretouch.channels.base import OutboundMessage, SendResult
from caretouch.channels.outbox import OutboxTransport
from caretouch.config import CareConfig
from caretouch.ledger.tasks import tasks
from caretouch.run.day import run_day
from caretouch.run.digest import LEASE, run_digests, send_digests
from caretouch.run.engine import CareEngine, open_engine
from caretouch.run.tasks import complete_task
from caretouch.store import digests as records
from caretouch.store.db import Store
from caretouch.store.models import AgentDigest, InsurancePolicy, TaskEscalation
from caretouch.vocab import Channel, DigestStatus, Outcome, TaskOutcome
from conftest import (
    customer_row,
    event_row,
    insert_agents_and_relations,
    load_rows,
    policy_row,
    utc,
)

DAY = dt.date(2026, 11, 24)
NOW = utc(2026, 11, 23, 23, 30)  # 07:30 on the 24th in Shanghai

AGENTS = [
    # A1 reports to M1; A2 has no manager; A3 has no email (reports to M1); A4 has no task.
    {"agent_id": "A1", "name": "李娜", "email": "li.na@agency.example", "manager_id": "M1"},
    {"agent_id": "A2", "name": "Ann Lee", "email": "ann.lee@agency.example"},
    {"agent_id": "A3", "name": "赵磊", "email": None, "manager_id": "M1"},
    {"agent_id": "A4", "name": "周杰", "email": "zhou.jie@agency.example", "manager_id": "M1"},
    {"agent_id": "M1", "name": "陈经理", "email": "chen.mgr@agency.example"},
]
CUSTOMERS = [
    # (id, agent, birthday (the task's due day), name, locale)
    ("C-OLD", "A1", "11-20", "李雷", "zh-CN"),
    ("C-MID", "A1", "11-23", "韩梅梅", "zh-CN"),
    ("C-NEW", "A1", "11-24", "王芳", "zh-CN"),
    ("C-ANN", "A2", "11-20", "Bob Smith", "en"),
    ("C-A3", "A3", "11-23", "钱多多", "zh-CN"),
]


def engine_for(store: Store, tmp_path: Path, **config: Any) -> CareEngine:
    rules, templates = task_dirs(tmp_path, task_rule("call"))
    settings = CareConfig(store.url, rules, templates, tmp_path / "outbox", **config)
    engine = open_engine(settings, store=store)
    assert engine.ruleset.errors == []
    return engine


def with_tasks(store: Store, tmp_path: Path, **config: Any) -> CareEngine:
    """The agents above, and a call task per customer, assigned on their birthday."""
    insert_agents_and_relations(store, agents=AGENTS)
    load_rows(
        store,
        customers=[
            customer_row(cid, agent_id=agent, birth_date=f"1980-{md}", name=name, locale=locale)
            for cid, agent, md, name, locale in CUSTOMERS
        ],
    )
    engine = engine_for(store, tmp_path, **config)
    for day in (20, 23, 24):
        run_day(engine, dt.date(2026, 11, day), run_id=f"d{day}", now=utc(2026, 11, day, 12))
    assert len(tasks(store)) == len(CUSTOMERS)
    return engine


def mails(tmp_path: Path) -> dict[str, dict[str, Any]]:
    """The digests in the outbox, by recipient (each recipient at most once)."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((tmp_path / "outbox").rglob("digest_*.json")):
        mail = json.loads(path.read_text(encoding="utf-8"))
        assert mail["to"] not in found, f"two digests to {mail['to']}"
        found[mail["to"]] = mail
    return found


def digest(engine: CareEngine, run_id: str = "r1", **kw: Any) -> Any:
    return run_digests(engine, DAY, run_id=run_id, now=NOW, **kw)


def test_digests_land_in_the_outbox_sorted_with_overdue_marked(
    store: Store, tmp_path: Path
) -> None:
    engine = with_tasks(store, tmp_path)
    summary = digest(engine)
    assert summary.ok, summary.lines()
    assert (summary.agents, summary.digests, summary.sent) == (3, 3, 3)  # A1, A2, M1
    assert summary.skipped_no_email == ["A3"]
    out = mails(tmp_path)
    assert set(out) == {"li.na@agency.example", "ann.lee@agency.example", "chen.mgr@agency.example"}
    a1 = out["li.na@agency.example"]
    assert a1["subject"] == "2026年11月24日任务提醒：待办3项，逾期2项"
    body = a1["body"]
    # Overdue first (the most overdue at the top), each marked; the customer's name and id,
    # the phone masked, the brief's first line.
    assert body.index("C-OLD") < body.index("C-MID") < body.index("C-NEW")
    [old] = [t.touch_id for t in tasks(store) if t.customer_id == "C-OLD"]
    assert f"#{old} 【逾期4天】电话 · 李雷（C-OLD，+86 138****8000）" in body
    assert "【逾期1天】电话 · 韩梅梅（C-MID" in body
    assert "【逾期" not in body.split("C-MID")[1]  # C-NEW is due today: not overdue
    assert "给李雷打电话，祝生日快乐（2026-11-20）。" in body
    assert "+8613812348000" not in body + a1["html"]
    assert "您团队的逾期任务" not in body  # A1 manages nobody
    assert "<strong" in a1["html"] and "4天" in a1["html"]
    # A2's customers read English: so does A2's digest.
    a2 = out["ann.lee@agency.example"]
    assert a2["subject"] == "Your tasks for 24 November 2026: 1 open, 1 overdue"
    assert "Your open tasks on 24 November 2026 (1 open, 1 overdue)" in a2["body"]
    assert "[OVERDUE 4 days] call · Bob Smith (C-ANN" in a2["body"]
    # M1 has no task of their own: the digest is the escalation section alone, with the
    # customer's id only.
    m1 = out["chen.mgr@agency.example"]
    assert "今天您本人没有待办任务" in m1["body"]
    section = m1["body"].split("您团队的逾期任务（逾期3天及以上）：")[1]
    assert f"李娜（A1） · 客户C-OLD · 电话（任务{old}）" in section and "逾期4天" in section
    assert "C-MID" not in section and "李雷" not in section
    # A4 (no task) got nothing; the summary says what happened.
    assert "zhou.jie@agency.example" not in out
    assert summary.escalations == 1 and summary.escalations_recorded == 1
    assert [(u.task, u.agent_id, u.reason) for u in summary.unescalated] == [
        (tasks(store, agent_id="A2")[0].touch_id, "A2", "the agent has no manager")
    ]


def test_a_rerun_sends_nothing_twice(store: Store, tmp_path: Path) -> None:
    engine = with_tasks(store, tmp_path)
    first = digest(engine, "r1")
    assert first.sent == 3
    before = sorted((tmp_path / "outbox").rglob("*.json"))
    again = digest(engine, "r2")
    assert (again.sent, again.already_sent, again.ok) == (0, 3, True)
    assert again.escalations_recorded == 0
    assert sorted((tmp_path / "outbox").rglob("*.json")) == before
    with store.read_session() as session:
        rows = session.execute(select(AgentDigest.agent_id, AgentDigest.status)).all()
        escalations = session.scalars(select(TaskEscalation.touch_id)).all()
    assert sorted(rows) == [("A1", "sent"), ("A2", "sent"), ("M1", "sent")]
    assert len(escalations) == 1
    # Two days later is a new digest: C-OLD's escalation stays recorded once, C-MID's and
    # C-A3's (A3 has no email, their manager is told all the same) are new.
    later = run_digests(engine, DAY + dt.timedelta(days=2), run_id="r3", now=NOW)
    assert (later.sent, later.escalations, later.escalations_recorded) == (3, 3, 2)
    with store.read_session() as session:
        assert len(session.scalars(select(TaskEscalation.touch_id)).all()) == 3


@pytest.mark.parametrize(("after", "escalated"), [(4, 1), (5, 0)])
def test_escalation_after_n_days_and_not_before(
    sqlite_store: Store, tmp_path: Path, after: int, escalated: int
) -> None:
    engine = with_tasks(sqlite_store, tmp_path, escalate_after_days=after)
    summary = digest(engine)
    assert summary.escalations == escalated
    manager = mails(tmp_path).get("chen.mgr@agency.example")
    assert (manager is not None) == bool(escalated)  # M1 has nothing else to be told
    # A2's task is 4 days overdue: unescalated (no manager) only once it is due to escalate.
    assert len(summary.unescalated) == escalated


def test_no_open_task_no_digest_and_a_closed_task_leaves_it(
    sqlite_store: Store, tmp_path: Path
) -> None:
    engine = with_tasks(sqlite_store, tmp_path)
    [ann] = tasks(sqlite_store, agent_id="A2")
    complete_task(sqlite_store, str(ann.touch_id), TaskOutcome.REACHED, by="t", run_id="t", now=NOW)
    summary = digest(engine)
    assert "ann.lee@agency.example" not in mails(tmp_path)
    assert summary.agents == 2 and summary.unescalated == []


def test_dry_run_renders_but_claims_and_sends_nothing(sqlite_store: Store, tmp_path: Path) -> None:
    engine = with_tasks(sqlite_store, tmp_path)
    summary = digest(engine, dry_run=True)
    assert summary.sent == 3 and summary.ok
    assert mails(tmp_path) == {}
    with sqlite_store.read_session() as session:
        assert session.scalars(select(AgentDigest)).all() == []


def _claim(store: Store, agent_id: str, at: dt.datetime) -> records.DigestRecord:
    got = records.claim_new(
        store, agent_id, DAY, run_id="crashed", now=at, tasks=1, overdue=1, escalations=0
    )
    assert isinstance(got, records.Claimed)
    return got.record


def test_a_crash_between_claim_and_send_is_not_lost(sqlite_store: Store, tmp_path: Path) -> None:
    engine = with_tasks(sqlite_store, tmp_path)
    # A2's claim is fresh (another run is sending it); A1's is older than the lease and
    # nothing went out; M1's is old too, but its mail did go out before the crash.
    _claim(sqlite_store, "A2", NOW - dt.timedelta(minutes=1))
    _claim(sqlite_store, "A1", NOW - LEASE - dt.timedelta(minutes=1))
    m1 = _claim(sqlite_store, "M1", NOW - LEASE - dt.timedelta(minutes=1))
    from caretouch.run.digest import collect, render

    [m1_digest] = [d for d in collect(sqlite_store, DAY, escalate_after=3)[0] if d.agent_id == "M1"]
    outbox = engine.transports[Channel.EMAIL]
    outbox.send(render(engine.templates, m1_digest, DAY, escalate_after=3, attempt=m1.attempts))

    summary = digest(engine)
    assert summary.in_progress == 1  # A2: not ours to send
    assert summary.sent == 1  # A1: claimed again and sent, as attempt 2
    assert summary.already_sent == 1  # M1: found in the outbox, settled sent
    assert summary.escalations_recorded == 1  # with M1's escalation
    assert summary.ok
    assert set(mails(tmp_path)) == {"li.na@agency.example", "chen.mgr@agency.example"}
    a1 = records.find(sqlite_store, "A1", DAY)
    assert a1 is not None and (a1.status, a1.attempts) == (DigestStatus.SENT, 2)


class CannotTell(OutboxTransport):
    """Like SendGrid: it cannot say whether it took a message."""

    def reconcile(self, message: OutboundMessage) -> SendResult | None:
        return None


class Refusing(OutboxTransport):
    def send(self, message: OutboundMessage) -> SendResult:
        return SendResult(Outcome.RETRYABLE_FAILURE, detail="SendGrid 503: busy")


def test_a_crashed_send_the_provider_cannot_confirm_is_unknown_and_a_failure(
    sqlite_store: Store, tmp_path: Path
) -> None:
    with_tasks(sqlite_store, tmp_path)
    _claim(sqlite_store, "A1", NOW - LEASE - dt.timedelta(minutes=1))
    (tmp_path / "e2").mkdir()
    engine = engine_for(sqlite_store, tmp_path / "e2")
    transport = CannotTell(Channel.EMAIL, tmp_path / "outbox")
    summary = send_digests(
        sqlite_store,
        engine.templates,
        transport,
        DAY,
        run_id="r",
        clock=lambda: NOW,
        escalate_after=3,
        agent_ids=frozenset({"A1"}),
    )
    assert not summary.ok and summary.sent == 0
    assert summary.failed[0][0] == "A1" and "unknown" in summary.failed[0][1]
    a1 = records.find(sqlite_store, "A1", DAY)
    assert a1 is not None and a1.status is DigestStatus.UNKNOWN
    assert mails(tmp_path) == {}


def test_a_refused_send_fails_the_run_and_a_later_run_sends_it(
    sqlite_store: Store, tmp_path: Path
) -> None:
    engine = with_tasks(sqlite_store, tmp_path)
    refusing = Refusing(Channel.EMAIL, tmp_path / "outbox")
    summary = send_digests(
        sqlite_store,
        engine.templates,
        refusing,
        DAY,
        run_id="r1",
        clock=lambda: NOW,
        escalate_after=3,
    )
    assert not summary.ok and len(summary.failed) == 3
    assert summary.escalations_recorded == 0  # the manager was not told
    again = digest(engine, "r2")
    assert again.ok and again.sent == 3 and again.escalations_recorded == 1


def test_a_digest_taken_over_meanwhile_is_not_settled_twice(
    sqlite_store: Store, tmp_path: Path
) -> None:
    with_tasks(sqlite_store, tmp_path)
    record = _claim(sqlite_store, "A1", NOW)
    with sqlite_store.session() as session:
        session.execute(update(AgentDigest).values(attempts=2))
    applied, _ = records.settle(sqlite_store, record, DigestStatus.SENT, now=NOW)
    assert not applied


def _digest_process(
    url: str, schema: str | None, workdir: str, name: str, go: Any, out: Any
) -> None:
    from ledger_processes import open_store_at

    from caretouch.config import CareConfig
    from caretouch.run.digest import run_digests
    from caretouch.run.engine import open_engine

    rules = Path(workdir) / "rules"
    templates = Path(workdir) / "templates"
    config = CareConfig(url, rules, templates, Path(workdir) / "outbox")
    engine = open_engine(config, store=open_store_at(url, schema))
    go.wait(30)
    summary = run_digests(engine, DAY, run_id=name, now=NOW)
    out.put((name, summary.as_dict()))


def test_two_processes_send_one_digest_per_agent(pg_store: Store, tmp_path: Path) -> None:
    with_tasks(pg_store, tmp_path)
    url, schema = where(pg_store)
    results, codes = run_processes(
        _digest_process, [(url, schema, str(tmp_path), name) for name in ("w1", "w2")]
    )
    assert codes == [0, 0], results
    sent = sum(r["sent"] for r in results.values())
    assert sent == 3
    assert all(r["failed"] == [] for r in results.values())
    # Each saw the three digests due, and each was sent, found sent or in progress.
    for r in results.values():
        assert r["digests"] == 3 and r["sent"] + r["already_sent"] + r["in_progress"] == 3
    assert len(mails(tmp_path)) == 3  # one file per agent: no recipient twice
    with pg_store.read_session() as session:
        assert session.scalars(select(TaskEscalation.touch_id)).all().__len__() == 1


def test_the_digest_is_in_the_locale_most_of_the_agents_customers_have(
    sqlite_store: Store,
) -> None:
    from caretouch.run.digest import agent_locales

    customers = {
        "TW": ["en", "en", "zh-TW", "zh-TW", "zh-TW"],
        "TIE": ["en", "zh-TW"],  # a tie: the first of zh-CN, zh-TW, en
        "CN": ["zh-CN", "en"],
        "EN": ["en"],
    }
    load_rows(
        sqlite_store,
        customers=[
            customer_row(f"{agent}{i}", agent_id=agent, locale=locale)
            for agent, locales in customers.items()
            for i, locale in enumerate(locales)
        ],
    )
    assert agent_locales(sqlite_store, ["TW", "TIE", "CN", "EN", "NONE"]) == {
        "TW": "zh-TW",
        "TIE": "zh-TW",
        "CN": "zh-CN",
        "EN": "en",
        "NONE": "zh-CN",  # no customers: the default
    }


@pytest.mark.parametrize(
    ("brief", "expected"),
    [
        ("\n\n  Call  Wang Fang\ttoday.\nBring the card.", "Call Wang Fang today."),
        ("", "birthday-task"),
        ("   \n", "birthday-task"),
        ("x" * 200, "x" * 119 + "…"),
    ],
)
def test_each_task_is_summed_up_by_the_brief_s_first_line(brief: str, expected: str) -> None:
    from caretouch.run.digest import first_line

    assert first_line(brief, "birthday-task") == expected


def test_why_an_overdue_task_is_not_escalated(sqlite_store: Store, tmp_path: Path) -> None:
    from caretouch.store.models import Agent

    engine = with_tasks(sqlite_store, tmp_path)
    [old] = [t.touch_id for t in tasks(sqlite_store) if t.customer_id == "C-OLD"]

    def reasons(day: dt.date) -> dict[int, str]:
        summary = run_digests(engine, day, run_id=str(day), now=NOW, dry_run=True)
        return {u.task: u.reason for u in summary.unescalated if u.agent_id == "A1"}

    with sqlite_store.session() as session:
        session.execute(update(Agent).where(Agent.agent_id == "A1").values(manager_id="GONE"))
    assert reasons(DAY) == {old: "manager GONE is not in the agents table"}
    with sqlite_store.session() as session:
        session.execute(update(Agent).where(Agent.agent_id == "A1").values(manager_id="A1"))
    assert reasons(DAY) == {old: "the agent has no manager"}
    with sqlite_store.session() as session:
        session.execute(update(Agent).where(Agent.agent_id == "A1").values(manager_id="M1"))
        session.execute(update(Agent).where(Agent.agent_id == "M1").values(email=None))
    summary = run_digests(engine, DAY, run_id="r", now=NOW)
    assert "M1" in summary.skipped_no_email and summary.ok
    assert {u.task: u.reason for u in summary.unescalated if u.agent_id == "A1"} == {
        old: "manager M1 has no email"
    }
    assert summary.escalations_recorded == 0


def test_the_agent_s_customers_at_risk_of_leaving_are_listed(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """A4 has no task but a customer with a premium overdue and an open complaint (high
    risk): A4 gets a digest listing them, with the signals; a customer at low risk (out of
    cadence only) is not listed."""
    engine = with_tasks(sqlite_store, tmp_path)
    load_rows(
        sqlite_store,
        customers=[
            customer_row("C-RISK", agent_id="A4", name="孙丽", birth_date="1980-03-01"),
            customer_row("C-CALM", agent_id="A4", name="周平", birth_date="1980-03-02"),
        ],
        policies=[policy_row("P-RISK", "C-RISK")],
        events=[
            event_row(
                "K-RISK",
                "C-RISK",
                type="complaint_received",
                occurred_at="2026-11-20T10:00:00+08:00",
                payload=json.dumps({"case_id": "CS9"}),
            )
        ],
    )
    with sqlite_store.session() as session:
        session.execute(
            update(InsurancePolicy)
            .where(InsurancePolicy.policy_id == "P-RISK")
            .values(premium_due_date=dt.date(2026, 11, 1), payment_frequency="annual")
        )
    summary = digest(engine)
    assert summary.ok, summary.lines()
    a4 = mails(tmp_path)["zhou.jie@agency.example"]
    body = a4["body"]
    assert "今天您本人没有待办任务" in body
    assert "您的客户中有1位有流失风险" in body
    assert "孙丽（C-RISK，B类） · 高风险（7分） · 保费逾期未缴、投诉未结、超期未联系" in body
    assert "C-CALM" not in body + a4["html"]
    assert "孙丽" in a4["html"] and "保费逾期未缴" in a4["html"]
