"""``care_reports``: which periods a run reports, and a run through real Airflow."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

import airflow_env
from caretouch.schema.migrate import upgrade
from caretouch.store.db import open_store
from conftest import RULES_DIR, TEMPLATES_DIR

pytestmark = pytest.mark.airflow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def airflow_db() -> Path:
    return airflow_env.migrate()


@pytest.mark.parametrize(
    ("logical", "params", "expected"),
    [
        (dt.datetime(2026, 12, 5, 6), {}, ["2026-11"]),  # a Saturday
        (dt.datetime(2026, 11, 23, 6), {}, ["2026-W47"]),  # a Monday
        # The 5th of a quarter's first month and a Monday: the month, the quarter, the week.
        (dt.datetime(2027, 4, 5, 6), {}, ["2027-03", "2027Q1", "2027-W13"]),
        (dt.datetime(2027, 1, 5, 6), {}, ["2026-12", "2026Q4"]),
        (dt.datetime(2026, 10, 5, 6), {}, ["2026-09", "2026Q3", "2026-W40"]),
        (dt.datetime(2026, 11, 5, 6), {}, ["2026-10"]),  # not a quarter's first month
        (dt.datetime(2026, 11, 24, 6), {}, []),
        (None, {"month": "2026-10"}, ["2026-10"]),
        (dt.datetime(2026, 11, 24, 6), {"week": "2026-W01"}, ["2026-W01"]),
        (None, {"quarter": "2026Q4"}, ["2026Q4"]),
    ],
)
def test_periods_due(logical: dt.datetime | None, params: dict, expected: list[str]) -> None:
    from caretouch.airflow.reports import periods_due

    when = logical.replace(tzinfo=dt.timezone.utc) if logical else None
    assert [p.label for p in periods_due(when, params)] == expected


def test_a_bad_quarter_param_is_refused() -> None:
    from caretouch.airflow.reports import periods_due

    with pytest.raises(ValueError, match="not a quarter"):
        periods_due(None, {"quarter": "2026Q5"})


@pytest.mark.slow
def test_care_reports_runs_with_dag_test(
    airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    store_url = f"sqlite:///{tmp_path / 'care.db'}"
    upgrade(open_store(store_url))
    for key, value in {
        "CARE_STORE_URL": store_url,
        "CARE_RULES_DIR": str(RULES_DIR),
        "CARE_TEMPLATES_DIR": str(TEMPLATES_DIR),
        "CARE_REPORTS_DIR": str(tmp_path / "reports"),
        "CARE_OUTBOX_DIR": str(tmp_path / "outbox"),  # no provider configured: the outbox
        "CARE_REPORT_EMAIL_TO": "ops.lead@example.com, audit@example.com",
    }.items():
        monkeypatch.setenv(key, value)
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not [k for k in bag.import_errors if "care_reports" in k]
    dag = bag.get_dag("care_reports")
    run = dag.test(logical_date=dt.datetime(2027, 4, 5, 6, tzinfo=dt.timezone.utc))
    assert run.state == "success"
    assert sorted(p.name for p in (tmp_path / "reports").glob("*.html")) == [
        "care-report-2027-03.html",
        "care-report-2027-W13.html",
        "care-report-2027Q1.html",
    ]
    # A CSV file of each table next to each page.
    for label in ("2027-03", "2027Q1", "2027-W13"):
        for table in ("kpis", "complaints", "tasks-per-agent", "problem-customers"):
            assert (tmp_path / "reports" / f"care-report-{label}-{table}.csv").is_file()
    # Each report was emailed to both recipients through the email channel (the outbox here).
    mails = [
        json.loads(p.read_text(encoding="utf-8")) for p in (tmp_path / "outbox").rglob("*.json")
    ]
    assert sorted((m["to"], m["subject"]) for m in mails) == sorted(
        (to, f"Caretouch {kind} report {label}")
        for to in ("ops.lead@example.com", "audit@example.com")
        for kind, label in (("month", "2027-03"), ("quarter", "2027Q1"), ("week", "2027-W13"))
    )
