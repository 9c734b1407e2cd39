"""Whether a phone number, an email address or a time zone name is usable as given.

Pure checks (no I/O, no DNS), shared by the importer (a row is refused) and the contact
policy (a channel without a usable address is not chosen).
"""

from __future__ import annotations

import re
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email


@lru_cache(maxsize=256)
def find_zone(name: str) -> ZoneInfo | None:
    """The IANA time zone ``name``, or None when there is no such zone."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def timezone_is_valid(name: str) -> bool:
    return find_zone(name) is not None


_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


def has_e164_form(phone: str) -> bool:
    """``+``, a country code and digits only, 8 to 16 characters (the form, not validity)."""
    return _E164.match(phone) is not None


@lru_cache(maxsize=65536)
def phone_is_valid(phone: str | None) -> bool:
    """True for an E.164 number (``+``, country code, digits only) that ``phonenumbers`` finds
    valid. Spaces, dashes or trailing text are refused: the string goes to the provider as is."""
    if not phone or not _E164.match(phone):
        return False
    try:
        parsed = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(parsed)


# Plain ASCII addresses (``li.wei+care@mail.example.com``) that ``email-validator`` accepts
# whatever else it checks: a dot-atom local part of letters, digits, ``_ + -``; host labels of
# letters and digits joined by single hyphens (so never ``xn--`` or ``ab--``); a letters-only
# top-level domain. Checking these here costs ~1 µs instead of ~25 µs, which a 1,000,000-row
# import notices; every other address goes through ``validate_email``. tests/test_addresses.py
# holds the shortcut to ``validate_email``'s answer.
_PLAIN_EMAIL = re.compile(
    r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*"
    r"@(?:[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*\.)+[A-Za-z]+"
)
_RESERVED_DOMAINS = frozenset(SPECIAL_USE_DOMAIN_NAMES)


def plain_email_is_valid(email: str) -> bool:
    """True for a plain ASCII address (``_PLAIN_EMAIL``) within the length limits and outside
    the special-use domains; False means "not known valid yet", not "invalid"."""
    if len(email) > 254 or not _PLAIN_EMAIL.fullmatch(email):
        return False
    local, domain = email.split("@")
    if len(local) > 64 or len(domain) > 253:
        return False
    labels = domain.lower().split(".")
    if max(map(len, labels)) > 63:
        return False
    # A special-use name is the domain itself or one of its suffixes.
    return not any(".".join(labels[i:]) in _RESERVED_DOMAINS for i in range(len(labels)))


@lru_cache(maxsize=65536)
def email_is_valid(email: str | None) -> bool:
    """True when the address passes ``email-validator``'s syntax checks (no DNS lookup)."""
    if not email:
        return False
    if plain_email_is_valid(email):
        return True
    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True
