"""Signed unsubscribe links: ``/care/hooks/unsubscribe?t=TOKEN``, and their place in a message.

``care`` and ``marketing`` emails carry a link (in both parts) and the ``List-Unsubscribe`` /
``List-Unsubscribe-Post`` headers (RFC 8058 one-click); ``service`` emails (renewal
reminders, reviews) carry none. The link is content: it is built here
(``UnsubscribeLinks.add_to``) and handed to the channel in the message, which sends it as
it is. The token names the customer and the purpose (``email`` or ``marketing``) and carries an
HMAC-SHA256 over both with ``$CARE_UNSUBSCRIBE_KEY``, so nobody can unsubscribe someone else
by editing a link. It holds no personal data beyond the customer id and never expires (an
unsubscribe link in a year-old email must still work).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, replace
from urllib.parse import urlencode

from ..config import CareConfig
from ..errors import CareError, ConfigurationError
from ..vocab import Channel
from .templates import RenderedMessage

KEY_VARIABLE = "CARE_UNSUBSCRIBE_KEY"
PURPOSES = ("email", "marketing")


def unsubscribe_key(config: CareConfig | None = None) -> bytes:
    """``$CARE_UNSUBSCRIBE_KEY`` (from ``config``, else ``CareConfig.from_env()``)."""
    secret = (config or CareConfig.from_env()).unsubscribe_key
    value = secret.get_secret_value() if secret is not None else ""
    if len(value) < 16:
        raise ConfigurationError(
            f"${KEY_VARIABLE} must be set to a secret of at least 16 characters to put "
            "unsubscribe links in emails"
        )
    return value.encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(customer_id: str, purpose: str, key: bytes) -> str:
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}, not {purpose!r}")
    payload = f"{purpose}:{customer_id}".encode()
    mac = hmac.new(key, payload, hashlib.sha256).digest()[:16]
    return f"{_b64(payload)}.{_b64(mac)}"


def read_token(token: str, key: bytes) -> tuple[str, str]:
    """``(customer_id, purpose)`` of a valid token; ``CareError`` for a forged or broken one."""
    try:
        payload_text, mac_text = token.split(".", 1)
        payload = _unb64(payload_text)
        mac = _unb64(mac_text)
    except ValueError as exc:
        raise CareError("malformed unsubscribe token") from exc
    expected = hmac.new(key, payload, hashlib.sha256).digest()[:16]
    if not hmac.compare_digest(mac, expected):
        raise CareError("unsubscribe token signature does not match")
    purpose, _, customer_id = payload.decode("utf-8", "replace").partition(":")
    if purpose not in PURPOSES or not customer_id:
        raise CareError("malformed unsubscribe token")
    return customer_id, purpose


def unsubscribe_url(base: str, customer_id: str, purpose: str, key: bytes) -> str:
    """The link put in an email (``base`` is ``.../care/hooks/unsubscribe``)."""
    return f"{base}?{urlencode({'t': make_token(customer_id, purpose, key)})}"


# -- the link in the message: content, built here and handed to the channel -------------------

# The unsubscribe link's words, by locale (the template's own words stay the template's).
UNSUBSCRIBE_WORDS = {
    "zh-CN": "不想再收到此类邮件？退订",
    "zh-TW": "不想再收到此類郵件？取消訂閱",
    "en": "Don't want these emails? Unsubscribe",
}
# Which consent an unsubscribe link withdraws, by rule category (``service`` emails: none).
UNSUBSCRIBE_PURPOSE = {"care": "email", "marketing": "marketing"}


@dataclass(frozen=True)
class Unsubscribe:
    """One message's unsubscribe link and the words that go with it."""

    link: str
    words: str

    def text(self, body: str) -> str:
        return f"{body}\n\n{self.words}: {self.link}"

    def html(self, html: str) -> str:
        """The link as a small footer before ``</body>`` (or at the end of a fragment)."""
        footer = (
            '<p style="font-size:12px;color:#888">'
            f'<a href="{_attr(self.link)}">{_attr(self.words)}</a></p>'
        )
        if "</body>" in html:
            return html.replace("</body>", footer + "</body>", 1)
        return html + footer

    def headers(self) -> tuple[tuple[str, str], ...]:
        """``List-Unsubscribe`` and RFC 8058 one-click ``List-Unsubscribe-Post``."""
        return (
            ("List-Unsubscribe", f"<{self.link}>"),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        )


@dataclass(frozen=True)
class UnsubscribeLinks:
    """Where unsubscribe links point (``.../care/hooks/unsubscribe``) and the key signing them."""

    base: str
    key: bytes

    def for_customer(self, customer_id: str, category: str, locale: str) -> Unsubscribe | None:
        """The link of a ``care`` or ``marketing`` email; None for other categories."""
        purpose = UNSUBSCRIBE_PURPOSE.get(category)
        if purpose is None or not customer_id:
            return None
        words = UNSUBSCRIBE_WORDS.get(locale, UNSUBSCRIBE_WORDS["en"])
        return Unsubscribe(unsubscribe_url(self.base, customer_id, purpose, self.key), words)

    def add_to(
        self, message: RenderedMessage, *, customer_id: str, category: str, locale: str
    ) -> RenderedMessage:
        """``message`` with the link in its text and HTML parts and the List-Unsubscribe
        headers, as the channel is to send it (the ledger keeps the message as rendered)."""
        unsubscribe = self.for_customer(customer_id, category, locale)
        if unsubscribe is None or message.channel is not Channel.EMAIL:
            return message
        return replace(
            message,
            body=unsubscribe.text(message.body),
            html=unsubscribe.html(message.html) if message.html else message.html,
            headers=(*message.headers, *unsubscribe.headers()),
        )


def _attr(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    )
