"""``care test``: run the rule fixtures (``care_rules/tests/*.yaml``), for rule authors."""

from __future__ import annotations

from pathlib import Path

import click

from .common import EXIT_INVALID, config_of, fail, friendly_errors, report_ruleset


@click.command(name="test")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--update-snapshots",
    is_flag=True,
    help="Write the snapshot of every `snapshot: true` expectation from what renders now.",
)
@click.option(
    "--coverage",
    is_flag=True,
    help="Also list the rules, and the templates per channel and locale, no test exercises.",
)
@click.option("-k", "keyword", metavar="TEXT", help="Only the tests whose name contains TEXT.")
@click.option("--verbose", "-v", "verbose", is_flag=True, help="One line per expectation met.")
@click.pass_context
@friendly_errors
def test(
    ctx: click.Context,
    paths: tuple[Path, ...],
    update_snapshots: bool,
    coverage: bool,
    keyword: str | None,
    verbose: bool,
) -> None:
    """Run the rule fixtures: each test on a scratch store with a frozen clock; failures as
    file:line: expected … got …. PATHS: fixture files (default: every file of the rules
    directory's tests/ folder)."""
    from ..render.templates import TemplateStore
    from ..rules.loader import load_rules
    from ..testing.runner import FixtureRunner, fixture_files, uncovered

    config = config_of(ctx)
    templates = TemplateStore(config.templates_dir)
    ruleset = report_ruleset(load_rules(config.rules_dir, templates), strict=False)
    files = list(paths) or fixture_files(config.rules_dir)
    if not files:
        fail(
            f"no fixture files in {config.rules_dir / 'tests'}: write one (docs/rules.md, "
            "'Testing your rules')",
            EXIT_INVALID,
        )
    runner = FixtureRunner(config, ruleset, templates, update_snapshots=update_snapshots)
    try:
        results = runner.run_files(
            files, selected=(lambda case: keyword in case.name) if keyword else None
        )
    finally:
        runner.close()
    for error in results.errors:
        click.echo(f"error: {error}", err=True)
    if verbose:
        for where, name, line in results.lines:
            click.echo(f"ok {where}: {name}: {line}")
    for failure in results.failures:
        click.echo(f"FAIL {failure}")
    for path in results.snapshots_written:
        click.echo(f"snapshot written: {path}")
    if coverage:
        missing = uncovered(ruleset, templates, results.coverage)
        click.echo(f"\ncoverage: {len(missing)} item(s) no test exercises")
        for line in missing:
            click.echo(f"  {line}")
    failed = results.failed_expectations
    click.echo(
        f"\n{results.tests} test(s), {results.expectations} expectation(s) in {len(files)} "
        f"file(s): {results.expectations - failed} met, {failed} failed, "
        f"{len(results.errors)} error(s) in the fixtures"
    )
    if not results.ok:
        fail("care test failed", EXIT_INVALID)
