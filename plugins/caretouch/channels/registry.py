"""Which transport serves each channel: the real provider when it is configured, else the outbox;
``agent_task`` always by ``agent_task.AgentTaskTransport`` (tasks are assigned in the ledger).

Without credentials the outbox stays the default (demos, tests); with them, ``care run``
sends for real. The CLI reads the environment; the Airflow glue passes the credentials of
its Connections (``caretouch.airflow.hooks``).

With ``CARE_RATE_LIMIT_URL`` each provider's transport takes its requests' slots from the
account's budget in Redis (``shared_limits``), shared by every process; without it, from a
token bucket of its own, whose rate is split between the ``share`` senders of one host's pool.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import CareConfig
from ..storage import Location, at
from ..vocab import MESSAGE_CHANNELS, Channel
from .agent_task import AgentTaskTransport
from .base import Transport
from .credentials import (
    SendGridCredentials,
    TwilioCredentials,
    sendgrid_from_env,
    twilio_from_env,
)
from .outbox import OutboxTransport
from .provider import ProviderTransport
from .shared_limits import SharedRateLimiter


def build_transports(
    outbox_dir: str | Path | Location,
    *,
    twilio: TwilioCredentials | None = None,
    sendgrid: SendGridCredentials | None = None,
    share: int = 1,
    rate_limit_url: str | None = None,
) -> dict[Channel, Transport]:
    """One transport per channel. ``rate_limit_url``: the Redis of the rate budgets shared by
    every process (each provider gets the whole rate of its account, and the processes share
    it). Without it, ``share``: how many senders split each provider's rate (the slots of the
    Airflow pool that runs send tasks side by side)."""
    transports: dict[Channel, Transport] = {
        ch: OutboxTransport(ch, outbox_dir) for ch in MESSAGE_CHANNELS
    }
    # Tasks for agents are assigned in the ledger, never written to the outbox or sent.
    transports[Channel.AGENT_TASK] = AgentTaskTransport()
    providers: list[ProviderTransport[Any, Any]] = []
    if twilio is not None:
        from .twilio import TwilioTransport

        providers.append(TwilioTransport(twilio))
    if sendgrid is not None:
        from .sendgrid import SendGridTransport

        providers.append(SendGridTransport(sendgrid))
    for transport in providers:
        if rate_limit_url:
            transport.limit_with(shared_limiter(rate_limit_url, transport))
        else:
            transport.share(share)
        transports[transport.serves] = transport
    return transports


def shared_limiter(url: str, transport: ProviderTransport[Any, Any]) -> SharedRateLimiter:
    """The budget of ``transport``'s account in the Redis at ``url``, at its whole rate."""
    return SharedRateLimiter(
        url, transport.account(), transport.rate, clock=transport.clock, sleep=transport.sleep
    )


def transports_from_env(
    outbox_dir: str | Path | Location, config: CareConfig | None = None
) -> dict[Channel, Transport]:
    """The CLI's transports: real providers where the environment (``config``, else
    ``CareConfig.from_env()``) configures them."""
    config = config or CareConfig.from_env()
    return build_transports(
        at(outbox_dir, config),
        twilio=twilio_from_env(config),
        sendgrid=sendgrid_from_env(config),
        rate_limit_url=config.rate_limit_url,
    )
