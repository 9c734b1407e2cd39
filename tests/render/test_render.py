"""Rendering: sandboxed, strict, escaped where HTML, literal where text."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from caretouch.errors import RenderError
from caretouch.render.templates import TemplateStore
from caretouch.vocab import Channel


def _ctx(name: str) -> dict:
    return {
        "occurrence": dt.date(2026, 11, 23),
        "rule_id": "birthday",
        "years": 36,
        "customer": {
            "name": name,
            "customer_id": "C1",
            "tier": "A",
            "locale": "en",
            "birth_date": dt.date(1990, 11, 23),
            "birthday_calendar": "gregorian",
            "status": "active",
            "timezone": None,
        },
    }


@pytest.mark.parametrize("locale", ["zh-CN", "zh-TW", "en"])
def test_template_syntax_in_a_name_is_printed_literally(
    templates: TemplateStore, locale: str
) -> None:
    sms = templates.render("birthday", Channel.SMS, locale, _ctx("{{ 7*7 }}"))
    assert "{{ 7*7 }}" in sms.body
    assert "49" not in sms.body
    email = templates.render("birthday", Channel.EMAIL, locale, _ctx("{{ 7*7 }}"))
    assert "{{ 7*7 }}" in email.body and "{{ 7*7 }}" in (email.html or "")


def test_script_is_escaped_in_html_and_literal_in_text(templates: TemplateStore) -> None:
    email = templates.render("birthday", Channel.EMAIL, "en", _ctx("<script>alert(1)</script>"))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in (email.html or "")
    assert "<script>" not in (email.html or "")
    assert "<script>alert(1)</script>" in email.body
    sms = templates.render("birthday", Channel.SMS, "en", _ctx("<script>alert(1)</script>"))
    assert "<script>alert(1)</script>" in sms.body


def test_undefined_variable_fails_instead_of_printing_nothing(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "sms.en.txt").write_text("Hi {{ customer.nickname }}", encoding="utf-8")
    with pytest.raises(RenderError, match="nickname"):
        TemplateStore(tmp_path).render("t", Channel.SMS, "en", {"customer": {"name": "A"}})


def test_sandbox_blocks_unsafe_attributes(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "sms.en.txt").write_text("{{ customer.__class__.__mro__ }}", encoding="utf-8")
    with pytest.raises(RenderError):
        TemplateStore(tmp_path).render("t", Channel.SMS, "en", {"customer": {"name": "A"}})


def test_longdate_follows_locale(templates: TemplateStore) -> None:
    zh = templates.env.from_string("{{ d | longdate }}").render(
        d=dt.date(2026, 2, 3), locale="zh-CN"
    )
    en = templates.env.from_string("{{ d | longdate }}").render(d=dt.date(2026, 2, 3), locale="en")
    assert (zh, en) == ("2026年2月3日", "3 February 2026")


def test_content_hash_changes_with_content(templates: TemplateStore) -> None:
    a = templates.render("birthday", Channel.SMS, "en", _ctx("Ann"))
    b = templates.render("birthday", Channel.SMS, "en", _ctx("Bob"))
    assert a.content_hash() != b.content_hash()
    assert (
        a.content_hash()
        == templates.render("birthday", Channel.SMS, "en", _ctx("Ann")).content_hash()
    )
