"""What the ledger takes in and hands out: plain records, no plans and no renders.

The ledger records what it is given. Callers convert their own objects into these records
(``run.records`` turns a planned ``plan.Touch`` into a ``PlannedTouch``); a message to claim
is anything shaped like ``Message`` (``render.RenderedMessage`` is one). What the planner
asks of the past (``PastContact``, ``DeferredTouch``) is in ``caretouch.touch_history``,
below both.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Generic, Protocol, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..dates import aware_utc
from ..vocab import Channel, Decision, SuppressionReason, TouchStatus
from .codec import decode
from .models import TouchRow


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """A touch's time zone (UTC when the name is not one)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


@dataclass(frozen=True)
class PlannedTouch:
    """One touch of a plan and the decision about it, as ``record_plan`` writes it.

    The ``touches`` row is made from it the first time its key is seen (``context``: the
    facts the templates render from, stored as given); every plan may append a status
    event (``decision``, ``reason``, ``explain``, ``consent``: what the customer had
    consented to when it was decided).
    """

    key: str
    rule_id: str
    rule_hash: str
    category: str
    priority: int
    subject_kind: str
    subject_id: str
    customer_id: str
    policy_id: str | None
    event_id: str | None
    occurrence: dt.date
    send_at: dt.datetime  # UTC
    timezone: str
    locale: str
    tier: str
    channel: Channel | None
    template_id: str
    context: dict[str, Any]
    decision: Decision = Decision.SEND
    reason: SuppressionReason | None = None
    explain: list[str] = field(default_factory=list)
    consent: dict[str, bool] = field(default_factory=dict)
    variant: str | None = None  # the message variant (a rule's ``variants:``), if any


@dataclass(frozen=True)
class PlanGuard:
    """What keeps concurrent planners within the caps (docs/ledger.md, "Concurrent
    planners"): ``since``, the chain's position when the plan read its history
    (``Ledger.chain_position``), and ``replan``, which plans these customers again now
    (their part of the plan only)."""

    since: int
    replan: Callable[[set[str]], Sequence[PlannedTouch]]


@dataclass
class PlanRecord:
    """What ``record_plan`` changed."""

    new: int = 0
    replanned: int = 0
    suppressed: int = 0  # suppressed events appended
    unchanged: int = 0
    planned_ids: list[int] | None = None
    planned: int = 0  # planned events appended (new, planned again, or on another channel)

    def merge(self, other: PlanRecord) -> None:
        """Add what another transaction of the same plan changed."""
        self.new += other.new
        self.replanned += other.replanned
        self.suppressed += other.suppressed
        self.unchanged += other.unchanged
        self.planned += other.planned
        if other.planned_ids:
            if self.planned_ids is None:
                self.planned_ids = []
            self.planned_ids.extend(other.planned_ids)


@dataclass(frozen=True)
class TouchState:
    """A touch as the ledger knows it now: its row and its latest status."""

    row: TouchRow
    status: TouchStatus
    reason: str | None
    attempts: int
    scheduled: dt.datetime | None = None  # a later planned event's send time, if any
    planned_channel: str | None = None  # the channel of the latest planned event, if any

    @property
    def channel(self) -> str | None:
        """The channel the touch is planned for now (it may have changed since first planned)."""
        return self.planned_channel or self.row.channel

    @property
    def send_at(self) -> dt.datetime:
        """When the touch is to be sent: as first planned, or as re-planned after deferral."""
        return self.scheduled or aware_utc(self.row.send_at)

    @property
    def id(self) -> int:
        return self.row.id

    @property
    def context(self) -> dict[str, Any]:
        return decode(self.row.context)


@dataclass(frozen=True)
class StatusChange:
    """One status event to append, compare-and-set: ``expected`` is the status the change
    was computed from, and the ledger appends it only if the touch is still in it
    (``changes.applies``); otherwise it is skipped and handed back as stale."""

    touch_id: int
    status: TouchStatus
    reason: str | None = None
    attempt_id: int | None = None
    provider_message_id: str | None = None
    detail: dict[str, Any] | None = None
    expected: TouchStatus = field(kw_only=True)


class Message(Protocol):
    """A rendered message, as an attempt records it (``render.RenderedMessage`` is one)."""

    @property
    def channel(self) -> Channel: ...

    @property
    def body(self) -> str: ...

    @property
    def subject(self) -> str | None: ...

    @property
    def html(self) -> str | None: ...


M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Claim(Generic[M]):
    """A touch a worker wants to send now, with the message it rendered for it."""

    state: TouchState
    channel: str
    transport: str
    recipient: str
    template_hash: str
    message: M
    # The template rendered, when not the touch's own (an agent task's brief).
    template_id: str | None = None


@dataclass(frozen=True)
class ClaimedAttempt:
    """An attempt a claim inserted, as the sender needs it: the values written, not read
    back (``claims.claim_in``). The columns of ``models.Attempt`` but the content."""

    id: int
    touch_id: int
    attempt_no: int
    channel: str
    transport: str
    recipient: str
    template_id: str
    template_hash: str
    content_hash: str
    created_at: dt.datetime
    run_id: str


@dataclass(frozen=True)
class MessageMatch:
    """The touch and attempt a provider's event is about."""

    touch_id: int
    attempt_id: int
    customer_id: str


@dataclass(frozen=True)
class ProviderEvent:
    """One event from a provider's webhook, normalised, to record once.

    ``payload`` must already be masked (no phone number or email address in clear).
    ``status`` is the touch status the event means (a delivery receipt), or None when it is
    kept as a provider event only (queued, processed, open, click, inbound, ...).
    """

    provider: str
    provider_event_id: str
    kind: str
    payload: dict[str, Any]
    provider_status: str | None = None
    provider_message_id: str | None = None
    touch_id: int | None = None
    attempt_id: int | None = None
    customer_id: str | None = None
    status: TouchStatus | None = None
    reason: str | None = None
    detail: dict[str, Any] | None = None  # added to the status event's detail (masked)
    occurred_at: dt.datetime | None = None
    # When it reached us (default: the recording transaction's ``now``); a callback recorded
    # from the intake keeps the instant it was accepted.
    received_at: dt.datetime | None = None
    # The ``callback_intake`` rows it was accepted as: recording deletes them in the same
    # transaction, and records the event only if that transaction took one of them.
    intake_ids: tuple[int, ...] = ()
    # Set on the events ``record_provider_events`` returns: a receipt whose touch was not in
    # a status a receipt may follow (``statuses.RECEIPT_FROM``) was kept as a provider event
    # only, its status event skipped (compare-and-set).
    stale: bool = False
