"""The campaign DAG factory: one DAG per campaign file, an import error for a broken one only,
and a campaign DAG run end to end through real Airflow."""

from __future__ import annotations

import datetime as dt
import shutil
from collections import Counter
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import airflow_env
from caretouch.ledger import Ledger
from caretouch.reports.run_summary import stored_summaries
from caretouch.rules.campaigns import dag_file_text, sync_dag_files
from caretouch.schema.migrate import upgrade
from caretouch.store.db import open_store
from caretouch.vocab import TouchStatus
from conftest import RULES_DIR, TEMPLATES_DIR, customer_row, load_rows

pytestmark = pytest.mark.airflow
ROOT = Path(__file__).resolve().parents[2]

CAMPAIGN = """\
version: 1
description: {description}
start: {start}
end: {end}
schedule: "{schedule}"
tiers: [A, B]
channels: [sms, email]
template: spring_festival_vip
category: care
priority: 40
"""


@pytest.fixture(scope="module")
def airflow_db() -> Path:
    return airflow_env.migrate()


def test_shipped_campaigns_have_their_dag_files() -> None:
    campaigns = sorted(p.stem for p in (RULES_DIR / "campaigns").glob("*.yaml"))
    files = sorted(p.name for p in (ROOT / "dags").glob("care_campaign_*.py"))
    assert files == [f"care_campaign_{c}.py" for c in campaigns], "run `care campaign dagfiles`"
    for c in campaigns:
        text = (ROOT / "dags" / f"care_campaign_{c}.py").read_text(encoding="utf-8")
        assert text == dag_file_text(c)


def test_one_dag_per_campaign(airflow_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("CARE_RULES_DIR", str(RULES_DIR))
    monkeypatch.setenv("CARE_TEMPLATES_DIR", str(TEMPLATES_DIR))
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert {k: v for k, v in bag.import_errors.items() if "care_campaign_" in k} == {}
    campaign_dags = sorted(d for d in bag.dag_ids if d.startswith("care_campaign_"))
    assert campaign_dags == [
        "care_campaign_spring-festival-vip",
        "care_campaign_year-end-service-notice",
    ]
    spring = bag.get_dag("care_campaign_spring-festival-vip")
    assert {t.task_id for t in spring.tasks} == {"plan", "send", "summarise"}
    # Spring Festival 2027 is 6 February: the run plans it at 12:00 UTC the day before.
    assert [d.isoformat() for d in spring.timetable.event_dates] == ["2027-02-05T12:00:00+00:00"]


def test_a_broken_campaign_is_an_import_error_of_its_own_dag_only(
    airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR / "campaigns", rules / "campaigns")
    shutil.copy(RULES_DIR / "policy.yaml", rules / "policy.yaml")
    broken = rules / "campaigns" / "broken-push.yaml"
    broken.write_text(
        CAMPAIGN.format(
            description="Broken", start="2027-03-01", end="2027-03-31", schedule="0 10 * * mon"
        ).replace("channels:", "chanels:"),
        encoding="utf-8",
    )
    gone = tmp_path / "dags" / "care_campaign_gone.py"
    dags = tmp_path / "dags"
    dags.mkdir()
    synced = sync_dag_files(rules / "campaigns", dags)
    assert len(synced.written) == 3
    gone.write_text(dag_file_text("gone"), encoding="utf-8")
    monkeypatch.setenv("CARE_RULES_DIR", str(rules))
    monkeypatch.setenv("CARE_TEMPLATES_DIR", str(TEMPLATES_DIR))
    bag = DagBag(dag_folder=str(dags))
    errors = {Path(k).name: v for k, v in bag.import_errors.items()}
    assert sorted(errors) == ["care_campaign_broken-push.py", "care_campaign_gone.py"]
    assert (
        f"{broken}:7:1: unknown field 'chanels' (did you mean 'channels'?)"
        in errors["care_campaign_broken-push.py"]
    )
    assert "campaign file" in errors["care_campaign_gone.py"]
    assert sorted(bag.dag_ids) == [
        "care_campaign_spring-festival-vip",
        "care_campaign_year-end-service-notice",
    ]
    # The orphan is reported, and pruned on request.
    assert sync_dag_files(rules / "campaigns", dags, prune=True).removed == [gone]


@pytest.mark.slow
def test_campaign_dag_runs_with_dag_test(
    airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    # A campaign due today at 09:00 for customers in a zone where it is about midday now.
    now = dt.datetime.now(dt.timezone.utc)
    offset = 12 - now.hour
    zone = f"Etc/GMT{-offset:+d}" if offset else "UTC"
    today = now.astimezone(ZoneInfo(zone)).date()
    rules = tmp_path / "rules"
    (rules / "campaigns").mkdir(parents=True)
    shutil.copy(RULES_DIR / "policy.yaml", rules / "policy.yaml")
    shutil.copy(RULES_DIR / "campaigns" / "year-end-service-notice.yaml", rules / "campaigns")
    # The shipped campaign's id (its DAG file is in the configured dags folder), rescheduled.
    (rules / "campaigns" / "spring-festival-vip.yaml").write_text(
        CAMPAIGN.format(
            description="Due today",
            start=today,
            end=today,
            schedule=f"0 9 {today.day} {today.month} *",
        ),
        encoding="utf-8",
    )
    store_url = f"sqlite:///{tmp_path / 'care.db'}"
    store = open_store(store_url)
    upgrade(store)
    load_rows(
        store,
        customers=[
            *(customer_row(f"A{i}", tier="A", timezone=zone) for i in range(3)),
            customer_row("B0", tier="B", timezone=zone, consent_sms="false", consent_email="false"),
            customer_row("C0", tier="C", timezone=zone),
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

    dag = DagBag(dag_folder=str(ROOT / "dags")).get_dag("care_campaign_spring-festival-vip")
    assert dag is not None
    logical = dt.datetime.combine(today - dt.timedelta(days=1), dt.time(12), dt.timezone.utc)
    run = dag.test(logical_date=logical, run_conf={"day": today.isoformat()})
    assert run.state == "success"
    states = Ledger(store).states_for_day(today)
    assert Counter((s.row.customer_id, s.status) for s in states) == {
        ("A0", TouchStatus.SENT): 1,
        ("A1", TouchStatus.SENT): 1,
        ("A2", TouchStatus.SENT): 1,
        ("B0", TouchStatus.SUPPRESSED): 1,
    }
    assert len(list((tmp_path / "outbox").rglob("*.json"))) == 3
    # The run ends with its summary, stored: this campaign's touches only.
    [stored] = stored_summaries(tmp_path / "reports", today)
    assert stored["kind"] == "care_campaign_spring-festival-vip"
    assert stored["rule_ids"] == ["spring-festival-vip"]
    assert stored["this_run"]["sent"] == 3
    assert {(r["tier"], r["status"]): r["count"] for r in stored["ledger"]["by_tier_status"]} == {
        ("A", "sent"): 3,
        ("B", "suppressed"): 1,
    }
