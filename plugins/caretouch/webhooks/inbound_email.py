"""Customers' emails, from SendGrid's Inbound Parse: a reply to one of our emails, heard as an
inbound SMS is (``webhooks.replies``).

SendGrid posts each email received at the parse domain (``from``, ``to``, ``subject``, ``text``,
``html``, ``headers``, ``envelope``, attachments). It signs nothing: the route is guarded by
the secret in its URL (``CARE_INBOUND_EMAIL_TOKEN``, checked in ``caretouch.web``). The sender
is matched to customers by email address and to the latest email touch sent to that address
within the reply window; the reply is read from the first line of the text above any quoted
part (what the customer wrote, not our message quoted under it). Recorded once per email
(its ``Message-ID``, else a digest of sender, subject and text), in ``provider_events`` as
provider ``sendgrid``, kind ``inbound``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import logging
import re
from collections.abc import Mapping
from email.utils import parseaddr

from ..errors import CareError
from ..ledger import Ledger, ProviderEvent
from ..mask import mask_email, scrub
from ..store.db import Store
from ..vocab import Channel, Provider
from .keywords import mentions_opt_out
from .recording import Received, customers_by_email, record, refuse_nul
from .replies import DEFAULT_REPLY_WINDOW, MAX_TEXT, ReplyIntake, clip, hear_reply

log = logging.getLogger("caretouch.webhooks")

# Where the quoted message under a reply begins: a quoted line, a client's "On … wrote:" or
# "在 … 写道：" line, an Outlook separator or header block.
_QUOTE_START = re.compile(
    r"^\s*(>|-{2,}\s*(original message|原始邮件|原始郵件|forwarded message)"
    r"|on .{1,200} wrote:\s*$|.{0,200}(写道|寫道)[:：]\s*$"
    r"|(from|发件人|發件人|寄件者)\s*[:：])",
    re.IGNORECASE,
)
_BLOCKQUOTE = re.compile(r"<blockquote\b.*?</blockquote\s*>", re.IGNORECASE | re.DOTALL)
_BREAK = re.compile(r"<\s*(br|/p|/div|/li|/tr|/h\d)\b[^>]{0,200}>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]{0,2000}>")
# Of an HTML-only email, this much markup is read.
MAX_HTML = 256 * 1024
_MESSAGE_ID = re.compile(r"^message-id:\s*(<[^>\r\n]{1,190}>)", re.IGNORECASE | re.MULTILINE)


def reply_part(text: str | None) -> str:
    """What the customer wrote: the text above the quoted message it answers."""
    lines: list[str] = []
    for line in (text or "").replace("\r\n", "\n").split("\n"):
        if _QUOTE_START.match(line):
            break
        lines.append(line)
    return "\n".join(lines).strip()


def html_text(markup: str) -> str:
    """An HTML-only email's text, roughly: quoted blocks left out, blocks and line breaks as
    new lines, other tags dropped, entities decoded (for reading a score and for the agent)."""
    text = _BLOCKQUOTE.sub("\n", markup[:MAX_HTML])
    text = _BREAK.sub("\n", text)
    text = _TAG.sub("", text)
    return html.unescape(text)


def first_line(text: str) -> str:
    """The first line that is not empty (where a score is read)."""
    return next((line.strip() for line in text.split("\n") if line.strip()), "")


def email_id(fields: Mapping[str, str], sender: str) -> str:
    """The email's id for recording it once: its ``Message-ID``, else a digest."""
    found = _MESSAGE_ID.search(fields.get("headers") or "")
    if found:
        return "email:" + found.group(1)
    digest = hashlib.sha256(
        "\x1f".join((sender, fields.get("subject") or "", fields.get("text") or "")).encode(
            "utf-8", "replace"
        )
    ).hexdigest()
    return "email:" + digest


def sender_of(fields: Mapping[str, str]) -> str:
    """The sender's address: the ``From`` header's, else the envelope's."""
    address = parseaddr(fields.get("from") or "")[1].strip()
    if "@" in address:
        return address
    envelope = fields.get("envelope") or ""
    found = re.search(r'"from"\s*:\s*"([^"@\s]{1,64}@[^"\s]{1,255})"', envelope)
    return found.group(1) if found else ""


def sendgrid_inbound(
    store: Store,
    fields: Mapping[str, str],
    *,
    now: dt.datetime,
    replies: ReplyIntake | None = None,
) -> Received:
    """One email from SendGrid's Inbound Parse: read, matched, its events submitted through
    ``replies``, recorded once."""
    refuse_nul(fields, "the inbound email's")
    received = Received(events=1)
    sender = sender_of(fields)
    event_id = email_id(fields, sender)
    ledger = Ledger(store)
    if ledger.known_provider_events(Provider.SENDGRID.value, [event_id]):
        return received
    if not sender:
        raise CareError("an inbound email without a sender address")
    owners = customers_by_email(store, sender)
    written = reply_part(fields.get("text"))
    if not written and not fields.get("text"):
        written = reply_part(html_text(fields.get("html") or ""))
    line = first_line(written)
    possible_stop = mentions_opt_out(line)
    heard = hear_reply(
        store,
        provider=Provider.SENDGRID.value,
        message_id=event_id,
        channel=Channel.EMAIL.value,
        address=sender,
        owners=owners,
        body=line,
        now=now,
        window=replies.window if replies is not None else DEFAULT_REPLY_WINDOW,
        status="possible-stop" if possible_stop else None,
        text=written,
    )
    if replies is not None and heard.events:
        replies.submit(heard.events, now)
    touch = heard.touch
    payload = {
        "from": mask_email(sender),
        "subject": scrub(clip(fields.get("subject") or "", 300)),
        "text": scrub(clip(written, MAX_TEXT)),
        "message_id": scrub(event_id.removeprefix("email:")),
        **heard.detail,
    }
    event = ProviderEvent(
        provider=Provider.SENDGRID.value,
        provider_event_id=event_id[:200],
        kind="inbound",
        payload=payload,
        provider_status=heard.read.status,
        customer_id=heard.customer_id,
        touch_id=touch.touch_id if touch is not None else None,
        attempt_id=touch.attempt_id if touch is not None else None,
    )
    if not owners:
        log.info("webhook: inbound email from an unknown address %s", mask_email(sender))
    record(ledger, [event], received, now)
    return received
