"""Channels: one module per provider behind one interface (``base.Transport``).

Channels know nothing of rules or plans: they take a rendered message and return an outcome.
"""

from .base import OutboundMessage, SendResult, Transport
from .outbox import OutboxTransport

__all__ = ["OutboundMessage", "OutboxTransport", "SendResult", "Transport"]
