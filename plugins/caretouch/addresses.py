"""Whether a phone number, an email address or a time zone name is usable as given.

Pure checks (no I/O, no DNS), shared by the importer (a row is refused) and the contact
policy (a channel without a usable address is not chosen).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from phonenumbers import phonenumberutil as pnu
from phonenumbers.phonemetadata import PhoneMetadata
from phonenumbers.phonenumber import PhoneNumber


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


def _parse_e164(phone: str) -> PhoneNumber | None:
    """``phonenumbers.parse(phone, None)`` for a string of E.164 form (``_E164``), or None where
    it raises; what it gives is the same, at a third of the cost.

    ``parse`` first looks for a number in free text (extensions, RFC 3966 parameters, other
    digit sets, punctuation), none of which an E.164-form string holds, so for one it comes
    down to the steps below, taken with ``phonenumbers``' own functions: the country code
    (none known: ``parse`` raises), the national prefix stripped where what is left still
    has a possible length, and the leading zeros. tests/test_addresses.py holds it to
    ``parse``'s answer for every country code.
    """
    country_code, national = pnu._extract_country_code(phone[1:])
    if country_code == 0:
        return None
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(
        country_code, pnu.region_code_for_country_code(country_code)
    )
    if metadata is None:  # not for a known country code; parse asserts it away
        return None
    if len(national) < pnu._MIN_LENGTH_FOR_NSN:
        return None
    _, stripped, _ = pnu._maybe_strip_national_prefix_carrier_code(national, metadata)
    if pnu._test_number_length(stripped, metadata) not in _NOT_STRIPPED:
        national = stripped
    if not pnu._MIN_LENGTH_FOR_NSN <= len(national) <= pnu._MAX_LENGTH_FOR_NSN:
        return None
    number = PhoneNumber(country_code=country_code)
    pnu._set_italian_leading_zeros_for_phone_number(national, number)
    number.national_number = int(national)
    return number


# ``parse`` keeps the national prefix when what is left would have one of these lengths.
_NOT_STRIPPED = frozenset(
    {
        pnu.ValidationResult.TOO_SHORT,
        pnu.ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
        pnu.ValidationResult.INVALID_LENGTH,
    }
)


def _is_valid_number(number: PhoneNumber) -> bool:
    """``phonenumbers.is_valid_number(number)``, its steps taken with the patterns compiled
    once (``_type_patterns``): the region (of several sharing the country code, the first
    whose leading digits or number types fit), then whether a number type of the region
    fits. tests/test_addresses.py holds it to ``is_valid_number``'s answer."""
    country_code = number.country_code
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(country_code or 0)
    if country_code is None or regions is None:
        return False
    national = pnu.national_significant_number(number)
    region = regions[0]
    if len(regions) > 1:
        for candidate in regions:
            metadata = PhoneMetadata.metadata_for_region(candidate.upper(), None)
            if metadata is None:
                continue
            if metadata.leading_digits is not None:
                if re.compile(metadata.leading_digits).match(national):
                    region = candidate
                    break
            elif _has_type(national, metadata):
                region = candidate
                break
        else:
            return False  # no region of the code fits
    # is_valid_number_for_region also checks that the region has this country code: one
    # listed under it has.
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, region.upper())
    return metadata is not None and _has_type(national, metadata)


# A ``PhoneNumberDesc`` as ``phonenumbers`` applies it: the possible lengths (none: any) and
# the pattern the whole number must match.
_Desc = tuple[frozenset[int], re.Pattern[str]]


def _desc(desc: Any) -> _Desc | None:
    if desc is None or not desc.national_number_pattern:
        return None  # never matches
    return frozenset(desc.possible_length), re.compile(desc.national_number_pattern)


def _fits(national: str, desc: _Desc | None) -> bool:
    return (
        desc is not None
        and (not desc[0] or len(national) in desc[0])
        and desc[1].fullmatch(national) is not None
    )


# Per region's metadata (one object each, for the life of the process): its general
# description, those of its number types but mobile, and mobile's when it has a pattern of
# its own. Bounded by the regions ``phonenumbers`` knows (about 250).
_TYPE_PATTERNS: dict[int, tuple[Any, _Desc | None, tuple[_Desc, ...], _Desc | None]] = {}


def _type_patterns(metadata: Any) -> tuple[_Desc | None, tuple[_Desc, ...], _Desc | None]:
    entry = _TYPE_PATTERNS.get(id(metadata))  # the entry holds it: its id is not reused
    if entry is None:
        kinds = (
            metadata.premium_rate,
            metadata.toll_free,
            metadata.shared_cost,
            metadata.voip,
            metadata.personal_number,
            metadata.pager,
            metadata.uan,
            metadata.voicemail,
            metadata.fixed_line,
        )
        entry = (
            metadata,
            _desc(metadata.general_desc),
            tuple(d for d in map(_desc, kinds) if d is not None),
            None if metadata.same_mobile_and_fixed_line_pattern else _desc(metadata.mobile),
        )
        _TYPE_PATTERNS[id(metadata)] = entry
    return entry[1], entry[2], entry[3]


def _has_type(national: str, metadata: Any) -> bool:
    """Whether ``phonenumbers``' ``_number_type_helper`` finds a type (not ``UNKNOWN``): the
    general description fits, and then one of the types does."""
    general, kinds, mobile = _type_patterns(metadata)
    if not _fits(national, general):
        return False
    return any(_fits(national, d) for d in kinds) or _fits(national, mobile)


@lru_cache(maxsize=65536)
def phone_is_valid(phone: str | None) -> bool:
    """True for an E.164 number (``+``, country code, digits only) that ``phonenumbers`` finds
    valid. Spaces, dashes or trailing text are refused: the string goes to the provider as is."""
    if not phone or not _E164.match(phone):
        return False
    parsed = _parse_e164(phone)
    return parsed is not None and _is_valid_number(parsed)


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
