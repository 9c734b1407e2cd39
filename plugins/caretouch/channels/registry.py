"""Which transport serves each channel: the real provider when it is configured, else the outbox.

Without credentials the outbox stays the default (demos, tests); with them, ``care run``
sends for real. The CLI reads the environment; the Airflow glue passes the credentials of
its Connections (``caretouch.airflow.hooks``).
"""

from __future__ import annotations

from pathlib import Path

from ..config import CareConfig
from ..storage import Location, at
from ..vocab import Channel
from .base import Transport
from .credentials import (
    SendGridCredentials,
    TwilioCredentials,
    sendgrid_from_env,
    twilio_from_env,
)
from .outbox import OutboxTransport


def build_transports(
    outbox_dir: str | Path | Location,
    *,
    twilio: TwilioCredentials | None = None,
    sendgrid: SendGridCredentials | None = None,
    share: int = 1,
) -> dict[Channel, Transport]:
    """One transport per channel. ``share``: how many senders split each provider's rate
    (the slots of the Airflow pool that runs send tasks side by side)."""
    transports: dict[Channel, Transport] = {ch: OutboxTransport(ch, outbox_dir) for ch in Channel}
    if twilio is not None:
        from .twilio import TwilioTransport

        sms = TwilioTransport(twilio)
        sms.share(share)
        transports[Channel.SMS] = sms
    if sendgrid is not None:
        from .sendgrid import SendGridTransport

        email = SendGridTransport(sendgrid)
        email.share(share)
        transports[Channel.EMAIL] = email
    return transports


def transports_from_env(
    outbox_dir: str | Path | Location, config: CareConfig | None = None
) -> dict[Channel, Transport]:
    """The CLI's transports: real providers where the environment (``config``, else
    ``CareConfig.from_env()``) configures them."""
    config = config or CareConfig.from_env()
    return build_transports(
        at(outbox_dir, config), twilio=twilio_from_env(config), sendgrid=sendgrid_from_env(config)
    )
