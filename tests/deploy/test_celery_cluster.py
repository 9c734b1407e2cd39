"""The distributed deployment for real: Airflow's CeleryExecutor across two workers.

``deploy/local_cluster.py`` starts Airflow's api-server, scheduler, dag-processor and
triggerer and two Celery workers (different names and working directories, as separate hosts
would have), with Redis as the broker and PostgreSQL holding Airflow's metadata and the
Caretouch store, each in a database of its own. The test triggers ``care_daily`` for a day on
which thousands of customers are due a birthday SMS, sent to the provider simulator (40 ms a
request), SIGKILLs one worker while the sending is under way, and checks that the run
completes, every touch reached the provider exactly once, both workers did work, and the
ledger verifies. It also sends a business event through the Redis Stream and sees its touch
planned by ``care_events``.

Several minutes: marked slow; CI runs it.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from provider_sim import TWILIO, RemoteProviderSim
from redis_env import require_redis
from sim_channels import SMS_FROM

from conftest import PG_URL, ROOT, customer_row, require_postgres

sys.path.insert(0, str(ROOT / "deploy"))
from local_cluster import Cluster, drop_database, libpq_url

pytestmark = [pytest.mark.slow, pytest.mark.airflow, pytest.mark.postgres]

CUSTOMERS = 10_000
BROKER_DB = 12  # the Celery broker; the event stream and the rate budgets the next two dbs
DEADLINE = 600  # seconds for the whole run, kill and retry included


def _wait(what: str, check: Any, timeout: float, every: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq_url(url)) as conn:
        return list(conn.execute(sql, params).fetchall())


def _customers_csv(path: Path) -> tuple[str, dt.date]:
    """``CUSTOMERS`` customers whose birthday is today in a zone where it is about midday
    now (the DAG reads the real clock), all by SMS; returns the zone and its date."""
    now = dt.datetime.now(dt.timezone.utc)  # clock: the cluster runs on the real clock
    offset = 12 - now.hour
    zone = f"Etc/GMT{-offset:+d}" if offset else "UTC"
    today = now.astimezone(ZoneInfo(zone)).date()
    born = f"1980-{today:%m-%d}" if (today.month, today.day) != (2, 29) else "1980-02-29"
    rows = [
        customer_row(
            f"C{i:05d}",
            birth_date=born,
            phone=f"+86139{i:08d}",
            email="",
            consent_email="false",
            timezone=zone,
        )
        for i in range(CUSTOMERS)
    ]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return zone, today


def test_care_daily_survives_a_killed_celery_worker(tmp_path: Path) -> None:
    require_postgres()
    require_redis().close()
    import redis

    for db in (BROKER_DB, BROKER_DB + 1, BROKER_DB + 2):
        redis.Redis(db=db).flushdb()
    uid = uuid.uuid4().hex[:8]
    base_url = PG_URL.rpartition("/")[0]
    store_url = f"{base_url}/care_it_{uid}"
    airflow_url = f"{base_url}/airflow_it_{uid}"
    sim = RemoteProviderSim(latency_ms=40).start()
    twilio = {
        "conn_type": "care_twilio",
        "login": sim.twilio_account_sid,
        "password": sim.twilio_auth_token,
        "extra": {"from": SMS_FROM, "api_base": sim.url, "concurrency": 8, "rate_per_sec": 800},
    }
    cluster = Cluster(
        tmp_path / "cluster",
        store_url=store_url,
        airflow_db_url=airflow_url,
        broker_db=BROKER_DB,
        workers=2,
        extra_env={"AIRFLOW_CONN_CARE_TWILIO": json.dumps(twilio)},
    )
    try:
        cluster.prepare()
        _zone, today = _customers_csv(tmp_path / "customers.csv")
        cluster.care("store", "import", "--customers", str(tmp_path / "customers.csv"))
        cluster.start()
        for dag_id in ("care_daily", "care_events"):
            _wait(
                f"{dag_id} parsed",
                lambda d=dag_id: _query(airflow_url, "SELECT 1 FROM dag WHERE dag_id = %s", d),
                120,
            )
            cluster.airflow("dags", "unpause", dag_id)
        cluster.airflow(
            "dags", "trigger", "care_daily", "--run-id", "it", "-c", json.dumps({"day": str(today)})
        )

        # A business event through the Redis Stream: its thank-you is planned by care_events.
        cluster.care(
            "event",
            "emit",
            "--type",
            "policy_purchased",
            "--customer",
            "C00001",
            "--id",
            "it-purchase",
            "--payload",
            json.dumps({"product": "安心医疗险", "premium": "1200.00"}),
            "--via",
            "stream",
        )

        # Kill a worker in the middle of the sending, once both workers run send tasks. (On
        # unpausing, the scheduler may also start the run of the latest interval: every
        # care_daily run counts, and must succeed.)
        def sending_on_both() -> set[str]:
            hosts = {
                h
                for (h,) in _query(
                    airflow_url,
                    "SELECT hostname FROM task_instance WHERE dag_id = 'care_daily' "
                    "AND task_id = 'send' AND state = 'running'",
                )
            }
            return hosts if len(hosts) == 2 and len(sim.accepted(TWILIO)) > 300 else set()

        _wait("send tasks running on both workers", sending_on_both, 300, every=0.5)
        at_kill = len(sim.accepted(TWILIO))
        cluster.kill("worker1")

        def finished() -> dict[str, str] | None:
            runs = dict(
                _query(airflow_url, "SELECT run_id, state FROM dag_run WHERE dag_id = 'care_daily'")
            )
            done = "it" in runs and all(state in ("success", "failed") for state in runs.values())
            return runs if done else None

        runs = _wait("care_daily to finish", finished, DEADLINE)
        ti = _query(
            airflow_url,
            "SELECT task_id, map_index, state, try_number, hostname FROM task_instance "
            "WHERE dag_id = 'care_daily' ORDER BY run_id, task_id, map_index",
        )
        assert set(runs.values()) == {"success"}, (runs, ti)

        # Every due touch reached the provider exactly once; none was lost.
        assert at_kill < CUSTOMERS, "the worker was killed before the sending was done"
        at_sim = sim.count_by_recipient(TWILIO)
        assert len(at_sim) == CUSTOMERS
        assert max(at_sim.values()) == 1, sim.duplicates(TWILIO)
        statuses = Counter(
            status
            for (status,) in _query(
                store_url,
                "SELECT c.status FROM touch_current c JOIN touches t ON t.id = c.touch_id "
                "WHERE t.rule_id = 'birthday'",
            )
        )
        assert statuses == {"sent": CUSTOMERS}
        # The work was spread over both workers, and the killed one's tasks were retried.
        history = _query(
            airflow_url,
            "SELECT hostname, try_number FROM task_instance_history "
            "WHERE dag_id = 'care_daily' AND task_id = 'send'",
        )
        hosts = {h for h, _ in history} | {row[4] for row in ti if row[0] == "send"}
        assert {"worker1", "worker2"} <= hosts, (history, ti)
        assert any(row[0] == "send" and row[3] > 1 for row in ti), ti

        # The ledger verifies against the anchors every run's summary wrote to shared storage.
        assert (cluster.base / "shared" / "anchors" / "ledger-anchors.jsonl").exists()
        cluster.care("audit", "verify")

        # The business event was planned from the stream.
        planned = _wait(
            "the streamed event's touch",
            lambda: _query(
                store_url,
                "SELECT t.rule_id, c.status FROM touches t JOIN touch_current c "
                "ON c.touch_id = t.id WHERE t.event_id = 'it-purchase'",
            ),
            120,
        )
        assert planned and {rule for rule, _ in planned} == {"thank-you"}, planned
    finally:
        cluster.stop()
        sim.stop()
        for url in (airflow_url, store_url):
            # A database left behind is dropped by hand; it must not hide the test's failure.
            with contextlib.suppress(Exception):
                drop_database(url)
