"""The channel seam: build payload -> post -> parse result, into a closed set of outcomes.

Every provider fills in three methods; the fixed sequence, error mapping and limits live here.
Limits are declared as class attributes (``max_body``, ``rate_per_sec``, ``concurrency``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..mask import mask_recipient
from ..vocab import Channel, Outcome


@dataclass(frozen=True)
class OutboundMessage:
    """What a channel needs to deliver one attempt of one touch."""

    touch_key: str
    attempt_no: int
    channel: Channel
    recipient: str
    body: str
    subject: str | None = None
    html: str | None = None
    occurrence: str = ""
    metadata: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # never print the recipient in clear
        return (
            f"OutboundMessage({self.touch_key!r}, attempt {self.attempt_no}, "
            f"{self.channel.value} to {mask_recipient(self.recipient)})"
        )


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    provider_message_id: str | None = None
    detail: str = ""
    retry_after: float | None = None
    provider_raw: dict[str, Any] | None = None


class Transport(ABC):
    """One provider for one channel (SMS or email)."""

    name: ClassVar[str]
    max_body: ClassVar[int]
    rate_per_sec: ClassVar[float]
    concurrency: ClassVar[int]

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    def send(self, message: OutboundMessage) -> SendResult:
        """Deliver one message; never raises for a provider's answer, only returns it."""
        if len(message.body) > self.max_body:
            return SendResult(
                Outcome.PERMANENT_FAILURE,
                detail=f"body is {len(message.body)} characters, over {self.name}'s limit of {self.max_body}",
            )
        payload = self.build_payload(message)
        raw = self.post(payload)
        return self.parse_result(raw)

    @abstractmethod
    def build_payload(self, message: OutboundMessage) -> dict[str, Any]: ...

    @abstractmethod
    def post(self, payload: dict[str, Any]) -> Any: ...

    @abstractmethod
    def parse_result(self, raw: Any) -> SendResult: ...

    def reconcile(self, message: OutboundMessage) -> SendResult | None:
        """After a crash: did the provider take this message? ``None`` when it cannot tell.

        ``SendResult(SENT)`` means it was delivered to the provider; a result with outcome
        ``UNKNOWN`` and detail ``not found`` means the provider certainly does not have it.
        """
        return None
