"""The outbox channel: messages are written as JSON files instead of being sent.

The default for demos and tests. Each attempt is one file, written whole (``storage``: on a
local disk a temp file, then a rename; behind a URL such as ``s3://…`` one object), so a
crashed process leaves either the whole file or none; ``reconcile`` then answers exactly
whether the message "reached the provider". Behind a URL every worker sees the same outbox,
so a send recovered on another host finds what the crashed one wrote. Files are not fsynced
one by one: the outbox survives a killed process, not a power cut, which is enough for what
it is for.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, ClassVar

from ..storage import Location, at
from ..vocab import Channel, Outcome
from .base import OutboundMessage, SendResult, Transport

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Scalars (and keys) as ``json.dumps`` writes them, by the C encoder.
_SCALAR = json.JSONEncoder(ensure_ascii=False).encode


def indented_json(value: Any, level: int = 0) -> str:
    """``json.dumps(value, ensure_ascii=False, indent=2)``, character for character, for
    the dicts, lists and scalars of a payload. (With ``indent`` the standard library encodes
    in pure Python, which cost more than the rest of writing a message.)"""
    if isinstance(value, dict):
        if not value:
            return "{}"
        if not all(type(k) is str for k in value):
            return json.dumps(value, ensure_ascii=False, indent=2).replace(
                "\n", "\n" + "  " * level
            )
        pad = "\n" + "  " * (level + 1)
        inner = ("," + pad).join(
            f"{_SCALAR(k)}: {indented_json(v, level + 1)}" for k, v in value.items()
        )
        return "{" + pad + inner + "\n" + "  " * level + "}"
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        pad = "\n" + "  " * (level + 1)
        inner = ("," + pad).join(indented_json(v, level + 1) for v in value)
        return "[" + pad + inner + "\n" + "  " * level + "]"
    return _SCALAR(value)


class OutboxTransport(Transport):
    name: ClassVar[str] = "outbox"
    max_body: ClassVar[int] = 100_000
    rate_per_sec: ClassVar[float] = 10_000.0
    concurrency: ClassVar[int] = 1

    def __init__(self, channel: Channel, directory: str | Path | Location) -> None:
        super().__init__(channel)
        self.directory = at(directory)

    def path_for(self, message: OutboundMessage) -> Location:
        safe = _UNSAFE.sub("_", message.touch_key)
        day = message.occurrence or "undated"
        return self.directory.child(
            day, f"{safe}.{message.attempt_no}.{message.channel.value}.json"
        )

    def build_payload(self, message: OutboundMessage) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "touch_key": message.touch_key,
            "attempt": message.attempt_no,
            "channel": message.channel.value,
            "to": message.recipient,
            "body": message.body,
            "metadata": message.metadata,
        }
        if message.channel is Channel.EMAIL:
            payload["subject"] = message.subject
            payload["html"] = message.html
        payload["_path"] = self.path_for(message).url
        return payload

    def post(self, payload: dict[str, Any]) -> Any:
        place = Location(payload.pop("_path"), self.directory.options)
        place.write_text(indented_json(payload))
        return place

    def parse_result(self, raw: Any) -> SendResult:
        return SendResult(Outcome.SENT, provider_message_id=f"outbox:{raw.name}")

    def reconcile(self, message: OutboundMessage) -> SendResult | None:
        path = self.path_for(message)
        if path.exists():
            return SendResult(
                Outcome.SENT, provider_message_id=f"outbox:{path.name}", detail="found in outbox"
            )
        return SendResult(Outcome.NOT_SENT, detail="not found")
