"""``care consent``: see and change a customer's consent (every change kept with its source)."""

from __future__ import annotations

import datetime as dt

import click

from ..errors import CareError
from .common import anchor_ledger, cli_actor, cli_run_id, config_of, friendly_errors


@click.group()
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
    from ..schema import require_current_schema
    from ..store.consent import Purpose
    from ..store.db import open_store

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
    store = open_store(config_of(ctx).store_url)
    require_current_schema(store)
    now = dt.datetime.now(dt.timezone.utc)  # clock: the CLI records when the change was made
    source = (source or f"cli:{cli_actor()}")[:120]
    changed = record_consent(store, customer_id, changes, source=source, at=now, note=note)
    if changed:
        anchor_ledger(config_of(ctx), store, cli_run_id(), now)
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

    from ..addresses import email_is_valid, phone_is_valid
    from ..mask import mask_email, mask_phone
    from ..schema import require_current_schema
    from ..store.consent import consent_history
    from ..store.db import open_store
    from ..store.models import Customer

    store = open_store(config_of(ctx).store_url)
    require_current_schema(store)
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
