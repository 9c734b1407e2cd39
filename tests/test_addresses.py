"""``caretouch.addresses``: the plain-address shortcut of ``email_is_valid`` never says yes where
``email-validator`` would say no."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caretouch.addresses import email_is_valid, plain_email_is_valid


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
