"""``care event``: put business events into the inbox, drain the stream, see dead letters.

The same engine functions as the ``care_events`` DAG (docs/events.md).
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import sys
import uuid
from pathlib import Path
from typing import Any

import click

from .common import (
    EXIT_INVALID,
    EXIT_PARTIAL,
    cli_run_id,
    config_of,
    fail,
    friendly_errors,
    open_current_store,
    open_engine,
    parse_now,
)


def _print_intake(report: Any) -> None:
    click.echo(
        f"inbox: {len(report.accepted)} accepted, {len(report.duplicates)} already there, "
        f"{len(report.dead)} dead-lettered"
    )
    for ref, reason in report.dead[:50]:
        click.echo(f"{ref or '-'}: {reason}", err=True)


def _plan(engine: Any, now: dt.datetime, run_id: str) -> None:
    from ..events.planning import plan_new_events
    from ..run.engine import anchor

    report = plan_new_events(engine, run_id=run_id, now=now)
    anchor(engine, run_id=run_id, now=now)
    click.echo("event touches: " + ", ".join(f"{k} {v}" for k, v in report.as_dict().items()))


def _declared(engine: Any) -> Any:
    """The declared event types intake checks against; None when there are none to check
    (no events.yaml, or a broken one: `care validate` says so)."""
    types = engine.ruleset.event_types
    return types if types.available else None


def _refuse_undeclared(rules_dir: Path, event_type: str, payload_text: str | None) -> None:
    """Exit 1, writing nothing, when the type or payload is not what events.yaml declares."""
    from ..bounds import OutOfBounds
    from ..bounds import loads as bounded_loads
    from ..rules.event_types import load_event_types
    from ..store.importer import PAYLOAD_LIMITS

    types, errors = load_event_types(rules_dir)
    if errors:
        for error in errors:
            click.echo(str(error), err=True)
        fail(f"{len(errors)} error(s) in {types.source}; nothing was written.")
    payload: Any = None
    if payload_text:
        try:
            # Bounded first, as at every door (docs/events.md, "Limits").
            payload = bounded_loads(payload_text, PAYLOAD_LIMITS, "payload")
        except OutOfBounds as exc:
            fail(exc.message)
        except json.JSONDecodeError as exc:
            fail(f"--payload is not valid JSON: {exc.msg} at column {exc.colno}")
        if not isinstance(payload, dict):
            fail("--payload must be a JSON object")
    problems = types.problems(event_type, payload)
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    if problems:
        fail(f"event refused ({types.source}); nothing was written.")


@click.group()
def event() -> None:
    """Business events: emit, import, drain the Redis Stream, dead letters."""


@event.command("emit")
@click.option("--type", "event_type", required=True, help="Event type, e.g. policy_purchased.")
@click.option("--customer", "customer_id", required=True, help="Customer id.")
@click.option("--policy", "policy_id", help="Policy id.")
@click.option("--at", "at_text", metavar="ISO", help="When it occurred (default: now).")
@click.option("--payload", "payload_text", metavar="JSON", help="A JSON object.")
@click.option("--id", "event_id", help="Event id (default: a new one); re-emitting it is a no-op.")
@click.option(
    "--via",
    type=click.Choice(["inbox", "stream"]),
    default="inbox",
    show_default=True,
    help="Write to the inbox and plan now, or add to the Redis Stream ($CARE_REDIS_URL).",
)
@click.option("--now", "now_text", metavar="ISO", help="Treat this instant as now (tests).")
@click.pass_context
@friendly_errors
def emit(
    ctx: click.Context,
    event_type: str,
    customer_id: str,
    policy_id: str | None,
    at_text: str | None,
    payload_text: str | None,
    event_id: str | None,
    via: str,
    now_text: str | None,
) -> None:
    """Record one event (and plan its touches), or add it to the event stream.

    The type and the payload must be as care_rules/events.yaml declares them: otherwise
    nothing is written and the exit status is 1."""
    _refuse_undeclared(config_of(ctx).rules_dir, event_type, payload_text)
    now = parse_now(now_text)
    raw: dict[str, Any] = {
        "event_id": event_id or f"cli-{uuid.uuid4().hex}",
        "type": event_type,
        "customer_id": customer_id,
        "occurred_at": at_text or now.isoformat(),
    }
    if policy_id:
        raw["policy_id"] = policy_id
    if payload_text:
        raw["payload"] = payload_text
    if via == "stream":
        from ..events.stream import StreamSettings, add, connect

        settings = StreamSettings.from_env()
        entry = add(connect(settings.url), settings.stream, raw)
        click.echo(f"added {raw['event_id']} to stream {settings.stream} as entry {entry}")
        return
    from ..events.inbox import Incoming, submit

    engine = open_engine(config_of(ctx), live_clock=now_text is None)
    report = submit(
        engine.store,
        [Incoming(raw, "cli")],
        source="cli",
        now=now,
        event_types=_declared(engine),
    )
    _print_intake(report)
    if report.dead:
        sys.exit(EXIT_INVALID)
    click.echo(f"event {raw['event_id']}")
    _plan(engine, now, cli_run_id())


@event.command("import")
@click.argument("csv_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--now", "now_text", metavar="ISO", help="Treat this instant as now (tests).")
@click.pass_context
@friendly_errors
def import_events(ctx: click.Context, csv_file: Path, now_text: str | None) -> None:
    """Feed an events CSV (the events column names as headers) through the inbox.

    Each row is accepted, recognised as already there, or dead-lettered with FILE:LINE and
    the reason (exit status 3 when any was); then the new events' touches are planned.
    """
    from ..events.inbox import read_csv, submit

    now = parse_now(now_text)
    items = read_csv(csv_file)
    engine = open_engine(config_of(ctx), live_clock=now_text is None)
    report = submit(engine.store, items, source="csv", now=now, event_types=_declared(engine))
    _print_intake(report)
    _plan(engine, now, cli_run_id())
    if report.dead:
        sys.exit(EXIT_PARTIAL)


@event.command("drain")
@click.option("--consumer", help="Consumer name in the group (default: this host).")
@click.option("--now", "now_text", metavar="ISO", help="Treat this instant as now (tests).")
@click.pass_context
@friendly_errors
def drain(ctx: click.Context, consumer: str | None, now_text: str | None) -> None:
    """Read the Redis Stream into the inbox (ack after commit), then plan new events.

    What one care_events run does; run it from cron where there is no Airflow.
    """
    from ..events.stream import StreamConsumer, StreamSettings, connect

    now = parse_now(now_text)
    engine = open_engine(config_of(ctx), live_clock=now_text is None)
    settings = StreamSettings.from_env()
    reader = StreamConsumer(
        connect(settings.url),
        engine.store,
        stream=settings.stream,
        group=settings.group,
        consumer=consumer or f"cli:{socket.gethostname()}",
        event_types=_declared(engine),
    )
    report = reader.drain(
        (lambda: now) if now_text else (lambda: dt.datetime.now(dt.timezone.utc))  # clock: CLI
    )
    click.echo(
        f"stream {settings.stream}: " + ", ".join(f"{k} {v}" for k, v in report.as_dict().items())
    )
    for ref, reason in report.intake.dead[:50]:
        click.echo(f"{ref or '-'}: {reason}", err=True)
    _plan(engine, now, cli_run_id())


@event.command("dead-letters")
@click.option(
    "--limit",
    default=50,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="At most this many, newest first.",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
@friendly_errors
def dead_letters_cmd(ctx: click.Context, limit: int, fmt: str) -> None:
    """Events the inbox refused, with the reason and where they came from."""
    from ..events.inbox import dead_letters

    store = open_current_store(ctx)
    for letter in dead_letters(store, limit=limit):
        if fmt == "json":
            click.echo(
                json.dumps(
                    {
                        "id": letter.id,
                        "source": letter.source,
                        "ref": letter.ref,
                        "event_id": letter.event_id,
                        "reason": letter.reason,
                        "received_at": letter.received_at.isoformat(),
                        "raw": letter.raw,
                    },
                    ensure_ascii=False,
                )
            )
        else:
            click.echo(
                f"{letter.id}\t{letter.received_at:%Y-%m-%d %H:%M}\t{letter.source}\t"
                f"{letter.ref or '-'}\t{letter.event_id or '-'}\t{letter.reason}"
            )
