"""The channel contract, run against every channel; here the outbox."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from caretouch.channels import OutboundMessage, OutboxTransport, Transport
from caretouch.vocab import Channel, Outcome


def message(channel: Channel, attempt: int = 1, body: str = "你好 Hello") -> OutboundMessage:
    return OutboundMessage(
        touch_key="birthday|customer:C1|2026-11-23",
        attempt_no=attempt,
        channel=channel,
        recipient="+8613812348000" if channel is Channel.SMS else "wang@example.com",
        body=body,
        subject="Subject" if channel is Channel.EMAIL else None,
        html="<p>Hi</p>" if channel is Channel.EMAIL else None,
        occurrence="2026-11-23",
    )


class ChannelContract:
    """Every channel: declared limits, a closed outcome, an id when sent, no PII in repr."""

    def make(self, channel: Channel, tmp_path: Path) -> Transport:
        raise NotImplementedError

    @pytest.mark.parametrize("channel", list(Channel))
    def test_declares_limits(self, channel: Channel, tmp_path: Path) -> None:
        t = self.make(channel, tmp_path)
        assert t.max_body > 0 and t.rate_per_sec > 0 and t.concurrency >= 1

    @pytest.mark.parametrize("channel", list(Channel))
    def test_send_returns_closed_outcome_with_id(self, channel: Channel, tmp_path: Path) -> None:
        result = self.make(channel, tmp_path).send(message(channel))
        assert result.outcome is Outcome.SENT
        assert result.provider_message_id

    @pytest.mark.parametrize("channel", list(Channel))
    def test_too_long_body_is_a_permanent_failure(self, channel: Channel, tmp_path: Path) -> None:
        t = self.make(channel, tmp_path)
        result = t.send(message(channel, body="x" * (t.max_body + 1)))
        assert result.outcome is Outcome.PERMANENT_FAILURE

    def test_repr_masks_recipient(self) -> None:
        text = repr(message(Channel.SMS))
        assert "13812348000" not in text and "+86 138****8000" in text


class TestOutbox(ChannelContract):
    def make(self, channel: Channel, tmp_path: Path) -> Transport:
        return OutboxTransport(channel, tmp_path / "outbox")

    def test_writes_one_file_per_attempt(self, tmp_path: Path) -> None:
        t = OutboxTransport(Channel.EMAIL, tmp_path / "outbox")
        t.send(message(Channel.EMAIL, attempt=1))
        t.send(message(Channel.EMAIL, attempt=2))
        files = sorted((tmp_path / "outbox").rglob("*.json"))
        assert len(files) == 2
        data = json.loads(files[0].read_text(encoding="utf-8"))
        assert (
            data["to"] == "wang@example.com"
            and data["subject"] == "Subject"
            and data["html"] == "<p>Hi</p>"
        )
        assert not list((tmp_path / "outbox").rglob("*.tmp"))

    def test_reconcile_tells_sent_from_not_sent(self, tmp_path: Path) -> None:
        t = OutboxTransport(Channel.SMS, tmp_path / "outbox")
        msg = message(Channel.SMS)
        before = t.reconcile(msg)
        assert (
            before is not None
            and before.outcome is Outcome.NOT_SENT
            and before.detail == "not found"
        )
        t.send(msg)
        after = t.reconcile(msg)
        assert after is not None and after.outcome is Outcome.SENT
