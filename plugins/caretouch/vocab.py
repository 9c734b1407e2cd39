"""Closed vocabularies of the domain, as enums.

Values are the words that appear in the ledger, in JSON output and in the documentation;
renaming one is a breaking change.
"""

from __future__ import annotations

from enum import Enum


class StrEnum(str, Enum):
    """A ``str`` enum whose ``str()`` is its value (Python 3.10 has no ``enum.StrEnum``)."""

    def __str__(self) -> str:
        return str(self.value)


class Channel(StrEnum):
    """How a message reaches a customer."""

    SMS = "sms"
    EMAIL = "email"
    # Not a message: a task for the customer's agent (a call, a visit, a gift), assigned in
    # the ledger by the in-process ``channels.agent_task`` (docs/rules.md, "Tasks for agents").
    AGENT_TASK = "agent_task"


# The channels that carry a message to the customer through a provider (or the outbox).
MESSAGE_CHANNELS = (Channel.SMS, Channel.EMAIL)


class TaskKind(StrEnum):
    """What an ``agent_task`` asks the agent to do (a rule's ``task.kind``)."""

    CALL = "call"  # a phone call: needs the customer's phone and SMS consent
    VISIT = "visit"
    GIFT = "gift"


class TaskAssignee(StrEnum):
    """Who an ``agent_task`` goes to (a rule's ``task.assignee``)."""

    AGENT = "agent"  # the customer's own agent
    MANAGER = "manager"  # that agent's manager (an escalation)


class TaskOutcome(StrEnum):
    """What the agent reports when a task is done (``care task done --outcome``)."""

    REACHED = "reached"
    NO_ANSWER = "no_answer"
    DECLINED = "declined"
    VISITED = "visited"


class Category(StrEnum):
    """What a rule is for; drives consent (marketing needs explicit consent)."""

    SERVICE = "service"
    CARE = "care"
    MARKETING = "marketing"


class Locale(StrEnum):
    ZH_CN = "zh-CN"
    ZH_TW = "zh-TW"
    EN = "en"


class Tier(StrEnum):
    A = "A"
    B = "B"
    C = "C"
    D = "D"


class CustomerStatus(StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"


class PolicyStatus(StrEnum):
    ACTIVE = "active"
    LAPSED = "lapsed"
    CANCELLED = "cancelled"


class PaymentFrequency(StrEnum):
    """How often a policy's premium falls due (``policies.payment_frequency``)."""

    ANNUAL = "annual"
    SEMI_ANNUAL = "semi-annual"
    QUARTERLY = "quarterly"
    MONTHLY = "monthly"
    SINGLE = "single"  # paid once: no premium falls due after the first

    @property
    def months(self) -> int:
        """Months from one due date to the next (0: single premium, no next)."""
        return {"annual": 12, "semi-annual": 6, "quarterly": 3, "monthly": 1, "single": 0}[
            self.value
        ]


class ReplyKind(StrEnum):
    """What a customer's reply to a touch says (``webhooks.replies``)."""

    SATISFIED = "satisfied"  # a satisfaction answer of 4-5, 满意, Y
    UNSATISFIED = "unsatisfied"  # 1-3, 不满意, N
    MESSAGE = "message"  # anything else: for the agent to read ("customer wrote")


class ChurnSignal(StrEnum):
    """A sign that a customer may leave (``events.churn``; docs/operations.md, "Customers at
    risk of leaving")."""

    PREMIUM_OVERDUE = "premium_overdue"  # a premium past its due date and not paid
    OPEN_COMPLAINT = "open_complaint"  # a complaint received (or reopened), not resolved
    UNSATISFIED = "unsatisfied"  # answered a touch unsatisfied lately
    OPTED_OUT = "opted_out"  # withdrew a consent lately
    OUT_OF_CADENCE = "out_of_cadence"  # no completed contact within their level's cadence


class RiskLevel(StrEnum):
    """How likely a customer is to leave, from the weight of their signals."""

    NONE = "none"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class BirthdayCalendar(StrEnum):
    GREGORIAN = "gregorian"
    LUNAR = "lunar"


class Decision(StrEnum):
    SEND = "send"
    SUPPRESS = "suppress"


class SuppressionReason(StrEnum):
    """Why a candidate touch is not sent. Every suppression carries exactly one."""

    # Decided when planning:
    NO_CONTACT = "no_contact"  # no channel in the rule's preference has an address and consent
    OPTED_OUT = "opted_out"  # ... and the customer explicitly withdrew consent for them
    BLACKOUT = "blackout"  # the day is a blackout day for the rule's category
    FREQUENCY_CAP = "frequency_cap"  # a cap of the contact policy is reached (priority decides)
    CAPACITY = "capacity"  # the channel's daily capacity went to higher tiers
    DEFERRED = "deferred"  # held back today (cap, blackout, capacity); tried again tomorrow
    ALREADY_SENT = "already_sent"  # the ledger already holds this touch as handled
    OCCASION_TAKEN = "occasion_taken"  # the customer is (being) greeted for this occasion already
    # A service obligation that could not go out by the last day of its window (plan or send).
    OBLIGATION_MISSED = "obligation_missed"
    # A premium reminder whose premium was paid (``paid_through`` reached its due date): at
    # planning, or at sending for one already planned.
    PAID = "paid"
    # A complaint's touch that waits for the case to stay open (an escalation) when the case
    # was resolved or closed meanwhile (``complaint_resolved`` / ``complaint_closed``).
    CASE_CLOSED = "case_closed"
    # Decided when sending:
    QUIET_HOURS = "quiet_hours"  # quiet hours last beyond the touch's sending window
    TOO_LATE = "too_late"  # the sending window passed before the touch could go out


class DeadLetterReason(StrEnum):
    """The word that starts the reason of an input refused because of its shape or its
    history rather than its content (an ``event_dead_letters`` row, a webhook's 4xx)."""

    # Bounds at the door (``bounds.Limits``):
    TOO_LARGE = "too_large"  # more bytes than allowed
    TOO_DEEP = "too_deep"  # nested deeper than allowed
    TOO_MANY_ITEMS = "too_many_items"  # more keys and list items than allowed
    # After the door:
    UNREADABLE = "unreadable"  # a stored payload that cannot be read back safely
    UNPLANNABLE = "unplannable"  # planning this one event failed (the others went on)
    DELIVERY_LIMIT = "delivery_limit"  # a stream entry that failed this many deliveries


class TouchStatus(StrEnum):
    """A touch's status history in the ledger (SPEC section 7)."""

    PLANNED = "planned"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    BOUNCED = "bounced"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    UNKNOWN = "unknown"
    # An ``agent_task`` touch: assigned to the agent, then one of the four that close it.
    ASSIGNED = "assigned"
    DONE = "done"
    DECLINED = "declined"
    NO_ANSWER = "no_answer"
    EXPIRED = "expired"


class Outcome(StrEnum):
    """The closed set of answers a channel gives for one message (SPEC section 8)."""

    SENT = "sent"
    REJECTED_INVALID_RECIPIENT = "rejected-invalid-recipient"
    REJECTED_OPTED_OUT = "rejected-opted-out"
    RETRYABLE_FAILURE = "retryable-failure"
    PERMANENT_FAILURE = "permanent-failure"
    UNKNOWN = "unknown"  # the provider cannot tell whether it took the message
    # Only from ``Transport.reconcile``: the provider certainly does not have the message.
    NOT_SENT = "not-sent"


class SendReason(StrEnum):
    """The reason of a status event the send step, recovery or a receipt records (a
    suppression carries a ``SuppressionReason`` instead). Stored in the ledger."""

    # Back to ``planned``, to be sent again:
    RETRY = "retry"  # a retryable failure with attempts left
    RECONCILED_NOT_SENT = "reconciled_not_sent"  # after a crash: the provider does not have it
    # ``unknown``, for a person to review (never sent again blindly):
    UNKNOWN = "unknown"  # the provider's answer was unclear
    CRASH_UNRECONCILED = "crash_unreconciled"  # after a crash: the provider cannot tell
    # ``failed``:
    RENDER_ERROR = "render_error"  # the template failed; nothing reached a provider
    INVALID_RECIPIENT = "invalid_recipient"  # the provider refused the address
    OPTED_OUT = "opted_out"  # the provider says the customer opted out (consent recorded)
    RETRIES_EXHAUSTED = "retries_exhausted"  # retryable failures, attempts used up
    PROVIDER_ERROR = "provider_error"  # any other permanent failure
    DELIVERY_FAILED = "delivery_failed"  # a provider's receipt: accepted, then failed


class SubjectKind(StrEnum):
    """What a touch is about: the third part of the idempotency key names one of these."""

    CUSTOMER = "customer"
    POLICY = "policy"
    EVENT = "event"
    RELATION = "relation"  # a family member's date (``relation.birth_date``)


class RelationKind(StrEnum):
    """Who a customer's relation is to them (``relations.kind``)."""

    SPOUSE = "spouse"
    CHILD = "child"
    PARENT = "parent"


class Provider(StrEnum):
    """Who reports delivery and inbound messages by webhook (``provider_events.provider``)."""

    TWILIO = "twilio"
    SENDGRID = "sendgrid"


class PayloadType(StrEnum):
    """The value types an event's payload field may be declared with (care_rules/events.yaml)."""

    STRING = "string"
    DECIMAL = "decimal"
    INT = "int"
    DATE = "date"
    BOOL = "bool"


class DigestStatus(StrEnum):
    """Where an agent's daily digest of one day stands (``agent_digests.status``)."""

    CLAIMED = "claimed"  # taken by a run, being sent (or that run crashed: see run.digest)
    SENT = "sent"
    FAILED = "failed"  # the provider refused for now: a later run of the day tries again
    REJECTED = "rejected"  # refused for good (a bad address): not tried again that day
    UNKNOWN = "unknown"  # a crashed send the provider cannot tell about: for a person


class VariantMetric(StrEnum):
    """What decides a rule's message variant test (a rule's ``variant_test: metric``): the
    share of a variant's sent touches that were delivered, clicked or replied to."""

    DELIVERED = "delivered"
    CLICKED = "clicked"  # an email link clicked (SendGrid click events)
    REPLIED = "replied"  # a reply matched to the touch (webhooks.replies)


class VariantThen(StrEnum):
    """What a variant test does once it has a winner (``variant_test: then``)."""

    REPORT = "report"  # name the winner in `care report`, keep sending every variant
    SEND_WINNER = "send_winner"  # new touches all get the winner
