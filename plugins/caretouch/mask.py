"""Masking personal data for logs, errors and every human-facing view."""

from __future__ import annotations

import re

import phonenumbers

_EMAIL_RX = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE_RX = re.compile(r"\+\d[\d ()-]{6,}\d")


def mask_phone(phone: str | None) -> str:
    """``+8613812348000`` -> ``+86 138****8000``."""
    if not phone:
        return ""
    digits = re.sub(r"\D", "", phone)
    try:
        parsed = phonenumbers.parse(phone, None)
        cc, national = str(parsed.country_code), str(parsed.national_number)
    except phonenumbers.NumberParseException:
        cc, national = "", digits
    prefix = f"+{cc} " if cc else ""
    if len(national) <= 7:
        # Too short to show a head and a tail without revealing most of it.
        return prefix + "*" * max(len(national) - 2, 1) + national[-2:]
    head, tail = national[:3], national[-4:]
    return prefix + head + "*" * (len(national) - len(head) - 4) + tail


def mask_email(email: str | None) -> str:
    """``zhang.wei@example.com`` -> ``z***@example.com``."""
    if not email:
        return ""
    local, _, domain = email.partition("@")
    return (local[:1] or "*") + "***@" + (domain or "***")


def mask_recipient(recipient: str | None) -> str:
    if recipient and "@" in recipient:
        return mask_email(recipient)
    return mask_phone(recipient)


def scrub(text: str) -> str:
    """Mask every phone number and email address found in free text (e.g. an error message)."""
    text = _EMAIL_RX.sub(lambda m: mask_email(m.group(0)), text)
    return _PHONE_RX.sub(lambda m: mask_phone(m.group(0)), text)
