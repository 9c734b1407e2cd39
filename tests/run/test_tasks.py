"""Tasks for agents: an ``agent_task`` rule plans a touch that the send step assigns to the
customer's agent; the agent's outcome and the expiry close it, chained in the ledger."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import pytest
from agent_tasks import add_agents, task_dirs, task_rule

from caretouch.config import CareConfig
from caretouch.errors import TaskError
from caretouch.ledger import Ledger
from caretouch.ledger.audit import verify
from caretouch.ledger.tasks import tasks
from caretouch.render.templates import TemplateStore
from caretouch.rules.loader import load_rules
from caretouch.run.day import run_day
from caretouch.run.engine import CareEngine, open_engine
from caretouch.run.tasks import complete_task, open_tasks
from caretouch.store.db import Store
from caretouch.vocab import Channel, TaskOutcome, TouchStatus
from conftest import RULES_DIR, customer_row, load_rows, utc

DAY = dt.date(2026, 11, 23)
NOON = utc(2026, 11, 23, 12, 0)  # 20:00 in Shanghai


def engine_for(store: Store, tmp_path: Path, rule_text: str) -> CareEngine:
    rules, templates = task_dirs(tmp_path, rule_text)
    config = CareConfig(store.url, rules, templates, tmp_path / "outbox")
    engine = open_engine(config, store=store)
    assert engine.ruleset.errors == []
    return engine


def by_customer(store: Store) -> dict[str, object]:
    return {s.row.customer_id: s for s in Ledger(store).states_for_day(DAY)}


def test_call_task_is_assigned_to_the_customers_agent(store: Store, tmp_path: Path) -> None:
    add_agents(store, "A1")
    load_rows(
        store,
        customers=[
            customer_row("WITH", agent_id="A1"),
            customer_row("NOAGENT"),
            customer_row("NOCONSENT", agent_id="A1", consent_sms="false"),
            customer_row("NOPHONE", agent_id="A1", phone=""),
        ],
    )
    engine = engine_for(store, tmp_path, task_rule("call"))
    report = run_day(engine, DAY, run_id="t1", now=NOON)
    assert (report.assigned, report.sent) == (1, 0)
    states = by_customer(store)
    assert states["WITH"].status is TouchStatus.ASSIGNED
    for customer, why in (
        ("NOAGENT", "agent_task: no agent"),
        ("NOCONSENT", "agent_task: a call needs phone consent (consent_sms)"),
        ("NOPHONE", "agent_task: a call needs the customer's phone"),
    ):
        assert states[customer].status is TouchStatus.SUPPRESSED, customer
        assert states[customer].reason == "no_contact", customer
        [suppressed] = Ledger(store).history(states[customer].id)[-1:]
        assert any(why in line for line in suppressed.detail["explain"]), suppressed.detail
    [attempt] = Ledger(store).attempts(states["WITH"].id)
    assert (attempt.channel, attempt.transport, attempt.recipient) == (
        "agent_task",
        "agent_task",
        "A1",
    )
    assert attempt.body == "给王芳打电话，祝生日快乐（2026-11-23）。"
    assert attempt.template_id == "birthday_brief"
    assert not (tmp_path / "outbox").exists() or not list((tmp_path / "outbox").rglob("*.json"))
    [task] = tasks(store)
    assert (task.agent_id, task.kind, task.due, task.expires) == (
        "A1",
        "call",
        DAY,
        DAY + dt.timedelta(days=7),
    )
    # A rerun assigns nothing again: the task is a touch with its idempotency key.
    again = run_day(engine, DAY, run_id="t2", now=NOON)
    assert again.assigned == 0
    assert len(tasks(store)) == 1
    assert verify(store).ok


def test_visit_needs_no_channel_consent_but_marketing_needs_marketing_consent(
    sqlite_store: Store, tmp_path: Path
) -> None:
    add_agents(sqlite_store, "A1")
    load_rows(
        sqlite_store,
        customers=[
            customer_row(
                "QUIET", agent_id="A1", consent_sms="false", consent_email="false", phone=""
            ),
        ],
    )
    engine = engine_for(sqlite_store, tmp_path, task_rule("visit"))
    assert run_day(engine, DAY, run_id="t1", now=NOON).assigned == 1
    assert by_customer(sqlite_store)["QUIET"].status is TouchStatus.ASSIGNED

    marketing = task_rule("gift").replace("category: care", "category: marketing")
    other = tmp_path / "m"
    other.mkdir()
    engine = engine_for(sqlite_store, other, marketing.replace("birthday-task", "gift-task"))
    report = run_day(engine, DAY, run_id="t2", now=NOON)
    assert report.assigned == 0
    [gift] = [s for s in Ledger(sqlite_store).states_for_day(DAY) if s.row.rule_id == "gift-task"]
    assert (gift.status, gift.reason) == (TouchStatus.SUPPRESSED, "no_contact")
    explain = Ledger(sqlite_store).history(gift.id)[-1].detail["explain"]
    assert any("needs marketing consent" in line for line in explain), explain


def test_a_message_channel_after_agent_task_serves_customers_without_agent(
    sqlite_store: Store, tmp_path: Path
) -> None:
    add_agents(sqlite_store, "A1")
    load_rows(sqlite_store, customers=[customer_row("WITH", agent_id="A1"), customer_row("NO")])
    rule = task_rule("gift", channels="[agent_task, sms]", extra="    template: birthday\n")
    engine = engine_for(sqlite_store, tmp_path, rule)
    report = run_day(engine, DAY, run_id="t1", now=NOON)
    assert (report.assigned, report.sent) == (1, 1)
    states = by_customer(sqlite_store)
    assert (states["WITH"].channel, states["NO"].channel) == ("agent_task", "sms")
    [sms] = Ledger(sqlite_store).attempts(states["NO"].id)
    assert sms.template_id == "birthday"


def test_an_agent_missing_from_the_store_is_no_contact_at_send_time(
    sqlite_store: Store, tmp_path: Path
) -> None:
    load_rows(sqlite_store, customers=[customer_row("C1", agent_id="GONE")])
    engine = engine_for(sqlite_store, tmp_path, task_rule("visit"))
    report = run_day(engine, DAY, run_id="t1", now=NOON)
    assert report.assigned == 0
    state = by_customer(sqlite_store)["C1"]
    assert (state.status, state.reason) == (TouchStatus.SUPPRESSED, "no_contact")
    last = Ledger(sqlite_store).history(state.id)[-1]
    assert last.detail["explain"] == ["agent GONE is not in the store"]


def test_outcome_is_recorded_once_and_chained(store: Store, tmp_path: Path) -> None:
    add_agents(store, "A1")
    load_rows(store, customers=[customer_row("C1", agent_id="A1")])
    engine = engine_for(store, tmp_path, task_rule("call"))
    run_day(engine, DAY, run_id="t1", now=NOON)
    [task] = tasks(store)
    later = NOON + dt.timedelta(hours=2)
    done = complete_task(
        store,
        str(task.touch_id),
        TaskOutcome.REACHED,
        by="agent:A1",
        run_id="cli:x",
        now=later,
        satisfaction=5,
        note="happy; call back on +8613812348000",
    )
    assert done.touch_id == task.touch_id
    last = Ledger(store).history(task.touch_id)[-1]
    assert (last.status, last.reason) == ("done", "reached")
    assert last.detail["by"] == "agent:A1" and last.detail["satisfaction"] == 5
    assert "+8613812348000" not in last.detail["note"]  # masked like any free text
    assert tasks(store) == []  # no longer open
    with pytest.raises(TaskError, match="is done, not open"):
        complete_task(store, task.touch_key, TaskOutcome.NO_ANSWER, by="x", run_id="r", now=later)
    with pytest.raises(TaskError, match="no task"):
        complete_task(store, "999999", TaskOutcome.REACHED, by="x", run_id="r", now=later)
    assert [e.status for e in Ledger(store).history(task.touch_id)][-2:] == ["assigned", "done"]
    assert verify(store).ok


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        (TaskOutcome.VISITED, "done"),
        (TaskOutcome.NO_ANSWER, "no_answer"),
        (TaskOutcome.DECLINED, "declined"),
    ],
)
def test_outcome_maps_to_status(
    sqlite_store: Store, tmp_path: Path, outcome: TaskOutcome, status: str
) -> None:
    add_agents(sqlite_store, "A1")
    load_rows(sqlite_store, customers=[customer_row("C1", agent_id="A1")])
    engine = engine_for(sqlite_store, tmp_path, task_rule("visit"))
    run_day(engine, DAY, run_id="t1", now=NOON)
    [task] = tasks(sqlite_store)
    complete_task(sqlite_store, str(task.touch_id), outcome, by="me", run_id="r", now=NOON)
    assert Ledger(sqlite_store).history(task.touch_id)[-1].status == status


def test_bad_outcome_input_writes_nothing(sqlite_store: Store, tmp_path: Path) -> None:
    add_agents(sqlite_store, "A1")
    load_rows(sqlite_store, customers=[customer_row("C1", agent_id="A1")])
    run_day(engine_for(sqlite_store, tmp_path, task_rule("visit")), DAY, run_id="t1", now=NOON)
    [task] = tasks(sqlite_store)
    ref = str(task.touch_id)
    for kwargs, problem in (
        ({"note": "x" * 1001}, "at most 1000"),
        ({"satisfaction": 6}, "1 to 5"),
        ({"by": " "}, "--by"),
    ):
        args = {"by": "me", **kwargs}
        with pytest.raises(TaskError, match=problem):
            complete_task(sqlite_store, ref, TaskOutcome.REACHED, run_id="r", now=NOON, **args)  # type: ignore[arg-type]
    assert [t.touch_id for t in tasks(sqlite_store)] == [task.touch_id]


def test_open_task_expires_in_the_daily_run(sqlite_store: Store, tmp_path: Path) -> None:
    add_agents(sqlite_store, "A1", "A2")
    load_rows(
        sqlite_store,
        customers=[customer_row("C1", agent_id="A1"), customer_row("C2", agent_id="A2")],
    )
    engine = engine_for(sqlite_store, tmp_path, task_rule("visit", extra=""))
    run_day(engine, DAY, run_id="t1", now=NOON)
    first, second = tasks(sqlite_store)
    complete_task(
        sqlite_store, str(first.touch_id), TaskOutcome.VISITED, by="A1", run_id="r", now=NOON
    )
    # Still open on its expiry day; expired the day after.
    run_day(engine, DAY + dt.timedelta(days=7), run_id="t2", now=NOON + dt.timedelta(days=7))
    assert [t.touch_id for t in tasks(sqlite_store)] == [second.touch_id]
    run_day(engine, DAY + dt.timedelta(days=8), run_id="t3", now=NOON + dt.timedelta(days=8))
    assert tasks(sqlite_store) == []
    assert Ledger(sqlite_store).history(second.touch_id)[-1].status == "expired"
    assert Ledger(sqlite_store).history(first.touch_id)[-1].status == "done"
    assert verify(sqlite_store).ok


def test_open_tasks_listing_filters_and_masks(sqlite_store: Store, tmp_path: Path) -> None:
    add_agents(sqlite_store, "A1", "A2")
    load_rows(
        sqlite_store,
        customers=[customer_row("C1", agent_id="A1"), customer_row("C2", agent_id="A2")],
    )
    run_day(engine_for(sqlite_store, tmp_path, task_rule("visit")), DAY, run_id="t1", now=NOON)
    rows = open_tasks(sqlite_store, DAY + dt.timedelta(days=1), agent_id="A2")
    assert [r["customer_id"] for r in rows] == ["C2"]
    assert rows[0]["phone"] == "+86 138****8000" and rows[0]["overdue"] is True
    assert open_tasks(sqlite_store, DAY, due_before=DAY) == []
    assert len(open_tasks(sqlite_store, DAY, due_before=DAY + dt.timedelta(days=1))) == 2
    assert open_tasks(sqlite_store, DAY)[0]["overdue"] is False


# -- care validate ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule_text", "line", "problem"),
    [
        (
            task_rule().replace("    task:\n      kind: call\n      brief: birthday_brief\n", ""),
            8,
            "channel agent_task needs a task",
        ),
        (
            task_rule(channels="[sms]", extra="    template: birthday\n"),
            10,
            "task: is for the agent_task channel",
        ),
        (task_rule("phone"), 10, "'phone' is not one of"),
        (
            task_rule().replace("brief: birthday_brief", "brief: birthday_brif"),
            11,
            "unknown template",
        ),
        (task_rule(channels="[agent_task, email]"), 3, "needs a template"),
    ],
)
def test_validate_refuses_bad_task_rules(
    tmp_path: Path, rule_text: str, line: int, problem: str
) -> None:
    rules, templates = task_dirs(tmp_path, rule_text)
    ruleset = load_rules(rules, TemplateStore(templates))
    messages = [str(e) for e in ruleset.errors]
    assert any(f"task.yaml:{line}:" in m and problem in m for m in messages), messages


def test_validate_refuses_a_brief_using_an_unknown_variable(tmp_path: Path) -> None:
    rules, templates = task_dirs(tmp_path, task_rule())
    (templates / "birthday_brief" / "agent_task.en.txt").write_text("Call {{ customer.phone }}")
    ruleset = load_rules(rules, TemplateStore(templates))
    assert any("agent_task.en.txt" in str(e) for e in ruleset.errors), ruleset.errors
    assert Channel.AGENT_TASK.value == "agent_task"


# -- two agents' desks at once (PostgreSQL, separate processes) -----------------------------


def _completer(url: str, schema: str | None, ref: str, outcome: str, go: Any, out: Any) -> None:
    from ledger_processes import open_store_at

    store = open_store_at(url, schema)
    go.wait(30)
    try:
        complete_task(
            store, ref, TaskOutcome(outcome), by=outcome, run_id=f"cli:{outcome}", now=NOON
        )
        out.put((outcome, "recorded"))
    except TaskError as exc:
        out.put((outcome, f"refused: {exc}"))


def test_two_processes_completing_one_task_record_one_outcome(
    pg_store: Store, tmp_path: Path
) -> None:
    from ledger_processes import run_processes, where

    add_agents(pg_store, "A1")
    load_rows(pg_store, customers=[customer_row("C1", agent_id="A1")])
    run_day(engine_for(pg_store, tmp_path, task_rule("visit")), DAY, run_id="t1", now=NOON)
    [task] = tasks(pg_store)
    url, schema = where(pg_store)
    results, codes = run_processes(
        _completer,
        [(url, schema, str(task.touch_id), o) for o in ("visited", "declined", "no_answer")],
    )
    assert codes == [0, 0, 0]
    recorded = [name for name, value in results.items() if value == "recorded"]
    assert len(recorded) == 1, results
    closing = [e for e in Ledger(pg_store).history(task.touch_id) if e.status != "assigned"]
    closing = [e for e in closing if e.reason in ("visited", "declined", "no_answer")]
    assert [e.reason for e in closing] == recorded
    assert verify(pg_store).ok


def test_a_task_left_in_sending_by_a_crash_is_assigned_once_after_recovery(
    sqlite_store: Store, tmp_path: Path
) -> None:
    from caretouch.run.day import plan_and_record
    from caretouch.run.prepare import prepare_chunk
    from caretouch.run.recover import SENDING_LEASE, recover_in_flight

    add_agents(sqlite_store, "A1")
    load_rows(sqlite_store, customers=[customer_row("C1", agent_id="A1")])
    engine = engine_for(sqlite_store, tmp_path, task_rule("visit"))
    ids = plan_and_record(engine, DAY, run_id="plan", now=NOON)
    # Claimed (``sending``), then the process died before the channel's answer was recorded.
    chunk = prepare_chunk(engine, ids, now=NOON, capacity_use={})
    assert len(engine.ledger.claim_many(chunk.claims, run_id="dead", now=NOON)) == 1
    assert tasks(sqlite_store) == []  # claimed, not assigned: no task yet
    later = NOON + SENDING_LEASE + dt.timedelta(minutes=1)
    assert recover_in_flight(engine, run_id="recover", now=later).retry == 1
    assert run_day(engine, DAY, run_id="again", now=later).assigned == 1
    [task] = tasks(sqlite_store)
    assert [a.attempt_no for a in Ledger(sqlite_store).attempts(task.touch_id)] == [1, 2]
    statuses = [e.status for e in Ledger(sqlite_store).history(task.touch_id)]
    assert statuses.count("assigned") == 1
    assert verify(sqlite_store).ok


def test_a_task_counts_against_the_caps_like_a_message(sqlite_store: Store, tmp_path: Path) -> None:
    add_agents(sqlite_store, "A1")
    load_rows(sqlite_store, customers=[customer_row("C1", agent_id="A1")])
    rule = task_rule("visit").replace("priority: 30", "priority: 40")
    rules, templates = task_dirs(tmp_path, rule)
    shutil.copy(RULES_DIR / "birthday.yaml", rules / "birthday.yaml")  # an SMS, priority 30
    engine = open_engine(
        CareConfig(sqlite_store.url, rules, templates, tmp_path / "outbox"), store=sqlite_store
    )
    report = run_day(engine, DAY, run_id="t1", now=NOON)
    assert (report.assigned, report.sent) == (1, 0)
    by_rule = {s.row.rule_id: s for s in Ledger(sqlite_store).states_for_day(DAY)}
    assert by_rule["birthday-task"].status is TouchStatus.ASSIGNED
    assert (by_rule["birthday"].status, by_rule["birthday"].reason) == (
        TouchStatus.SUPPRESSED,
        "frequency_cap",
    )
    # What later plans count against the caps (per day, per 7 days) holds the task.
    contacts = Ledger(sqlite_store).contacts(["C1"], DAY, DAY)
    assert [(c.channel, c.handled) for c in contacts if c.key.startswith("birthday-task")] == [
        ("agent_task", True)
    ]


def test_preview_shows_the_agents_brief(sqlite_store: Store, tmp_path: Path) -> None:
    from caretouch.reports.preview import preview_touch

    add_agents(sqlite_store, "A1")
    load_rows(sqlite_store, customers=[customer_row("C1", agent_id="A1"), customer_row("C2")])
    rule = task_rule("gift", channels="[agent_task, sms]", extra="    template: birthday\n")
    engine = engine_for(sqlite_store, tmp_path, rule)
    text = preview_touch(engine, "birthday-task", "C1", DAY, None)
    assert "channel: agent_task, locale zh-CN, to agent A1" in text
    assert text.endswith("给王芳打电话，祝生日快乐（2026-11-23）。")
    sms = preview_touch(engine, "birthday-task", "C2", DAY, None)
    assert "channel: sms" in sms and "+86 138****8000" in sms
