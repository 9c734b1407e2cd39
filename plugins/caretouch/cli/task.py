"""``care task``: the tasks for agents (calls, visits, gifts) that ``agent_task`` rules
assign: list the open ones, record what came of one (docs/operations.md, "The agents' day")."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from typing import TYPE_CHECKING

import click

from ..errors import TaskError
from ..vocab import TaskOutcome
from .common import (
    EXIT_INVALID,
    EXIT_USAGE,
    anchor_ledger,
    cli_actor,
    cli_run_id,
    config_of,
    fail,
    friendly_errors,
    open_current_store,
    parse_now,
)

if TYPE_CHECKING:
    pass

# The columns of ``care task list`` (table and CSV), in order.
COLUMNS = ("task", "due", "kind", "agent_id", "customer_id", "phone", "rule_id", "brief")
_BRIEF_IN_TABLE = 40


@click.group()
def task() -> None:
    """Tasks for agents: list the open ones, record their outcome, email the daily digest."""


def _date(value: str | None, hint: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)", param_hint=hint) from None


@task.command("list")
@click.option("--agent", "agent_id", help="Only this agent's tasks (agents.agent_id).")
@click.option("--due-before", metavar="YYYY-MM-DD", help="Only tasks due before this local date.")
@click.option(
    "--date",
    "day_text",
    metavar="YYYY-MM-DD",
    help="Today, to mark overdue tasks (default: today in UTC).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
)
@click.pass_context
@friendly_errors
def task_list(
    ctx: click.Context,
    agent_id: str | None,
    due_before: str | None,
    day_text: str | None,
    fmt: str,
) -> None:
    """The open (assigned) tasks, by due day; customers' phones masked."""
    from ..ledger.audit import csv_cell
    from ..run.tasks import open_tasks

    # The CLI's one entry of real time (common.parse_now), to mark what is overdue.
    today = _date(day_text, "--date") or parse_now(None).date()
    rows = open_tasks(
        open_current_store(ctx),
        today,
        agent_id=agent_id,
        due_before=_date(due_before, "--due-before"),
    )
    if fmt == "json":
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([*COLUMNS, "overdue"])
        for row in rows:
            writer.writerow([csv_cell(row[c]) for c in COLUMNS] + [row["overdue"]])
        click.echo(out.getvalue(), nl=False)
        return
    if not rows:
        click.echo("no open task", err=True)
        return
    click.echo(
        f"{'TASK':>6}  {'DUE':12}  {'KIND':5}  {'AGENT':12}  {'CUSTOMER':12}  {'PHONE':16}  BRIEF"
    )
    for row in rows:
        brief = " ".join(row["brief"].split())
        if len(brief) > _BRIEF_IN_TABLE:
            brief = brief[: _BRIEF_IN_TABLE - 1] + "…"
        due = row["due"] + (" !" if row["overdue"] else "")
        click.echo(
            f"{row['task']:>6}  {due:12}  {row['kind']:5}  {row['agent_id']:12}  "
            f"{row['customer_id']:12}  {row['phone'] or '-':16}  {brief}"
        )
    overdue = sum(r["overdue"] for r in rows)
    click.echo(f"{len(rows)} open task(s)" + (f", {overdue} overdue (!)" if overdue else ""))


@task.command("done")
@click.argument("task_ref", metavar="TASK")
@click.option(
    "--outcome",
    type=click.Choice([o.value for o in TaskOutcome]),
    required=True,
    help="reached, visited: done; no_answer; declined.",
)
@click.option("--satisfaction", type=click.IntRange(1, 5), help="The customer's satisfaction, 1-5.")
@click.option("--note", help="A line for the record (at most 1000 characters).")
@click.option(
    "--by",
    help="Who records the outcome (default: cli:<OS user>@<host>, from the login name).",
)
@click.pass_context
@friendly_errors
def task_done(
    ctx: click.Context,
    task_ref: str,
    outcome: str,
    satisfaction: int | None,
    note: str | None,
    by: str | None,
) -> None:
    """Record what came of TASK (its id in care task list, or its touch key): appended to the
    ledger, chained, from assigned only. A task no longer open: exit 2, nothing written."""
    from ..run.tasks import OUTCOME_STATUS, complete_task

    store = open_current_store(ctx)
    now = parse_now(None)  # when the outcome was given: the CLI's entry of real time
    run_id = cli_run_id()
    try:
        done = complete_task(
            store,
            task_ref,
            TaskOutcome(outcome),
            by=by if by is not None else f"cli:{cli_actor()}",
            run_id=run_id,
            now=now,
            satisfaction=satisfaction,
            note=note,
        )
    except TaskError as exc:
        fail(f"error: {exc}; nothing was recorded", EXIT_USAGE)
        return
    anchor_ledger(config_of(ctx), store, run_id, now)
    status = OUTCOME_STATUS[TaskOutcome(outcome)].value
    click.echo(f"task {done.touch_id} ({done.kind}, customer {done.customer_id}): {status}")


@task.command("digest")
@click.option(
    "--date",
    "day_text",
    metavar="YYYY-MM-DD",
    help="The digest's day (default: today in the policy's default time zone).",
)
@click.option("--dry-run", is_flag=True, help="Render every digest; claim and send nothing.")
@click.option("--agent", "agents", multiple=True, help="Only this agent's digest (repeatable).")
@click.pass_context
@friendly_errors
def task_digest(
    ctx: click.Context, day_text: str | None, dry_run: bool, agents: tuple[str, ...]
) -> None:
    """Email each agent the digest of their open and overdue tasks, and each manager the
    tasks of their agents overdue for $CARE_ESCALATE_AFTER_DAYS days; once per agent and day
    (for cron; the care_agent_digest DAG does the same). Exit 1 when a digest failed."""
    from ..run.digest import run_digests
    from .common import open_engine

    config = config_of(ctx)
    engine = open_engine(config, live_clock=True, writes=not dry_run)
    summary = run_digests(
        engine,
        _date(day_text, "--date"),
        run_id=cli_run_id(),
        dry_run=dry_run,
        agent_ids=frozenset(agents) or None,
    )
    for line in summary.lines():
        click.echo(line)
    if not summary.ok:
        fail(f"error: {len(summary.failed)} digest(s) failed", EXIT_INVALID)
