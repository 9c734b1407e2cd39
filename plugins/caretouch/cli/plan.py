"""``care plan``, ``care run``, ``care dispatch`` and ``care preview``: a day's touches,
planned (dry run), sent, sent as they fall due, or one rendered for a real customer."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .. import storage
from .common import (
    EXIT_PARTIAL,
    check_rule_ids,
    cli_run_id,
    config_of,
    friendly_errors,
    open_engine,
    parse_day,
    parse_now,
    record_pending_callbacks,
    rule_errors,
)


def _say_transports(engine: Any) -> None:
    """Which provider each channel goes through (stderr: the run's output stays clean)."""
    parts = [
        f"{ch.value} via {t.name}"
        + (
            f" ({t.rate:g}/s{' shared' if t.shared_limiter else ''}, {t.workers} at once)"
            if t.name != "outbox"
            else ""
        )
        for ch, t in engine.transports.items()
    ]
    click.echo("sending: " + ", ".join(parts), err=True)


@click.command()
@click.option("--date", "day_text", metavar="YYYY-MM-DD", help="Local date to plan.")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.option("--explain", is_flag=True, help="Show why each touch is sent or suppressed.")
@click.option("--rule", "rule_ids", multiple=True, help="Only these rules.")
@click.pass_context
@friendly_errors
def plan(
    ctx: click.Context, day_text: str | None, fmt: str, explain: bool, rule_ids: tuple[str, ...]
) -> None:
    """Dry run: every candidate touch due on a local date, sent or suppressed. Writes nothing."""
    from ..ledger import Ledger
    from ..plan import plan_day

    day = parse_day(day_text)
    engine = open_engine(config_of(ctx))
    check_rule_ids(engine.ruleset, rule_ids, "--rule")
    touches = plan_day(
        engine.store,
        engine.ruleset,
        day,
        rule_ids=rule_ids or None,
        history=Ledger(engine.store),
    )
    if fmt == "json":
        for t in touches:
            line = t.as_json()
            if explain:
                line["explain"] = t.explain
            click.echo(json.dumps(line, ensure_ascii=False))
        return
    from ..reports.day_summary import text_table

    rows = [
        [
            t.rule.id,
            t.customer_id,
            (t.policy or {}).get("policy_id") or (t.event or {}).get("event_id") or "",
            t.channel.value if t.channel else "-",
            t.send_at.strftime("%Y-%m-%d %H:%MZ"),
            t.decision.value,
            t.reason.value if t.reason else "",
        ]
        for t in touches
    ]
    header = ["rule", "customer", "policy/event", "channel", "send_at (UTC)", "decision", "reason"]
    if any(t.rule.variants for t in touches):  # a column only when some rule has variants
        header.append("variant")
        for row, t in zip(rows, touches, strict=True):
            row.append(t.variant.id if t.variant is not None else "")
    for text_line in text_table(header, rows):
        click.echo(text_line)
    if explain:
        # Per customer: every candidate of the day, its decision and the clause behind it.
        by_customer: dict[str, list[Any]] = {}
        for t in touches:
            by_customer.setdefault(t.customer_id, []).append(t)
        for customer_id in sorted(by_customer):
            first = by_customer[customer_id][0]
            click.echo(
                f"\ncustomer {customer_id} (tier {first.customer.get('tier')}, {first.timezone}):"
            )
            for t in sorted(by_customer[customer_id], key=lambda t: (-t.rule.priority, t.rule.id)):
                verdict = t.decision.value + (f" ({t.reason.value})" if t.reason else "")
                click.echo(f"  {t.key} [priority {t.rule.priority}]: {verdict}")
                for why in t.explain:
                    click.echo(f"      {why}")
    sends = sum(1 for t in touches if t.decision.value == "send")
    click.echo(
        f"\n{len(touches)} candidate(s) on {day}: {sends} to send, {len(touches) - sends} suppressed."
    )


@click.command()
@click.option("--date", "day_text", metavar="YYYY-MM-DD", help="Local date to run.")
@click.option(
    "--now", "now_text", metavar="ISO", help="Treat this instant as now (tests, replays)."
)
@click.pass_context
@friendly_errors
def run(ctx: click.Context, day_text: str | None, now_text: str | None) -> None:
    """Plan, render, send and record a day's touches. Idempotent: rerunning sends nothing twice."""
    from ..events.churn import raise_for_day
    from ..reports.run_summary import RunSummary
    from ..run.day import run_day

    day = parse_day(day_text)
    now = parse_now(now_text)
    engine = open_engine(config_of(ctx), live_clock=now_text is None, writes=True)
    record_pending_callbacks(engine.store, now)
    run_id = cli_run_id()
    _say_transports(engine)
    bar: Any = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:  # a bar on a terminal; just the label when stderr is not one
            bar = click.progressbar(
                length=total, label=f"sending {day}", file=sys.stderr, show_pos=True
            ).__enter__()
        bar.update(done - bar.pos)

    # Customers at high risk of leaving: their agents' retention calls, planned with the day.
    raise_for_day(engine, day, now=now)
    try:
        report = run_day(engine, day, run_id=run_id, now=now, progress=progress)
    finally:
        if bar is not None:
            bar.render_finish()
    summary = RunSummary.from_ledger(
        engine.ledger,
        run_id=run_id,
        kind="care run",
        day=day,
        finished_at=engine.stamp(now),
        this_run=report.as_dict(),
        failures=report.failures,
        rule_errors=rule_errors(ctx),
    )
    click.echo(summary.render())
    click.echo(f"summary stored in {summary.store(storage.reports(engine.config))}", err=True)
    for failure in report.failures[:50]:
        click.echo(f"failed: {failure}", err=True)
    if report.failed:
        sys.exit(EXIT_PARTIAL)


@click.command()
@click.option(
    "--now", "now_text", metavar="ISO", help="Treat this instant as now (tests, replays)."
)
@click.pass_context
@friendly_errors
def dispatch(ctx: click.Context, now_text: str | None) -> None:
    """Plan the local dates in effect now and send every touch whose time has come.

    What the care_dispatch DAG does every 15 minutes; run it from cron without Airflow.
    """
    from ..reports.run_summary import render_rule_errors, store_dispatch_summary, this_run_counts
    from ..run.day import dispatch as dispatch_due

    now = parse_now(now_text)
    engine = open_engine(config_of(ctx), live_clock=now_text is None, writes=True)
    record_pending_callbacks(engine.store, now)
    run_id = cli_run_id()
    _say_transports(engine)
    report = dispatch_due(engine, run_id=run_id, now=now)
    counts = this_run_counts(engine.ledger, run_id, report.as_dict())
    click.echo(f"dispatch ({run_id}): " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if rule_errors(ctx):
        click.echo(render_rule_errors(rule_errors(ctx)).strip())
    stored = store_dispatch_summary(
        engine.ledger,
        storage.reports(engine.config),
        counts,
        run_id=run_id,
        kind="care dispatch",
        now=engine.stamp(now),
        failures=report.failures,
        rule_errors=rule_errors(ctx),
    )
    if stored is not None:
        click.echo(f"summary stored in {stored}")
    for failure in report.failures[:50]:
        click.echo(f"failed: {failure}", err=True)
    if report.failed:
        sys.exit(EXIT_PARTIAL)


@click.command()
@click.argument("rule_id")
@click.option("--customer", "customer_id", required=True, help="Customer id.")
@click.option(
    "--date", "day_text", metavar="YYYY-MM-DD", required=True, help="Local date the touch is due."
)
@click.option(
    "--channel",
    type=click.Choice(["sms", "email"]),
    help="Channel (default: the one the plan would choose).",
)
@click.pass_context
@friendly_errors
def preview(
    ctx: click.Context, rule_id: str, customer_id: str, day_text: str | None, channel: str | None
) -> None:
    """Render a rule's message for a real customer, exactly as it would be sent."""
    from ..reports.preview import preview_touch

    engine = open_engine(config_of(ctx))
    check_rule_ids(engine.ruleset, [rule_id], "'RULE_ID'")
    day = parse_day(day_text)
    result = preview_touch(engine, rule_id, customer_id, day, channel)
    click.echo(result)
