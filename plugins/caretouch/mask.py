"""Masking personal data for logs, errors and every human-facing view."""

from __future__ import annotations

import re

import phonenumbers

from .nul import escape_nul

_EMAIL_RX = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE_RX = re.compile(r"\+\d[\d ()-]{6,}\d")


def hidden_digits(length: int) -> int:
    """How many digits of a national number ``length`` digits long a mask hides: at least 4 and
    at least a third of them (all of them when there are 4 or fewer)."""
    return min(length, max(4, -(-length // 3)))


def mask_phone(phone: str | None) -> str:
    """``+8613812348000`` -> ``+86 138****8000``; ``+85297622077`` -> ``+852 ****2077``.

    The country code is shown; of the national number, ``hidden_digits`` are hidden and only
    what is left is shown: up to 4 digits at the end (what people recognise a number by), then
    up to 3 at the start.
    """
    if not phone:
        return ""
    try:
        parsed = phonenumbers.parse(phone, None)
        cc = str(parsed.country_code)
        # With Italy's leading zero: the digits a reader would see after the country code.
        national = phonenumbers.national_significant_number(parsed)
    except phonenumbers.NumberParseException:
        cc, national = "", re.sub(r"\D", "", phone)
    prefix = f"+{cc} " if cc else ""
    if not national:
        return prefix + "*"
    shown = len(national) - hidden_digits(len(national))
    tail = min(4, shown)
    head = min(3, shown - tail)
    hidden = len(national) - head - tail
    return prefix + national[:head] + "*" * hidden + national[head + hidden :]


def mask_email(email: str | None) -> str:
    """``zhang.wei@example.com`` -> ``z***@example.com``."""
    if not email:
        return ""
    local, _, domain = email.partition("@")
    return (local[:1] or "*") + "***@" + (domain or "***")


def mask_recipient(recipient: str | None, channel: str | None = None) -> str:
    """A phone or an address, masked. A task's recipient (``channel`` ``agent_task``) is the
    agent's id, shown as it is: it names a member of staff, not a customer's contact."""
    if channel == "agent_task" and recipient:
        return recipient
    if recipient and "@" in recipient:
        return mask_email(recipient)
    return mask_phone(recipient)


def scrub(text: str, keep: frozenset[str] = frozenset()) -> str:
    """Mask every phone number and email address found in free text (e.g. an error message),
    except those in ``keep`` (an agent's own business phone and address in a message the
    customer was sent: the agent's, not the customer's, and meant to be read).

    Scrubbed text is what providers' free text becomes before it is logged or recorded, so a
    NUL in it is written ``\\u0000`` too: the store cannot hold one (nul.py).
    """

    def email(m: re.Match[str]) -> str:
        return m.group(0) if m.group(0) in keep else mask_email(m.group(0))

    def phone(m: re.Match[str]) -> str:
        return m.group(0) if m.group(0) in keep else mask_phone(m.group(0))

    return _PHONE_RX.sub(phone, _EMAIL_RX.sub(email, escape_nul(text)))
