"""The channel seam: build payload -> post -> parse result, into a closed set of outcomes.

Every provider fills in three methods (and ``parse_error`` for the exceptions its SDK
raises); the fixed sequence lives here: the body limit, the rate limit (a token bucket per
transport, or the account's budget shared by every process: ``limit_with``), retries of
retryable failures with backoff and jitter honouring ``Retry-After``, and bounded
concurrency (``send_many``). Limits are class attributes (``max_body``,
``rate_per_sec``, ``concurrency``) that an account's configuration may lower or raise.

A retry inside one send is only safe when the provider certainly did not take the message
(a 429, a 5xx, a refused connection). When it may have (a timeout or a connection dropped
after the request went out: ``SendResult.ambiguous``), the transport asks the provider
(``reconcile``) before trying again; if the provider cannot tell, the answer is ``unknown``,
for a person to review, unless the message allows resending (``may_resend``).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from ..errors import CareError, RateLimiterUnavailable
from ..mask import mask_recipient, scrub
from ..vocab import Channel, Outcome
from .limits import Backoff, RateLimiter, TokenBucket

log = logging.getLogger("caretouch.channels")


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
    # The ledger's attempt row: providers echo it back in webhooks (status callbacks,
    # custom args), and reconciliation looks for messages created after it.
    attempt_id: int | None = None
    created_at: dt.datetime | None = None
    # Send again when the provider cannot tell whether it took an earlier try (rules may
    # opt in: ``resend_unknown: true``); by default such a touch becomes ``unknown``.
    may_resend: bool = False
    # Headers the content brings (``List-Unsubscribe``, built with the link by
    # ``render.unsubscribe``): an email channel sends them as they are.
    headers: dict[str, str] = field(default_factory=dict)

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
    # The request may have reached the provider (timeout, connection dropped mid-answer).
    ambiguous: bool = False
    # The provider refused our credentials or account: no point sending anything else.
    stop_run: bool = False
    # How many requests this send made (retries included), for reports and benchmarks.
    tries: int = 1
    # The provider's error code (Twilio 21211, 21610, ...), when it gave one.
    provider_code: int | None = None
    # In doubt, and the provider could not be asked just now: leave the touch in ``sending``
    # for ``recover_in_flight`` to ask again, rather than settle it as ``unknown`` for good.
    settle_later: bool = False
    # Sending cannot go on (the shared rate limiter is unreachable): nothing went out for this
    # try; the sender records the chunk (back to ``planned``), then raises this error.
    halt: CareError | None = None


class Transport(ABC):
    """One provider for one channel (SMS or email)."""

    name: ClassVar[str]
    max_body: ClassVar[int]
    rate_per_sec: ClassVar[float]
    concurrency: ClassVar[int]
    # Where this provider's messages point unsubscribe links (``.../care/hooks/unsubscribe``);
    # None: they carry none. The links themselves are content, put in by the sender
    # (``render.unsubscribe``), never by the channel.
    unsubscribe_base: str | None = None

    def __init__(
        self,
        channel: Channel,
        *,
        rate_per_sec: float | None = None,
        concurrency: int | None = None,
        backoff: Backoff | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.channel = channel
        self.rate = float(rate_per_sec or type(self).rate_per_sec)
        self.workers = int(concurrency or type(self).concurrency)
        self.backoff = backoff or Backoff()
        # The rate limiter waits on the same clock and sleep as the retries, so a test that
        # injects a fake ``sleep`` (and ``clock``) waits for neither (a 429's pause included).
        self.sleep = sleep
        self.clock = clock
        self.limiter: RateLimiter = self._bucket()
        self.shared_limiter = False
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def _bucket(self) -> TokenBucket:
        burst = max(1.0, min(self.rate, self.workers))
        return TokenBucket(self.rate, burst=burst, clock=self.clock, sleep=self.sleep)

    def share(self, senders: int) -> None:
        """Split this provider's rate between ``senders`` processes sending side by side
        (mapped Airflow tasks, bounded by a pool of that many slots). Nothing to split once
        the limiter is shared (``limit_with``): it is already the one budget of them all."""
        if senders > 1 and not self.shared_limiter:
            self.rate = self.rate / senders
            self.limiter = self._bucket()

    def limit_with(self, limiter: RateLimiter) -> None:
        """Take every request's slot from ``limiter``, the provider account's budget shared
        by every process that sends for it (``shared_limits.SharedRateLimiter``)."""
        self.limiter = limiter
        self.shared_limiter = True

    def send(self, message: OutboundMessage) -> SendResult:
        """Deliver one message; never raises for a provider's answer, only returns it."""
        if len(message.body) > self.max_body:
            return SendResult(
                Outcome.PERMANENT_FAILURE,
                detail=f"body is {len(message.body)} characters, over {self.name}'s limit of {self.max_body}",
            )
        payload = self.build_payload(message)
        try:
            return self._send(message, payload)
        except RateLimiterUnavailable as exc:
            # Raised before a request (acquire) or after one the provider refused (pause):
            # nothing of this try went out, so the touch can wait for a later run.
            log.error("%s: %s not sent: %s", self.name, message.touch_key, exc)
            return SendResult(
                Outcome.RETRYABLE_FAILURE, detail=str(exc), stop_run=True, tries=0, halt=exc
            )

    def _send(self, message: OutboundMessage, payload: dict[str, Any]) -> SendResult:
        """The tries of one message, each when the rate limiter gives it a slot."""
        result = SendResult(Outcome.UNKNOWN)
        for tries in range(1, self.backoff.tries + 1):
            self.limiter.acquire()
            try:
                result = self.parse_result(self.post(payload))
            except Exception as exc:  # the SDK's way of saying no: map it, never lose it
                result = self.parse_error(exc)
            result = replace(result, tries=tries)
            if result.outcome is not Outcome.RETRYABLE_FAILURE or result.stop_run:
                return result
            if result.ambiguous:
                settled = self._settle_ambiguous(message, result)
                if settled is not None:
                    return settled
            if tries == self.backoff.tries:
                break
            if result.retry_after is not None and result.retry_after > self.backoff.max_retry_after:
                # A longer rest than a send should wait: trying again sooner would not honour
                # it, so the touch waits for the next run; the other senders back off too.
                self.limiter.pause(self.backoff.max_retry_after)
                return result
            wait = self.backoff.delay(tries, result.retry_after)
            if result.retry_after is not None:
                self.limiter.pause(wait)
            log.info(
                "%s: %s try %d: %s; again in %.2f s",
                self.name,
                message.touch_key,
                tries,
                scrub(result.detail),
                wait,
            )
            self.sleep(wait)
        return result

    def _settle_ambiguous(self, message: OutboundMessage, result: SendResult) -> SendResult | None:
        """After a try the provider may have taken: its answer, or None to try again."""
        try:
            answer = self.reconcile(message)
        except Exception as exc:
            log.warning("%s: reconcile of %s failed: %s", self.name, message.touch_key, exc)
            if not message.may_resend:
                # The provider could tell, but not now: ask again later (the touch stays
                # ``sending``; recovery asks once the lease has passed).
                return replace(
                    result,
                    outcome=Outcome.UNKNOWN,
                    detail=f"{result.detail}; the lookup failed ({type(exc).__name__})",
                    settle_later=True,
                )
            answer = None
        if answer is not None and answer.outcome is Outcome.SENT:
            return replace(answer, tries=result.tries)
        if answer is not None and answer.outcome is Outcome.NOT_SENT:
            return None  # certainly not taken: safe to try again
        if message.may_resend:
            return None
        return replace(
            result,
            outcome=Outcome.UNKNOWN,
            detail=f"{result.detail}; the provider cannot tell whether it took the message",
        )

    def send_many(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """Send messages with at most ``workers`` requests in flight; results in order.

        Once a result says ``stop_run`` (credentials refused, the shared rate limiter
        unreachable), the messages not yet sent are answered with a retryable failure without
        calling the provider.
        """
        stop: list[SendResult] = []

        def one(message: OutboundMessage) -> SendResult:
            if stop:
                return SendResult(
                    Outcome.RETRYABLE_FAILURE,
                    detail=f"not sent: {stop[0].detail}",
                    stop_run=True,
                    tries=0,
                    halt=stop[0].halt,
                )
            result = self.send(message)
            if result.stop_run:
                stop.append(result)
            return result

        if self.workers <= 1 or len(messages) <= 1:
            return [one(m) for m in messages]
        return list(self._senders().map(one, messages))

    def _senders(self) -> ThreadPoolExecutor:
        """The sending threads, kept from one ``send_many`` to the next: each holds its SDK
        client and keep-alive connection, which a pool per call (per chunk of the runner)
        would build and connect again every time."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.workers, thread_name_prefix=f"care-{self.name}"
                )
            return self._pool

    def close(self) -> None:
        """Stop the sending threads (idle between calls, they never hold up an exit)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    @abstractmethod
    def build_payload(self, message: OutboundMessage) -> dict[str, Any]: ...

    @abstractmethod
    def post(self, payload: dict[str, Any]) -> Any: ...

    @abstractmethod
    def parse_result(self, raw: Any) -> SendResult: ...

    def parse_error(self, exc: Exception) -> SendResult:
        """What an exception from ``post`` means. By default: nobody knows."""
        log.error("%s: unexpected error: %r", self.name, exc)
        return SendResult(
            Outcome.UNKNOWN, detail=f"unexpected error: {type(exc).__name__}: {scrub(str(exc))}"
        )

    def reconcile(self, message: OutboundMessage) -> SendResult | None:
        """After a crash: did the provider take this message? ``None`` when it cannot tell.

        ``SendResult(SENT)`` means it was delivered to the provider; ``SendResult(NOT_SENT)``
        means the provider certainly does not have it.
        """
        return None
