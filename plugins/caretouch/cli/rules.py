"""``care validate`` and ``care schema``: for rule authors."""

from __future__ import annotations

import json

import click

from .common import config_of, friendly_errors, load_ruleset


@click.command()
@click.pass_context
@friendly_errors
def validate(ctx: click.Context) -> None:
    """Check rule and campaign files, the contact policy, the event types and templates;
    file:line:col for every error."""
    ruleset = load_ruleset(config_of(ctx), strict=True)
    rules = [r.id for r in ruleset.rules if not ruleset.is_campaign(r.id)]
    click.echo(f"{len(rules)} rule(s) valid: {', '.join(rules)}")
    if ruleset.campaigns:
        click.echo(
            f"{len(ruleset.campaigns)} campaign(s) valid: "
            + ", ".join(f"{c.id} ({', '.join(map(str, c.days))})" for c in ruleset.campaigns)
        )


@click.command()
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
