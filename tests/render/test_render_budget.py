"""Every render runs on a budget: a template that would hang or eat the memory fails as a
template error naming its file and line, in `care validate`, `care preview` and at send time
(where it fails that touch only). No test here measures time: each asserts the outcome."""

from __future__ import annotations

import datetime as dt
import shutil
from collections import Counter
from pathlib import Path

import pytest

from caretouch.config import CareConfig
from caretouch.errors import RenderError
from caretouch.ledger import Ledger
from caretouch.render import RenderBudget, TemplateStore
from caretouch.rules.loader import load_rules
from caretouch.run.day import run_day
from caretouch.run.engine import open_engine
from caretouch.schema.migrate import upgrade
from caretouch.store.db import Store, open_store
from caretouch.vocab import Channel, TouchStatus
from conftest import RULES_DIR, TEMPLATES_DIR, Care, customer_row, load_rows, utc

DAY = dt.date(2026, 11, 23)
LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
# Each is the second line of a template; the error must name that line.
RUNAWAY = {
    "nested-loops": (LOOPS, "loop iterations and calls"),
    "loop-over-a-string": (
        "{% for a in 'x' * 100000 %}{% for b in 'x' * 100000 %}{% endfor %}{% endfor %}",
        "loop iterations and calls",
    ),
    "string-times-huge": ("{{ 'x' * 10**9 }}", "a repetition would make more than"),
    "list-times-huge": ("{{ ([1] * 1000000000) | length }}", "a repetition"),
    "nested-list-repetition": ("{{ [[[1] * 1000] * 1000] * 1000 }}", "a repetition"),
    "power": ("{{ 7 ** 100000000 }}", "a number of more than"),
    "percent-width": ("{{ '%999999999d' % 1 }}", "a format width"),
    "format-filter-width": ("{{ '%999999999s' | format('x') }}", "a format width"),
    "str-format-width": ("{{ '{:>999999999}'.format(1) }}", "a format width"),
    "center": ("{{ 'x' | center(1000000000) }}", "center() would make"),
    "str-method-width": ("{{ 'x'.ljust(1000000000) }}", "a call would make"),
    "replace": ("{{ ('x' * 100000) | replace('x', 'y' * 100000) }}", "a replace"),
    "str-replace": ("{{ ('x' * 100000).replace('x', 'y' * 100000) }}", "a replace"),
    "join": ("{{ range(100000) | join('y' * 100000) }}", "a join"),
    "doubling-concat": (
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}{{ ns.s | length }}",
        "a value of more than",
    ),
    "doubling-plus": (
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
        "{% endfor %}{{ ns.s | length }}",
        "a sum would make",
    ),
    "static-text-in-a-captured-loop": (
        "{% set x %}{% for i in range(99999) %}" + "y" * 500 + "{% endfor %}{% endset %}{{ x }}",
        "characters built in all",
    ),
    "macro-recursion": (
        "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
        "nested too deeply (recursion)",
    ),
}


def store_with(tmp_path: Path, line2: str, budget: RenderBudget | None = None) -> TemplateStore:
    (tmp_path / "t").mkdir(exist_ok=True)
    (tmp_path / "t" / "sms.en.txt").write_text(f"Hello\n{line2}\n", encoding="utf-8")
    return TemplateStore(tmp_path, budget)


@pytest.mark.parametrize(("line2", "expected"), RUNAWAY.values(), ids=RUNAWAY.keys())
def test_runaway_templates_fail_with_file_and_line(
    tmp_path: Path, line2: str, expected: str
) -> None:
    templates = store_with(tmp_path, line2)
    with pytest.raises(RenderError) as caught:
        templates.render("t", Channel.SMS, "en", {})
    assert expected in caught.value.message
    assert str(caught.value.location) == f"{tmp_path / 't' / 'sms.en.txt'}:2"
    # The budget is per render: the same store renders a sane template afterwards.
    (tmp_path / "t" / "sms.en.txt").write_text("{% for i in range(3) %}{{ i }}{% endfor %}")
    assert TemplateStore(tmp_path).render("t", Channel.SMS, "en", {}).body == "012"


def test_time_is_a_last_resort_on_an_injected_clock(tmp_path: Path) -> None:
    ticks = iter(range(1_000_000))
    budget = RenderBudget(max_seconds=5, clock=lambda: float(next(ticks)))
    templates = store_with(tmp_path, "{% for i in range(5000) %}{{ i }}{% endfor %}", budget)
    with pytest.raises(RenderError, match=r"rendering took more than 5 s"):
        templates.render("t", Channel.SMS, "en", {})


def test_output_and_source_are_bounded(tmp_path: Path) -> None:
    small = RenderBudget(max_output=100, max_source=300)
    templates = store_with(tmp_path, "{% for i in range(30) %}abcdef{% endfor %}", small)
    with pytest.raises(RenderError, match="more than 100 characters of output"):
        templates.render("t", Channel.SMS, "en", {})
    templates = store_with(tmp_path, "x" * 400, small)
    with pytest.raises(RenderError, match="a template may have at most 300"):
        templates.render("t", Channel.SMS, "en", {})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1234.5", "1,234.50"),
        (1234, "1,234.00"),
        ("abc", "money expects a number, got text that is not one"),
        (True, "money expects a number, got bool"),
        ("NaN", "money expects a finite number"),
    ],
)
def test_money_formats_numbers_and_names_the_line_of_anything_else(
    tmp_path: Path, value: object, expected: str
) -> None:
    templates = store_with(tmp_path, "{{ amount | money }}")
    try:
        body = templates.render("t", Channel.SMS, "en", {"amount": value}).body
    except RenderError as exc:
        assert exc.message == f"cannot render: {expected}"
        assert str(exc.location) == f"{tmp_path / 't' / 'sms.en.txt'}:2"
    else:
        assert body == f"Hello\n{expected}"


def test_any_error_of_a_template_is_a_render_error_with_its_line(tmp_path: Path) -> None:
    templates = store_with(tmp_path, "{{ customer.name | dictsort }}")
    with pytest.raises(RenderError) as caught:
        templates.render("t", Channel.SMS, "en", {"customer": {"name": "Ann"}})
    assert "AttributeError" in caught.value.message
    assert str(caught.value.location).endswith("sms.en.txt:2")
    templates = store_with(tmp_path, "{{ customer.nickname }}")
    with pytest.raises(RenderError) as caught:
        templates.render("t", Channel.SMS, "en", {"customer": {"name": "Ann"}})
    assert str(caught.value.location).endswith("sms.en.txt:2")


# --- every place that renders --------------------------------------------------------------


def copy_templates(tmp_path: Path, template: str, channel_file: str, text: str) -> Path:
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, templates)
    (templates / template / channel_file).write_text(text, encoding="utf-8")
    return templates


def test_validate_refuses_a_runaway_template_and_keeps_the_other_rules(
    care: Care, tmp_path: Path
) -> None:
    templates = copy_templates(tmp_path, "birthday", "sms.en.txt", f"Hi\n{LOOPS}\n")
    ruleset = load_rules(RULES_DIR, TemplateStore(templates))
    assert [str(e).split(": cannot render")[0] for e in ruleset.errors] == [
        f"{templates / 'birthday' / 'sms.en.txt'}:2"
    ]
    assert "over the render budget" in str(ruleset.errors[0])
    assert "birthday" not in [r.id for r in ruleset.rules]
    assert "renewal-reminder" in [r.id for r in ruleset.rules]
    result = care("validate", templates=templates)
    assert result.exit_code == 1
    assert f"{templates / 'birthday' / 'sms.en.txt'}:2: cannot render: over the render budget" in (
        result.output
    )


# Passes `care validate` (the sample customer is not C1) and overruns for C1 only.
ONLY_C1 = "{% if customer.customer_id == 'C1' %}\n{{ BAD }}\n{% endif %}{{ customer.name }}"


def test_preview_reports_the_overrun_as_a_template_error(care: Care, tmp_path: Path) -> None:
    text = ONLY_C1.replace("{{ BAD }}", "{{ 'x' * 10**9 }}")
    templates = copy_templates(tmp_path, "birthday", "sms.zh-CN.txt", text)
    store = open_store(f"sqlite:///{tmp_path / 'care.db'}")
    upgrade(store)
    load_rows(store, customers=[customer_row("C1")])
    store.dispose()
    result = care(
        *("preview", "birthday", "--customer", "C1", "--date", "2026-11-23"), templates=templates
    )
    assert result.exit_code == 1
    assert (
        f"{templates / 'birthday' / 'sms.zh-CN.txt'}:2: cannot render: over the render budget"
        in result.output
    )
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "bad",
    [
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{{ 'x' * 10**9 }}",
        "{{ customer.name | dictsort }}",
        "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    ],
    ids=["loops", "repetition", "attribute-error", "recursion"],
)
def test_at_send_time_a_bad_render_fails_only_its_touch(
    store: Store, tmp_path: Path, bad: str
) -> None:
    templates = copy_templates(
        tmp_path, "birthday", "sms.zh-CN.txt", ONLY_C1.replace("{{ BAD }}", bad)
    )
    load_rows(store, customers=[customer_row("C1"), customer_row("C2")])
    engine = open_engine(
        CareConfig(store.url, RULES_DIR, templates, tmp_path / "outbox"), store=store
    )  # on PostgreSQL, the test's own schema
    assert engine.ruleset.errors == []
    report = run_day(engine, DAY, run_id="t1", now=utc(2026, 11, 23, 12, 0))
    assert (report.sent, report.failed) == (1, 1)
    assert "render_error" in report.failures[0] and "sms.zh-CN.txt:2" in report.failures[0]
    states = Ledger(store).states_for_day(DAY)
    assert Counter((s.row.customer_id, s.status) for s in states) == {
        ("C1", TouchStatus.FAILED): 1,
        ("C2", TouchStatus.SENT): 1,
    }
    assert len(list((tmp_path / "outbox").rglob("*.json"))) == 1


def test_metering_keeps_static_html_as_written_and_still_escapes_data(
    templates: TemplateStore,
) -> None:
    context = {
        "occurrence": DAY,
        "rule_id": "birthday",
        "years": 36,
        "customer": {"name": "<b>Ann</b>", "birthday_calendar": "gregorian"},
    }
    html = templates.render("birthday", Channel.EMAIL, "en", context).html or ""
    assert html.startswith("<!doctype html>") and "<p " in html and "&lt;p" not in html
    assert "&lt;b&gt;Ann&lt;/b&gt;" in html and "<b>Ann" not in html
