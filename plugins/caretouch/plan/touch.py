"""A candidate touch: one rule, one subject, one occurrence, and the decision about it."""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from ..rules.model import FIELDS, Rule, TriggerKind, Variant
from ..vocab import Channel, Decision, Locale, SubjectKind, SuppressionReason

if TYPE_CHECKING:
    from ..render.templates import RenderedMessage, TemplateStore

# What a customer without a locale is written to (and recorded with).
DEFAULT_LOCALE = Locale.ZH_CN.value

# The columns of each table its templates see (``FieldSpec.in_templates``): not the personal
# contact data, nor the store's own columns (``birth_md``, ...) that are not fields at all.
TEMPLATE_COLUMNS: dict[str, frozenset[str]] = {
    table: frozenset(f.column for f in FIELDS.values() if f.table == table and f.in_templates)
    for table in {f.table for f in FIELDS.values()}
}


def touch_key(rule_id: str, subject: SubjectKind, subject_id: str, occurrence: dt.date) -> str:
    """The idempotency key: (rule, subject, occurrence). The channel is not part of it."""
    return f"{rule_id}|{subject.value}:{subject_id}|{occurrence.isoformat()}"


@dataclass
class Touch:
    rule: Rule
    customer: dict[str, Any]
    policy: dict[str, Any] | None
    event: dict[str, Any] | None
    occurrence: dt.date
    send_at: dt.datetime  # UTC
    timezone: str
    channel: Channel | None = None
    decision: Decision = Decision.SEND
    reason: SuppressionReason | None = None
    explain: list[str] = field(default_factory=list)
    years: int | None = None
    days: int | None = None
    holiday: str | None = None
    # A cadence check-in: (service level, its cadence_days, the last contact or None).
    cadence: tuple[str, int, dt.date | None] | None = None
    # A deferred touch keeps the facts it was first planned with (SPEC: one touch per key).
    frozen_context: dict[str, Any] | None = None
    # The family member a ``relation.birth_date`` touch is about (its subject; the message
    # goes to the customer), and the customer's agent as templates see it (``agent``).
    relation: dict[str, Any] | None = None
    agent: dict[str, Any] | None = None
    # The message variant this touch is given (``plan.variants``); None without variants.
    variant: Variant | None = None

    @property
    def subject(self) -> SubjectKind:
        return self.rule.trigger.subject

    @property
    def subject_id(self) -> str:
        if self.subject is SubjectKind.EVENT:
            assert self.event is not None
            return str(self.event["event_id"])
        if self.subject is SubjectKind.POLICY:
            assert self.policy is not None
            return str(self.policy["policy_id"])
        if self.subject is SubjectKind.RELATION:
            assert self.relation is not None
            return str(self.relation["relation_id"])
        return str(self.customer["customer_id"])

    @cached_property
    def key(self) -> str:
        # Cached: the planner asks for it several times per touch, and a festival or campaign
        # day plans one touch per customer. Rule, subject and occurrence never change.
        return touch_key(self.rule.id, self.subject, self.subject_id, self.occurrence)

    @property
    def customer_id(self) -> str:
        return str(self.customer["customer_id"])

    @property
    def last_day(self) -> dt.date:
        """The last local day this touch may go out (``Rule.last_day``)."""
        days = self.days
        if days is None and self.frozen_context is not None:
            days = self.frozen_context.get("days")
        return self.rule.last_day(self.occurrence, days)

    @property
    def occasion(self) -> tuple[str, int] | None:
        """The occasion this touch greets, as (name, year), if its rule names one."""
        return self.rule.occasion_on(self.occurrence)

    def last_chance(self, day: dt.date) -> bool:
        """A service obligation on the last day of its window: it competes first."""
        return self.rule.obligation and self.last_day <= day

    @property
    def template(self) -> str:
        """The template its message is rendered from: its variant's, else the rule's."""
        return self.variant.template if self.variant is not None else self.rule.template

    @property
    def locale(self) -> str:
        """The locale its message is written in: the customer's, else ``DEFAULT_LOCALE``."""
        return self.customer.get("locale") or DEFAULT_LOCALE

    def template_on(self, channel: Channel) -> str:
        """The template its message on ``channel`` is rendered from: for an agent's task the
        rule's brief, else its variant's template or the rule's (``template``)."""
        if channel is Channel.AGENT_TASK and self.rule.task is not None:
            return self.rule.task.brief
        return self.template

    def render(self, templates: TemplateStore, channel: Channel) -> RenderedMessage:
        """Its message on ``channel``, from the facts it was planned with: what ``care
        preview``, ``care send-test``, the forecast and ``care test`` show."""
        return templates.render(
            self.template_on(channel), channel, self.locale, self.template_context()
        )

    def suppress(self, reason: SuppressionReason, why: str) -> None:
        self.decision = Decision.SUPPRESS
        self.reason = reason
        # Interned, as the planner's other explanations that repeat: a festival day tells a
        # million customers the same few things, and its touches, then their records, hold
        # one string for each instead of a million copies.
        self.explain.append(sys.intern(f"suppressed ({reason.value}): {why}"))

    def template_context(self) -> dict[str, Any]:
        """The variables the rule's templates see (``rules.model.template_variables``)."""
        if self.frozen_context is not None:
            context = dict(self.frozen_context)
            # Planned before agents were part of the context: as for a customer without one.
            context.setdefault("agent", None)
            return context

        zone = ZoneInfo(self.timezone)

        def visible(table: str, row: dict[str, Any] | None) -> dict[str, Any] | None:
            if row is None:
                return None
            shown = TEMPLATE_COLUMNS[table]
            # Instants are shown in the customer's zone: "yesterday" means their yesterday.
            return {
                col: value.astimezone(zone) if isinstance(value, dt.datetime) else value
                for col, value in row.items()
                if col in shown
            }

        ctx: dict[str, Any] = {
            "occurrence": self.occurrence,
            "rule_id": self.rule.id,
            "customer": visible("customer", self.customer),
            "agent": dict(self.agent) if self.agent is not None else None,
        }
        for table in self.rule.trigger.tables:
            if table != "customer":
                ctx[table] = visible(table, getattr(self, table))
        if self.rule.trigger.kind is TriggerKind.ANNIVERSARY:
            ctx["years"] = self.years
        if self.rule.trigger.kind in (TriggerKind.DAYS_BEFORE, TriggerKind.DAYS_AFTER):
            ctx["days"] = self.days
        if self.rule.trigger.kind is TriggerKind.CALENDAR:
            ctx["holiday"] = self.holiday
        if self.cadence is not None:
            ctx["level"], ctx["cadence_days"], ctx["last_contact"] = self.cadence
        return ctx

    def as_json(self) -> dict[str, Any]:
        """The ``care plan --format json`` line (SPEC section 10); a relation's touch adds
        its ``relation_id``, and a rule with variants the touch's ``variant``."""
        line = {
            "rule_id": self.rule.id,
            "customer_id": self.customer_id,
            "policy_id": (self.policy or {}).get("policy_id"),
            "event_id": (self.event or {}).get("event_id"),
            "occurrence": self.occurrence.isoformat(),
            "channel": self.channel.value if self.channel else None,
            "send_at": self.send_at.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z"),
            "decision": self.decision.value,
            "reason": self.reason.value if self.reason else None,
        }
        if self.relation is not None:
            line["relation_id"] = self.relation["relation_id"]
        if self.rule.variants:
            line["variant"] = self.variant.id if self.variant is not None else None
        return line
