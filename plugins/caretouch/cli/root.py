"""``care``: the command line for operators, rule authors and auditors (SPEC section 10).

Exit statuses: 0 success, 1 invalid input (nothing written), 2 usage error, 3 partial failure.
The CLI never imports Airflow; ``care demo`` runs Airflow as a subprocess.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
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


def _fail(message: str, code: int = EXIT_INVALID) -> None:
    click.echo(message, err=True)
    sys.exit(code)


def friendly_errors(func: F) -> F:
    """Turn engine errors into a clear message and an exit status; never a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (CareError, ConfigurationError) as exc:
            _engine_error(exc)
        return None

    return wrapper  # type: ignore[return-value]


def _engine_error(exc: CareError | ConfigurationError) -> None:
    if isinstance(exc, ValidationFailed):
        for error in exc.errors:
            click.echo(f"{error}", err=True)
        _fail(f"{len(exc.errors)} error(s); nothing was changed.")
    if isinstance(exc, ConfigurationError):
        _fail(f"configuration error: {exc}")
    _fail(f"error: {exc}")


def _config(ctx: click.Context) -> CareConfig:
    return ctx.obj  # type: ignore[no-any-return]


def _rule_errors(ctx: click.Context) -> list[str]:
    """The rule errors this command runs without (``_load_ruleset``), for its run summary."""
    return list(ctx.meta.get(_RULE_ERRORS) or [])


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


def _parse_day(value: str | None) -> dt.date:
    if value is None:
        raise click.UsageError("--date is required (YYYY-MM-DD)")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a date (YYYY-MM-DD)", param_hint="--date"
        ) from None


def _parse_now(value: str | None) -> dt.datetime:
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


def _anchor(config: CareConfig, store: Any, run_id: str, now: dt.datetime) -> None:
    """Anchor the ledger after a command that wrote to it (``ledger.anchors.anchor_run``)."""
    from ..ledger.anchors import anchor_run

    anchor_run(store, config.anchor_file, run_id=run_id, now=now)


# Keys of ``click.Context.meta`` (one dict shared by every context of an invocation).
_GLOBALS = "caretouch.globals"  # the global options' values, wherever they were given
_RULE_ERRORS = "caretouch.rule_errors"  # rule errors of a run that went on without them


class CareGroup(click.Group):
    """The ``care`` group. Three things every command gets, so no command has to ask:

    - the global options (``--store``, ``--rules``, ...) are accepted after the subcommand as
      well as before it (``care validate --rules X``); given in both places, the one after
      the subcommand wins; a subcommand's own option of the same name wins over a global one;
    - no traceback: an unexpected error ends in one line naming it and exit status 1
      (``-v`` prints the traceback too);
    - a command that ran without its broken rules (``_load_ruleset``) ends with exit status 3,
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
            _engine_error(exc)
        except Exception as exc:  # the last net: a message and a status, never a traceback
            _unexpected(ctx, exc)
        errors = ctx.meta.get(_RULE_ERRORS)
        if errors:
            _fail(
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
    if (ctx.meta.get(_GLOBALS) or {}).get("verbose"):
        import traceback

        click.echo("".join(traceback.format_exception(exc)), err=True, nl=False)
    _fail(f"error: {what} (run with -v for details)")


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
        _configure(ctx, {**(ctx.meta.get(_GLOBALS) or {}), name: value})

    return callback


def _configure(ctx: click.Context, options: dict[str, Any]) -> None:
    """Apply the global options: logging and the configuration every command reads."""
    ctx.meta[_GLOBALS] = options
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
@click.option("--store", envvar="CARE_STORE_URL", help="Store URL (default sqlite:///care.db).")
@click.option(
    "--rules",
    type=click.Path(path_type=Path),
    envvar="CARE_RULES_DIR",
    help="Rules directory (default care_rules/).",
)
@click.option(
    "--templates",
    type=click.Path(path_type=Path),
    envvar="CARE_TEMPLATES_DIR",
    help="Templates directory (default templates/).",
)
@click.option(
    "--outbox",
    type=click.Path(path_type=Path),
    envvar="CARE_OUTBOX_DIR",
    help="Outbox directory (default outbox/).",
)
@click.option(
    "--anchors",
    type=click.Path(path_type=Path),
    envvar="CARE_ANCHOR_FILE",
    help="Ledger anchor file (default ledger-anchors.jsonl).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log progress to stderr.")
@click.version_option(package_name="caretouch")
@click.pass_context
def main(ctx: click.Context, **options: Any) -> None:
    """Caretouch: plan, send and audit customer-care touches.

    The options above may also follow the command (care validate --rules DIR).
    """
    _configure(ctx, options)


# -- store -------------------------------------------------------------------------------


@main.group()
def store() -> None:
    """Create the store and import customers, policies and events."""


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
    from ..store.db import check_reachable, open_store

    s = open_store(_config(ctx).store_url)
    check_reachable(s)
    s.init(app_role=app_role)
    click.echo(f"store ready: {s.masked_url()}")
    if app_role:
        click.echo(f"role {app_role}: SELECT and INSERT on the ledger tables, nothing more")


@store.command("import")
@click.option("--customers", type=click.Path(path_type=Path, dir_okay=False), help="customers CSV")
@click.option("--policies", type=click.Path(path_type=Path, dir_okay=False), help="policies CSV")
@click.option("--events", type=click.Path(path_type=Path, dir_okay=False), help="events CSV")
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
    customers: Path | None,
    policies: Path | None,
    events: Path | None,
    skip_invalid: bool,
    rejects: Path | None,
) -> None:
    """Import CSV files whose headers are the store's column names.

    All-or-nothing unless --skip-invalid: any bad row means nothing is written, and every
    bad row is listed as FILE:LINE: reason.
    """
    from ..ledger.consent import record_consent_changes
    from ..rules.event_types import load_event_types
    from ..store.db import check_reachable, open_store
    from ..store.importer import import_csv

    files = {
        k: v for k, v in (("customer", customers), ("policy", policies), ("event", events)) if v
    }
    if not files:
        raise click.UsageError("give at least one of --customers, --policies, --events")
    if skip_invalid and rejects is None:
        from ..config import unwritable

        problem = unwritable(Path("rejects.csv"))
        if problem:
            raise click.BadParameter(problem, param_hint="--rejects")
    s = open_store(_config(ctx).store_url)
    check_reachable(s)
    if s.missing():  # a new store; an application role may not change a complete one
        s.init()
    now = dt.datetime.now(dt.timezone.utc)  # clock: when the consent changes were received
    report = import_csv(
        s,
        files,
        skip_invalid=skip_invalid,
        rejects_path=rejects or Path("rejects.csv"),
        # Events must be of a declared type, with the declared payload (care_rules/events.yaml).
        check_event=load_event_types(_config(ctx).rules_dir)[0].problems,
    )
    if report.written:
        record_consent_changes(s, report.consent_changes, at=now)
        _anchor(_config(ctx), s, cli_run_id(), now)
    for warning in report.warnings[:20]:
        click.echo(str(warning), err=True)
    if len(report.warnings) > 20:
        click.echo(f"... and {len(report.warnings) - 20} more warning(s)", err=True)
    for bad in [*report.file_errors, *report.rejected]:
        click.echo(str(bad), err=True)
    if report.file_errors:
        _fail(
            f"{len(report.file_errors)} file error(s)"
            + (f" and {len(report.rejected)} invalid row(s)" if report.rejected else "")
            + "; nothing was imported."
        )
    if not report.written:
        _fail(
            f"{len(report.rejected)} invalid row(s); nothing was imported (use --skip-invalid to import the valid rows)."
        )
    for table in report.inserted:
        click.echo(f"{table}: {report.inserted[table]} inserted, {report.updated[table]} updated")
    if report.rejected:
        click.echo(
            f"{len(report.rejected)} problem(s); the rejected rows are in {report.rejects_file}"
        )


# -- consent -----------------------------------------------------------------------------


@main.group()
def consent() -> None:
    """See and change a customer's consent (every change is kept with its source)."""


_ON_OFF = click.Choice(["on", "off"])


@consent.command("set")
@click.argument("customer_id")
@click.option("--sms", type=_ON_OFF, help="SMS consent.")
@click.option("--email", type=_ON_OFF, help="Email consent.")
@click.option("--marketing", type=_ON_OFF, help="Marketing consent.")
@click.option("--source", help="Where the change comes from (default cli:<OS user>@<host>).")
@click.option("--note", help="Free text kept with the change (no personal data).")
@click.pass_context
@friendly_errors
def consent_set(
    ctx: click.Context,
    customer_id: str,
    sms: str | None,
    email: str | None,
    marketing: str | None,
    source: str | None,
    note: str | None,
) -> None:
    """Give or withdraw consent; the next plan honours it."""
    from ..ledger.consent import record_consent
    from ..store.consent import Purpose
    from ..store.db import check_initialised, open_store

    changes = {
        purpose: value == "on"
        for purpose, value in (
            (Purpose.SMS, sms),
            (Purpose.EMAIL, email),
            (Purpose.MARKETING, marketing),
        )
        if value is not None
    }
    if not changes:
        raise click.UsageError("give at least one of --sms, --email, --marketing")
    store = open_store(_config(ctx).store_url)
    check_initialised(store)
    now = dt.datetime.now(dt.timezone.utc)  # clock: the CLI records when the change was made
    source = (source or f"cli:{cli_actor()}")[:120]
    changed = record_consent(store, customer_id, changes, source=source, at=now, note=note)
    if changed:
        _anchor(_config(ctx), store, cli_run_id(), now)
    if not changed:
        click.echo(f"{customer_id}: nothing changed")
    for purpose, (before, after) in changed.items():
        click.echo(
            f"{customer_id}: {purpose.value} {'on' if before else 'off'} -> {'on' if after else 'off'}"
        )


@consent.command("show")
@click.argument("customer_id")
@click.pass_context
@friendly_errors
def consent_show(ctx: click.Context, customer_id: str) -> None:
    """Current consents (addresses masked) and the history of changes."""
    from sqlalchemy import select

    from ..mask import mask_email, mask_phone
    from ..rules.contact_policy import email_is_valid, phone_is_valid
    from ..store.consent import consent_history
    from ..store.db import check_initialised, open_store
    from ..store.models import Customer

    store = open_store(_config(ctx).store_url)
    check_initialised(store)
    with store.read_session() as session:
        customer = session.scalars(
            select(Customer).where(Customer.customer_id == customer_id)
        ).one_or_none()
    if customer is None:
        raise CareError(f"unknown customer {customer_id!r}")
    on = {True: "on", False: "off"}
    click.echo(f"customer {customer_id} ({customer.status}, tier {customer.tier})")
    click.echo(
        f"  sms       {on[customer.consent_sms]:3}  {mask_phone(customer.phone) or '-'}{'' if phone_is_valid(customer.phone) else '  (not a valid E.164 number)'}"
    )
    click.echo(
        f"  email     {on[customer.consent_email]:3}  {mask_email(customer.email) or '-'}{'' if email_is_valid(customer.email) else '  (not a valid address)'}"
    )
    click.echo(f"  marketing {on[customer.consent_marketing]:3}")
    history = consent_history(store, customer_id)
    if history:
        click.echo("history:")
    for event in history:
        at = event.at if event.at.tzinfo else event.at.replace(tzinfo=dt.timezone.utc)
        click.echo(
            f"  {at:%Y-%m-%d %H:%M}Z  {event.purpose:9} {on[event.granted]:3}  {event.source}"
            + (f"  ({event.note})" if event.note else "")
        )


# -- rules -------------------------------------------------------------------------------


def _load_ruleset(config: CareConfig, *, strict: bool) -> Any:
    from ..render.templates import TemplateStore
    from ..rules.loader import load_rules

    if not config.rules_dir.is_dir():
        raise ConfigurationError(f"rules directory not found: {config.rules_dir}")
    ruleset = load_rules(config.rules_dir, TemplateStore(config.templates_dir))
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
            _fail(f"{len(ruleset.errors)} error(s) in rules or templates.")
        click.echo(
            f"warning: {len(ruleset.errors)} error(s) above; the broken rules are left out and the others run.",
            err=True,
        )
        # The command does the rest of its work, then ends with exit status 3 (CareGroup).
        ctx = click.get_current_context(silent=True)
        if ctx is not None:
            ctx.meta[_RULE_ERRORS] = [str(e) for e in ruleset.errors]
    return ruleset


def check_rule_ids(
    ruleset: Any, rule_ids: tuple[str, ...] | list[str], param_hint: str, *, also: Any = ()
) -> None:
    """Every command that takes rule ids refuses an unknown one the same way: a usage error
    (exit 2) with a did-you-mean. An id whose rule is defined but failed validation is
    invalid input (exit 1). ``also``: other ids the command knows (the ledger's, for audit)."""
    from ..rules.checks import did_you_mean

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


@main.command()
@click.pass_context
@friendly_errors
def validate(ctx: click.Context) -> None:
    """Check rule and campaign files, the contact policy, the event types and templates;
    file:line:col for every error."""
    ruleset = _load_ruleset(_config(ctx), strict=True)
    rules = [r.id for r in ruleset.rules if not ruleset.is_campaign(r.id)]
    click.echo(f"{len(rules)} rule(s) valid: {', '.join(rules)}")
    if ruleset.campaigns:
        click.echo(
            f"{len(ruleset.campaigns)} campaign(s) valid: "
            + ", ".join(f"{c.id} ({', '.join(map(str, c.days))})" for c in ruleset.campaigns)
        )


@main.command()
@click.option("--policy", is_flag=True, help="The schema of policy.yaml instead.")
@click.option("--campaign", is_flag=True, help="The schema of campaign files instead.")
@click.option("--events", is_flag=True, help="The schema of events.yaml instead.")
def schema(policy: bool, campaign: bool, events: bool) -> None:
    """Print the JSON Schema of rule files (published as care_rules/rule.schema.json) or,
    with --policy, of the contact policy (care_rules/policy.schema.json), with --campaign,
    of campaign files (care_rules/campaign.schema.json), or with --events, of the event
    types (care_rules/events.schema.json)."""
    from ..rules.campaigns import CAMPAIGN_FILE_SCHEMA
    from ..rules.event_types import EVENTS_FILE_SCHEMA
    from ..rules.schema import POLICY_FILE_SCHEMA, RULE_FILE_SCHEMA

    chosen = (
        EVENTS_FILE_SCHEMA
        if events
        else CAMPAIGN_FILE_SCHEMA
        if campaign
        else POLICY_FILE_SCHEMA
        if policy
        else RULE_FILE_SCHEMA
    )
    click.echo(json.dumps(chosen, indent=2, ensure_ascii=False))


# -- plan / run / preview ------------------------------------------------------------------


def _engine(config: CareConfig, *, live_clock: bool = False, writes: bool = False) -> Any:
    """The engine of a command; ``writes``: the command sends and ends with a run summary
    and an anchor, whose places are checked now, before any work."""
    from ..run.runner import Engine
    from ..store.db import check_initialised

    ruleset = _load_ruleset(config, strict=False)
    engine = Engine.open(config)
    engine.ruleset = ruleset
    if writes:
        config.check_destinations(
            outbox=any(t.name == "outbox" for t in engine.transports.values())
        )
    check_initialised(engine.store)
    if live_clock:
        engine.clock = lambda: dt.datetime.now(dt.timezone.utc)  # clock: the CLI's real time
    return engine


def _say_transports(engine: Any) -> None:
    """Which provider each channel goes through (stderr: the run's output stays clean)."""
    parts = [
        f"{ch.value} via {t.name}"
        + (f" ({t.rate:g}/s, {t.workers} at once)" if t.name != "outbox" else "")
        for ch, t in engine.transports.items()
    ]
    click.echo("sending: " + ", ".join(parts), err=True)


@main.command()
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

    day = _parse_day(day_text)
    engine = _engine(_config(ctx))
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


@main.command()
@click.option("--date", "day_text", metavar="YYYY-MM-DD", help="Local date to run.")
@click.option(
    "--now", "now_text", metavar="ISO", help="Treat this instant as now (tests, replays)."
)
@click.pass_context
@friendly_errors
def run(ctx: click.Context, day_text: str | None, now_text: str | None) -> None:
    """Plan, render, send and record a day's touches. Idempotent: rerunning sends nothing twice."""
    from ..reports.run_summary import RunSummary
    from ..run.runner import run_day

    day = _parse_day(day_text)
    now = _parse_now(now_text)
    engine = _engine(_config(ctx), live_clock=now_text is None, writes=True)
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
        rule_errors=_rule_errors(ctx),
    )
    click.echo(summary.render())
    click.echo(f"summary stored in {summary.store(engine.config.reports_dir)}", err=True)
    for failure in report.failures[:50]:
        click.echo(f"failed: {failure}", err=True)
    if report.failed:
        sys.exit(EXIT_PARTIAL)


@main.command()
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
    from ..run.runner import dispatch as dispatch_due

    now = _parse_now(now_text)
    engine = _engine(_config(ctx), live_clock=now_text is None, writes=True)
    run_id = cli_run_id()
    _say_transports(engine)
    report = dispatch_due(engine, run_id=run_id, now=now)
    counts = this_run_counts(engine.ledger, run_id, report.as_dict())
    click.echo(f"dispatch ({run_id}): " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if _rule_errors(ctx):
        click.echo(render_rule_errors(_rule_errors(ctx)).strip())
    stored = store_dispatch_summary(
        engine.ledger,
        engine.config.reports_dir,
        counts,
        run_id=run_id,
        kind="care dispatch",
        now=engine.stamp(now),
        failures=report.failures,
        rule_errors=_rule_errors(ctx),
    )
    if stored is not None:
        click.echo(f"summary stored in {stored}")
    for failure in report.failures[:50]:
        click.echo(f"failed: {failure}", err=True)
    if report.failed:
        sys.exit(EXIT_PARTIAL)


@main.command()
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

    engine = _engine(_config(ctx))
    check_rule_ids(engine.ruleset, [rule_id], "'RULE_ID'")
    day = _parse_day(day_text)
    result = preview_touch(engine, rule_id, customer_id, day, channel)
    click.echo(result)


@main.command()
@click.option(
    "--dir",
    "directory",
    type=OutputPath(folder=True),
    default=Path(".demo"),
    show_default=True,
)
@click.option(
    "--date", "day_text", metavar="YYYY-MM-DD", help="Local date to run (default: today in UTC)."
)
@click.option("--customers", default=240, show_default=True, help="How many demo customers.")
@click.option(
    "--no-airflow", is_flag=True, help="Run the day with the CLI engine instead of Airflow."
)
@click.pass_context
@friendly_errors
def demo(
    ctx: click.Context, directory: Path, day_text: str | None, customers: int, no_airflow: bool
) -> None:
    """Build a demo store and run the daily DAG through real Airflow, then print a summary."""
    from .demo import run_demo

    today = dt.datetime.now(dt.timezone.utc).date()  # clock: the demo runs "today"
    day = _parse_day(day_text) if day_text else today
    code = run_demo(
        _config(ctx),
        directory.resolve(),
        day,
        customers=customers,
        use_airflow=not no_airflow,
        echo=click.echo,
    )
    sys.exit(code)


# -- audit -------------------------------------------------------------------------------


@main.group()
def audit() -> None:
    """For auditors: search, show, export and verify the touch ledger (recipients masked)."""


def _filter_options(func: F) -> F:
    for option in reversed(
        [
            click.option("--from", "first", metavar="YYYY-MM-DD", help="Occurrence on or after."),
            click.option("--to", "last", metavar="YYYY-MM-DD", help="Occurrence on or before."),
            click.option("--customer", "customer_id", help="Customer id."),
            click.option("--rule", "rule_id", help="Rule id."),
            click.option("--channel", help="sms or email."),
            click.option("--status", help="Current status, e.g. sent, failed, suppressed."),
        ]
    ):
        func = option(func)
    return func


def _filters(first: str | None, last: str | None, **kw: Any) -> Any:
    """The filters as typed, checked by the engine (as the web view's): exit 2 on a bad one."""
    from ..ledger.audit import InvalidFilter, make_filters

    try:
        return make_filters(first=first, last=last, **kw)
    except InvalidFilter as exc:
        raise click.UsageError(f"--{exc}") from None


def _audit_store(ctx: click.Context, rule_id: str | None = None) -> Any:
    """The store, after checking ``--rule``: a rule the ledger has touches of, or one that is
    defined now (the rules are read only to know their ids)."""
    from ..store.db import check_initialised, open_store

    store = open_store(_config(ctx).store_url)
    check_initialised(store)
    if rule_id is not None:
        from ..ledger.audit import rule_ids_in_ledger
        from ..render.templates import TemplateStore
        from ..rules.loader import RuleSet, load_rules

        config = _config(ctx)
        ruleset = RuleSet()
        if config.rules_dir.is_dir() and config.templates_dir.is_dir():
            ruleset = load_rules(config.rules_dir, TemplateStore(config.templates_dir))
        ruleset.errors = []  # an auditor asks about the ledger: a broken rule is not an error
        check_rule_ids(ruleset, [rule_id], "--rule", also=rule_ids_in_ledger(store))
    return store


@audit.command("list")
@_filter_options
@click.option("--limit", default=100, show_default=True, help="At most this many touches.")
@click.pass_context
@friendly_errors
def audit_list(
    ctx: click.Context, first: str | None, last: str | None, limit: int, **kw: Any
) -> None:
    """Touches matching the filters, oldest first."""
    from ..ledger.audit import touches
    from ..reports.day_summary import text_table

    filters = _filters(first, last, **kw)
    rows = list(touches(_audit_store(ctx, kw["rule_id"]), filters, limit=limit))
    header = [
        "id",
        "occurrence",
        "rule",
        "customer",
        "channel",
        "to",
        "status",
        "reason",
        "sent at (UTC)",
    ]
    body = [
        [
            r["touch_id"],
            r["occurrence"],
            r["rule_id"],
            r["customer_id"],
            r["channel"] or "-",
            r["recipient"] or "-",
            r["status"],
            r["reason"] or "",
            r["sent_at"] or "",
        ]
        for r in rows
    ]
    for line in text_table(header, body):
        click.echo(line)
    click.echo(
        f"\n{len(rows)} touch(es)"
        + (" (limit reached: narrow the filters or raise --limit)" if len(rows) == limit else "")
    )


@audit.command("show")
@click.argument("touch")
@click.pass_context
@friendly_errors
def audit_show(ctx: click.Context, touch: str) -> None:
    """One touch, by id or idempotency key (rule|kind:subject|YYYY-MM-DD): versions, why it
    was decided (the policy clause) under which consent, every attempt with its content, and
    its full status history. What the web view's touch page shows."""
    from ..ledger.audit import touch_detail
    from ..mask import scrub

    detail = touch_detail(_audit_store(ctx), touch)
    if detail is None:
        raise CareError(f"no touch with id or key {touch!r}")
    for key in (
        "touch_id",
        "touch_key",
        "rule_id",
        "rule_hash",
        "category",
        "priority",
        "customer_id",
        "policy_id",
        "event_id",
        "occurrence",
        "send_at",
        "timezone",
        "locale",
        "tier",
        "status",
        "reason",
    ):
        click.echo(f"{key:13} {detail[key] if detail[key] is not None else '-'}")
    for n, line in enumerate(detail["why"] or ["-"]):
        click.echo(f"{'why' if n == 0 else '':13} {line}")
    click.echo(f"{'consent':13} {detail['consent'] or '-'} (when decided)")
    click.echo(f"{'run_id':13} {detail['run_id']}")
    for a in detail["attempts"]:
        click.echo(
            f"\nattempt {a['attempt_no']}: {a['channel']} via {a['transport']} to {a['recipient']} at {a['created_at']} ({a['run_id']})"
        )
        click.echo(f"  template {a['template_id']} {a['template_hash']}")
        click.echo(f"  content  {a['content_hash']}")
        # Numbers and addresses inside the content are masked, as in the web view.
        if a["subject"] is not None:
            click.echo(f"  subject: {scrub(a['subject'])}")
        body = scrub(a["body"]) if a["body"] else "(content erased by retention)"
        click.echo("  " + body.replace("\n", "\n  "))
    click.echo("\nhistory:")
    for e in detail["history"]:
        extra = f" [{e['provider_message_id']}]" if e["provider_message_id"] else ""
        click.echo(
            f"  {e['at']}  {e['status']}{' (' + scrub(e['reason']) + ')' if e['reason'] else ''}{extra}  {e['run_id']}"
        )
        for line in e["why"]:
            click.echo(f"      why: {line}")
        if e["consent"] is not None:
            click.echo(f"      consent: {e['consent']}")
        if e["other"]:
            click.echo(
                f"      detail: {json.dumps(e['other'], ensure_ascii=False, sort_keys=True)}"
            )


@audit.command("export")
@_filter_options
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True
)
@click.pass_context
@friendly_errors
def audit_export(
    ctx: click.Context, first: str | None, last: str | None, fmt: str, **kw: Any
) -> None:
    """Stream matching touches to stdout (constant memory), recipients masked.

    CSV: the same file as the web view's export (a header even when nothing matches; cells a
    spreadsheet would take for a formula start with '). JSONL: one object per touch.
    """
    from ..ledger.audit import CsvExport, touches

    filters = _filters(first, last, **kw)
    store = _audit_store(ctx, kw["rule_id"])
    count = 0
    if fmt == "jsonl":
        for row in touches(store, filters):
            click.echo(json.dumps(row, ensure_ascii=False))
            count += 1
    else:
        export = CsvExport(store, filters)
        for chunk in export:
            sys.stdout.write(chunk)
        sys.stdout.flush()
        count = export.rows
    if count == 0:
        click.echo("no touch matches the filters", err=True)


@audit.command("verify")
@click.option(
    "--allow-unanchored",
    is_flag=True,
    help="Check the chain alone when there is no anchor file and the ledger records no anchor "
    "(rows removed from the end then go undetected).",
)
@click.pass_context
@friendly_errors
def audit_verify(ctx: click.Context, allow_unanchored: bool) -> None:
    """Check the hash chain, consent and the anchors; exit 1 naming the first bad row and why."""
    from ..ledger.audit import anchor_key, verify

    report = verify(
        _audit_store(ctx),
        anchor_file=_config(ctx).anchor_file,
        key=anchor_key(),
        allow_unanchored=allow_unanchored,
    )
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    if not report.ok:
        _fail(f"ledger does NOT verify: {report.problem}")
    click.echo(
        f"ledger verifies: {report.entries} chained rows, {report.anchors} anchor(s) match"
        + (f", {report.unanchored} row(s) since the last anchor" if report.unanchored else "")
    )


@audit.command("erase-content")
@click.option(
    "--older-than",
    "days",
    # At least a day (0 or less would erase messages being sent); at most a century.
    type=click.IntRange(1, 36_500),
    required=True,
    help="Days (1 to 36500): content older than this is erased.",
)
@click.pass_context
@friendly_errors
def audit_erase(ctx: click.Context, days: int) -> None:
    """Retention: erase message content older than N days (hashes stay; the chain verifies)."""
    from ..ledger.audit import erase_content

    before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days)  # clock: CLI
    click.echo(f"erased the content of {erase_content(_audit_store(ctx), before)} attempt(s)")


from .events import event as _event_commands  # noqa: E402 (needs the helpers above)

main.add_command(_event_commands)
from .ops import campaign as _campaign_commands  # noqa: E402 (needs the helpers above)

main.add_command(_campaign_commands)
from .ops import forecast as _forecast_command  # noqa: E402

main.add_command(_forecast_command)
from .ops import report as _report_command  # noqa: E402

main.add_command(_report_command)
from .serve import serve as _serve_command  # noqa: E402

main.add_command(_serve_command)
