"""``care send-test``: a rule's message for a real customer, sent to an internal address."""

from __future__ import annotations

import sys

import click

from .common import (
    EXIT_PARTIAL,
    anchor_ledger,
    check_rule_ids,
    cli_run_id,
    config_of,
    friendly_errors,
    open_engine,
    parse_day,
    parse_now,
)


@click.command("send-test")
@click.argument("rule_id")
@click.option("--customer", "customer_id", required=True, help="Customer id.")
@click.option(
    "--date",
    "day_text",
    metavar="YYYY-MM-DD",
    help="Local date the touch is due (default: today in the policy's default time zone).",
)
@click.option(
    "--to",
    "to",
    required=True,
    metavar="ADDRESS",
    help="Internal phone number (E.164) or email address; must be in test_recipients of the "
    "contact policy.",
)
@click.option(
    "--channel",
    type=click.Choice(["sms", "email"]),
    help="Channel (default: the address's: sms for a phone number, email for an address).",
)
@click.option(
    "--now", "now_text", metavar="ISO", help="Treat this instant as now (tests, replays)."
)
@click.pass_context
@friendly_errors
def send_test(
    ctx: click.Context,
    rule_id: str,
    customer_id: str,
    day_text: str | None,
    to: str,
    channel: str | None,
    now_text: str | None,
) -> None:
    """Send the message RULE_ID would send a customer to an internal address, through the
    real channel; recorded in the ledger as a test touch that never counts as a contact."""
    from ..run.test_send import send_test as send
    from ..sms import describe, sms_size
    from ..vocab import Channel, TouchStatus

    now = parse_now(now_text)
    engine = open_engine(config_of(ctx), live_clock=now_text is None, writes=True)
    day = (
        parse_day(day_text)
        if day_text is not None
        else now.astimezone(engine.policy.zone(None)).date()
    )
    check_rule_ids(engine.ruleset, [rule_id], "'RULE_ID'")
    run_id = cli_run_id()
    done = send(
        engine,
        rule_id,
        customer_id,
        day,
        to,
        channel=Channel(channel) if channel else None,
        run_id=run_id,
        now=now,
    )
    touch = done.touch
    click.echo(f"rule {rule_id}, customer {customer_id}, occurrence {touch.occurrence}")
    click.echo(
        "the customer's touch: "
        + touch.decision.value
        + (f" ({touch.reason.value})" if touch.reason else "")
        + (f" on {touch.channel.value}" if touch.channel else "")
        + " (unchanged by this test)"
    )
    click.echo(f"test send: {done.channel.value} via {done.transport} to {done.recipient}")
    if done.channel is Channel.SMS:
        click.echo(f"sms: {describe(sms_size(done.message.body), engine.policy.sms_pricing)}")
    click.echo("")
    if done.message.subject is not None:
        click.echo(f"Subject: {done.message.subject}\n")
    click.echo(done.message.body)
    click.echo(
        f"\n{done.status.value}: test touch {done.touch_id} ({done.key})"
        + (f": {done.detail}" if done.detail and done.status is not TouchStatus.SENT else "")
    )
    anchor_ledger(engine.config, engine.store, run_id, engine.stamp(now))
    if done.status is not TouchStatus.SENT:
        sys.exit(EXIT_PARTIAL)
