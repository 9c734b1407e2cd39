"""``care``: the command line for operators, rule authors and auditors (SPEC section 10).

Exit statuses: 0 success, 1 invalid input (nothing written), 2 usage error, 3 partial failure.
The CLI never imports Airflow; ``care demo`` runs Airflow as a subprocess.

This module holds the root group, its global options and the error handling every command
gets; the commands live in one module per group or family and are added below, in one place.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..config import CareConfig
from ..errors import CareError, ConfigurationError
from . import (
    audit,
    campaign,
    consent,
    customer,
    demo,
    events,
    plan,
    reports,
    rules,
    ruletest,
    send_test,
    serve,
    store,
    task,
)
from .common import EXIT_PARTIAL, GLOBALS, RULE_ERRORS, engine_error, fail


class CareGroup(click.Group):
    """The ``care`` group. Three things every command gets, so no command has to ask:

    - the global options (``--store``, ``--rules``, ...) are accepted after the subcommand as
      well as before it (``care validate --rules X``); given in both places, the one after
      the subcommand wins; a subcommand's own option of the same name wins over a global one;
    - no traceback: an unexpected error ends in one line naming it and exit status 1
      (``-v`` prints the traceback too);
    - a command that ran without its broken rules (``load_ruleset``) ends with exit status 3,
      partial failure, once it has done the rest of its work.
    """

    def main(self, *args: Any, **kwargs: Any) -> Any:
        spread_global_options(self)
        return super().main(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            result = super().invoke(ctx)
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise
            result = None
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except (CareError, ConfigurationError) as exc:
            engine_error(exc)
        except Exception as exc:  # the last net: a message and a status, never a traceback
            _unexpected(ctx, exc)
        errors = ctx.meta.get(RULE_ERRORS)
        if errors:
            fail(
                f"partial: {len(errors)} rule error(s) (listed above); the broken rules were "
                "left out and the others ran. Fix them (care validate) and run again.",
                EXIT_PARTIAL,
            )
        return result


def _unexpected(ctx: click.Context, exc: Exception) -> None:
    from ..mask import scrub

    if isinstance(exc, OSError) and exc.filename is not None:
        what = f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    else:
        what = f"{type(exc).__name__}: {scrub(str(exc)).splitlines()[0] if str(exc) else ''}"
    if (ctx.meta.get(GLOBALS) or {}).get("verbose"):
        import traceback

        click.echo("".join(traceback.format_exception(exc)), err=True, nl=False)
    fail(f"error: {what} (run with -v for details)")


def spread_global_options(group: click.Group) -> None:
    """Give every subcommand of ``group`` (nested groups too) a hidden copy of the group's
    options, so they may follow the subcommand. Idempotent; a subcommand's own option of
    the same name is left alone and wins."""
    shared = [p for p in group.params if isinstance(p, click.Option) and not p.is_eager]
    pending = list(group.commands.values())
    while pending:
        command = pending.pop()
        if isinstance(command, click.Group):
            pending.extend(command.commands.values())
        taken = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
        names = {p.name for p in command.params}
        for option in shared:
            free = [o for o in option.opts if o not in taken]
            name = f"care_global_{option.name}"
            if not free or name in names:
                continue
            command.params.append(
                click.Option(
                    free,
                    type=None if option.is_flag else option.type,
                    is_flag=option.is_flag,
                    default=None,
                    hidden=True,
                    expose_value=False,
                    callback=_late_global(str(option.name)),
                )
            )


def _late_global(name: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        if value is None or value is False:
            return
        _configure(ctx, {**(ctx.meta.get(GLOBALS) or {}), name: value})

    return callback


def _configure(ctx: click.Context, options: dict[str, Any]) -> None:
    """Apply the global options: logging and the configuration every command reads."""
    ctx.meta[GLOBALS] = options
    verbose = bool(options.get("verbose"))
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if verbose:
        logging.getLogger().setLevel(logging.INFO)
    config = CareConfig.from_env(
        **{k: options.get(k) for k in ("store", "rules", "templates", "outbox", "anchors")}
    )
    context: click.Context | None = ctx
    while context is not None:
        context.obj = config
        context = context.parent


@click.group(cls=CareGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--store", help="Store URL (default sqlite:///care.db).")
@click.option(
    "--rules",
    type=click.Path(path_type=Path),
    help="Rules directory (default care_rules/).",
)
@click.option(
    "--templates",
    type=click.Path(path_type=Path),
    help="Templates directory (default templates/).",
)
@click.option(
    "--outbox",
    metavar="DIR|URL",
    help="Outbox directory (default outbox/), or a folder URL every worker reaches.",
)
@click.option(
    "--anchors",
    metavar="PATH|URL",
    help="Where the ledger's anchors go: a local .jsonl file (default ledger-anchors.jsonl) "
    "or a folder URL such as s3://bucket/care (one object per anchor).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log progress to stderr.")
@click.version_option(package_name="caretouch")
@click.pass_context
def main(ctx: click.Context, **options: Any) -> None:
    """Caretouch: plan, send and audit customer-care touches.

    The options above may also follow the command (care validate --rules DIR).
    """
    _configure(ctx, options)


# Every command and group of ``care``, in one place (docs/architecture/cli.md).
COMMANDS: tuple[click.Command, ...] = (
    store.store,
    consent.consent,
    rules.validate,
    rules.schema,
    ruletest.test,
    plan.plan,
    plan.run,
    plan.dispatch,
    plan.preview,
    send_test.send_test,
    demo.demo,
    audit.audit,
    events.event,
    campaign.campaign,
    reports.forecast,
    reports.report,
    serve.serve,
    task.task,
    customer.customer,
)
for command in COMMANDS:
    main.add_command(command)
