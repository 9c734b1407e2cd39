"""``care_agent_digest``: its day, and a run through real Airflow that emails the digests
(to the outbox: no provider configured) once, a second run sending nothing again."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from agent_tasks import task_dirs, task_rule

import airflow_env
from caretouch.config import CareConfig
from caretouch.run.day import run_day
from caretouch.run.engine import open_engine
from caretouch.schema.migrate import upgrade
from caretouch.store.db import open_store
from conftest import customer_row, insert_agents_and_relations, load_rows, utc

pytestmark = pytest.mark.airflow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def airflow_db() -> Path:
    return airflow_env.migrate()


def test_the_digest_day_is_the_logical_date_in_the_policy_zone() -> None:
    from caretouch.airflow.digest import digest_day_of

    class Engine:  # what digest_day reads of the engine
        class policy:
            default_timezone = "Asia/Shanghai"

    at_0730_shanghai = utc(2026, 11, 23, 23, 30)
    assert digest_day_of(Engine, at_0730_shanghai, {}) == dt.date(2026, 11, 24)
    assert digest_day_of(Engine, at_0730_shanghai, {"day": "2026-12-01"}) == dt.date(2026, 12, 1)


def test_the_dag_is_scheduled_at_0730_in_shanghai(airflow_db: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not [k for k in bag.import_errors if "care_agent_digest" in k]
    dag = bag.get_dag("care_agent_digest")
    assert [t.task_id for t in dag.tasks] == ["digest"]
    assert dag.tasks[0].pool == "care_send"
    timetable = dag.timetable
    assert (timetable.expression, str(timetable.timezone)) == ("30 23 * * *", "UTC")  # 07:30 CST


@pytest.mark.slow
def test_care_agent_digest_runs_with_dag_test(
    airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    store_url = f"sqlite:///{tmp_path / 'care.db'}"
    store = open_store(store_url)
    upgrade(store)
    rules, templates = task_dirs(tmp_path, task_rule("call"))
    insert_agents_and_relations(
        store,
        agents=[
            {"agent_id": "A1", "name": "李娜", "email": "li.na@agency.example"},
            {"agent_id": "A2", "name": "赵磊", "email": None},
        ],
    )
    load_rows(
        store,
        customers=[customer_row("C1", agent_id="A1"), customer_row("C2", agent_id="A2")],
    )
    engine = open_engine(CareConfig(store_url, rules, templates, tmp_path / "outbox"), store=store)
    assert (
        run_day(engine, dt.date(2026, 11, 23), run_id="d", now=utc(2026, 11, 23, 12)).assigned == 2
    )
    for key, value in {
        "CARE_STORE_URL": store_url,
        "CARE_RULES_DIR": str(rules),
        "CARE_TEMPLATES_DIR": str(templates),
        "CARE_REPORTS_DIR": str(tmp_path / "reports"),
        "CARE_OUTBOX_DIR": str(tmp_path / "outbox"),  # no provider configured: the outbox
    }.items():
        monkeypatch.setenv(key, value)
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    dag = bag.get_dag("care_agent_digest")
    run = dag.test(logical_date=utc(2026, 11, 23, 23, 30))  # the 24th in Shanghai
    assert run.state == "success"
    [mail] = [
        json.loads(p.read_text(encoding="utf-8"))
        for p in (tmp_path / "outbox").rglob("digest_*.json")
    ]
    assert mail["to"] == "li.na@agency.example"
    assert "【逾期1天】" in mail["body"] and "C1" in mail["body"]
    # A second run of the same day sends nothing again.
    again = dag.test(logical_date=utc(2026, 11, 23, 23, 45))
    assert again.state == "success"
    assert len(list((tmp_path / "outbox").rglob("digest_*.json"))) == 1
