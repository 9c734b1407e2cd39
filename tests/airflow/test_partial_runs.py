"""DAG runs without a broken rule: the healthy rules' touches go out, the summary names the
broken rules and counts what the ledger recorded, and the run ends failed (partial)."""

from __future__ import annotations

import datetime as dt
import shutil
from collections import Counter
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import airflow_env
from caretouch.ledger import Ledger
from caretouch.reports.run_summary import stored_summaries
from caretouch.schema.migrate import upgrade
from caretouch.store.db import Store, open_store
from caretouch.vocab import TouchStatus
from conftest import RULES_DIR, TEMPLATES_DIR, customer_row, load_rows

pytestmark = pytest.mark.airflow
ROOT = Path(__file__).resolve().parents[2]
BROKEN_AT = "thank-you.yaml:15:5: unknown field 'prority'"


@pytest.fixture(scope="module")
def airflow_db() -> Path:
    return airflow_env.migrate()


def midday_zone() -> tuple[str, dt.date]:
    """A zone where it is about midday now (the DAGs read the real clock), and its date."""
    now = dt.datetime.now(dt.timezone.utc)
    offset = 12 - now.hour
    zone = f"Etc/GMT{-offset:+d}" if offset else "UTC"
    return zone, now.astimezone(ZoneInfo(zone)).date()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A store of customers whose birthday is today, the thank-you rule broken, and the
    environment a worker has."""
    zone, today = midday_zone()
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    path = rules / "thank-you.yaml"
    text = path.read_text(encoding="utf-8")
    assert "    priority: 70\n" in text
    path.write_text(text.replace("    priority: 70\n", "    prority: 70\n"), encoding="utf-8")
    store_url = f"sqlite:///{tmp_path / 'care.db'}"
    store = open_store(store_url)
    upgrade(store)
    born = f"1980-{today:%m-%d}" if (today.month, today.day) != (2, 29) else "1980-02-29"
    load_rows(
        store,
        customers=[
            *(
                customer_row(f"C{i}", birth_date=born, phone=f"+86138{i:08d}", timezone=zone)
                for i in range(3)
            ),
            customer_row("NOPE", birth_date=born, consent_sms="false", consent_email="false"),
        ],
    )
    for key, value in {
        "CARE_STORE_URL": store_url,
        "CARE_RULES_DIR": str(rules),
        "CARE_TEMPLATES_DIR": str(TEMPLATES_DIR),
        "CARE_OUTBOX_DIR": str(tmp_path / "outbox"),
        "CARE_ANCHOR_FILE": str(tmp_path / "anchors.jsonl"),
        "CARE_REPORTS_DIR": str(tmp_path / "reports"),
    }.items():
        monkeypatch.setenv(key, value)
    return {"store": store, "today": today, "tmp": tmp_path}


def test_a_daily_run_sends_the_healthy_rules_then_fails_with_its_summary(
    env: dict[str, Any],
) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from caretouch.airflow.daily import _engine, plan_shards, send_shard, summarise_run

    store: Store = env["store"]
    today: dt.date = env["today"]
    run_id = "airflow:care_daily:manual__partial"
    # The bodies of care_daily's plan, send and summarise tasks, in their order.
    shards, count, _ = plan_shards(_engine(), today, run_id)
    assert count == 3 and shards == [[0, 1]]
    reports = [send_shard(shard, run_id) for shard in shards]
    with pytest.raises(AirflowFailException, match=r"care_daily for .* ran partial: 2 rule error"):
        summarise_run(reports, run_id=run_id, kind="care_daily", day=today)
    states = Counter(s.status for s in Ledger(store).states_for_day(today))
    assert states == {TouchStatus.SENT: 3, TouchStatus.SUPPRESSED: 1}
    [stored] = stored_summaries(env["tmp"] / "reports", today)
    assert stored["partial"] is True and BROKEN_AT in stored["rule_errors"][1]
    # The summary counts what the run recorded, plan-time suppressions included.
    recorded = Ledger(store).run_counts(run_id)
    assert {k: stored["this_run"][k] for k in recorded} == recorded
    assert (recorded["planned"], recorded["sent"], recorded["suppressed"]) == (3, 3, 1)


def test_the_events_plan_task_plans_then_fails(env: dict[str, Any]) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from caretouch.airflow.events import plan
    from caretouch.events.inbox import Incoming, submit

    store: Store = env["store"]
    now = dt.datetime.now(dt.timezone.utc)
    event = {
        "event_id": "X1",
        "type": "claim_settled",
        "customer_id": "C1",
        "occurred_at": now.isoformat(),
    }
    submit(store, [Incoming(event, "test")], source="test", now=now)
    with pytest.raises(AirflowFailException, match="care_events ran partial: 2 rule error"):
        plan({"run_id": "r1"})
    ledger = Ledger(store)
    keys = [s.row.touch_key for s in ledger.states(ledger.touch_ids_in_status(set(TouchStatus)))]
    assert [k for k in keys if k.startswith("claim-settled")] == [
        f"claim-settled|event:X1|{env['today']}"
    ]
    [stored] = [
        s
        for d in (env["tmp"] / "reports" / "runs").iterdir()
        for s in stored_summaries(env["tmp"] / "reports", dt.date.fromisoformat(d.name))
    ]
    assert stored["kind"] == "care_events" and BROKEN_AT in stored["rule_errors"][1]


@pytest.mark.slow
def test_care_daily_and_care_dispatch_end_failed_after_sending_the_healthy_rules(
    airflow_db: Path, env: dict[str, Any]
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    store: Store = env["store"]
    today: dt.date = env["today"]
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    logical = dt.datetime.combine(today - dt.timedelta(days=1), dt.time(12), dt.timezone.utc)
    run = bag.get_dag("care_daily").test(logical_date=logical)
    assert run.state == "failed"
    tasks = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert (tasks["plan"], tasks["summarise"]) == ("success", "failed")
    states = Counter(s.status for s in Ledger(store).states_for_day(today))
    assert states == {TouchStatus.SENT: 3, TouchStatus.SUPPRESSED: 1}
    assert len(list((env["tmp"] / "outbox").rglob("*.json"))) == 3
    [stored] = stored_summaries(env["tmp"] / "reports", today)
    assert stored["partial"] is True and BROKEN_AT in stored["rule_errors"][1]

    dispatch = bag.get_dag("care_dispatch").test()
    assert dispatch.state == "failed"
    assert {ti.task_id: ti.state for ti in dispatch.get_task_instances()} == {"dispatch": "failed"}


def test_send_tasks_take_shards_not_id_lists_and_share_the_touches(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan task hands the mapped send tasks shard numbers (a few small lists, however
    many touches), capped at MAX_SEND_SHARDS; together the shards send every touch once."""
    from caretouch.airflow import daily

    monkeypatch.setattr(daily, "BATCH_SIZE", 1)
    monkeypatch.setattr(daily, "MAX_SEND_SHARDS", 2)
    store: Store = env["store"]
    run_id = "airflow:care_daily:manual__shards"
    shards, count, _ = daily.plan_shards(daily._engine(), env["today"], run_id)
    assert count == 3 and shards == [[0, 2], [1, 2]]
    reports = [daily.send_shard(shard, run_id) for shard in shards]
    assert sum(r["sent"] for r in reports) == 3
    states = Counter(s.status for s in Ledger(store).states_for_day(env["today"]))
    assert states == {TouchStatus.SENT: 3, TouchStatus.SUPPRESSED: 1}
    # A second round finds nothing left in any shard.
    again = [daily.send_shard(shard, run_id) for shard in shards]
    assert sum(r["sent"] for r in again) == 0
