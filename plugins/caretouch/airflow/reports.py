"""``care_reports``: the monthly report on the 5th, the quarterly one on the 5th of January,
April, July and October, the weekly one on Mondays (06:00 UTC).

The monthly run reports the previous calendar month (by the 5th, late delivery reports and
the complaint follow-ups of the month's last days are in); on the 5th of a quarter's first
month it also reports the previous quarter; the Monday run reports the ISO week that ended the
day before. A run can be pointed at any period with the ``month``, ``week`` or ``quarter``
param (``airflow dags trigger care_reports -c '{"quarter": "2026Q4"}'``). Reports are written
to ``CARE_REPORTS_DIR`` (default ``reports/``) as ``care-report-<period>.html`` with a CSV file
of each table next to it (``care-report-<period>-<table>.csv``), the same files ``care
report`` writes; running one again rewrites them.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from airflow.sdk import MultipleCronTriggerTimetable, Param, dag, task

from .. import storage
from ..config import CareConfig
from ..reports.figures import Period
from .daily import DEFAULT_ARGS, _now

log = logging.getLogger("caretouch.airflow")

MONTHLY = "0 6 5 * *"
WEEKLY = "0 6 * * 1"
# The quarterly report runs with the monthly one on the 5th of a quarter's first month.
QUARTER_STARTS = (1, 4, 7, 10)


def periods_due(logical_date: dt.datetime | None, params: dict[str, Any]) -> list[Period]:
    """The periods a run reports: the params' ones, else those the logical date calls for."""
    if params.get("month") or params.get("week") or params.get("quarter"):
        chosen = []
        if params.get("month"):
            chosen.append(Period.month(str(params["month"])))
        if params.get("week"):
            chosen.append(Period.week(str(params["week"])))
        if params.get("quarter"):
            chosen.append(Period.quarter(str(params["quarter"])))
        return chosen
    if logical_date is None:
        raise ValueError(
            "care_reports needs a logical date or a 'month', 'week' or 'quarter' param"
        )
    day = logical_date.astimezone(dt.timezone.utc).date()
    due = []
    if day.day == 5:
        due.append(Period.of_month(day.replace(day=1) - dt.timedelta(days=1)))
        if day.month in QUARTER_STARTS:
            due.append(Period.of_quarter(day.replace(day=1) - dt.timedelta(days=1)))
    if day.weekday() == 0:
        due.append(Period.of_week(day - dt.timedelta(days=7)))
    return due


def report_recipients(config: CareConfig) -> list[str]:
    """``$CARE_REPORT_EMAIL_TO``: comma-separated staff addresses the reports are emailed to."""
    return list(config.report_email_to)


def _email(result: Any, path: Any, config: Any) -> None:
    """Email the report when ``$CARE_REPORT_EMAIL_TO`` names recipients; a refused send fails
    the task (the report file is written either way)."""
    from ..mask import mask_email
    from ..reports.service_report import email_report
    from ..vocab import Channel, Outcome
    from .hooks import task_transports

    recipients = report_recipients(config)
    if not recipients:
        return
    transport = task_transports(storage.outbox(config))[Channel.EMAIL]
    answers = email_report(result, path.read_text(encoding="utf-8"), recipients, transport)
    refused = [a for a, r in answers if r.outcome is not Outcome.SENT]
    for address, answer in answers:
        log.info("emailed to %s via %s: %s", mask_email(address), transport.name, answer.outcome)
    if refused:
        raise RuntimeError(
            f"the report could not be emailed to {len(refused)} of {len(answers)} recipient(s)"
        )


def build_care_reports() -> Any:
    @dag(
        dag_id="care_reports",
        description="The monthly (5th), quarterly (5th of Jan, Apr, Jul, Oct) and weekly "
        "(Monday) care reports, as HTML and CSV.",
        schedule=MultipleCronTriggerTimetable(MONTHLY, WEEKLY, timezone="UTC"),
        start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        params={
            "month": Param(None, type=["null", "string"], description="A month, YYYY-MM."),
            "week": Param(None, type=["null", "string"], description="An ISO week, YYYY-Www."),
            "quarter": Param(
                None, type=["null", "string"], description="A calendar quarter, YYYYQn."
            ),
        },
        tags=["caretouch"],
    )
    def care_reports() -> None:
        @task
        def report(**context: Any) -> list[dict[str, Any]]:
            from ..config import CareConfig
            from ..reports.service_report import write_report
            from ..schema import require_current_schema
            from ..store.db import open_store

            periods = periods_due(context.get("logical_date"), context["params"])
            if not periods:
                log.info("nothing to report for this run (neither the 5th nor a Monday)")
                return []
            from ..render.templates import TemplateStore
            from ..reports.service_report import summary_line
            from ..rules.loader import load_rules

            config = CareConfig.from_env()
            store = open_store(config.store_url)
            require_current_schema(store)
            # The rules define the service obligations and the complaint follow-up figure.
            ruleset = load_rules(config.rules_dir, TemplateStore(config.templates_dir))
            done = []
            for period in periods:
                path, result = write_report(
                    store, period, storage.reports(config), generated_at=_now(), ruleset=ruleset
                )
                n = result.now
                log.info(
                    "%s; wrote %s and %d CSV table(s) next to it",
                    summary_line(result),
                    path,
                    len(result.csv_files),
                )
                done.append(
                    {
                        "period": period.label,
                        "path": str(path),
                        "csv": [str(c) for c in result.csv_files],
                        "sent": n.sent,
                    }
                )
                _email(result, path, config)
            return done

        report()

    return care_reports()
