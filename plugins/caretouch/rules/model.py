"""What a loaded, validated rule is. Built by ``rules.loader``; compiled by ``rules.sql``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from ..dates import LeapDayPolicy
from ..errors import Location
from ..vocab import (
    BirthdayCalendar,
    Category,
    Channel,
    CustomerStatus,
    Locale,
    PaymentFrequency,
    PolicyStatus,
    RelationKind,
    SubjectKind,
    TaskAssignee,
    TaskKind,
    Tier,
    VariantMetric,
    VariantThen,
)
from .variants import assign

if TYPE_CHECKING:
    from .event_types import EventType


class TriggerKind(str, Enum):
    ANNIVERSARY = "anniversary"
    DAYS_BEFORE = "days_before"
    DAYS_AFTER = "days_after"
    EVENT = "event"
    CALENDAR = "calendar"
    # Due when a customer's service level's cadence runs out (plan.cadence).
    CADENCE = "cadence"


class FieldType(str, Enum):
    TEXT = "text"
    DATE = "date"
    DATETIME = "datetime"
    BOOL = "bool"
    NUMBER = "number"
    JSON = "json"


@dataclass(frozen=True)
class FieldSpec:
    """A field a rule may name, e.g. ``customer.tier``."""

    table: str
    column: str
    type: FieldType
    choices: tuple[str, ...] = ()  # closed vocabulary, if any
    in_templates: bool = True  # personal contact data is kept out of templates

    @property
    def name(self) -> str:
        return f"{self.table}.{self.column}"


def _enum_values(enum: type[Enum]) -> tuple[str, ...]:
    return tuple(str(m.value) for m in enum)


FIELDS: dict[str, FieldSpec] = {
    f.name: f
    for f in (
        FieldSpec("customer", "customer_id", FieldType.TEXT),
        FieldSpec("customer", "name", FieldType.TEXT),
        FieldSpec("customer", "birth_date", FieldType.DATE),
        FieldSpec("customer", "birthday_calendar", FieldType.TEXT, _enum_values(BirthdayCalendar)),
        FieldSpec("customer", "phone", FieldType.TEXT, in_templates=False),
        FieldSpec("customer", "email", FieldType.TEXT, in_templates=False),
        FieldSpec("customer", "locale", FieldType.TEXT, _enum_values(Locale)),
        FieldSpec("customer", "timezone", FieldType.TEXT),
        FieldSpec("customer", "tier", FieldType.TEXT, _enum_values(Tier)),
        FieldSpec("customer", "status", FieldType.TEXT, _enum_values(CustomerStatus)),
        FieldSpec("customer", "consent_sms", FieldType.BOOL, in_templates=False),
        FieldSpec("customer", "consent_email", FieldType.BOOL, in_templates=False),
        FieldSpec("customer", "consent_marketing", FieldType.BOOL, in_templates=False),
        FieldSpec("customer", "agent_id", FieldType.TEXT, in_templates=False),
        FieldSpec("customer", "segment", FieldType.TEXT, in_templates=False),
        # A member of the customer's family: the subject of a ``relation.birth_date`` trigger.
        FieldSpec("relation", "relation_id", FieldType.TEXT),
        FieldSpec("relation", "kind", FieldType.TEXT, _enum_values(RelationKind)),
        FieldSpec("relation", "name", FieldType.TEXT),
        FieldSpec("relation", "birth_date", FieldType.DATE),
        FieldSpec("relation", "birthday_calendar", FieldType.TEXT, _enum_values(BirthdayCalendar)),
        FieldSpec("policy", "policy_id", FieldType.TEXT),
        FieldSpec("policy", "customer_id", FieldType.TEXT),
        FieldSpec("policy", "product", FieldType.TEXT),
        FieldSpec("policy", "start_date", FieldType.DATE),
        FieldSpec("policy", "renewal_date", FieldType.DATE),
        FieldSpec("policy", "status", FieldType.TEXT, _enum_values(PolicyStatus)),
        FieldSpec("policy", "premium", FieldType.NUMBER),
        FieldSpec("policy", "premium_due_date", FieldType.DATE),
        FieldSpec("policy", "payment_frequency", FieldType.TEXT, _enum_values(PaymentFrequency)),
        FieldSpec("policy", "paid_through", FieldType.DATE),
        FieldSpec("event", "event_id", FieldType.TEXT),
        FieldSpec("event", "type", FieldType.TEXT),
        FieldSpec("event", "customer_id", FieldType.TEXT),
        FieldSpec("event", "policy_id", FieldType.TEXT),
        FieldSpec("event", "occurred_at", FieldType.DATETIME),
        FieldSpec("event", "payload", FieldType.JSON),
    )
}

# The date fields each trigger kind may use: each is backed by an index, so planning a day
# stays an index lookup (an anniversary by the month-day key, an offset by the date itself).
DATE_TRIGGER_FIELDS: dict[TriggerKind, tuple[str, ...]] = {
    TriggerKind.ANNIVERSARY: ("customer.birth_date", "policy.start_date", "relation.birth_date"),
    TriggerKind.DAYS_BEFORE: (
        "policy.renewal_date",
        "policy.start_date",
        "policy.premium_due_date",
    ),
    TriggerKind.DAYS_AFTER: ("policy.start_date", "policy.renewal_date", "policy.premium_due_date"),
}


class Op(str, Enum):
    EQ = "eq"
    NE = "ne"
    IN = "in"
    NOT_IN = "not_in"
    LT = "lt"
    LE = "le"
    GT = "gt"
    GE = "ge"
    IS_NULL = "is_null"


@dataclass(frozen=True)
class Compare:
    field: FieldSpec
    op: Op
    value: Any


@dataclass(frozen=True)
class AllOf:
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    item: Condition


Condition = Compare | AllOf | AnyOf | Not


@dataclass(frozen=True)
class Trigger:
    kind: TriggerKind
    field: FieldSpec | None = None  # date triggers
    offsets: tuple[int, ...] = ()  # days_before / days_after
    years_min: int = 0  # anniversary
    leap_day: LeapDayPolicy = LeapDayPolicy.FEB28  # anniversary
    event_type: str | None = None  # event
    delay_days: int = 0  # event
    # event: event types that stop its touches, matched on the same customer and payload
    # ``case_id`` (occurring from the triggering event on): "only while the case is open".
    until: tuple[str, ...] = ()
    dates: tuple[tuple[int | None, int, int], ...] = ()  # calendar: (year or None, month, day)
    holidays: tuple[str, ...] = ()  # calendar: names from dates.HOLIDAYS

    def calendar_match(self, day: dt.date) -> tuple[bool, str | None]:
        """Whether a calendar trigger fires on ``day``, and the festival's name if any."""
        from ..dates import holidays_on

        for name in holidays_on(day):
            if name in self.holidays:
                return True, name
        for year, month, mday in self.dates:
            if (month, mday) == (day.month, day.day) and year in (None, day.year):
                return True, None
        return False, None

    @property
    def subject(self) -> SubjectKind:
        """What one occurrence of this trigger is about (the idempotency key's subject)."""
        if self.kind is TriggerKind.EVENT:
            return SubjectKind.EVENT
        if self.kind in (TriggerKind.CALENDAR, TriggerKind.CADENCE):
            return SubjectKind.CUSTOMER
        assert self.field is not None
        if self.field.table == "policy":
            return SubjectKind.POLICY
        if self.field.table == "relation":
            return SubjectKind.RELATION
        return SubjectKind.CUSTOMER

    @property
    def tables(self) -> tuple[str, ...]:
        """Tables whose fields a rule with this trigger may use."""
        if self.kind is TriggerKind.EVENT:
            return ("customer", "event", "policy")
        if self.field is not None and self.subject is SubjectKind.POLICY:
            return ("customer", "policy")
        if self.kind is not TriggerKind.CALENDAR and self.subject is SubjectKind.RELATION:
            return ("customer", "relation")
        return ("customer",)


@dataclass(frozen=True)
class TaskSpec:
    """What an ``agent_task`` channel assigns to the customer's agent (a rule's ``task:``)."""

    kind: TaskKind
    brief: str  # the template of the agent's script: templates/<brief>/agent_task.<locale>.txt
    expires_days: int = 7  # an assigned task not done this many days after its due day expires
    assignee: TaskAssignee = TaskAssignee.AGENT  # the customer's agent, or that agent's manager


@dataclass(frozen=True)
class Variant:
    """One wording of a rule's message (a rule's ``variants:``): its template and its share
    of the customers (``weight`` out of the variants' total)."""

    id: str
    template: str
    weight: int


@dataclass(frozen=True)
class VariantTest:
    """How a rule's variants are compared (``variant_test:``): the metric that decides, the
    sent touches each variant needs before a winner may be named, and what then happens."""

    metric: VariantMetric
    min_sample: int = 100
    then: VariantThen = VariantThen.REPORT


@dataclass(frozen=True)
class Rule:
    id: str
    description: str
    trigger: Trigger
    audience: Condition | None
    channels: tuple[Channel, ...]
    template: str
    category: Category
    priority: int
    send_time: dt.time
    source: Location
    file_hash: str = field(compare=False)
    tiers: tuple[str, ...] = ()
    defer_days: int = 0
    resend_unknown: bool = False
    # One greeting per customer per occasion and year: a name (``spring_festival``), or
    # HOLIDAY_OCCASION for "the festival the calendar trigger matched".
    occasion: str | None = None
    # With ``agent_task`` among the channels: the task the agent is given.
    task: TaskSpec | None = None
    # Message variants (docs/rules.md, "Message variants"): each customer is given one, for
    # good; ``template`` is then the first variant's. Empty: one message, ``template``.
    variants: tuple[Variant, ...] = ()
    variant_test: VariantTest | None = None  # set whenever there are variants

    def __str__(self) -> str:
        return f"rule {self.id} ({self.source})"

    def variant_for(self, customer_id: str) -> Variant | None:
        """The variant this customer is given (``rules.variants.assign``); None without
        variants."""
        if not self.variants:
            return None
        return self.variants[assign(self.id, customer_id, [v.weight for v in self.variants])]

    def variant(self, variant_id: str) -> Variant | None:
        """The variant of that id, if the rule has it."""
        return next((v for v in self.variants if v.id == variant_id), None)

    @property
    def obligation(self) -> bool:
        """A ``service`` rule's touches are service obligations (SPEC section 1, basic
        service): held back, they are deferred within their window and compete first on its
        last day; one that cannot go out by then is recorded ``obligation_missed``."""
        return self.category is Category.SERVICE

    def last_day(self, occurrence: dt.date, days: int | None = None) -> dt.date:
        """The last local day a touch due on ``occurrence`` may go out: ``defer_days`` later,
        and for a ``days_before`` trigger (``days`` before its date) the day before that date
        at the latest: a reminder of a date never goes out on or after it."""
        last = occurrence + dt.timedelta(days=self.defer_days)
        if self.trigger.kind is TriggerKind.DAYS_BEFORE and days is not None:
            last = min(last, occurrence + dt.timedelta(days=days - 1))
        return max(last, occurrence)

    def occasion_on(self, occurrence: dt.date) -> tuple[str, int] | None:
        """The occasion a touch due on ``occurrence`` greets, as (name, year); None if none."""
        if self.occasion is None:
            return None
        name: str | None = self.occasion
        if name == HOLIDAY_OCCASION:
            _, name = self.trigger.calendar_match(occurrence)
        return (name, occurrence.year) if name else None


# ``occasion: holiday`` on a calendar rule with holidays: each festival is its own occasion.
HOLIDAY_OCCASION = "holiday"

# What every rule's templates see of the customer's own agent (``customers.agent_id``), or
# None when the customer has none. The agent's business details: given to the customer as
# they are, not masked as customers' data is (but never logged).
AGENT_TEMPLATE_COLUMNS: tuple[str, ...] = ("name", "phone", "email")


def template_variables(trigger: Trigger) -> dict[str, frozenset[str] | None]:
    """The variables a rule's templates may use, with the attributes each offers.

    The planner builds exactly this context (``plan.touch.Touch.template_context``);
    validation checks templates against it, so an undefined variable is caught at
    ``care validate`` rather than at send time.
    """
    variables: dict[str, frozenset[str] | None] = {"occurrence": None, "rule_id": None}
    for table in trigger.tables:
        variables[table] = frozenset(
            f.column for f in FIELDS.values() if f.table == table and f.in_templates
        )
    variables["agent"] = frozenset(AGENT_TEMPLATE_COLUMNS)
    if trigger.kind is TriggerKind.ANNIVERSARY:
        variables["years"] = None  # for a relation's birthday, the relation's age
    if trigger.kind in (TriggerKind.DAYS_BEFORE, TriggerKind.DAYS_AFTER):
        variables["days"] = None
    if trigger.kind is TriggerKind.CALENDAR:
        variables["holiday"] = None
    if trigger.kind is TriggerKind.CADENCE:
        variables.update(level=None, cadence_days=None, last_contact=None)
    return variables


_SAMPLE_VALUES: dict[FieldType, Any] = {
    FieldType.TEXT: "Sample",
    FieldType.DATE: dt.date(2026, 1, 15),
    FieldType.DATETIME: dt.datetime(2026, 1, 14, 20, 30, tzinfo=dt.timezone.utc),
    FieldType.BOOL: True,
    FieldType.NUMBER: __import__("decimal").Decimal("1234.50"),
    FieldType.JSON: None,  # the event payload: the declared examples (events.yaml)
}


def sample_contexts(trigger: Trigger, event_type: EventType | None = None) -> list[dict[str, Any]]:
    """Template contexts with typical values, plus the awkward cases the real data has.

    ``care validate`` renders every template with each, so that a template that would only
    fail at send time (an unguarded ``policy`` of an event without one, an unguarded
    ``agent`` of a customer without one, a nullable field printed without a default) is
    refused before any customer is involved. An event's
    payload is the example its type declares (``event_type``), every field in the typical
    sample and only the required ones in the sample of empty optional fields.
    """
    base: dict[str, Any] = {"occurrence": dt.date(2026, 1, 15), "rule_id": "sample"}
    for table in trigger.tables:
        row = {}
        for f in FIELDS.values():
            if f.table == table and f.in_templates:
                row[f.column] = f.choices[0] if f.choices else _SAMPLE_VALUES[f.type]
        base[table] = row
    base["customer"]["name"] = "王芳"
    if "relation" in base:
        base["relation"].update(name="王小明", kind="child")
    base["agent"] = {"name": "李娜", "phone": "+8613900001111", "email": "li.na@example.com"}
    if "event" in base:
        base["event"]["type"] = trigger.event_type
        base["event"]["payload"] = event_type.example_payload() if event_type else None
    if trigger.kind is TriggerKind.ANNIVERSARY:
        base["years"] = 3
    if trigger.kind in (TriggerKind.DAYS_BEFORE, TriggerKind.DAYS_AFTER):
        base["days"] = 7
    if trigger.kind is TriggerKind.CALENDAR:
        base["holiday"] = trigger.holidays[0] if trigger.holidays else None
    if trigger.kind is TriggerKind.CADENCE:
        base.update(level="premium", cadence_days=30, last_contact=dt.date(2025, 12, 16))
    samples = [dict(base, _sample="typical values")]
    nullable = {
        "customer": ("birth_date", "timezone"),
        "policy": ("renewal_date", "premium"),
        "agent": ("phone", "email"),
    }
    empty = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for table, columns in nullable.items():
        if table in empty:
            for column in columns:
                # The trigger's own date is never empty on a touch it made.
                if trigger.field is None or trigger.field.name != f"{table}.{column}":
                    empty[table][column] = None
    if trigger.kind is TriggerKind.CADENCE:
        empty["last_contact"] = None  # never contacted
    if "event" in empty:
        empty["event"]["payload"] = (
            event_type.example_payload(required_only=True) if event_type else None
        )
    samples.append(dict(empty, _sample="empty optional fields"))
    # A customer without an agent: ``agent`` is None, so ``agent.phone`` needs a guard.
    samples.append(dict(base, agent=None, _sample="a customer without an agent"))
    if trigger.kind is TriggerKind.EVENT:
        samples.append(dict(base, policy=None, _sample="an event without a policy"))
    if trigger.kind is TriggerKind.CALENDAR:
        samples += [dict(base, holiday=h, _sample=f"holiday {h}") for h in trigger.holidays[1:]]
        if trigger.dates:
            samples.append(dict(base, holiday=None, _sample="a fixed date (no festival)"))
    return samples
