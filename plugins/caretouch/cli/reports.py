"""``care forecast`` and ``care report``: what the rules would plan over the coming days, and
the weekly, monthly or quarterly service report from the ledger."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .common import (
    EXIT_PARTIAL,
    OutputPath,
    check_rule_ids,
    config_of,
    friendly_errors,
    open_engine,
    parse_day,
)


@click.command()
@click.option("--from", "first_text", metavar="YYYY-MM-DD", required=True, help="First local date.")
@click.option("--days", type=click.IntRange(1, 400), default=30, show_default=True)
@click.option("--rule", "rule_ids", multiple=True, help="Only these rules or campaigns.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "png", "html"]),
    default="table",
    show_default=True,
)
@click.option(
    "--by",
    "by",
    type=click.Choice(["rule", "tier", "agent", "sms"]),
    default="rule",
    show_default=True,
    help="csv: which table (by day and rule; by tier and service level; tasks per agent; "
    "SMS segments and estimated cost per day). table and html show them all.",
)
@click.option(
    "--output",
    type=OutputPath(),
    help="File to write (default: stdout for table and csv, forecast-FROM-Nd.png|html); "
    "missing folders are created.",
)
@click.pass_context
@friendly_errors
def forecast(
    ctx: click.Context,
    first_text: str,
    days: int,
    rule_ids: tuple[str, ...],
    fmt: str,
    by: str,
    output: Path | None,
) -> None:
    """Per local date, how many touches each rule and campaign would plan, send and suppress
    (by reason); per tier and service level, the messages and tasks; the tasks per agent.
    Computed as `care plan` does, against the ledger; writes nothing."""
    from ..config import unwritable
    from ..ledger import Ledger
    from ..reports import forecast as fc_module

    first = parse_day(first_text)
    target = output or Path(f"forecast-{first}-{days}d.{fmt}")
    problem = unwritable(target) if output or fmt in ("png", "html") else None
    if problem:  # checked before the computation, which can take minutes
        raise click.BadParameter(problem, param_hint="--output")
    engine = open_engine(config_of(ctx))
    check_rule_ids(engine.ruleset, rule_ids, "--rule")
    with click.progressbar(length=days, label="forecasting", file=sys.stderr, show_pos=True) as bar:
        result = fc_module.forecast(
            engine.store,
            engine.ruleset,
            first,
            days,
            history=Ledger(engine.store),
            rule_ids=rule_ids or None,
            progress=lambda _day: bar.update(1),
            templates=engine.templates,  # render each SMS: its segments
        )
    if fmt in ("table", "csv") and output is None:
        if fmt == "csv":
            click.echo(fc_module.to_csv(result, by), nl=False)
            return
        for line in _forecast_tables(result):
            click.echo(line)
        click.echo(
            f"\n{result.total('candidates')} candidate(s) over {days} day(s) from {first}: "
            f"{result.total('send')} to send. Each day as `care plan` plans it now; "
            "see docs/operations.md."
        )
        return
    if fmt == "png":
        target.write_bytes(fc_module.to_png(result))
    elif fmt == "html":
        target.write_text(fc_module.to_html(result), encoding="utf-8")
    elif fmt == "csv":
        target.write_text(fc_module.to_csv(result, by), encoding="utf-8")
    else:
        lines = _forecast_tables(result)
        target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    click.echo(f"wrote {target}")


def _forecast_tables(result: Any) -> list[str]:
    """The forecast's three tables as text: by day and rule, by tier and service level, and
    the tasks per agent (when there are tasks)."""
    from ..reports import forecast as fc_module
    from ..reports.day_summary import text_table

    lines = list(text_table(*fc_module.table_rows(result)))
    lines += ["", "By tier and service level"]
    lines += text_table(*fc_module.tier_rows(result))
    if result.agents:
        lines += ["", "Tasks per agent"]
        lines += text_table(*fc_module.agent_rows(result))
    if result.sms_counted:
        lines += [
            "",
            "SMS segments per day (each SMS to send, rendered; the carrier bills segments)",
        ]
        lines += text_table(*fc_module.sms_rows(result))
    return lines


# -- report --------------------------------------------------------------------------------


@click.command()
@click.option("--month", metavar="YYYY-MM", help="A calendar month, e.g. 2026-11.")
@click.option("--week", metavar="YYYY-Www", help="An ISO week, e.g. 2026-W47.")
@click.option("--quarter", metavar="YYYYQn", help="A calendar quarter, e.g. 2026Q4.")
@click.option(
    "--output",
    type=OutputPath(),
    help="HTML file (default: REPORTS_DIR/care-report-<period>.html); missing folders are "
    "created. A CSV file of each table is written next to it (<file>-<table>.csv).",
)
@click.option(
    "--email-to",
    "email_to",
    multiple=True,
    metavar="ADDRESS",
    help="Also email it (repeatable) through the email channel: SendGrid when configured, "
    "else the outbox.",
)
@click.pass_context
@friendly_errors
def report(
    ctx: click.Context,
    month: str | None,
    week: str | None,
    quarter: str | None,
    output: Path | None,
    email_to: tuple[str, ...],
) -> None:
    """The weekly, monthly or quarterly service report (HTML with charts, and a CSV file of
    each table), from the ledger and the store."""
    import datetime as dt

    from ..render.templates import TemplateStore
    from ..reports.figures import Period
    from ..reports.service_report import summary_line, write_report
    from ..reports.variants import text_lines
    from ..rules.loader import load_rules
    from ..schema import require_current_schema
    from ..storage import reports
    from ..store.db import open_store

    chosen = [
        (o, v) for o, v in (("--month", month), ("--week", week), ("--quarter", quarter)) if v
    ]
    if len(chosen) != 1:
        raise click.UsageError("give one of --month YYYY-MM, --week YYYY-Www or --quarter YYYYQn")
    _check_addresses(email_to)
    option, text = chosen[0]
    parse = {"--month": Period.month, "--week": Period.week, "--quarter": Period.quarter}[option]
    try:
        period = parse(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None
    config = config_of(ctx)
    _check_report_destinations(config, period, output, bool(email_to))
    store = open_store(config.store_url)
    require_current_schema(store)
    now = dt.datetime.now(dt.timezone.utc)  # clock: the CLI stamps when the report was made
    # The rules define the service obligations and the complaint follow-up figure.
    ruleset = load_rules(config.rules_dir, TemplateStore(config.templates_dir))
    path, result = write_report(
        store, period, reports(config), generated_at=now, output=output, ruleset=ruleset
    )
    click.echo(summary_line(result))
    for line in text_lines(result.variants):
        click.echo(line)
    click.echo(f"wrote {path}")
    for table in result.csv_files:
        click.echo(f"wrote {table}")
    if email_to:
        _email_report(config, result, path, list(email_to))


def _check_report_destinations(config: Any, period: Any, output: Path | None, email: bool) -> None:
    """The report's file (and the outbox, when it is emailed through it), before the work."""
    from ..channels.registry import transports_from_env
    from ..errors import ConfigurationError
    from ..reports.service_report import report_path
    from ..storage import outbox, reports
    from ..vocab import Channel

    if output is None:
        problem = report_path(reports(config), period).problem(folder=False)
        if problem:
            raise ConfigurationError(f"reports folder (CARE_REPORTS_DIR): {problem}")
    if email and transports_from_env(config.outbox_dir)[Channel.EMAIL].name == "outbox":
        problem = outbox(config).problem(folder=True)
        if problem:
            raise ConfigurationError(f"outbox folder (--outbox, CARE_OUTBOX_DIR): {problem}")


def _check_addresses(addresses: tuple[str, ...]) -> None:
    """Refuse a bad address before anything is written or sent."""
    from email_validator import EmailNotValidError, validate_email

    from ..mask import mask_email

    for address in addresses:
        try:
            validate_email(address, check_deliverability=False)
        except EmailNotValidError as exc:
            raise click.BadParameter(
                f"{mask_email(address)} is not a valid email address ({exc})",
                param_hint="--email-to",
            ) from None


def _email_report(config: Any, result: Any, path: Any, recipients: list[str]) -> None:
    from ..channels.registry import transports_from_env
    from ..mask import mask_email
    from ..reports.service_report import email_report
    from ..vocab import Channel, Outcome

    transport = transports_from_env(config.outbox_dir)[Channel.EMAIL]
    answers = email_report(result, path.read_text(encoding="utf-8"), recipients, transport)
    failed = 0
    for address, answer in answers:
        verdict = answer.outcome.value + (f" ({answer.detail})" if answer.detail else "")
        click.echo(f"emailed to {mask_email(address)} via {transport.name}: {verdict}")
        failed += answer.outcome is not Outcome.SENT
    if failed:
        sys.exit(EXIT_PARTIAL)
