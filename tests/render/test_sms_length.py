"""SMS length as carriers count it, and what `care validate` and sending do with it: an empty
render is never sent, segments above the policy's `sms.warn_segments` are a warning, a body
over the provider's 1,600 characters is an error."""

from __future__ import annotations

import datetime as dt
import math
import shutil
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from caretouch.channels.twilio import TwilioTransport
from caretouch.cli.root import main
from caretouch.config import CareConfig
from caretouch.errors import RenderError
from caretouch.ledger import Ledger
from caretouch.render.templates import TemplateStore
from caretouch.rules.loader import load_rules
from caretouch.run.day import run_day
from caretouch.run.engine import open_engine
from caretouch.sms import GSM7, SMS_MAX_CHARS, UCS2, sms_size
from caretouch.store.db import Store
from caretouch.vocab import Channel, TouchStatus
from conftest import RULES_DIR, TEMPLATES_DIR, customer_row, load_rows, utc


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("", GSM7, 0, 0),
        ("a" * 160, GSM7, 160, 1),
        ("a" * 161, GSM7, 161, 2),
        ("a" * 306, GSM7, 306, 2),
        ("a" * 307, GSM7, 307, 3),
        ("€" * 80, GSM7, 160, 1),  # the extension table counts double
        ("{}" * 40 + "a", GSM7, 161, 2),
        ("€" * 77, GSM7, 154, 1),
        # 76 euros fill 152 of a part's 153 septets; the 77th does not split, it moves on.
        ("€" * 81, GSM7, 162, 2),
        ("a" * 152 + "€" + "a" * 8, GSM7, 162, 2),
        ("a" * 152 + "€" * 77, GSM7, 306, 3),
        ("Ça coute 5 € à Zürich", GSM7, 22, 1),
        ("中" * 70, UCS2, 70, 1),
        ("中" * 71, UCS2, 71, 2),
        ("中" * 134, UCS2, 134, 2),
        ("中" * 135, UCS2, 135, 3),
        ("a" * 69 + "中", UCS2, 70, 1),  # one character switches the whole message
        ("“quoted”", UCS2, 8, 1),
        ("😀" * 35, UCS2, 70, 1),  # a surrogate pair is two UTF-16 units
        ("😀" * 36, UCS2, 72, 2),  # 33 per part: a pair is never split
        ("😀" * 67, UCS2, 134, 3),
    ],
)
def test_segments_as_carriers_count_them(
    text: str, encoding: str, units: int, segments: int
) -> None:
    size = sms_size(text)
    assert (size.encoding, size.units, size.segments) == (encoding, units, segments)


@given(st.text(alphabet="abcdefghij0123456789 .,!?@£$", max_size=2000))
def test_plain_gsm_text_takes_153_septets_a_part(text: str) -> None:
    expected = 0 if not text else 1 if len(text) <= 160 else math.ceil(len(text) / 153)
    assert sms_size(text).segments == expected


@given(st.text(alphabet="中文字😀é", max_size=600))
def test_ucs2_parts_hold_67_units(text: str) -> None:
    size = sms_size(text)
    units = len(text.encode("utf-16-le")) // 2
    assert size.units == units
    if text and "中" not in text and "文" not in text and "字" not in text and "😀" not in text:
        assert size.encoding == GSM7  # only é: GSM-7 has it
    elif text:
        assert size.encoding == UCS2
        assert size.segments >= (1 if units <= 70 else math.ceil(units / 67))


def test_twilio_declares_the_limit_validate_checks() -> None:
    assert TwilioTransport.max_body == SMS_MAX_CHARS == 1600


# --- empty renders ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("part", "text", "what"),
    [
        ("sms.en.txt", "{% if customer.tier == 'Z' %}Hi{% endif %}", "message text"),
        ("sms.en.txt", "  \n\n   ", "message text"),
        ("email.en.subject.txt", "{{ '' }}", "subject"),
        ("email.en.txt", "{% if false %}x{% endif %}", "message text"),
        ("email.en.html", "   ", "HTML part"),
    ],
)
def test_an_empty_render_is_an_error(tmp_path: Path, part: str, text: str, what: str) -> None:
    root = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR / "birthday", root / "t")
    shutil.copytree(TEMPLATES_DIR / "_layout", root / "_layout")  # the email layout
    (root / "t" / part).write_text(text, encoding="utf-8")
    channel = Channel.SMS if part.startswith("sms") else Channel.EMAIL
    customer = {"name": "Ann", "tier": "A", "birthday_calendar": "gregorian"}
    context = {"customer": customer, "occurrence": dt.date(2026, 11, 23)}
    with pytest.raises(RenderError) as caught:
        TemplateStore(root).render("t", channel, "en", {**context, "years": 3})
    assert caught.value.message == f"cannot render: the {what} is empty"
    assert str(caught.value.location) == str(root / "t" / part)


# --- care validate -------------------------------------------------------------------------------


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, templates)
    return rules, templates


def validate(rules: Path, templates: Path) -> tuple[int, str]:
    result = CliRunner().invoke(
        main, ["--rules", str(rules), "--templates", str(templates), "validate"]
    )
    return result.exit_code, result.output


def test_validate_refuses_an_sms_that_renders_empty(dirs: tuple[Path, Path]) -> None:
    rules, templates = dirs
    sms = templates / "birthday" / "sms.zh-TW.txt"
    sms.write_text("{% if years > 100 %}{{ customer.name }}，生日快樂{% endif %}", encoding="utf-8")
    code, output = validate(rules, templates)
    assert code == 1
    assert (
        f"{sms}: cannot render: the message text is empty (with sample data: typical values)"
        in output
    )


def test_validate_refuses_an_sms_over_the_providers_limit(dirs: tuple[Path, Path]) -> None:
    rules, templates = dirs
    sms = templates / "birthday" / "sms.en.txt"
    sms.write_text("Happy birthday {{ customer.name }}! " + "x" * 1600, encoding="utf-8")
    code, output = validate(rules, templates)
    assert code == 1
    assert (
        f"{sms}: the SMS is 1,619 characters with sample data (typical values); providers "
        "take at most 1,600 (Twilio)" in output
    )


def test_validate_warns_above_the_policys_segments_and_the_number_is_configurable(
    dirs: tuple[Path, Path],
) -> None:
    rules, templates = dirs
    sms = templates / "birthday" / "sms.en.txt"
    # 319 GSM characters, but the sample customer's name (王芳) makes it UCS-2: 5 segments.
    sms.write_text("Happy birthday {{ customer.name }}! " + "x" * 300, encoding="utf-8")
    code, output = validate(rules, templates)
    assert code == 0, output
    assert (
        f"warning: {sms}: the SMS is 5 segment(s), 319 UTF-16 units in UCS-2 with sample data "
        "(typical values), more than sms.warn_segments=3 of the contact policy" in output
    )
    policy = rules / "policy.yaml"
    policy.write_text(policy.read_text("utf-8") + "sms:\n  warn_segments: 5\n", "utf-8")
    ruleset = load_rules(rules, TemplateStore(templates))
    assert ruleset.errors == [] and ruleset.warnings == []
    assert "warning:" not in validate(rules, templates)[1]


def test_shipped_templates_need_no_warning(shipped_rules) -> None:
    assert shipped_rules.warnings == []


# --- at send time ------------------------------------------------------------------------------


def test_an_empty_render_is_never_sent(store: Store, tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, templates)
    # Passes `care validate` (the sample customer is not C1) and renders empty for C1.
    (templates / "birthday" / "sms.zh-CN.txt").write_text(
        "{% if customer.customer_id != 'C1' %}{{ customer.name }}，生日快乐{% endif %}",
        encoding="utf-8",
    )
    load_rows(store, customers=[customer_row("C1"), customer_row("C2")])
    engine = open_engine(
        CareConfig(store.url, RULES_DIR, templates, tmp_path / "outbox"), store=store
    )  # on PostgreSQL, the test's own schema
    assert engine.ruleset.errors == []
    day = dt.date(2026, 11, 23)
    report = run_day(engine, day, run_id="t1", now=utc(2026, 11, 23, 12, 0))
    assert (report.sent, report.failed) == (1, 1)
    assert (
        "render_error" in report.failures[0] and "the message text is empty" in (report.failures[0])
    )
    states = Ledger(store).states_for_day(day)
    assert Counter((s.row.customer_id, s.status) for s in states) == {
        ("C1", TouchStatus.FAILED): 1,
        ("C2", TouchStatus.SENT): 1,
    }
    assert len(list((tmp_path / "outbox").rglob("*.json"))) == 1
