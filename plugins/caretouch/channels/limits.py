"""How fast and how persistently a channel talks to its provider.

``RateLimiter`` is what a transport asks before each request: ``TokenBucket`` is this
process's own (the default, one sender on one host), ``shared_limits.SharedRateLimiter`` one
budget per provider account for every process that sends for it. ``Backoff`` says how long to
wait before trying a retryable failure again (exponential with full jitter, or the provider's
``Retry-After`` when it gives one). Both read a monotonic clock, never the wall clock: they
measure intervals, not dates.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


class RateLimiter(Protocol):
    """What a transport asks before each request to its provider."""

    def acquire(self) -> float:
        """Take one request's slot, waiting (sleeping) as long as needed; the seconds waited."""
        ...

    def pause(self, seconds: float) -> None:
        """Nobody gets a slot for ``seconds`` (the provider said 429, with a ``Retry-After``)."""
        ...


class TokenBucket:
    """Thread-safe token bucket: ``rate`` requests per second, bursts of up to ``burst``.

    ``acquire`` blocks until a token is free. Tokens are taken in arrival order under a lock,
    so many sending threads share one rate without overshooting it. ``pause`` empties the
    bucket for a while: after a provider said 429, nobody sends until it has had its rest.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1.0, rate / 10))
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._last = clock()

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def acquire(self) -> float:
        """Take one token, waiting as long as needed; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            self._tokens -= 1.0  # may go negative: the debt is this caller's wait
            wait = 0.0 if self._tokens >= 0 else -self._tokens / self.rate
        if wait > 0:
            self._sleep(wait)
        return wait

    def pause(self, seconds: float) -> None:
        """Nobody gets a token for ``seconds`` (a provider asked us to slow down)."""
        with self._lock:
            self._refill(self._clock())
            self._tokens = min(self._tokens, -seconds * self.rate)


@dataclass(frozen=True)
class Backoff:
    """Retries of one message inside one send: ``tries`` in all, waits growing from ``base``.

    The wait before try ``n + 1`` is uniform in ``[0, min(cap, base * 2**(n-1))]`` (full
    jitter, so many senders that failed together do not return together), or the provider's
    ``Retry-After`` when it names one (never more than ``max_retry_after``: a longer wait is
    better spent by leaving the touch for the next run, which ``Transport.send`` does).
    """

    tries: int = 4
    base: float = 0.5
    cap: float = 8.0
    max_retry_after: float = 60.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def delay(self, failed_tries: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        return self.rng.uniform(0.0, min(self.cap, self.base * 2 ** (failed_tries - 1)))


def parse_retry_after(value: str | None, *, now_epoch: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` (seconds or HTTP date) or an epoch reset time."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        now = time.time() if now_epoch is None else now_epoch
        return max(0.0, when.timestamp() - now)
    if seconds > 1_000_000_000:  # an epoch time (SendGrid's X-RateLimit-Reset)
        now = time.time() if now_epoch is None else now_epoch
        return max(0.0, seconds - now)
    return max(0.0, seconds)
