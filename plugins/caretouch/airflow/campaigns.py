"""``care_campaign_<id>``: one DAG per campaign file in ``care_rules/campaigns/``.

Each campaign has its own thin DAG file, ``dags/care_campaign_<id>.py``, calling
``build_campaign_dag("<id>")`` (``care campaign dagfiles`` writes them). Why one file per
campaign and not one factory file for all: Airflow keys import errors by DAG *file*
(``ParseImportError.filename``; ``DagBag.import_errors`` maps a file to its traceback), and a
file that raises yields no DAG at all. With one file for every campaign, a single broken
campaign would either hide every campaign DAG (if the factory raised) or be invisible in
Airflow (if it skipped it). With a file per campaign, the factory raises for the broken one
only: its ``file:line:col`` errors are the import error of ``care_campaign_<id>.py`` and the
other campaigns' DAGs are untouched.

At parse time the factory reads the campaign file, the contact policy and the templates it
names (local files; no database, no network) and validates them exactly as ``care validate``
does. The schedule is an ``EventsTimetable`` of the campaign's run times: 12:00 UTC on the
day before each due day, like ``care_daily`` (the due day has then begun only east of UTC+12,
hours before any send time). A run plans its local day with every rule and campaign (the
contact policy arbitrates them together; planning is idempotent) and sends this campaign's
touches whose time has come; ``care_dispatch`` sends the rest when their time comes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from airflow.sdk import dag, task

# airflow.sdk.EventsTimetable does not survive serialization in Airflow 3.3.2 (its encoder
# leaves out the "_summary" the scheduler-side class reads back: KeyError); the core class
# serializes itself completely.
from airflow.timetables.events import EventsTimetable

from ..config import CareConfig
from ..errors import ConfigurationError, ValidationFailed
from ..render.templates import TemplateStore
from ..rules.campaigns import CAMPAIGN_DIR, Campaign, load_campaign_file
from ..rules.contact_policy import load_policy
from ..rules.loader import POLICY_FILE
from .daily import (
    DEFAULT_ARGS,
    _engine,
    _now,
    day_param,
    later_try,
    plan_shards,
    planned_day,
    record_pending_callbacks,
    run_writers,
    send_shard,
    summarise_run,
    task_run_id,
)
from .hooks import SEND_POOL

log = logging.getLogger("caretouch.airflow")

_REPO = Path(__file__).resolve().parents[3]


def _dir(field: str, default: str) -> Path:
    # Workers and the DAG processor read the same variables; without them, the repository's
    # own directories (the DAG processor's working directory is not the repository's).
    config = CareConfig.from_env()
    return Path(getattr(config, field)) if config.is_set(field) else _REPO / default


def load_campaign(campaign_id: str) -> Campaign:
    """The campaign of ``care_rules/campaigns/<id>.yaml``, validated; raise if it is not valid."""
    rules_dir = _dir("rules_dir", "care_rules")
    path = rules_dir / CAMPAIGN_DIR / f"{campaign_id}.yaml"
    if not path.is_file():
        raise ConfigurationError(
            f"campaign file {path} not found: restore it, or delete this DAG file "
            f"(care campaign dagfiles --prune)"
        )
    policy = load_policy(rules_dir / POLICY_FILE)
    templates = TemplateStore(_dir("templates_dir", "templates"))
    campaign, errors = load_campaign_file(path, templates, policy)
    if errors or campaign is None:
        raise ValidationFailed(errors)
    return campaign


def campaign_ids_of(touch_ids: list[int], engine: Any, campaign_id: str) -> list[int]:
    """The touches among ``touch_ids`` that belong to the campaign."""
    return [s.id for s in engine.ledger.states(touch_ids) if s.row.rule_id == campaign_id]


def build_campaign_dag(campaign_id: str) -> Any:
    """The DAG of one campaign; raises (an import error for this file only) when invalid."""
    import pendulum

    campaign = load_campaign(campaign_id)
    runs = [pendulum.instance(t) for t in campaign.run_times()]
    days = ", ".join(d.isoformat() for d in campaign.days)
    doc = (
        f"**{campaign.rule.description}**\n\n"
        f"Campaign file `{campaign.path.name}`: schedule `{campaign.schedule}`, "
        f"{campaign.start} to {campaign.end}; due on {days} (customer-local), "
        f"{campaign.rule.category.value}, priority {campaign.rule.priority}, channels "
        f"{', '.join(c.value for c in campaign.rule.channels)}. "
        "Runs at 12:00 UTC the day before each due day. Trigger with "
        '`{"day": "YYYY-MM-DD"}` to rerun or backfill a day: the ledger never sends a touch twice.'
    )

    @dag(
        dag_id=campaign.dag_id,
        description=campaign.rule.description,
        doc_md=doc,
        schedule=EventsTimetable(
            runs, presorted=True, description=f"{campaign.schedule} ({len(runs)} day(s))"
        ),
        start_date=runs[0],
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        params={
            "day": day_param(
                "Local date to run (YYYY-MM-DD); default: the day after the logical date."
            ),
        },
        tags=["caretouch", "campaign"],
    )
    def care_campaign() -> None:
        @task
        def plan(**context: Any) -> list[list[int]]:
            day = planned_day(context.get("logical_date"), context["params"])
            engine = _engine()
            if day not in campaign.days:
                log.warning(
                    "%s is not a day of campaign %s (%s): nothing of it is due",
                    day,
                    campaign.id,
                    days,
                )
            record_pending_callbacks(engine.store, now=_now())
            shards, count, _ = plan_shards(
                engine,
                day,
                task_run_id(context, campaign.dag_id),
                keep=lambda ids: campaign_ids_of(ids, engine, campaign.id),
            )
            log.info(
                "campaign %s on %s: %d touch(es) to send by %d shard(s)",
                campaign.id,
                day,
                count,
                len(shards),
            )
            return shards

        @task(pool=SEND_POOL)
        def send(shard: list[int], **context: Any) -> dict[str, int]:
            return send_shard(
                shard,
                task_run_id(context, campaign.dag_id),
                rule_ids=[campaign.id],
                retry=later_try(context),
            )

        @task(trigger_rule="none_failed")
        def summarise(reports: Any = None, **context: Any) -> dict[str, Any]:
            return summarise_run(
                reports,
                run_id=task_run_id(context, campaign.dag_id),
                writers=run_writers(context, campaign.dag_id, len(reports or [])),
                kind=campaign.dag_id,
                day=planned_day(context.get("logical_date"), context["params"]),
                rule_ids=[campaign.id],
                what=f" of campaign {campaign.id}",
            )

        summarise(send.expand(shard=plan()))

    return care_campaign()
