"""The DAG files import cleanly, and care_daily runs end to end through real Airflow."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

import airflow_env
from caretouch.events.inbox import dead_letters
from caretouch.ledger import Ledger
from caretouch.ledger.audit import verify
from caretouch.schema.migrate import upgrade
from caretouch.store.db import open_store
from caretouch.vocab import TouchStatus
from conftest import RULES_DIR, TEMPLATES_DIR, customer_row, load_rows

pytestmark = pytest.mark.airflow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def airflow_db() -> Path:
    return airflow_env.migrate()


def test_dagbag_imports_without_errors(airflow_db: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    assert {"care_daily", "care_dispatch"} <= set(bag.dag_ids)
    daily = bag.get_dag("care_daily")
    assert {t.task_id for t in daily.tasks} == {"prepare", "plan", "route", "send", "summarise"}


def test_every_task_that_calls_a_provider_runs_in_the_send_pool(airflow_db: Path) -> None:
    """Sends are bounded across all DAGs by one pool (each task takes its share of the
    provider's rate): care_daily's and every campaign's mapped send, and care_dispatch."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    senders = {
        (dag_id, task.task_id): task.pool
        for dag_id, dag in bag.dags.items()
        for task in dag.tasks
        if task.task_id in ("send", "dispatch")
    }
    campaigns = [d for d in bag.dag_ids if d.startswith("care_campaign_")]
    assert campaigns, "the shipped campaigns have DAGs"
    assert {("care_daily", "send"), ("care_dispatch", "dispatch")} <= set(senders)
    assert all((c, "send") in senders for c in campaigns)
    assert set(senders.values()) == {"care_send"}, senders


def test_dag_files_do_no_io_at_import() -> None:
    for path in (ROOT / "dags").glob("*.py"):
        source = path.read_text(encoding="utf-8")
        code_lines = [
            line
            for line in source.splitlines()
            if line and not line.startswith(("#", '"""', "from ", "import "))
        ]
        assert all(line.startswith("dag = build_") for line in code_lines), (path, code_lines)


def test_planned_day_defaults_to_the_next_local_date() -> None:
    from caretouch.airflow.daily import planned_day

    logical = dt.datetime(2026, 11, 22, 12, tzinfo=dt.timezone.utc)
    assert planned_day(logical, {}) == dt.date(2026, 11, 23)
    assert planned_day(logical, {"day": "2026-12-01"}) == dt.date(2026, 12, 1)


@pytest.mark.slow
@pytest.mark.parametrize("planners", [1, 2])
def test_care_daily_runs_with_dag_test(
    airflow_db: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    planners: int,
) -> None:
    """One planner, or two sharing the day (``CARE_PLAN_SHARDS``): the same touches."""
    from airflow.dag_processing.dagbag import DagBag

    store_url = f"sqlite:///{tmp_path / 'care.db'}"
    store = open_store(store_url)
    upgrade(store)
    # The DAG reads the real clock: the customers live in a zone where it is about midday
    # now, and it is their birthday today, so the 09:00 greeting is due and not too late.
    now = dt.datetime.now(dt.timezone.utc)
    offset = 12 - now.hour
    zone = f"Etc/GMT{-offset:+d}" if offset else "UTC"
    today = now.astimezone(ZoneInfo(zone)).date()
    born = f"1980-{today:%m-%d}" if (today.month, today.day) != (2, 29) else "1980-02-29"
    customers = [
        customer_row(f"C{i}", birth_date=born, phone=f"+86138{i:08d}", timezone=zone)
        for i in range(30)
    ]
    customers.append(
        customer_row(
            "NOPE", birth_date=born, consent_sms="false", consent_email="false", timezone=zone
        )
    )
    load_rows(store, customers=customers)
    # A poison row an older version left in the inbox: a purchase by C0 yesterday, its
    # payload 900 levels deep. It is taken out; nobody's greeting is held up.
    with store.session() as session:
        session.execute(
            text(
                "INSERT INTO events (event_id, type, customer_id, occurred_at, payload) "
                "VALUES ('POISON', 'policy_purchased', 'C0', :at, :p)"
            ),
            {
                "at": now - dt.timedelta(days=1),
                "p": '{"a":' * 900 + "1" + "}" * 900,
            },
        )
    for key, value in {
        "CARE_STORE_URL": store_url,
        "CARE_RULES_DIR": str(RULES_DIR),
        "CARE_TEMPLATES_DIR": str(TEMPLATES_DIR),
        "CARE_OUTBOX_DIR": str(tmp_path / "outbox"),
        "CARE_ANCHOR_FILE": str(tmp_path / "anchors.jsonl"),
        "CARE_ANCHOR_KEY": "dag-test-anchor-key",
        "CARE_PLAN_SHARDS": str(planners),
    }.items():
        monkeypatch.setenv(key, value)

    dag = DagBag(dag_folder=str(ROOT / "dags")).get_dag("care_daily")
    # The run of the day before at 12:00 UTC plans today.
    logical = dt.datetime.combine(today - dt.timedelta(days=1), dt.time(12), dt.timezone.utc)
    run = dag.test(logical_date=logical)
    assert run.state == "success"
    states = Ledger(store).states_for_day(today)
    assert Counter(s.status for s in states) == {TouchStatus.SENT: 30, TouchStatus.SUPPRESSED: 1}
    files = list((tmp_path / "outbox").rglob("*.json"))
    assert len(files) == 30
    [letter] = dead_letters(store)
    assert (letter.event_id, letter.reason.split(":")[0]) == ("POISON", "unreadable")

    # A rerun of the same day sends nothing more.
    rerun = dag.test(
        logical_date=logical + dt.timedelta(minutes=5), run_conf={"day": today.isoformat()}
    )
    assert rerun.state == "success"
    assert len(list((tmp_path / "outbox").rglob("*.json"))) == 30
    # The task logs (Airflow prints them here under dag.test) never show a number in clear.
    out, err = capfd.readouterr()
    logs = out + err
    assert "care_daily" in logs or "summarise" in logs
    assert [c["phone"] for c in customers if c["phone"] in logs] == []
    keys = Counter(json.loads(f.read_text(encoding="utf-8"))["touch_key"] for f in files)
    assert max(keys.values()) == 1
    # Who wrote each row: the DAG, its run and the task (with the batch's map index).
    with store.engine.connect() as conn:
        writers = {r[0] for r in conn.exec_driver_sql("SELECT run_id FROM touch_events")}
        writers |= {r[0] for r in conn.exec_driver_sql("SELECT run_id FROM touch_attempts")}
    prefix = f"airflow:care_daily/{run.run_id}/"
    planned_by = {f"plan[{k}]" for k in range(planners)}
    assert {w.removeprefix(prefix) for w in writers} == planned_by | {"send[0]"}, writers
    anchored = [json.loads(line) for line in (tmp_path / "anchors.jsonl").read_text().splitlines()]
    assert [a["run_id"] for a in anchored] == [prefix + "summarise"]  # the rerun wrote nothing
    result = verify(store, anchor_file=tmp_path / "anchors.jsonl", key=b"dag-test-anchor-key")
    assert result.ok, result.problem


def test_task_run_id_names_dag_run_task_and_map_index() -> None:
    from types import SimpleNamespace

    from caretouch.airflow.daily import task_run_id

    ti = SimpleNamespace(dag_id="care_daily", task_id="send", map_index=3)
    assert (
        task_run_id({"run_id": "manual__1", "ti": ti}, "x")
        == "airflow:care_daily/manual__1/send[3]"
    )
    unmapped = SimpleNamespace(dag_id="care_dispatch", task_id="dispatch", map_index=-1)
    assert task_run_id({"run_id": "r", "ti": unmapped}, "x") == "airflow:care_dispatch/r/dispatch"
    assert task_run_id({"run_id": "r"}, "care_events") == "airflow:care_events/r"
