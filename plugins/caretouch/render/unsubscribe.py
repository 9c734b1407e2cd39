"""Signed unsubscribe links: ``/care/hooks/unsubscribe?t=TOKEN``.

The token names the customer and the purpose (``email`` or ``marketing``) and carries an
HMAC-SHA256 over both with ``$CARE_UNSUBSCRIBE_KEY``, so nobody can unsubscribe someone else
by editing a link. It holds no personal data beyond the customer id and never expires (an
unsubscribe link in a year-old email must still work).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import urlencode

from ..config import CareConfig
from ..errors import CareError, ConfigurationError

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
