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
