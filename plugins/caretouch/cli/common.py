"""What every ``care`` command shares: exit statuses, error messages, the configuration of
the invocation, date and instant parsing, the CLI's actor and run ids, loading the rules and
opening the engine. Imported by the command modules and by ``root``; imports none of them.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import socket
import sys
import uuid
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from ..config import CareConfig
from ..errors import CareError, ConfigurationError, ValidationFailed

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3

F = TypeVar("F", bound=Callable[..., Any])

# Keys of ``click.Context.meta`` (one dict shared by every context of an invocation).
GLOBALS = "caretouch.globals"  # the global options' values, wherever they were given
RULE_ERRORS = "caretouch.rule_errors"  # rule errors of a run that went on without them


def fail(message: str, code: int = EXIT_INVALID) -> None:
    """End the command: ``message`` on stderr, exit status ``code``."""
    click.echo(message, err=True)
    sys.exit(code)


def friendly_errors(func: F) -> F:
    """Turn engine errors into a clear message and an exit status; never a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (CareError, ConfigurationError) as exc:
            engine_error(exc)
        return None

    return wrapper  # type: ignore[return-value]


def engine_error(exc: CareError | ConfigurationError) -> None:
    """End the command on an engine error: its message(s), exit status 1."""
    if isinstance(exc, ValidationFailed):
        for error in exc.errors:
            click.echo(f"{error}", err=True)
        fail(f"{len(exc.errors)} error(s); nothing was changed.")
    if isinstance(exc, ConfigurationError):
        fail(f"configuration error: {exc}")
    fail(f"error: {exc}")


def config_of(ctx: click.Context) -> CareConfig:
    """The configuration of this invocation (the global options over the environment)."""
    return ctx.obj


def rule_errors(ctx: click.Context) -> list[str]:
    """The rule errors this command runs without (``load_ruleset``), for its run summary."""
    return list(ctx.meta.get(RULE_ERRORS) or [])


class OutputPath(click.Path):
    """A file (or, with ``folder``, a folder) a command writes: checked as the options are
    read, before any work, so a long computation never ends in a failed write. Missing
    parent folders are created (the user named the place); anything else that would stop
    the write is a usage error naming the option."""

    def __init__(self, *, folder: bool = False) -> None:
        super().__init__(path_type=Path, file_okay=not folder, dir_okay=folder)
        self.folder = folder

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from ..config import unwritable

        path = super().convert(value, param, ctx)
        problem = unwritable(Path(os.fsdecode(path)), folder=self.folder)
        if problem:
            self.fail(problem, param, ctx)
        return path


def parse_day(value: str | None) -> dt.date:
    if value is None:
        raise click.UsageError("--date is required (YYYY-MM-DD)")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a date (YYYY-MM-DD)", param_hint="--date"
        ) from None


def parse_now(value: str | None) -> dt.datetime:
    if value is None:
        return dt.datetime.now(dt.timezone.utc)  # clock: the CLI is where "now" enters
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 instant", param_hint="--now"
        ) from None
    if parsed.tzinfo is None:
        raise click.BadParameter(
            "give an offset, e.g. 2026-11-23T10:00:00+08:00", param_hint="--now"
        )
    return parsed.astimezone(dt.timezone.utc)


def cli_actor() -> str:
    """Who acts from this command line, for the ledger: ``<OS user>@<host>`` (staff, never
    a customer)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name, e.g. a container user without a passwd entry
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"[:200]


def cli_run_id() -> str:
    """A CLI run's id in the ledger: ``cli:<OS user>@<host>/<12 hex>`` (who, and which run)."""
    return f"cli:{cli_actor()}/{uuid.uuid4().hex[:12]}"


def open_current_store(ctx: click.Context) -> Any:
    """The configured store, refused (``schema.require_current_schema``) unless its schema is
    the current one: the commands that read or write it without the rules."""
    from ..schema import require_current_schema
    from ..store.db import open_store

    store = open_store(config_of(ctx).store_url)
    require_current_schema(store)
    return store


def anchor_ledger(config: CareConfig, store: Any, run_id: str, now: dt.datetime) -> None:
    """Anchor the ledger after a command that wrote to it (``ledger.anchors.anchor_run``)."""
    from ..ledger.anchors import anchor_run
    from ..storage import anchors

    anchor_run(store, anchors(config), run_id=run_id, now=now, config=config)


def load_ruleset(config: CareConfig, *, strict: bool) -> Any:
    """The rules and templates of a command. ``strict`` (``care validate``): any error ends
    the command; otherwise the broken rules are left out and the command ends with exit
    status 3 once done (``root.CareGroup``). A broken contact policy always ends it."""
    from ..render.templates import TemplateStore
    from ..rules.loader import load_rules

    if not config.rules_dir.is_dir():
        raise ConfigurationError(f"rules directory not found: {config.rules_dir}")
    return report_ruleset(
        load_rules(config.rules_dir, TemplateStore(config.templates_dir)), strict=strict
    )


def report_ruleset(ruleset: Any, *, strict: bool) -> Any:
    """Say what is wrong with the rules; refuse a broken contact policy, and with ``strict``
    any error; otherwise note the broken rules the command runs without."""
    if strict:  # `care validate`: what it points out without refusing
        for warning in ruleset.warnings:
            click.echo(f"warning: {warning}", err=True)
    if ruleset.policy_errors and not strict:
        # The contact policy stands above every rule: without it nothing may be planned.
        raise ValidationFailed(ruleset.policy_errors)
    if ruleset.errors:
        for error in ruleset.errors:
            click.echo(str(error), err=True)
        if strict:
            fail(f"{len(ruleset.errors)} error(s) in rules or templates.")
        click.echo(
            f"warning: {len(ruleset.errors)} error(s) above; the broken rules are left out and the others run.",
            err=True,
        )
        # The command does the rest of its work, then ends with exit status 3 (CareGroup).
        ctx = click.get_current_context(silent=True)
        if ctx is not None:
            ctx.meta[RULE_ERRORS] = [str(e) for e in ruleset.errors]
    return ruleset


def check_rule_ids(
    ruleset: Any, rule_ids: tuple[str, ...] | list[str], param_hint: str, *, also: Any = ()
) -> None:
    """Every command that takes rule ids refuses an unknown one the same way: a usage error
    (exit 2) with a did-you-mean. An id whose rule is defined but failed validation is
    invalid input (exit 1). ``also``: other ids the command knows (the ledger's, for audit)."""
    from ..suggest import did_you_mean

    known = sorted({r.id for r in ruleset.rules} | set(also))
    broken = {e.rule_id for e in ruleset.errors if e.rule_id}
    for rule_id in rule_ids:
        if rule_id in known:
            continue
        if rule_id in broken:
            raise CareError(
                f"rule {rule_id!r} has errors and was left out (see above; run care validate)"
            )
        raise click.BadParameter(
            f"unknown rule or campaign {rule_id!r}{did_you_mean(rule_id, known)}; "
            f"known: {', '.join(known) or 'none'}",
            param_hint=param_hint,
        )


def open_engine(config: CareConfig, *, live_clock: bool = False, writes: bool = False) -> Any:
    """The engine of a command (``run.engine.open_engine``); ``writes``: the command sends
    and ends with a run summary and an anchor, whose places are checked now, before any work."""
    from ..run.engine import open_engine as assemble

    engine = assemble(config, clock=_real_clock if live_clock else None)
    report_ruleset(engine.ruleset, strict=False)
    if writes:
        from ..storage import check_destinations

        check_destinations(
            config, outbox=any(t.name == "outbox" for t in engine.transports.values())
        )
    return engine


def record_pending_callbacks(store: Any, now: dt.datetime) -> None:
    """Record the delivery callbacks waiting in the intake (``webhooks.intake``) before a
    run: one accepted just before a crash of the web server is recorded now at the latest."""
    from ..webhooks.intake import drain_all

    done = drain_all(store, now=now)
    if done.settled or done.set_aside:
        click.echo(
            f"callbacks: recorded {len(done.settled)} left in the intake"
            + (f", {done.set_aside} set aside (docs/webhooks.md)" if done.set_aside else ""),
            err=True,
        )


def _real_clock() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)  # clock: the CLI's real time
