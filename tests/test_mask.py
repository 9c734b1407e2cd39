from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caretouch.mask import hidden_digits, mask_email, mask_phone, mask_recipient, scrub


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("+8613812348000", "+86 138****8000"),  # mainland China mobile (11 digits)
        ("+85297622077", "+852 ****2077"),  # Hong Kong (8): the old mask showed 976*2077
        ("+85366123456", "+853 ****3456"),  # Macau (8)
        ("+6591234567", "+65 ****4567"),  # Singapore (8)
        ("+886912345678", "+886 9****5678"),  # Taiwan mobile (9)
        ("+14155550123", "+1 41****0123"),  # US (10)
        ("+447700900123", "+44 77****0123"),  # UK mobile (10)
        ("+4915123456789", "+49 151****6789"),  # German mobile (11)
        ("+49301234567", "+49 3****4567"),  # Berlin landline (9)
        ("+390669812345", "+39 06****2345"),  # Rome: Italy's leading zero is a digit shown
        ("+86 138 1234 8000", "+86 138****8000"),  # formatted
        ("13812348000", "138****8000"),  # no country code: digits as they are
        ("12345", "****5"),
        ("1234", "****"),
        ("", ""),
    ],
)
def test_mask_phone(raw: str, masked: str) -> None:
    assert mask_phone(raw) == masked


def _check_mask(national: str, masked: str) -> None:
    """``masked`` hides at least max(4, a third) of ``national`` and shows only a head and a
    tail of it, in place."""
    assert len(masked) == len(national)
    hidden = masked.count("*")
    assert hidden >= min(len(national), max(4, math.ceil(len(national) / 3)))
    head = len(masked) - len(masked.lstrip("0123456789"))
    tail = len(masked) - len(masked.rstrip("0123456789"))
    assert head + hidden + tail == len(national)  # one run of stars, digits only around it
    assert (
        masked[:head] == national[:head]
        and masked[len(masked) - tail :] == national[len(national) - tail :]
    )
    assert head <= 3 and tail <= 4


@given(st.text(alphabet="0123456789", min_size=4, max_size=15))
def test_mask_hides_enough_of_any_length(digits: str) -> None:
    # Without a "+" nothing is parsed: the rule applies to the digits as they are.
    _check_mask(digits, mask_phone(digits))


@pytest.mark.parametrize("length", range(4, 16))
def test_mask_rule_for_every_national_length(length: int) -> None:
    national = "9876543210123456"[:length]
    _check_mask(national, mask_phone(national))
    assert hidden_digits(length) == max(4, math.ceil(length / 3))


@given(
    st.sampled_from(["852", "853", "65", "86", "1", "44", "49", "886", "39", "81"]),
    st.text(alphabet="0123456789", min_size=2, max_size=13),
)
def test_mask_of_international_numbers(cc: str, rest: str) -> None:
    number = f"+{cc}{rest}"
    prefix, _, masked = mask_phone(number).rpartition(" ")
    assert number.startswith(prefix) and masked
    hidden = masked.count("*")
    assert hidden >= min(len(masked), max(4, math.ceil(len(masked) / 3)))
    head, tail = masked.split("*" * hidden)
    assert len(head) <= 3 and len(tail) <= 4
    assert number.endswith(tail) and head in number[len(prefix) :]


def test_mask_email() -> None:
    assert mask_email("zhang.wei@example.com") == "z***@example.com"
    assert mask_recipient("a@example.org") == "a***@example.org"


def test_scrub_free_text() -> None:
    text = "provider said: +8613812348000 and zhang.wei@example.com are invalid"
    out = scrub(text)
    assert "13812348000" not in out and "zhang.wei" not in out
    assert "+86 138****8000" in out and "z***@example.com" in out


@pytest.mark.parametrize(
    ("phone", "valid"),
    [
        ("+8613812348000", True),
        ("+14155550123", True),
        ("+8613812348000x", False),
        ("+86 138 1234 8000", False),
        ("13812348000", False),
        ("+86123", False),
        (None, False),
    ],
)
def test_phone_must_be_strict_e164(phone: str | None, valid: bool) -> None:
    from caretouch.addresses import phone_is_valid

    assert phone_is_valid(phone) is valid


def test_import_normalises_formatted_numbers() -> None:
    from caretouch.store.importer import normalise_phone

    assert normalise_phone("+86 138-1234-8000") == "+8613812348000"
    assert normalise_phone("+8613812348000x") == "+8613812348000x"
    assert normalise_phone("138-0000-0000") == "138-0000-0000"


def test_scrubbed_text_holds_no_nul() -> None:
    # Providers' free text is scrubbed before it is recorded; the store cannot hold a NUL.
    out = scrub("error\x00 for +8613812348000\x00")
    assert "\x00" not in out and out == "error\\u0000 for +86 138****8000\\u0000"


def test_scrub_keeps_the_agents_own_details_and_masks_the_rest() -> None:
    """A care message gives the customer their agent's phone: the audit view shows it as the
    customer read it, and still masks any other number or address in the text."""
    from caretouch.ledger.audit.detail import agent_details

    context = {"agent": {"name": "李娜", "phone": "+8613900000001", "email": "li.na@agency.cn"}}
    keep = agent_details(context)
    text = "Your agent 李娜 is on +8613900000001 (li.na@agency.cn); you: +8613812348000"
    shown = scrub(text, keep)
    assert "+8613900000001" in shown and "li.na@agency.cn" in shown
    assert "+8613812348000" not in shown and "8000" in shown  # masked, last digits kept
    assert scrub(text).count("+8613900000001") == 0  # without keep: masked as before
    assert agent_details({"agent": None}) == frozenset()
    assert agent_details({}) == frozenset()
