"""Every shipped email template extends the one layout (``templates/_layout/email.html``),
and renders byte for byte what it rendered before the layout existed.

The snapshots in ``email_snapshots/`` were made with the templates as they were before the
layout (each its own copy of the HTML shell), for the fixed contexts below; regenerate them
only on purpose: ``python tests/render/test_email_layout.py --write``.
"""

from __future__ import annotations

import datetime as dt
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from caretouch.render import TemplateStore
from caretouch.vocab import Channel

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES_DIR = ROOT / "templates"
SNAPSHOTS = Path(__file__).with_name("email_snapshots")
LOCALES = ("en", "zh-CN", "zh-TW")

# A customer whose name needs escaping, with every field a shipped template reads.
_FULL: dict[str, Any] = {
    "occurrence": dt.date(2026, 11, 23),
    "rule_id": "snapshot",
    "years": 3,
    "days": 7,
    "holiday": "spring_festival",
    "level": "premium",
    "cadence_days": 30,
    "last_contact": dt.date(2026, 10, 24),
    "agent": None,
    "customer": {
        "customer_id": "C0042",
        "name": 'Li "Na" <b>&amp;</b> 王芳',
        "tier": "A",
        "locale": "en",
        "birth_date": dt.date(1990, 11, 23),
        "birthday_calendar": "lunar",
        "status": "active",
        "timezone": "Asia/Shanghai",
    },
    "policy": {
        "policy_id": "P-<1001>",
        "product": "Family Health & Care",
        "start_date": dt.date(2023, 11, 23),
        "renewal_date": dt.date(2026, 11, 30),
        "premium": Decimal("12345.5"),
        "status": "active",
        "premium_due_date": dt.date(2026, 12, 23),
        "payment_frequency": "annual",
        "paid_through": dt.date(2025, 12, 22),
    },
    "event": {
        "type": "claim_settled",
        "payload": {"claim_id": "CL-9<9>", "case_id": "CASE-7&7", "amount": "100"},
    },
}
# The other branches: no premium, no festival, a gregorian birthday, singular counts.
_BARE: dict[str, Any] = {
    **_FULL,
    "years": 1,
    "days": 1,
    "holiday": None,
    "last_contact": None,
    "customer": {**_FULL["customer"], "birthday_calendar": "gregorian", "name": "Ann"},
    "policy": {**_FULL["policy"], "premium": None},
    "event": {"type": "complaint", "payload": None},
}
# An event without a policy: only for the templates that render without one.
_NO_POLICY: dict[str, Any] = {**_BARE, "policy": None}
CASES = {"full": _FULL, "bare": _BARE, "no_policy": _NO_POLICY}


def _template_ids() -> list[str]:
    """The templates with an email (a task's brief has none)."""
    return sorted(
        p.name
        for p in TEMPLATES_DIR.iterdir()
        if p.is_dir() and p.name[0] != "_" and (p / "email.en.html").is_file()
    )


def _cases() -> list[tuple[str, str, str]]:
    """Every (template, locale, case) there is a snapshot of."""
    return [
        (t, locale, case)
        for t in _template_ids()
        for locale in LOCALES
        for case in CASES
        if _snapshot(t, locale, case).is_file()
    ]


def _snapshot(template_id: str, locale: str, case: str) -> Path:
    return SNAPSHOTS / f"{template_id}.{locale}.{case}.html"


def _render(store: TemplateStore, template_id: str, locale: str, case: str) -> str:
    """The HTML part alone (the bare case has no policy, which some subjects need)."""
    name = store.relpath(template_id, Channel.EMAIL, locale, "html")
    return store.env.get_template(name).render({**CASES[case], "locale": locale})


def test_every_email_template_has_its_snapshots() -> None:
    emails = [(t, locale) for t in _template_ids() for locale in LOCALES]
    assert len(emails) == 39
    for t, locale in emails:
        assert _snapshot(t, locale, "full").is_file() and _snapshot(t, locale, "bare").is_file()


def test_a_whole_email_renders_through_the_layout() -> None:
    store = TemplateStore(TEMPLATES_DIR)
    message = store.render("thank_you", Channel.EMAIL, "en", _FULL)
    assert message.html == _snapshot("thank_you", "en", "full").read_text(encoding="utf-8")


@pytest.mark.parametrize(("template_id", "locale", "case"), _cases())
def test_email_html_renders_as_before_the_layout(template_id: str, locale: str, case: str) -> None:
    store = TemplateStore(TEMPLATES_DIR)
    expected = _snapshot(template_id, locale, case).read_text(encoding="utf-8")
    assert _render(store, template_id, locale, case) == expected  # byte for byte


@pytest.mark.parametrize(
    ("template_id", "locale"), [(t, lo) for t in _template_ids() for lo in LOCALES]
)
def test_every_email_template_extends_the_layout(template_id: str, locale: str) -> None:
    source = (TEMPLATES_DIR / template_id / f"email.{locale}.html").read_text(encoding="utf-8")
    assert '{% extends "_layout/email.html" %}' in source
    assert "<!doctype html>" not in source.lower()


def _write() -> None:
    store = TemplateStore(TEMPLATES_DIR)
    SNAPSHOTS.mkdir(exist_ok=True)
    for template_id in _template_ids():
        for locale in LOCALES:
            for case in CASES:
                try:
                    html = _render(store, template_id, locale, case)
                except Exception:
                    if case == "no_policy":
                        continue  # this template needs a policy
                    raise
                _snapshot(template_id, locale, case).write_text(html, encoding="utf-8")


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    _write()


def test_the_template_hash_covers_the_layout(tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, root)
    before = TemplateStore(root).template_hash("birthday", Channel.EMAIL, "en")
    sms = TemplateStore(root).template_hash("birthday", Channel.SMS, "en")
    layout = root / "_layout" / "email.html"
    layout.write_text(layout.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    assert TemplateStore(root).template_hash("birthday", Channel.EMAIL, "en") != before
    assert TemplateStore(root).template_hash("birthday", Channel.SMS, "en") == sms


def test_the_layout_is_not_a_template() -> None:
    assert "_layout" not in TemplateStore(TEMPLATES_DIR).template_ids()
