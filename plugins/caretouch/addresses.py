"""Whether a phone number, an email address or a time zone name is usable as given.

Pure checks (no I/O, no DNS), shared by the importer (a row is refused) and the contact
policy (a channel without a usable address is not chosen).
"""

from __future__ import annotations

import re
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from email_validator import EmailNotValidError, validate_email


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


@lru_cache(maxsize=65536)
def email_is_valid(email: str | None) -> bool:
    """True when the address passes ``email-validator``'s syntax checks (no DNS lookup)."""
    if not email:
        return False
    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True
