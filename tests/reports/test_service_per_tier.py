"""The service delivered per tier and service level (``care report``) and the load per
agent (``care forecast``): small stores with tiers, levels, agents and group clients, ledgers
written by the daily run and ``care task done``, and figures asserted exactly."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

import pytest
from agent_tasks import task_dirs

from caretouch.config import CareConfig
from caretouch.ledger import Ledger
from caretouch.ledger.tasks import tasks
from caretouch.reports.figures import GROUP_COVERAGE_TARGET, Period, TierService, compute
from caretouch.reports.forecast import NO_AGENT, forecast
from caretouch.reports.service_report import build_report, summary_line
from caretouch.run.day import run_day
from caretouch.run.engine import CareEngine, open_engine
from caretouch.run.tasks import complete_task
from caretouch.store.db import Store
from caretouch.vocab import TaskOutcome, TouchStatus
from conftest import Care, cli_url, customer_row, insert_agents_and_relations, load_rows, utc

NOVEMBER = Period.month("2026-11")


def task_rule(channels: str) -> str:
    """A birthday task (a call) for every tier, open for 30 days after its due day."""
    return f"""version: 1
rules:
  - id: birthday-task
    description: The agent calls the customer on their birthday.
    trigger:
      kind: anniversary
      field: customer.birth_date
    channels: {channels}
    template: birthday
    task:
      kind: call
      brief: birthday_brief
      expires_days: 30
    category: care
    priority: 30
"""


def engine_for(store: Store, tmp_path: Path, channels: str) -> CareEngine:
    rules, templates = task_dirs(tmp_path, task_rule(channels))
    config = CareConfig(
        store.url, rules, templates, tmp_path / "outbox", anchor_file=tmp_path / "a.jsonl"
    )
    engine = open_engine(config, store=store)
    assert engine.ruleset.errors == []
    return engine


def run(engine: CareEngine, day: dt.date) -> None:
    # 03:00 UTC is 11:00 in Shanghai, after the rule's 09:00: the day's touches go out.
    run_day(engine, day, run_id=f"run-{day}", now=utc(day.year, day.month, day.day, 3))


def done(store: Store, customer_id: str, at: dt.datetime) -> None:
    """The agent's ``care task done`` of the customer's task (reached)."""
    [task] = [
        t
        for t in tasks(store, statuses=frozenset({TouchStatus.ASSIGNED}))
        if t.customer_id == customer_id
    ]
    complete_task(
        store, str(task.touch_id), TaskOutcome.REACHED, by="agent", run_id=f"done-{at}", now=at
    )


@pytest.fixture
def served(store: Store, tmp_path: Path) -> tuple[Store, CareEngine]:
    """Tier A: A1's task done on 6 November, A2 (no agent) a text on 15 November,
    delivered; A3's task of 20 November still open. Tier B: B1's task of 1 October done on
    the 3rd; B2 (group) never contacted. Tier C: C1 (group) unreachable, C3's task of 28
    November done on 2 December, C2 (group) inactive. Tier D: D1 (group) a text on 25
    November. Levels as shipped: A premium (30 days), B value_added (90), C basic (180), D
    minimal (no cadence)."""
    insert_agents_and_relations(
        store,
        agents=[{"agent_id": "AG1", "name": "张伟"}, {"agent_id": "AG2", "name": "李娜"}],
    )
    load_rows(
        store,
        customers=[
            customer_row("A1", tier="A", agent_id="AG1", birth_date="1980-11-05"),
            customer_row("A2", tier="A", birth_date="1980-11-15"),
            customer_row("A3", tier="A", agent_id="AG1", birth_date="1980-11-20"),
            customer_row("B1", tier="B", agent_id="AG2", birth_date="1980-10-01"),
            customer_row("B2", tier="B", segment="group", birth_date="1980-12-10"),
            customer_row(
                "C1",
                tier="C",
                segment="group",
                birth_date="1980-11-10",
                consent_sms="false",
                consent_email="false",
            ),
            customer_row(
                "C2", tier="C", segment="group", status="inactive", birth_date="1980-11-12"
            ),
            customer_row("C3", tier="C", agent_id="AG2", birth_date="1980-11-28"),
            customer_row("D1", tier="D", segment="group", birth_date="1980-11-25"),
        ],
    )
    engine = engine_for(store, tmp_path, "[agent_task, sms]")
    run(engine, dt.date(2026, 10, 1))
    done(store, "B1", utc(2026, 10, 3, 2))
    for day in (5, 10, 12, 15, 20, 25, 28):
        run(engine, dt.date(2026, 11, day))
        if day == 5:
            done(store, "A1", utc(2026, 11, 6, 2))
    [text] = [
        s for s in Ledger(store).states_for_day(dt.date(2026, 11, 15)) if s.row.customer_id == "A2"
    ]
    assert text.status is TouchStatus.SENT and text.channel == "sms"
    Ledger(store).append(
        text.id, TouchStatus.DELIVERED, expected=TouchStatus.SENT, run_id="webhook",
        now=utc(2026, 11, 15, 4),
    )  # fmt: skip
    done(store, "C3", utc(2026, 12, 2, 2))  # after the month: open at its end
    return store, engine


def as_tuple(t: TierService) -> tuple[object, ...]:
    return (
        t.level,
        t.cadence_days,
        t.customers,
        (t.messages, t.messages_sent, t.messages_delivered),
        (t.tasks, t.tasks_assigned, t.tasks_done),
        t.within_cadence,
        t.tasks_overdue,
    )


def test_service_per_tier_and_level(served: tuple[Store, CareEngine]) -> None:
    store, engine = served
    figures = compute(store, NOVEMBER, engine.ruleset)
    by_tier = {t.tier: t for t in figures.service}
    assert list(by_tier) == ["A", "B", "C", "D"]
    assert {k: as_tuple(t) for k, t in by_tier.items()} == {
        # A1 done on the 6th and A2's text of the 15th are within 30 days of the 30th; A3's
        # task, due on the 20th, is still open: overdue.
        "A": ("premium", 30, 3, (1, 1, 1), (2, 2, 1), 2, 1),
        # B1's task done on 3 October is 58 days before the 30th, within 90; B2 never.
        "B": ("value_added", 90, 2, (0, 0, 0), (0, 0, 0), 1, 0),
        # C1 had no way to be reached, nor C2 (inactive, and the rule has no audience to
        # leave it out): two message touches, suppressed. C3's task was done on 2 December
        # (done now), so on 30 November it was open past its due day and no contact yet.
        # C2 is inactive: not among the customers.
        "C": ("basic", 180, 2, (2, 0, 0), (1, 1, 1), 0, 1),
        "D": ("minimal", None, 1, (1, 1, 0), (0, 0, 0), 0, 0),
    }
    assert [round(100 * (t.cadence_kept or 0), 1) for t in figures.service[:3]] == [
        66.7,
        50.0,
        0.0,
    ]
    assert by_tier["D"].cadence_kept is None
    # Group clients: B2, C1, D1 (C2 is inactive); D1 was texted in November.
    assert (figures.group.clients, figures.group.contacted) == (3, 1)
    assert figures.group.rate is not None and figures.group.rate >= GROUP_COVERAGE_TARGET
    assert not figures.group.below

    # October: B1's task done on the 3rd, within B's 90 days; no group client contacted.
    october = compute(store, Period.month("2026-10"), engine.ruleset)
    by_tier = {t.tier: t for t in october.service}
    assert as_tuple(by_tier["B"]) == ("value_added", 90, 2, (0, 0, 0), (1, 1, 1), 1, 0)
    assert (by_tier["A"].within_cadence, by_tier["A"].tasks_overdue) == (0, 0)
    assert (october.group.clients, october.group.contacted) == (3, 0)
    assert october.group.below

    # The cadence's edge: B1, last contacted on 3 October, is within B's 90 days up to
    # 1 January (90 days later) and out of it from the 2nd.
    for end, within in ((dt.date(2027, 1, 1), 1), (dt.date(2027, 1, 2), 0)):
        period = Period("week", f"to {end}", end - dt.timedelta(days=6), end)
        [b] = [t for t in compute(store, period, engine.ruleset).service if t.tier == "B"]
        assert b.within_cadence == within, end


def test_the_report_shows_the_service_and_the_coverage(served: tuple[Store, CareEngine]) -> None:
    store, engine = served
    report = build_report(store, NOVEMBER, engine.ruleset)
    page = report.html(generated_at=utc(2026, 12, 5, 6))
    service = page.split('<table id="service">', 1)[1]
    row = service.split('<tr data-key="A"><td>A</td>', 1)[1].split("</tr>", 1)[0]
    assert row == (
        "<td>premium</td><td>30 days</td><td>3</td><td>1</td><td>1</td><td>1</td><td>2</td>"
        '<td>2</td><td>1</td><td class="kept">66.7% (2 of 3)</td><td class="overdue">1</td>'
    )
    assert '<td class="kept">no cadence</td>' in page  # D, minimal
    coverage = page.split('<p id="group-coverage"', 1)[1].split("</p>", 1)[0]
    assert "33.3% (1 of 3)" in coverage and "meets the target of ≥ 30%" in coverage
    assert "+33.3 pts" in coverage  # October: 0 of 3
    line = summary_line(report)
    assert "3 task(s) (2 done, 2 overdue)" in line
    assert "cadence kept A 66.7%, B 50.0%, C 0.0%" in line
    assert line.endswith("group clients contacted 33.3%")

    october = build_report(store, Period.month("2026-10"), engine.ruleset)
    coverage = october.html(generated_at=utc(2026, 11, 5, 6)).split('id="group-coverage"', 1)[1]
    assert coverage.startswith(' class="below">')
    assert "0.0% (0 of 3)</strong>, BELOW the target of ≥ 30%" in coverage
    assert summary_line(october).endswith("group clients contacted 0.0% (below 30%)")

    # A week is not compared with the month's target.
    week = build_report(store, Period.week("2026-W48"), engine.ruleset)
    coverage = week.html(generated_at=utc(2026, 11, 30, 6)).split('id="group-coverage"', 1)[1]
    assert "not compared" in coverage and 'class="below"' not in coverage[:20]


@pytest.fixture
def festival(sqlite_store: Store, tmp_path: Path) -> tuple[Store, CareEngine]:
    """Birthday calls in the first days of December: three of 张伟's customers, one of
    李娜's, one customer without an agent."""
    insert_agents_and_relations(
        sqlite_store,
        agents=[{"agent_id": "AG1", "name": "张伟"}, {"agent_id": "AG2", "name": "李娜"}],
    )
    load_rows(
        sqlite_store,
        customers=[
            customer_row("E1", tier="A", agent_id="AG1", birth_date="1980-12-01"),
            customer_row("E2", tier="A", agent_id="AG1", birth_date="1980-12-02"),
            customer_row("E3", tier="C", agent_id="AG2", birth_date="1980-12-03"),
            customer_row("E4", tier="D", birth_date="1980-12-04"),
            customer_row("E5", tier="B", agent_id="AG1", birth_date="1980-12-05"),
            customer_row("E6", tier="B", birth_date="1980-12-30"),  # outside the window
        ],
    )
    return sqlite_store, engine_for(sqlite_store, tmp_path, "[agent_task]")


def test_forecast_per_tier_and_level_and_per_agent(festival: tuple[Store, CareEngine]) -> None:
    store, engine = festival
    fc = forecast(store, engine.ruleset, dt.date(2026, 12, 1), 7, history=Ledger(store))
    assert [(t.tier, t.level, t.messages, t.tasks, t.tasks_assign) for t in fc.tiers] == [
        ("A", "premium", 0, 2, 2),
        ("B", "value_added", 0, 1, 1),
        ("C", "basic", 0, 1, 1),
        ("D", "minimal", 0, 1, 0),  # E4 has no agent: no one to give the task to
    ]
    assert [(a.agent_id, a.name, a.tasks, a.assign, dict(a.by_kind)) for a in fc.agents] == [
        ("AG1", "张伟", 3, 3, {"call": 3}),
        ("AG2", "李娜", 1, 1, {"call": 1}),
        (NO_AGENT, None, 1, 0, {}),
    ]


def test_forecast_cli_shows_the_agents_load(
    care: Care, festival: tuple[Store, CareEngine], tmp_path: Path
) -> None:
    store, _ = festival
    care.store_url = cli_url(store)
    care.rules, care.templates = tmp_path / "rules", tmp_path / "templates"
    args = ("forecast", "--from", "2026-12-01", "--days", "7")
    result = care(*args, "--format", "csv", "--by", "agent")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [
        (r["agent_id"], r["name"], r["tasks"], r["assign"], r["assign_call"]) for r in rows
    ] == [
        ("AG1", "张伟", "3", "3", "3"),
        ("AG2", "李娜", "1", "1", "1"),
        ("", "", "1", "0", "0"),
    ]
    tiers = care(*args, "--format", "csv", "--by", "tier")
    assert next(iter(csv.DictReader(io.StringIO(tiers.stdout)))) == {
        "tier": "A",
        "level": "premium",
        "messages": "0",
        "messages_send": "0",
        "tasks": "2",
        "tasks_assign": "2",
    }
    table = care(*args)
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert "Tasks per agent" in lines and "By tier and service level" in lines
    assert any(line.split() == ["AG1", "张伟", "3", "3", "3", "0", "0"] for line in lines), lines
    assert any(line.split() == ["(no", "agent)", "1", "0", "0", "0", "0"] for line in lines)
    page = tmp_path / "forecast.html"
    assert care(*args, "--format", "html", "--output", str(page)).exit_code == 0
    agents = page.read_text(encoding="utf-8").split('<table id="by-agent">', 1)[1]
    assert "<tr><td>AG2 李娜</td><td>1</td><td>1</td><td>1</td><td>0</td><td>0</td></tr>" in agents
