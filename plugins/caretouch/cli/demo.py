"""``care demo``: a demo store, the daily DAG through real Airflow, and a readable summary."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..config import CareConfig
from ..errors import ConfigurationError
from .common import OutputPath, config_of, friendly_errors, parse_day

if TYPE_CHECKING:
    from ..rules.loader import RuleSet
    from ..store.db import Store

Echo = Callable[[str], None]
PLURAL = {
    "agent": "agents",
    "customer": "customers",
    "policy": "policies",
    "event": "events",
    "relation": "relations",
}


def project_dags_dir() -> Path:
    """``dags/`` of the checkout: ``$CARE_DAGS_DIR``, else ``./dags``, else beside the package."""
    candidates = [
        CareConfig.from_env().dags_dir,
        Path.cwd() / "dags",
        Path(__file__).resolve().parents[2] / "dags",
    ]
    for candidate in candidates:
        if candidate is not None and (candidate / "care_daily.py").is_file():
            return candidate.resolve()
    raise ConfigurationError(
        "dags/care_daily.py not found: run `care demo` from the project directory"
    )


def airflow_env(airflow_home: Path, dags: Path, config: CareConfig) -> dict[str, str]:
    """Environment for running Airflow embedded on SQLite, with our DAGs and configuration."""
    from ..storage import absolute

    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(dags.parent / "plugins"),
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "CARE_STORE_URL": config.store_url,
            "CARE_RULES_DIR": str(config.rules_dir.resolve()),
            "CARE_TEMPLATES_DIR": str(config.templates_dir.resolve()),
            "CARE_OUTBOX_DIR": absolute(config.outbox_dir),
            "CARE_ANCHOR_FILE": absolute(config.anchor_file),
            "CARE_REPORTS_DIR": absolute(config.reports_dir),
        }
    )
    return env


def run_airflow(args: list[str], env: dict[str, str], log_path: Path) -> int:
    airflow = Path(sys.executable).with_name("airflow")
    if not airflow.exists():
        raise ConfigurationError(
            f"Airflow is not installed beside {sys.executable} (pip install 'caretouch[airflow]')"
        )
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"\n$ airflow {' '.join(args)}\n")
        log.flush()
        return subprocess.run(
            [str(airflow), *args], env=env, stdout=log, stderr=subprocess.STDOUT, check=False
        ).returncode


def _record_demo_opt_outs(store: Store, ruleset: RuleSet, day: dt.date, count: int = 2) -> int:
    """Two customers due today withdraw consent, as an SMS STOP reply would, so the plan
    shows `opted_out` beside `no_contact`."""
    from ..ledger.consent import record_consent
    from ..plan import plan_day
    from ..store.consent import Purpose

    due = sorted(
        {t.customer_id for t in plan_day(store, ruleset, day) if t.decision.value == "send"}
    )
    at = dt.datetime.combine(day - dt.timedelta(days=1), dt.time(12), dt.timezone.utc)
    for customer_id in due[:count]:
        record_consent(
            store,
            customer_id,
            {Purpose.SMS: False, Purpose.EMAIL: False},
            source="demo: replied STOP",
            at=at,
        )
    return min(count, len(due))


def run_demo(
    config: CareConfig,
    directory: Path,
    day: dt.date,
    *,
    customers: int,
    use_airflow: bool,
    echo: Echo,
) -> int:
    """Build the demo and run ``day``; returns the process exit status."""
    # Here, not at the top: `care` loads this module for every command (its `demo` command).
    from ..render.templates import TemplateStore
    from ..reports.day_summary import DaySummary
    from ..rules.event_types import load_event_types
    from ..rules.loader import load_rules
    from ..schema.migrate import upgrade
    from ..store.db import open_store
    from ..store.demo import TABLE_OF_FILE, write_demo_csvs
    from ..store.importer import import_csv

    directory.mkdir(parents=True, exist_ok=True)
    db_path = directory / "care-demo.db"
    for stale in (db_path, directory / "care-demo.db-wal", directory / "care-demo.db-shm"):
        stale.unlink(missing_ok=True)
    shutil.rmtree(directory / "outbox", ignore_errors=True)
    shutil.rmtree(directory / "reports", ignore_errors=True)
    (directory / "ledger-anchors.jsonl").unlink(missing_ok=True)
    config = CareConfig(
        store_url=f"sqlite:///{db_path}",
        rules_dir=config.rules_dir.resolve(),
        templates_dir=config.templates_dir.resolve(),
        outbox_dir=directory / "outbox",
        anchor_file=directory / "ledger-anchors.jsonl",
        reports_dir=directory / "reports",
    )

    echo(f"== Caretouch demo for local date {day} ==")
    files = write_demo_csvs(directory / "data", day, customers=customers)
    store = open_store(config.store_url)
    upgrade(store)
    event_types, _ = load_event_types(config.rules_dir)  # errors: shown with the rules below
    report = import_csv(
        store,
        {TABLE_OF_FILE[name]: path for name, path in files.items()},
        check_event=event_types.problems,
    )
    if not report.written:
        for problem in [*report.file_errors, *report.rejected]:
            echo(str(problem))
        return 1
    echo(
        "store: "
        + ", ".join(f"{n} {PLURAL[t]}" for t, n in report.inserted.items())
        + f" imported from {files['customers'].parent} ({len(report.warnings)} warning(s): bad phone numbers or emails kept, never used)"
    )
    ruleset = load_rules(config.rules_dir, TemplateStore(config.templates_dir))
    for error in ruleset.errors:
        echo(f"rule error: {error}")
    if ruleset.policy_errors:
        echo("the contact policy is broken: nothing is planned without it")
        return 1
    # Broken rules are left out and the others run; the demo then ends with status 3.
    status = 3 if ruleset.errors else 0
    echo(f"rules: {', '.join(r.id for r in ruleset.rules)}")
    opted = _record_demo_opt_outs(store, ruleset, day)
    echo(
        f"consent: {opted} customer(s) due today replied STOP / unsubscribed (recorded as opt-outs)"
    )
    store.dispose()

    if use_airflow:
        dags = project_dags_dir()
        airflow_home = directory / "airflow"
        airflow_home.mkdir(exist_ok=True)
        env = airflow_env(airflow_home, dags, config)
        log_path = directory / "airflow.log"
        log_path.unlink(missing_ok=True)
        echo(f"airflow: migrating the metadata DB in {airflow_home} ...")
        if run_airflow(["db", "migrate"], env, log_path) != 0:
            echo(f"airflow db migrate failed; see {log_path}")
            return 1
        # The pool that bounds provider sends across mapped tasks (docs/deploy.md).
        if run_airflow(
            ["pools", "set", "care_send", "4", "Caretouch provider sends"], env, log_path
        ):
            echo(f"airflow pools set care_send failed; see {log_path}")
            return 1
        logical = dt.datetime.combine(day - dt.timedelta(days=1), dt.time(12), dt.timezone.utc)
        echo(f"airflow: dags test care_daily {logical.isoformat()} (plans local date {day}) ...")
        code = run_airflow(
            [
                "dags",
                "test",
                "care_daily",
                logical.isoformat(),
                "-c",
                json.dumps({"day": day.isoformat()}),
            ],
            env,
            log_path,
        )
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        finished = next((line for line in reversed(tail) if "DagRun Finished" in line), "")
        match = re.search(r"state=(\w+)", finished)
        state = match.group(1) if match else "unknown"
        # A run without broken rules ends failed on purpose (airflow/daily.py,
        # fail_if_partial) once the healthy rules' touches are sent and summarised.
        partial = status and any(" ran partial: " in line for line in tail)
        if (code != 0 or state != "success") and not partial:
            echo("\n".join(tail[-40:]))
            echo(f"airflow dags test: exit {code}, run state {state}; full log: {log_path}")
            return 1
        echo(f"airflow: care_daily run state {state}; full log: {log_path}")
    else:
        from ..events.churn import raise_for_day
        from ..run.day import run_day
        from ..run.engine import open_engine

        engine = open_engine(config)
        now = dt.datetime.now(dt.timezone.utc)  # clock: demo
        raise_for_day(engine, day, now=now)
        run_day(engine, day, run_id="cli:demo", now=now)

    store = open_store(config.store_url)
    from ..ledger import Ledger

    summary = DaySummary.from_ledger(Ledger(store), day)
    echo("")
    echo(summary.render())
    outbox_files = sorted((directory / "outbox").rglob("*.json"))
    echo("")
    echo(f"outbox: {len(outbox_files)} message file(s) in {directory / 'outbox'}")
    from ..ledger.audit import anchor_key, verify
    from ..storage import anchors

    check = verify(store, anchor_file=anchors(config), key=anchor_key(config))
    echo(
        f"audit: ledger {'verifies' if check.ok else 'does NOT verify: ' + str(check.problem)} "
        f"({check.entries} chained rows, {check.anchors} anchor(s))"
    )
    echo(f"try: care --store {config.store_url} plan --date {day} --explain")
    if status:
        echo(f"partial: {len(ruleset.errors)} rule error(s) above; the broken rules were left out")
    return status


@click.command()
@click.option(
    "--dir",
    "directory",
    type=OutputPath(folder=True),
    default=Path(".demo"),
    show_default=True,
)
@click.option(
    "--date", "day_text", metavar="YYYY-MM-DD", help="Local date to run (default: today in UTC)."
)
@click.option("--customers", default=240, show_default=True, help="How many demo customers.")
@click.option(
    "--no-airflow", is_flag=True, help="Run the day with the CLI engine instead of Airflow."
)
@click.pass_context
@friendly_errors
def demo(
    ctx: click.Context, directory: Path, day_text: str | None, customers: int, no_airflow: bool
) -> None:
    """Build a demo store and run the daily DAG through real Airflow, then print a summary."""
    today = dt.datetime.now(dt.timezone.utc).date()  # clock: the demo runs "today"
    day = parse_day(day_text) if day_text else today
    code = run_demo(
        config_of(ctx),
        directory.resolve(),
        day,
        customers=customers,
        use_airflow=not no_airflow,
        echo=click.echo,
    )
    sys.exit(code)
