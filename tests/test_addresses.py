"""``caretouch.addresses``: the plain-address shortcut of ``email_is_valid`` never says yes where
``email-validator`` would say no; the E.164 parse behind ``phone_is_valid`` is
``phonenumbers.parse``'s."""

from __future__ import annotations

import random
import re

import phonenumbers
import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from phonenumbers import phonenumberutil

from caretouch.addresses import (
    _fits,
    _has_type,
    _is_valid_number,
    _parse_e164,
    email_is_valid,
    phone_is_valid,
    plain_email_is_valid,
)


def validator_accepts(email: str) -> bool:
    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


_ATOM = st.text("abcXYZ019_+-", min_size=1, max_size=12)
_LABEL = st.text("abzAZ09-", min_size=1, max_size=70)
_TLD = st.sampled_from(["com", "org", "cn", "Invalid", "local", "test", "arpa", "x", "c0m", "港"])


@st.composite
def candidates(draw: st.DrawFn) -> str:
    local = ".".join(draw(st.lists(_ATOM, min_size=1, max_size=8)))
    labels = draw(st.lists(_LABEL, min_size=1, max_size=5))
    return f"{local}@{'.'.join([*labels, draw(_TLD)])}"


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(candidates())
def test_the_shortcut_accepts_only_what_email_validator_accepts(email: str) -> None:
    if plain_email_is_valid(email):
        assert validator_accepts(email), email


@pytest.mark.parametrize(
    ("email", "shortcut", "valid"),
    [
        ("li.wei+care@mail.example.com", True, True),
        ("Anne-Marie.Carter@Example.ORG", True, True),
        ("x@host.test", False, False),  # special-use domain
        ("x@sub.localhost", False, False),
        ("x@ab--cd.com", False, False),  # hyphens in positions 3-4: not for the shortcut
        ("x@xn--fiqs8s.cn", False, True),  # Punycode: validate_email decides
        ("a..b@example.com", False, False),
        (".a@example.com", False, False),
        ("a@example.c0m", False, True),  # a TLD ending in a letter: validate_email decides
        ("a@-example.com", False, False),
        ("a@example", False, False),
        ("x" * 65 + "@example.com", False, True),  # long local parts: validate_email decides
        ("a@" + "b" * 64 + ".com", False, False),  # a label over 63 characters
        ("王芳@example.com", False, True),
        ("a b@example.com", False, False),
    ],
)
def test_email_is_valid_with_and_without_the_shortcut(
    email: str, shortcut: bool, valid: bool
) -> None:
    assert plain_email_is_valid(email) is shortcut
    assert email_is_valid(email) is valid
    assert validator_accepts(email) is valid


# --- phone numbers ------------------------------------------------------------------------


UNKNOWN = phonenumbers.PhoneNumberType.UNKNOWN


def parsed_by_phonenumbers(phone: str) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return None


def valid_by_phonenumbers(phone: str) -> bool:
    """``phone_is_valid`` as it was: ``phonenumbers.parse`` then ``is_valid_number``."""
    parsed = parsed_by_phonenumbers(phone)
    return parsed is not None and phonenumbers.is_valid_number(parsed)


def e164_samples() -> list[str]:
    """For every country code: its regions' example numbers of every type, those with the
    national prefix and with zeros put in front, and random digits of every E.164 length."""
    rng = random.Random(13)
    out: set[str] = set()
    for code, regions in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items():
        prefixes = {"0", "00", "1", "8"}
        examples: set[str] = set()
        for region in regions:
            metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(code, region)
            if metadata is not None and metadata.national_prefix:
                prefixes.add(metadata.national_prefix)
            for kind in phonenumbers.PhoneNumberType.values():
                example = (
                    phonenumbers.example_number_for_type(region, kind)
                    if region != phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY
                    else phonenumbers.example_number_for_non_geo_entity(code)
                )
                if example is not None:
                    examples.add(phonenumbers.national_significant_number(example))
        for national in examples:
            out.add(f"+{code}{national}")
            for prefix in prefixes:
                out.add(f"+{code}{prefix}{national}")
            out.add(f"+{code}{national[:-1]}")  # one digit short
            out.add(f"+{code}{national}{rng.randint(0, 9)}")  # one digit long
        for digits in range(len(str(code)) + 1, 16):
            for _ in range(4):
                rest = "".join(rng.choice("0123456789") for _ in range(digits - len(str(code))))
                out.add(f"+{code}{rest}")
    for _ in range(2000):  # country codes that do not exist, and every first digit
        out.add("+" + str(rng.randint(1, 9)) + str(rng.randint(0, 10 ** rng.randint(5, 13))))
    return sorted(s for s in out if 8 <= len(s) <= 16)


def test_the_e164_parse_is_phonenumbers_parse_for_every_country_code() -> None:
    samples = e164_samples()
    valid = 0
    for phone in samples:
        parsed = parsed_by_phonenumbers(phone)
        assert _parse_e164(phone) == parsed, phone
        assert phone_is_valid(phone) is valid_by_phonenumbers(phone), phone
        valid += phone_is_valid(phone)
        if parsed is None:
            continue
        assert _is_valid_number(parsed) is phonenumbers.is_valid_number(parsed), phone
        # Against every region of the country code, not only the one the number is from.
        national = phonenumbers.national_significant_number(parsed)
        for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[parsed.country_code]:
            metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(
                parsed.country_code, region
            )
            if metadata is not None:
                found = phonenumberutil._number_type_helper(national, metadata)
                assert _has_type(national, metadata) is (found != UNKNOWN), (phone, region)
    # Enough of both answers, and of national prefixes that parse strips, to mean something.
    assert len(samples) > 10_000 and 1_000 < valid < len(samples) - 1_000
    stripped = [
        p
        for p in samples
        if _parse_e164(p) is not None
        and phonenumbers.format_number(_parse_e164(p), phonenumbers.PhoneNumberFormat.E164) != p
    ]
    assert len(stripped) > 100


def test_a_number_type_fits_only_at_its_possible_lengths() -> None:
    """As ``phonenumbers`` checks a description: the lengths first (none listed: any length),
    then the whole number against the pattern."""
    digits = re.compile(r"[0-9]+")
    assert _fits("12345", (frozenset({5, 6}), digits))
    assert not _fits("12345", (frozenset({6}), digits))
    assert _fits("12345", (frozenset(), digits))
    assert not _fits("12345", (frozenset(), re.compile("1234")))  # the whole number
    assert not _fits("12345", None)


@settings(max_examples=500, deadline=None)
@given(st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True))
def test_phone_is_valid_is_phonenumbers_answer(phone: str) -> None:
    assert _parse_e164(phone) == parsed_by_phonenumbers(phone)
    assert phone_is_valid(phone) is valid_by_phonenumbers(phone)
