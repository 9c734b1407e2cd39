"""Our Twilio and SendGrid transports pointed at the provider simulator, and a fake time.

Shared by the channel tests (tests/channels/), the runner's fault tests and the send
benchmark. ``FakeTime`` stands in for the transport's clock and ``sleep``: waits are recorded
and advance the fake clock instantly, so tests assert the waits a transport chose, never the
wall clock.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from provider_sim import ProviderSim, RemoteProviderSim

from caretouch.channels.base import OutboundMessage
from caretouch.channels.credentials import SendGridCredentials, TwilioCredentials
from caretouch.channels.limits import Backoff
from caretouch.channels.sendgrid import SendGridTransport
from caretouch.channels.twilio import TwilioTransport
from caretouch.render.templates import RenderedMessage
from caretouch.render.unsubscribe import UnsubscribeLinks
from caretouch.vocab import Channel

SMS_FROM = "+15005550006"
EMAIL_FROM = "care@example.com"
PUBLIC_URL = "https://care.example.com"
UNSUBSCRIBE_SECRET = b"unsubscribe-secret-for-tests-0123456789"

Sim = ProviderSim | RemoteProviderSim


class FakeTime:
    """A monotonic clock that only moves when someone sleeps; every sleep is recorded.

    ``on_sleep`` runs at each sleep (before the clock moves): a test can change the
    simulator's faults between one try and the next.
    """

    def __init__(self, on_sleep: Callable[[float], None] | None = None) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.on_sleep = on_sleep
        self._lock = threading.Lock()

    def clock(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        if self.on_sleep is not None:
            self.on_sleep(seconds)
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds

    def waits(self, at_least: float = 1e-3) -> list[float]:
        """The waits that were not the rate limiter's spacing of requests (tiny at our rate)."""
        return [s for s in self.sleeps if s >= at_least]


def twilio_credentials(sim: Sim, **overrides: Any) -> TwilioCredentials:
    values: dict[str, Any] = {
        "account_sid": sim.twilio_account_sid,
        "auth_token": sim.twilio_auth_token,
        "sender": SMS_FROM,
        "api_base": sim.url,
        "public_url": PUBLIC_URL,
    }
    values.update(overrides)
    return TwilioCredentials(**values)


def sendgrid_credentials(sim: Sim, **overrides: Any) -> SendGridCredentials:
    values: dict[str, Any] = {
        "api_key": sim.sendgrid_api_key,
        "sender": EMAIL_FROM,
        "api_base": sim.url,
        "public_url": PUBLIC_URL,
    }
    values.update(overrides)
    return SendGridCredentials(**values)


def fast_backoff(tries: int = 4, seed: int = 7) -> Backoff:
    """Retries that wait milliseconds, not seconds (for runs against the simulator)."""
    return Backoff(tries=tries, base=0.005, cap=0.02, max_retry_after=0.05, rng=random.Random(seed))


def twilio_transport(
    sim: Sim,
    *,
    time: FakeTime | None = None,
    timeout: float = 2.0,
    rate_per_sec: float = 1e6,
    concurrency: int = 4,
    backoff: Backoff | None = None,
    **credentials: Any,
) -> TwilioTransport:
    extra: dict[str, Any] = {"clock": time.clock, "sleep": time.sleep} if time else {}
    return TwilioTransport(
        twilio_credentials(sim, **credentials),
        timeout=timeout,
        rate_per_sec=rate_per_sec,
        concurrency=concurrency,
        backoff=backoff or Backoff(rng=random.Random(7)),
        **extra,
    )


def sendgrid_transport(
    sim: Sim,
    *,
    time: FakeTime | None = None,
    timeout: float = 2.0,
    rate_per_sec: float = 1e6,
    concurrency: int = 4,
    backoff: Backoff | None = None,
    **credentials: Any,
) -> SendGridTransport:
    extra: dict[str, Any] = {"clock": time.clock, "sleep": time.sleep} if time else {}
    return SendGridTransport(
        sendgrid_credentials(sim, **credentials),
        timeout=timeout,
        rate_per_sec=rate_per_sec,
        concurrency=concurrency,
        backoff=backoff or Backoff(rng=random.Random(7)),
        **extra,
    )


def sms(
    to: str = "+8613800138000", body: str = "王芳，生日快乐！", n: int = 1, **kw: Any
) -> OutboundMessage:
    values: dict[str, Any] = {
        "touch_key": f"birthday|customer:C{n:04d}|2026-11-23",
        "attempt_no": 1,
        "channel": Channel.SMS,
        "recipient": to,
        "body": body,
        "attempt_id": n,
        "metadata": {"customer_id": f"C{n:04d}", "category": "care", "locale": "zh-CN"},
    }
    values.update(kw)
    return OutboundMessage(**values)


def email(
    to: str = "li.na@example.com",
    body: str = "Dear Li Na,\nhappy birthday.",
    n: int = 1,
    **kw: Any,
) -> OutboundMessage:
    values: dict[str, Any] = {
        "touch_key": f"birthday|customer:C{n:04d}|2026-11-23",
        "attempt_no": 1,
        "channel": Channel.EMAIL,
        "recipient": to,
        "subject": "Happy birthday",
        "body": body,
        "html": "<html><body><p>Dear Li Na, happy birthday.</p></body></html>",
        "attempt_id": n,
        "metadata": {"customer_id": f"C{n:04d}", "category": "care", "locale": "en"},
    }
    values.update(kw)
    return as_sent(OutboundMessage(**values))


def as_sent(
    message: OutboundMessage,
    base: str = PUBLIC_URL + "/care/hooks/unsubscribe",
    key: bytes = UNSUBSCRIBE_SECRET,
) -> OutboundMessage:
    """An email as the runner hands it to SendGrid: a care or marketing email with its
    unsubscribe link and List-Unsubscribe headers, put in by ``render.unsubscribe``."""
    meta = message.metadata
    rendered = UnsubscribeLinks(base, key).add_to(
        RenderedMessage(message.channel, message.body, message.subject, message.html),
        customer_id=meta.get("customer_id", ""),
        category=meta.get("category", ""),
        locale=meta.get("locale", ""),
    )
    return replace(
        message,
        body=rendered.body,
        html=rendered.html,
        headers={**message.headers, **dict(rendered.headers)},
    )
