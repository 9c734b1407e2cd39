"""``care store``: create the store and import agents, customers, policies, events and
relations."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from .common import OutputPath, anchor_ledger, cli_run_id, config_of, fail, friendly_errors


@click.group()
def store() -> None:
    """Create the store and import agents, customers, policies, events and relations."""


@store.command("init")
@click.option(
    "--app-role",
    metavar="ROLE",
    help="PostgreSQL: the role the application connects as; granted only SELECT and INSERT "
    "on the ledger (run init as the schema's owner, not as this role).",
)
@click.pass_context
@friendly_errors
def store_init(ctx: click.Context, app_role: str | None) -> None:
    """Create the store and ledger tables (safe to repeat)."""
    from ..schema.migrate import upgrade
    from ..store.db import check_reachable, open_store

    s = open_store(config_of(ctx).store_url)
    check_reachable(s)
    upgrade(s, app_role=app_role)
    click.echo(f"store ready: {s.masked_url()}")
    if app_role:
        click.echo(f"role {app_role}: SELECT and INSERT on the ledger tables, nothing more")


@store.command("upgrade")
@click.option(
    "--app-role",
    metavar="ROLE",
    help="PostgreSQL: the role the application connects as; granted only SELECT and INSERT "
    "on the ledger (run upgrade as the schema's owner, not as this role).",
)
@click.pass_context
@friendly_errors
def store_upgrade(ctx: click.Context, app_role: str | None) -> None:
    """Bring an existing store's schema up to this version (adopts a store made before
    schema versions)."""
    from ..schema import require_existing_store
    from ..schema.migrate import upgrade
    from ..store.db import open_store

    s = open_store(config_of(ctx).store_url)
    require_existing_store(s)
    before, after = upgrade(s, app_role=app_role)
    if before == after:
        click.echo(f"store already at schema version {after}: {s.masked_url()}")
    else:
        was = f"schema version {before}" if before else "no schema version (older Caretouch)"
        click.echo(f"store upgraded to schema version {after} from {was}: {s.masked_url()}")
    if app_role:
        click.echo(f"role {app_role}: SELECT and INSERT on the ledger tables, nothing more")


@store.command("import")
@click.option("--agents", type=click.Path(path_type=Path, dir_okay=False), help="agents CSV")
@click.option("--customers", type=click.Path(path_type=Path, dir_okay=False), help="customers CSV")
@click.option("--policies", type=click.Path(path_type=Path, dir_okay=False), help="policies CSV")
@click.option("--events", type=click.Path(path_type=Path, dir_okay=False), help="events CSV")
@click.option(
    "--relations",
    type=click.Path(path_type=Path, dir_okay=False),
    help="relations CSV (customers' family members)",
)
@click.option(
    "--skip-invalid",
    is_flag=True,
    help="Import the valid rows; write the rejected ones to --rejects.",
)
@click.option(
    "--rejects",
    type=OutputPath(),
    help="Rejects file (default rejects.csv).",
)
@click.pass_context
@friendly_errors
def store_import(
    ctx: click.Context,
    agents: Path | None,
    customers: Path | None,
    policies: Path | None,
    events: Path | None,
    relations: Path | None,
    skip_invalid: bool,
    rejects: Path | None,
) -> None:
    """Import CSV files whose headers are the store's column names.

    Agents are read first, then customers, policies, events and relations, so a row may name
    an agent or customer of the same import. All-or-nothing unless --skip-invalid: any bad row means nothing is written, and every
    bad row is listed as FILE:LINE: reason.
    """
    from ..ledger.consent import record_consent_changes
    from ..rules.event_types import load_event_types
    from ..schema import Shape, require_current_schema, shape
    from ..schema.migrate import upgrade
    from ..store.db import check_reachable, open_store
    from ..store.importer import import_csv

    given = (
        ("agent", agents),
        ("customer", customers),
        ("policy", policies),
        ("event", events),
        ("relation", relations),
    )
    files = {table: path for table, path in given if path}
    if not files:
        raise click.UsageError(
            "give at least one of --agents, --customers, --policies, --events, --relations"
        )
    if skip_invalid and rejects is None:
        from ..config import unwritable

        problem = unwritable(Path("rejects.csv"))
        if problem:
            raise click.BadParameter(problem, param_hint="--rejects")
    s = open_store(config_of(ctx).store_url)
    check_reachable(s)
    if shape(s) is Shape.EMPTY:  # a new store; an application role may not change one
        upgrade(s)
    else:
        require_current_schema(s)
    now = dt.datetime.now(dt.timezone.utc)  # clock: when the consent changes were received
    report = import_csv(
        s,
        files,
        skip_invalid=skip_invalid,
        rejects_path=rejects or Path("rejects.csv"),
        # Events must be of a declared type, with the declared payload (care_rules/events.yaml).
        check_event=load_event_types(config_of(ctx).rules_dir)[0].problems,
    )
    if report.written:
        record_consent_changes(s, report.consent_changes, at=now)
        anchor_ledger(config_of(ctx), s, cli_run_id(), now)
    for warning in report.warnings[:20]:
        click.echo(str(warning), err=True)
    if len(report.warnings) > 20:
        click.echo(f"... and {len(report.warnings) - 20} more warning(s)", err=True)
    for bad in [*report.file_errors, *report.rejected]:
        click.echo(str(bad), err=True)
    if report.file_errors:
        fail(
            f"{len(report.file_errors)} file error(s)"
            + (f" and {len(report.rejected)} invalid row(s)" if report.rejected else "")
            + "; nothing was imported."
        )
    if not report.written:
        fail(
            f"{len(report.rejected)} invalid row(s); nothing was imported (use --skip-invalid to import the valid rows)."
        )
    for table in report.inserted:
        click.echo(f"{table}: {report.inserted[table]} inserted, {report.updated[table]} updated")
    if report.rejected:
        click.echo(
            f"{len(report.rejected)} problem(s); the rejected rows are in {report.rejects_file}"
        )
