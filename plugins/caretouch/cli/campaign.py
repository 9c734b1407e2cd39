"""``care campaign``: campaign files (care_rules/campaigns/<id>.yaml) and their Airflow DAG
files. Like the rest of the CLI, nothing here imports Airflow."""

from __future__ import annotations

from pathlib import Path

import click

from .common import config_of, fail, friendly_errors, load_ruleset


@click.group()
def campaign() -> None:
    """Campaign files (care_rules/campaigns/<id>.yaml) and their Airflow DAG files."""


@campaign.command("list")
@click.pass_context
@friendly_errors
def campaign_list(ctx: click.Context) -> None:
    """Every valid campaign: its days, schedule, audience size aside (see care forecast)."""
    from ..reports.day_summary import text_table

    ruleset = load_ruleset(config_of(ctx), strict=False)
    rows = [
        [
            c.id,
            c.schedule,
            f"{c.start} to {c.end}",
            ", ".join(d.isoformat() for d in c.days),
            c.rule.category.value,
            c.rule.priority,
            c.dag_id,
        ]
        for c in ruleset.campaigns
    ]
    header = ["campaign", "schedule", "window", "due on (local)", "category", "priority", "DAG"]
    for line in text_table(header, rows):
        click.echo(line)


@campaign.command("dagfiles")
@click.option(
    "--dags",
    "dags_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("dags"),
    show_default=True,
    help="Airflow's DAG folder.",
)
@click.option("--prune", is_flag=True, help="Delete DAG files whose campaign file is gone.")
@click.pass_context
@friendly_errors
def campaign_dagfiles(ctx: click.Context, dags_dir: Path, prune: bool) -> None:
    """Write dags/care_campaign_<id>.py for every campaign file (one file per campaign, so a
    broken campaign is an import error of its own DAG only)."""
    from ..config import unwritable
    from ..rules.campaigns import CAMPAIGN_DIR, sync_dag_files

    if not dags_dir.is_dir():
        fail(f"DAG folder not found: {dags_dir}")
    problem = unwritable(dags_dir, folder=True, create=False)
    if problem:
        fail(f"DAG folder: {problem}")
    result = sync_dag_files(config_of(ctx).rules_dir / CAMPAIGN_DIR, dags_dir, prune=prune)
    for path in result.written:
        click.echo(f"wrote {path}")
    for path in result.removed:
        click.echo(f"removed {path}")
    for path in result.orphans:
        if path not in result.removed:
            click.echo(f"orphan: {path} (its campaign file is gone; --prune deletes it)", err=True)
    click.echo(
        f"{len(result.written)} written, {len(result.unchanged)} unchanged, "
        f"{len(result.removed)} removed"
    )
