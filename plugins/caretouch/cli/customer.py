"""``care customer``: one customer as the office sees them (tier, level, agent, policies and
their premiums, last contact, churn risk), and the customers at risk of leaving, listed for
each agent (docs/operations.md, "Customers at risk of leaving")."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import click

from .common import (
    EXIT_INVALID,
    config_of,
    fail,
    friendly_errors,
    load_ruleset,
    open_current_store,
    parse_day,
    parse_now,
)

_LEVELS = ("low", "medium", "high")


@click.group()
def customer() -> None:
    """One customer's picture, and the customers at risk of leaving."""


def _today(day_text: str | None, ctx: click.Context) -> dt.date:
    """``--date``, else today (in UTC)."""
    return parse_now(None).date() if day_text is None else parse_day(day_text)


@customer.command("show")
@click.argument("customer_id")
@click.option(
    "--date", "day_text", metavar="YYYY-MM-DD", help="The day to assess (default: today)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.pass_context
@friendly_errors
def customer_show(
    ctx: click.Context, customer_id: str, day_text: str | None, as_json: bool
) -> None:
    """A customer: tier, service level, agent, policies and premiums, last contact and
    churn risk with the signals it rests on. Phone and email are shown masked."""
    from sqlalchemy import select

    from ..ledger import Ledger
    from ..mask import mask_recipient
    from ..signals.churn import assess
    from ..store.models import Agent, Customer, InsurancePolicy

    day = _today(day_text, ctx)
    store = open_current_store(ctx)
    policy = load_ruleset(config_of(ctx), strict=False).policy
    with store.read_session() as session:
        row = session.scalars(select(Customer).where(Customer.customer_id == customer_id)).first()
        if row is None:
            fail(f"unknown customer {customer_id!r}", EXIT_INVALID)
        agent = (
            session.scalars(select(Agent).where(Agent.agent_id == row.agent_id)).first()
            if row.agent_id
            else None
        )
        policies = list(
            session.scalars(
                select(InsurancePolicy)
                .where(InsurancePolicy.customer_id == customer_id)
                .order_by(InsurancePolicy.policy_id)
            )
        )
    risk = assess(store, policy, day, [customer_id])[customer_id]
    last = Ledger(store).last_contacts([customer_id], day).get(customer_id)
    level = policy.level_of(row.tier)
    shown: dict[str, Any] = {
        "customer_id": row.customer_id,
        "name": row.name,
        "tier": row.tier,
        "status": row.status,
        "level": level.name if level else None,
        "cadence_days": level.cadence_days if level else None,
        "agent": (
            {"agent_id": agent.agent_id, "name": agent.name, "manager_id": agent.manager_id}
            if agent
            else ({"agent_id": row.agent_id, "name": None} if row.agent_id else None)
        ),
        "phone": mask_recipient(row.phone) if row.phone else None,
        "email": mask_recipient(row.email) if row.email else None,
        "consent": {
            "sms": row.consent_sms,
            "email": row.consent_email,
            "marketing": row.consent_marketing,
        },
        "policies": [
            {
                "policy_id": p.policy_id,
                "product": p.product,
                "status": p.status,
                "renewal_date": p.renewal_date.isoformat() if p.renewal_date else None,
                "premium": str(p.premium) if p.premium is not None else None,
                "payment_frequency": p.payment_frequency,
                "premium_due_date": p.premium_due_date.isoformat() if p.premium_due_date else None,
                "paid_through": p.paid_through.isoformat() if p.paid_through else None,
            }
            for p in policies
        ],
        "last_contact": last.isoformat() if last else None,
        "churn_risk": {
            k: v for k, v in risk.as_dict().items() if k in ("score", "level", "signals")
        },
        "date": day.isoformat(),
    }
    if as_json:
        click.echo(json.dumps(shown, ensure_ascii=False, indent=2))
        return
    click.echo(f"customer {row.customer_id}: {row.name} (tier {row.tier}, {row.status})")
    if level is not None:
        cadence = f", contact every {level.cadence_days} days" if level.cadence_days else ""
        click.echo(f"  service level: {level.name}{cadence}")
    if shown["agent"]:
        a = shown["agent"]
        manager = f", manager {a['manager_id']}" if a.get("manager_id") else ""
        click.echo(f"  agent: {a['agent_id']} {a['name'] or '(not in the store)'}{manager}")
    else:
        click.echo("  agent: none")
    click.echo(f"  phone {shown['phone'] or '-'}, email {shown['email'] or '-'}")
    for p in shown["policies"]:
        premium = ""
        if p["premium_due_date"]:
            paid = p["paid_through"] or "never"
            premium = (
                f"; premium due {p['premium_due_date']} ({p['payment_frequency'] or '-'}),"
                f" paid through {paid}"
            )
        click.echo(f"  policy {p['policy_id']} {p['product']} [{p['status']}]{premium}")
    click.echo(f"  last contact: {shown['last_contact'] or 'never'}")
    click.echo(f"  churn risk on {day}: {risk.level.value} (score {risk.score})")
    for signal, why in risk.signals.items():
        click.echo(f"    {signal.value}: {why}")


@customer.command("at-risk")
@click.option("--agent", "agent_id", help="Only this agent's customers (agents.agent_id).")
@click.option(
    "--min-level",
    type=click.Choice(_LEVELS),
    default="medium",
    show_default=True,
    help="The lowest risk level listed.",
)
@click.option(
    "--date", "day_text", metavar="YYYY-MM-DD", help="The day to assess (default: today)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.pass_context
@friendly_errors
def customer_at_risk(
    ctx: click.Context,
    agent_id: str | None,
    min_level: str,
    day_text: str | None,
    as_json: bool,
) -> None:
    """The customers at risk of leaving, for each agent, highest score first, with their
    signals (a premium overdue, an open complaint, unsatisfied answers, an opt-out, no contact
    within the level's cadence)."""
    from ..signals.churn import assess, by_agent

    day = _today(day_text, ctx)
    store = open_current_store(ctx)
    policy = load_ruleset(config_of(ctx), strict=False).policy
    floor = _LEVELS.index(min_level)
    risks = [
        r
        for r in assess(store, policy, day).values()
        if r.level.value in _LEVELS
        and _LEVELS.index(r.level.value) >= floor
        and (agent_id is None or r.agent_id == agent_id)
    ]
    grouped = by_agent(risks)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "date": day.isoformat(),
                    "customers": [r.as_dict() for rs in grouped.values() for r in rs],
                },
                ensure_ascii=False,
                indent=2,
                default=str,
            )
        )
        return
    if not risks:
        click.echo(f"no customer at {min_level} risk or above on {day}.")
        return
    for agent, rs in grouped.items():
        click.echo(f"agent {agent or '(none)'}: {len(rs)} customer(s)")
        for r in rs:
            signals = ", ".join(s.value for s in r.signals)
            click.echo(
                f"  {r.customer_id} tier {r.tier}: {r.level.value} (score {r.score}): {signals}"
            )
    click.echo(f"{len(risks)} customer(s) at {min_level} risk or above on {day}.")
