"""One rate budget per provider account, shared by every process that sends for it.

A ``TokenBucket`` (``limits.py``) limits one process. Several processes sending for one
account (the ``care_send`` pool's tasks, workers on other hosts, a ``care dispatch`` from cron,
a campaign) would each spend a budget of their own, so with ``CARE_RATE_LIMIT_URL`` set every
transport takes its slots from ``SharedRateLimiter`` instead: a moving window kept in Redis by
the ``limits`` library (``MovingWindowRateLimiter``), keyed by the provider account. In any
window of ``window_seconds``, at most ``window_amount`` requests go to the account, whichever
process, host or command sends them; the whole rate is the one budget, so it is not split by
the pool's slots (``Transport.share`` does nothing then).

A provider's 429 with a ``Retry-After`` pauses the account for everyone: ``pause`` sets a key
that lives that many milliseconds, and every ``acquire`` waits while it lives (Redis counts
the time down: the wait is its ``PTTL``).

If Redis cannot be reached, ``acquire`` and ``pause`` raise ``RateLimiterUnavailable``, naming
the URL without its password: nothing is sent rather than sent without a limit.

The account's key is a hash (``account_key``): a provider's account identifiers never appear
in Redis in clear. The library stamps its window's entries with each host's clock
(``time.time()``): hosts that send for one account must keep their clocks in step (NTP). All
senders of one account must be configured with the same rate, which is part of the key.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..config import without_password
from ..errors import ConfigurationError, RateLimiterUnavailable

if TYPE_CHECKING:
    from limits import RateLimitItem

# The ``limits`` library (and with it redis-py and its async storages) is imported when a
# shared limiter is made, not with the channels: the CLI starts without it when it is unused.

# The prefix of every key the limiter writes in Redis.
DEFAULT_PREFIX = "caretouch:rate"
# A window may be longer than a second, to keep a fractional rate (1.5/s is 3 per 2 s); not
# longer than this (a window's worth of requests may go out at once) unless the rate is under
# one request in it.
_LONGEST_WINDOW = 10
# A wait is checked again at least this often: a pause an operator deleted, or a window entry
# stamped by a host whose clock runs ahead, is not waited out blindly.
_LONGEST_WAIT = 1.0
_SHORTEST_WAIT = 0.001


def account_key(provider: str, *identity: str) -> str:
    """The key of one provider account's budget: ``twilio-<hash>`` of what identifies it
    (never a secret or an identifier in clear)."""
    digest = hashlib.sha256("\0".join(identity).encode("utf-8")).hexdigest()[:24]
    return f"{provider}-{digest}"


def window_for(rate: float) -> RateLimitItem:
    """``rate`` requests per second as a moving window that never allows more: ``n`` per
    ``m`` seconds with ``n / m ≤ rate``, the shortest window that keeps 95 % of the rate
    (``10/s`` is 10 per second; ``1.5/s`` 3 per 2 s; ``0.05/s`` 1 per 20 s)."""
    from limits import RateLimitItemPerSecond

    if not (0 < rate < math.inf):
        raise ValueError(f"rate must be positive, not {rate}")
    if rate * _LONGEST_WINDOW < 1:
        return RateLimitItemPerSecond(1, math.ceil(1 / rate), namespace="window")
    best = (0.0, 1)
    for seconds in range(1, _LONGEST_WINDOW + 1):
        kept = math.floor(rate * seconds + 1e-9) / (rate * seconds)
        if kept >= 0.95:
            best = (kept, seconds)
            break
        if kept > best[0]:
            best = (kept, seconds)
    seconds = best[1]
    return RateLimitItemPerSecond(math.floor(rate * seconds + 1e-9), seconds, namespace="window")


class SharedRateLimiter:
    """``rate`` requests per second for the provider account ``account``, across processes.

    Implements ``channels.limits.RateLimiter``: ``acquire`` waits (sleeps) until the account
    has a slot and returns the seconds it waited, measured on a monotonic clock; ``pause``
    stops every process sending for the account. Thread-safe (the Redis client keeps a
    connection pool).
    """

    def __init__(
        self,
        url: str,
        account: str,
        rate: float,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = without_password(url)
        self.account = account
        self.rate = float(rate)
        self.item = window_for(rate)
        self._clock = clock
        self._sleep = sleep
        from limits.errors import ConfigurationError as LimitsConfigurationError
        from limits.errors import StorageError
        from limits.storage import storage_from_string
        from limits.strategies import MovingWindowRateLimiter

        try:
            storage: Any = storage_from_string(
                url,
                key_prefix=prefix,
                wrap_exceptions=True,
                socket_connect_timeout=timeout,
                socket_timeout=timeout,
            )
        except (LimitsConfigurationError, ValueError) as exc:
            raise ConfigurationError(
                f"CARE_RATE_LIMIT_URL: {self.url} is not a Redis storage URL: {exc}"
            ) from None
        self._window = MovingWindowRateLimiter(storage)
        self._redis = storage.get_connection()
        base = storage.base_exceptions
        self._errors: tuple[type[BaseException], ...] = (
            StorageError,
            OSError,
            *(base if isinstance(base, tuple) else (base,)),
        )
        self.pause_key = f"{prefix}:pause/{account}"

    def __repr__(self) -> str:
        return (
            f"SharedRateLimiter({self.url}, {self.account}, "
            f"{self.item.amount} per {self.item.multiples} s)"
        )

    @property
    def window_seconds(self) -> int:
        return self.item.get_expiry()

    @property
    def window_amount(self) -> int:
        return self.item.amount

    def acquire(self) -> float:
        """Take one slot of the account's window, waiting while it is full or paused."""
        start = self._clock()
        while True:
            wait = self._try_once()
            if wait is None:
                return self._clock() - start
            self._sleep(min(max(wait, _SHORTEST_WAIT), _LONGEST_WAIT))

    def _try_once(self) -> float | None:
        """Take a slot (None), or say how long to wait before trying again."""
        try:
            paused = int(self._redis.pttl(self.pause_key))
            if paused > 0:
                return paused / 1000
            if self._window.hit(self.item, self.account):
                return None
            reset, _ = self._window.get_window_stats(self.item, self.account)
            # clock: the library stamps its window's entries with the epoch (time.time()), so
            # when the oldest leaves it is an epoch too; the difference is an interval.
            return float(reset) - time.time()
        except self._errors as exc:
            raise self._unavailable(exc) from None

    def pause(self, seconds: float) -> None:
        """Nobody sends for the account for ``seconds`` (a pause already longer stays)."""
        milliseconds = math.ceil(seconds * 1000)
        if milliseconds <= 0:
            return
        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.set(self.pause_key, "1", px=milliseconds, nx=True)
            pipe.pexpire(self.pause_key, milliseconds, gt=True)
            pipe.execute()
        except self._errors as exc:
            raise self._unavailable(exc) from None

    def paused_for(self) -> float:
        """The seconds the account's pause still lasts (0 when it is not paused)."""
        try:
            return max(int(self._redis.pttl(self.pause_key)), 0) / 1000
        except self._errors as exc:
            raise self._unavailable(exc) from None

    def _unavailable(self, exc: BaseException) -> RateLimiterUnavailable:
        cause = getattr(exc, "storage_error", None) or exc  # the library's StorageError wraps
        provider = self.account.split("-", 1)[0]
        return RateLimiterUnavailable(
            f"the shared rate limiter (CARE_RATE_LIMIT_URL {self.url}) cannot be reached "
            f"({type(cause).__name__}: {cause}): nothing is sent through {provider} without it"
        )
