"""``care_daily`` and ``care_dispatch``: the daily plan and the frequent sender.

``care_daily`` runs at 12:00 UTC and plans the *next* local date: at that moment the next
day has begun only east of UTC+12, where it is at most 02:00, hours before any send time
(quiet hours end at 08:00), so every touch is planned before it is due in every zone. A run can be pointed at any local date with the
``day`` param (``airflow dags trigger care_daily -c '{"day": "2026-11-23"}'``); reruns and
backfills are safe because the ledger keys every touch.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from airflow.sdk import Param, dag, task
from airflow.sdk.exceptions import AirflowFailException

from .. import storage
from ..config import CareConfig
from ..reports.run_summary import chunk_progress, store_dispatch_summary, this_run_counts
from .hooks import SEND_POOL

log = logging.getLogger("caretouch.airflow")

BATCH_SIZE = 500
# At most this many mapped send tasks per DAG run: each takes a shard of the touches (by id),
# never a list of them, so a festival day's 500,000 touches pass no ids through XCom and stay
# far below Airflow's 1,024 mapped tasks.
MAX_SEND_SHARDS = 64
DEFAULT_ARGS = {"retries": 2, "retry_delay": dt.timedelta(minutes=1)}


def day_param(description: str) -> Param:
    """The ``day`` parameter of a DAG run: an optional local date (YYYY-MM-DD)."""
    return Param(None, type=["null", "string"], format="date", description=description)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)  # clock: the glue is where "now" enters a task


def task_run_id(context: Mapping[str, Any], dag_id: str) -> str:
    """Who writes to the ledger from a task: ``airflow:<dag_id>/<run_id>/<task_id>`` with
    ``[<map_index>]`` for a mapped task (one batch of ``send``)."""
    ti = context.get("ti") or context.get("task_instance")
    ident = dag_run_id(context, dag_id)
    task_id = getattr(ti, "task_id", None)
    if task_id:
        ident += f"/{task_id}"
    map_index = getattr(ti, "map_index", None)
    if isinstance(map_index, int) and map_index >= 0:
        ident += f"[{map_index}]"
    return ident[:250]


def later_try(context: Mapping[str, Any]) -> bool:
    """True in a task's second or later try (``ti.try_number`` > 1)."""
    ti = context.get("ti") or context.get("task_instance")
    number = getattr(ti, "try_number", None)
    return isinstance(number, int) and number > 1


def dag_run_id(context: Mapping[str, Any], dag_id: str) -> str:
    """A DAG run as a whole: ``airflow:<dag_id>/<run_id>`` (its summary's name)."""
    ti = context.get("ti") or context.get("task_instance")
    return f"airflow:{getattr(ti, 'dag_id', None) or dag_id}/{context.get('run_id')}"


def run_writers(
    context: Mapping[str, Any], dag_id: str, batches: int, *, planners: int | None = None
) -> list[str]:
    """The run ids the tasks of a plan → send[i] → summarise DAG run wrote under (see
    ``task_run_id``): its summary counts what all of them recorded. ``planners``: the run
    planned in a ``prepare`` task and that many mapped ``plan[k]`` tasks (``care_daily``)."""
    base = dag_run_id(context, dag_id)[:230]
    plans = (
        [f"{base}/plan"]
        if planners is None
        else [f"{base}/prepare", *(f"{base}/plan[{k}]" for k in range(planners))]
    )
    return [*plans, *(f"{base}/send[{i}]" for i in range(batches))]


def planned_day(logical_date: dt.datetime | None, params: dict[str, Any]) -> dt.date:
    """The local date a ``care_daily`` run plans: ``params['day']``, else the day after."""
    if params.get("day"):
        return dt.date.fromisoformat(str(params["day"]))
    if logical_date is None:
        raise ValueError("care_daily needs a logical date or a 'day' param")
    return (logical_date.astimezone(dt.timezone.utc) + dt.timedelta(days=1)).date()


def _engine() -> Any:
    """A task's engine (``run.engine.open_engine``): the configuration from the environment,
    the providers from Airflow Connections, the real clock."""
    from ..run.engine import open_engine
    from .hooks import executor_workers, task_transports

    config = CareConfig.from_env()
    engine = open_engine(
        config,
        transports=task_transports(storage.outbox(config)),
        clock=_now,
        workers=executor_workers(),
    )
    if engine.ruleset.errors:
        for error in engine.ruleset.errors:
            log.error("rule error: %s", error)
        log.warning(
            "%d rule error(s): broken rules are left out, the others run",
            len(engine.ruleset.errors),
        )
    return engine


def record_pending_callbacks(store: Any, *, now: dt.datetime) -> None:
    """Record delivery callbacks left in the intake (``webhooks.intake``): one accepted just
    before the api-server crashed is recorded by the next plan or dispatch at the latest."""
    from ..webhooks.intake import drain_all

    done = drain_all(store, now=now)
    if done.set_aside:
        log.error("%d callback(s) set aside in the intake (docs/webhooks.md)", done.set_aside)


def plan_shards(
    engine: Any, day: dt.date, run_id: str, *, keep: Callable[[list[int]], list[int]] | None = None
) -> tuple[list[list[int]], int, Any]:
    """A ``plan`` task's body (``care_daily``, campaign DAGs): the first half of ``run_day``
    (``run.day.prepare_day``: recover, plan, record). Returns the shards ``[k, n]`` the
    mapped send tasks take (one per ``BATCH_SIZE`` touches to send, at most
    ``MAX_SEND_SHARDS``; none when nothing is to be sent), how many touches there are, and
    the report. ``keep``: the touches of this DAG among them (a campaign's)."""
    from ..run.day import prepare_day
    from ..run.report import SendReport

    report = SendReport()
    ids = prepare_day(engine, day, run_id=run_id, now=_now(), report=report)
    if keep is not None:
        ids = keep(ids)
    return send_shards(len(ids)), len(ids), report


def send_shards(count: int) -> list[list[int]]:
    """The shards ``[k, n]`` the mapped send tasks take for ``count`` touches to send: one
    per ``BATCH_SIZE``, at most ``MAX_SEND_SHARDS``, none when there is nothing to send."""
    n = min(MAX_SEND_SHARDS, -(-count // BATCH_SIZE))
    return [[k, n] for k in range(n)]


def prepare_planners(engine: Any, day: dt.date, run_id: str, planners: int) -> list[list[int]]:
    """``care_daily``'s ``prepare`` task: settle the crashed sends of ``day``
    (``run.recover.recover_in_flight``), expire the open tasks for agents past their expiry
    day (``run.tasks.expire_tasks``) and return the planners' shards ``[k, n]``, one per
    ``CARE_PLAN_SHARDS``."""
    from ..events.churn import raise_for_day
    from ..run.recover import recover_in_flight
    from ..run.tasks import expire_tasks

    report = recover_in_flight(engine, run_id=run_id, now=_now(), day=day)
    # As ``run.day.prepare_day``: tasks for agents past their expiry day, before the plan.
    expire_tasks(engine, day, run_id=run_id, now=_now())
    # As ``care run``: customers at high risk of leaving get their retention calls planned.
    raise_for_day(engine, day, now=_now())
    log.info("day %s: recovered %s; %d planner(s)", day, report.as_dict(), planners)
    return [[k, planners] for k in range(planners)]


def plan_part(engine: Any, day: dt.date, run_id: str, shard: list[int]) -> dict[str, int]:
    """A mapped ``plan`` task's body: plan and record planner ``k`` of ``n``'s share of
    ``day`` (``run.day.plan_and_record``; the whole day when ``n`` is 1). Returns its
    counts, and ``to_send``: the touches of its customers now planned."""
    from ..run.day import plan_and_record
    from ..run.report import SendReport

    k, n = shard
    report = SendReport()
    planned = plan_and_record(
        engine,
        day,
        run_id=run_id,
        now=_now(),
        retry_render_errors=True,
        report=report,
        shard=(k, n) if n > 1 else None,
    )
    counts = {"planned": report.planned, "suppressed": report.suppressed}
    log.info("day %s, planner %d of %d: %s", day, k, n, counts)
    return {**counts, "to_send": len(planned)}


def route_sends(engine: Any, day: dt.date, plans: Any) -> list[list[int]]:
    """``care_daily``'s ``route`` task: the send shards for what the planners left to send
    and what was already waiting for ``day`` (``send_shards``)."""
    from ..run.day import pending_ids

    planned = sum(int(p.get("to_send", 0)) for p in plans or [])
    count = max(planned, len(pending_ids(engine, day)))
    shards = send_shards(count)
    log.info("day %s: %d touch(es) to send by %d shard(s)", day, count, len(shards))
    return shards


def rule_errors(engine: Any) -> list[str]:
    """The rule errors a task ran without (``file:line:col: message``)."""
    return [str(e) for e in engine.ruleset.errors]


def fail_if_partial(errors: list[str], what: str) -> None:
    """End a task that ran without broken rules as failed, once its work is done and its
    summary stored: the healthy rules' touches went out, and the run shows red until the
    rules are fixed. No retry: trying again would not fix a rule file."""
    if errors:
        raise AirflowFailException(
            f"{what} ran partial: {len(errors)} rule error(s), the broken rules were left "
            "out and the others ran: " + "; ".join(errors)
        )


def send_shard(
    shard: list[int], run_id: str, *, rule_ids: list[str] | None = None, retry: bool = False
) -> dict[str, int]:
    """A mapped send task's body (``care_daily``, campaign DAGs): send the planned touches
    of one shard ``[k, n]`` (id modulo ``n`` is ``k``) whose time has come, as ``care
    dispatch`` would; ``rule_ids``: only these rules' (a campaign's). Log what it did.

    ``retry``: this is a later try of the task. Its earlier try is over (Airflow retries a
    task once its try failed, or was declared dead when its worker stopped heartbeating),
    so the touches it left in ``sending`` (it writes under the same run id) are settled now
    with the provider (``recover_in_flight(dead_writer=...)``), not after the lease."""
    from ..ledger.queue import Due
    from ..run.day import pending_ids
    from ..run.recover import recover_in_flight
    from ..run.send import send_due

    k, n = shard
    engine = _engine()
    settled = None
    if retry:
        settled = recover_in_flight(engine, run_id=run_id, now=_now(), dead_writer=run_id)
        log.info("earlier try's touches left in sending settled: %s", settled.as_dict())
    batch = pending_ids(engine, shard=(k, n), rule_ids=rule_ids)
    what = f"shard {k} of {n} ({len(batch)} touch(es))"
    progress = chunk_progress(log, what, len(batch), time.monotonic)
    due = Due(shard=(k, n), rule_ids=tuple(rule_ids) if rule_ids is not None else None)
    report = send_due(engine, due, run_id=run_id, now=_now(), progress=progress)
    if settled is not None:
        report.merge(settled)
    log.info("%s: %s", what, report.as_dict())
    for failure in report.failures:
        log.error("failed: %s", failure)
    return report.as_dict()


def summarise_run(
    reports: Any,
    *,
    run_id: str,
    kind: str,
    day: dt.date,
    rule_ids: list[str] | None = None,
    what: str = "",
    writers: list[str] | None = None,
) -> dict[str, Any]:
    """A summary task's body: anchor the ledger, add up the batches, log and store the
    run's summary; raise if any touch failed (the run shows failed, the summary says why)."""
    from ..reports.run_summary import RunSummary
    from ..run.engine import anchor

    engine = _engine()
    anchor(engine, run_id=run_id, now=_now())
    totals: dict[str, int] = {}
    for report in reports or []:
        for key, value in report.items():
            totals[key] = totals.get(key, 0) + value
    errors = rule_errors(engine)
    summary = RunSummary.from_ledger(
        engine.ledger,
        run_id=run_id,
        kind=kind,
        day=day,
        finished_at=_now(),
        this_run=totals,
        rule_ids=rule_ids,
        rule_errors=errors,
        writers=writers,
    )
    for line in summary.render().splitlines():
        log.info("%s", line)
    log.info("summary stored in %s", summary.store(storage.reports(engine.config)))
    failed = summary.this_run.get("failed", 0)
    if failed:
        raise RuntimeError(
            f"{failed} touch(es){what} failed on {day}; see the ledger and the send task logs"
        )
    fail_if_partial(errors, f"{kind} for {day}")
    return {**summary.summary.as_dict(), "this_run": summary.this_run}


def build_care_daily() -> Any:
    @dag(
        dag_id="care_daily",
        description="Plan a local day's care touches, send those due, and report.",
        schedule="0 12 * * *",
        start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        params={
            "day": day_param(
                "Local date to plan (YYYY-MM-DD); default: the day after the logical date."
            ),
        },
        tags=["caretouch"],
    )
    def care_daily() -> None:
        def day_of(context: Any) -> dt.date:
            return planned_day(context.get("logical_date"), context["params"])

        @task
        def prepare(**context: Any) -> list[list[int]]:
            engine = _engine()
            record_pending_callbacks(engine.store, now=_now())
            run_id = task_run_id(context, "care_daily")
            return prepare_planners(engine, day_of(context), run_id, engine.config.plan_shards)

        @task
        def plan(shard: list[int], **context: Any) -> dict[str, int]:
            return plan_part(_engine(), day_of(context), task_run_id(context, "care_daily"), shard)

        @task
        def route(plans: Any = None, **context: Any) -> list[list[int]]:
            return route_sends(_engine(), day_of(context), plans)

        @task(pool=SEND_POOL)
        def send(shard: list[int], **context: Any) -> dict[str, int]:
            return send_shard(shard, task_run_id(context, "care_daily"), retry=later_try(context))

        @task(trigger_rule="none_failed")
        def summarise(reports: Any = None, **context: Any) -> dict[str, Any]:
            planners = len(context["ti"].xcom_pull(task_ids="prepare") or [])
            return summarise_run(
                reports,
                run_id=task_run_id(context, "care_daily"),
                writers=run_writers(context, "care_daily", len(reports or []), planners=planners),
                kind="care_daily",
                day=day_of(context),
            )

        sent = send.expand(shard=route(plan.expand(shard=prepare())))
        summarise(sent)

    return care_daily()


def build_care_dispatch() -> Any:
    @dag(
        dag_id="care_dispatch",
        description="Plan the dates in effect and send touches whose time has come.",
        schedule="*/15 * * * *",
        start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["caretouch"],
    )
    def care_dispatch() -> None:
        @task(pool=SEND_POOL)
        def dispatch(**context: Any) -> dict[str, int]:
            from ..run.day import dispatch as dispatch_due

            engine = _engine()
            record_pending_callbacks(engine.store, now=_now())
            run_id = task_run_id(context, "care_dispatch")
            report = dispatch_due(engine, run_id=run_id, now=_now())
            counts = this_run_counts(engine.ledger, run_id, report.as_dict())
            log.info("dispatch: %s", counts)
            for failure in report.failures:
                log.error("failed: %s", failure)
            errors = rule_errors(engine)
            stored = store_dispatch_summary(
                engine.ledger,
                storage.reports(engine.config),
                counts,
                run_id=run_id,
                kind="care_dispatch",
                now=_now(),
                failures=report.failures,
                rule_errors=errors,
            )
            if stored is not None:
                log.info("summary stored in %s", stored)
            fail_if_partial(errors, "care_dispatch")
            return counts

        dispatch()

    return care_dispatch()
