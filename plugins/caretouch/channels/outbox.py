"""The outbox channel: messages are written as JSON files instead of being sent.

The default for demos and tests. Each attempt is one file, written atomically (temp file,
then rename), so a crashed process leaves either the whole file or none; ``reconcile`` then
answers exactly whether the message "reached the provider". Files are not fsynced one by one:
the outbox survives a killed process, not a power cut, which is enough for what it is for.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, ClassVar

from ..vocab import Channel, Outcome
from .base import OutboundMessage, SendResult, Transport

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class OutboxTransport(Transport):
    name: ClassVar[str] = "outbox"
    max_body: ClassVar[int] = 100_000
    rate_per_sec: ClassVar[float] = 10_000.0
    concurrency: ClassVar[int] = 1

    def __init__(self, channel: Channel, directory: str | Path) -> None:
        super().__init__(channel)
        self.directory = Path(directory)

    def path_for(self, message: OutboundMessage) -> Path:
        safe = _UNSAFE.sub("_", message.touch_key)
        day = message.occurrence or "undated"
        return self.directory / day / f"{safe}.{message.attempt_no}.{message.channel.value}.json"

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
        payload["_path"] = str(self.path_for(message))
        return payload

    def post(self, payload: dict[str, Any]) -> Any:
        path = Path(payload.pop("_path"))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            json.dump(payload, handle, ensure_ascii=False, indent=2)
        os.replace(tmp, path)
        return path

    def parse_result(self, raw: Any) -> SendResult:
        return SendResult(Outcome.SENT, provider_message_id=f"outbox:{Path(raw).name}")

    def reconcile(self, message: OutboundMessage) -> SendResult | None:
        path = self.path_for(message)
        if path.is_file():
            return SendResult(
                Outcome.SENT, provider_message_id=f"outbox:{path.name}", detail="found in outbox"
            )
        return SendResult(Outcome.NOT_SENT, detail="not found")
