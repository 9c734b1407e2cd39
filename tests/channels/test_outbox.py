"""The channel contract, run against every channel; here the outbox."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caretouch.channels import OutboundMessage, OutboxTransport, Transport
from caretouch.channels.outbox import indented_json
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

    def test_file_is_the_payload_as_json_dumps_indents_it(self, tmp_path: Path) -> None:
        """The file is written by ``indented_json``, byte for byte what ``json.dumps(...,
        indent=2)`` wrote before, and the folder made by the first write that needs it, again
        after it was removed."""
        t = OutboxTransport(Channel.EMAIL, tmp_path / "outbox")
        msg = message(Channel.EMAIL, body='line 1\n"quoted" \\ 你好 \x01')
        expected = {k: v for k, v in t.build_payload(msg).items() if k != "_path"}
        t.send(msg)
        (path,) = (tmp_path / "outbox").rglob("*.json")
        assert path.read_text(encoding="utf-8") == json.dumps(
            expected, ensure_ascii=False, indent=2
        )
        shutil.rmtree(tmp_path / "outbox")
        assert t.send(message(Channel.EMAIL, attempt=2)).outcome is Outcome.SENT
        assert len(list((tmp_path / "outbox").rglob("*.json"))) == 1


_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(),
)
_JSON = st.recursive(
    _LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(_JSON)
def test_indented_json_is_json_dumps_with_indent_2(value: object) -> None:
    assert indented_json(value) == json.dumps(value, ensure_ascii=False, indent=2)


@pytest.mark.parametrize(
    "value", [{1: "a", "b": [1, {}]}, {"k": {2: {"x": []}}}, [{True: None}], {"": [[]]}]
)
def test_indented_json_with_keys_json_converts(value: object) -> None:
    assert indented_json(value) == json.dumps(value, ensure_ascii=False, indent=2)
