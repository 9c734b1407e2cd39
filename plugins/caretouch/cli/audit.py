"""``care audit``: for auditors, search, show, export and verify the touch ledger."""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any

import click

from ..errors import CareError
from .common import F, check_rule_ids, config_of, fail, friendly_errors, open_current_store


@click.group()
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
    store = open_current_store(ctx)
    if rule_id is not None:
        from ..ledger.audit import rule_ids_in_ledger
        from ..render.templates import TemplateStore
        from ..rules.loader import RuleSet, load_rules

        config = config_of(ctx)
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
            r["rule_id"] + (" [test]" if r["test"] else ""),
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
        if key == "rule_hash" and detail["variant"] is not None:
            click.echo(f"{'variant':13} {detail['variant']}")
    if detail["test"]:
        click.echo(
            f"{'test':13} yes: a test send (care send-test) to an internal address; "
            "it never counts as a contact of the customer"
        )
    for n, line in enumerate(detail["why"] or ["-"]):
        click.echo(f"{'why' if n == 0 else '':13} {line}")
    click.echo(f"{'consent':13} {detail['consent'] or '-'} (when decided)")
    click.echo(f"{'run_id':13} {detail['run_id']}")
    latest = detail["customer_satisfaction"]
    click.echo(
        f"{'satisfaction':13} "
        + (
            f"{latest['score']} of 5, the customer's latest answer "
            f"({latest['received_at']}, touch {latest['touch_id']})"
            if latest
            else "-"
        )
    )
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
    if detail["replies"]:
        click.echo("\nreplies:")
        for r in detail["replies"]:
            score = f" {r['score']}" if r["score"] is not None else ""
            click.echo(f"  {r['received_at']}  {r['kind']}{score}  ({r['provider']})")


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
    from ..storage import anchors

    config = config_of(ctx)
    report = verify(
        _audit_store(ctx),
        anchor_file=anchors(config),
        key=anchor_key(config),
        allow_unanchored=allow_unanchored,
    )
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    if not report.ok:
        fail(f"ledger does NOT verify: {report.problem}")
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
