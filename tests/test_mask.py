from __future__ import annotations

import pytest

from caretouch.mask import mask_email, mask_phone, mask_recipient, scrub


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("+8613812348000", "+86 138****8000"),
        ("+14155550123", "+1 415***0123"),
        ("+886912345678", "+886 912**5678"),
        ("12345", "***45"),
        ("", ""),
    ],
)
def test_mask_phone(raw: str, masked: str) -> None:
    assert mask_phone(raw) == masked


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
    from caretouch.policy import phone_is_valid

    assert phone_is_valid(phone) is valid


def test_import_normalises_formatted_numbers() -> None:
    from caretouch.store.importer import normalise_phone

    assert normalise_phone("+86 138-1234-8000") == "+8613812348000"
    assert normalise_phone("+8613812348000x") == "+8613812348000x"
    assert normalise_phone("138-0000-0000") == "138-0000-0000"
