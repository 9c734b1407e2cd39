"""The ledger hashes an attempt's content itself (it does not import the renderer): its hash
must stay the one a rendered message gives, or verify would flag every old attempt."""

from __future__ import annotations

from caretouch.ledger.chain import content_hash
from caretouch.render.templates import RenderedMessage
from caretouch.vocab import Channel


def test_the_ledger_hashes_content_as_a_rendered_message_does() -> None:
    for message in (
        RenderedMessage(Channel.SMS, "Happy birthday, Ann"),
        RenderedMessage(Channel.EMAIL, "text body", "Subject line", "<p>html body</p>"),
        RenderedMessage(Channel.EMAIL, "", None, None),
    ):
        assert (
            content_hash(message.channel.value, message.subject, message.body, message.html)
            == message.content_hash()
        )
