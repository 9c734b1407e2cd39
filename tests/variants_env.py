"""A rule with message variants, and its second template, written into a test's own folders
(the shipped rules have no variants: docs/rules.md, "Message variants", shows this one)."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import RULES_DIR, TEMPLATES_DIR

SHORT_SMS = {
    "en": "Caretouch Insurance: Happy birthday, {{ customer.name }}! Reply STOP to opt out",
    "zh-CN": "【关怀保险】{{ customer.name }}，生日快乐！回T退订",
    "zh-TW": "【關懷保險】{{ customer.name }}，生日快樂！回T退訂",
}
SHORT_SUBJECT = {"en": "Happy birthday!", "zh-CN": "生日快乐！", "zh-TW": "生日快樂！"}
SHORT_EMAIL = {
    "en": "Happy birthday, {{ customer.name }}! (short)",
    "zh-CN": "{{ customer.name }}，生日快乐！（短）",
    "zh-TW": "{{ customer.name }}，生日快樂！（短）",
}

RULE = """\
version: 1
rules:
  - id: birthday-ab
    description: Birthday greeting in two wordings.
    trigger:
      kind: anniversary
      field: customer.birth_date
    audience:
      customer.status: active
    channels: [{channels}]
    variants:
      - {{id: warm, template: birthday, weight: 50}}
      - {{id: short, template: birthday_short, weight: 50}}
{test}    category: care
    priority: 30
    send_time: "09:00"
"""


def variant_templates(tmp_path: Path) -> Path:
    """The shipped templates and ``birthday_short`` (SMS and email, every locale)."""
    root = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, root)
    short = root / "birthday_short"
    short.mkdir()
    for locale, body in SHORT_SMS.items():
        (short / f"sms.{locale}.txt").write_text(body + "\n", encoding="utf-8")
        (short / f"email.{locale}.subject.txt").write_text(
            SHORT_SUBJECT[locale] + "\n", encoding="utf-8"
        )
        (short / f"email.{locale}.txt").write_text(SHORT_EMAIL[locale] + "\n", encoding="utf-8")
        (short / f"email.{locale}.html").write_text(
            '{% extends "_layout/email.html" %}{% block title %}'
            + SHORT_SUBJECT[locale]
            + "{% endblock %}{% block content %}<p>"
            + SHORT_EMAIL[locale]
            + "</p>{% endblock %}{% block note %}-{% endblock %}\n",
            encoding="utf-8",
        )
    return root


def variant_rules(
    tmp_path: Path, *, channels: str = "email, sms", test: str = "", only: bool = True
) -> Path:
    """A rules folder: the shipped policy and event types and the ``birthday-ab`` rule
    (``test``: its ``variant_test:`` lines; ``only``: without the shipped rules)."""
    root = tmp_path / "rules"
    if only:
        root.mkdir()
        for name in ("policy.yaml", "events.yaml"):
            shutil.copy(RULES_DIR / name, root / name)
    else:
        shutil.copytree(RULES_DIR, root)
    (root / "birthday-ab.yaml").write_text(
        RULE.format(channels=channels, test=test), encoding="utf-8"
    )
    return root
