"""``care_agent_digest``: the agents' daily digest of their open and overdue tasks, and the
escalation of long-overdue ones to their managers, every morning at 07:30 in Shanghai
(23:30 UTC the day before), the same work as ``care task digest`` (``run.digest``).

The digest's day is the run's logical date in the contact policy's default time zone, or the
``day`` param (``airflow dags trigger care_agent_digest -c '{"day": "2026-11-24"}'``).
Reruns and retries are safe: each agent's digest of a day is claimed once in the store
(``agent_digests``), so a retry sends only what failed. The run fails when a digest could
not be sent (after its retries); agents without an email address are only counted.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from airflow.sdk import CronTriggerTimetable, dag, task

from .daily import DEFAULT_ARGS, _engine, _now, day_param, task_run_id
from .hooks import SEND_POOL

log = logging.getLogger("caretouch.airflow")

DAG_ID = "care_agent_digest"
# 07:30 in Asia/Shanghai (UTC+8, no daylight saving time).
SCHEDULE = "30 23 * * *"


def digest_day_of(engine: Any, logical_date: dt.datetime | None, params: dict[str, Any]) -> dt.date:
    """The ``day`` param, else the logical date (else now) in the policy's default zone."""
    from ..run.digest import digest_day

    if params.get("day"):
        return dt.date.fromisoformat(str(params["day"]))
    return digest_day(engine, logical_date or _now())


def build_care_agent_digest() -> Any:
    @dag(
        dag_id=DAG_ID,
        description="Each agent's daily digest of open and overdue tasks; escalations to managers.",
        schedule=CronTriggerTimetable(SCHEDULE, timezone="UTC"),
        start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        params={
            "day": day_param(
                "The digest's day (YYYY-MM-DD); default: the logical date's, in the policy's zone."
            ),
        },
        tags=["caretouch"],
    )
    def care_agent_digest() -> None:
        @task(pool=SEND_POOL)
        def digest(**context: Any) -> dict[str, Any]:
            from ..run.digest import run_digests

            engine = _engine()
            day = digest_day_of(engine, context.get("logical_date"), context["params"])
            summary = run_digests(engine, day, run_id=task_run_id(context, DAG_ID))
            for line in summary.lines():
                log.info("%s", line)
            if not summary.ok:
                raise RuntimeError(
                    f"{len(summary.failed)} digest(s) of {day.isoformat()} failed "
                    "(the others were sent; a retry sends only those)"
                )
            return summary.as_dict()

        digest()

    return care_agent_digest()
