"""Message variants in rule files: validation with file:line:col, and the assignment of a
variant to a customer (deterministic across processes, spread as the weights say)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from variants_env import variant_rules, variant_templates

from caretouch.render.templates import TemplateStore
from caretouch.rules.loader import load_rules
from caretouch.rules.variants import assign
from caretouch.vocab import VariantMetric, VariantThen

ROOT = Path(__file__).resolve().parents[2]


def _errors(tmp_path: Path, edit: dict[str, str] | None = None, **kw: str) -> list[str]:
    rules = variant_rules(tmp_path, **kw)
    path = rules / "birthday-ab.yaml"
    text = path.read_text(encoding="utf-8")
    for old, new in (edit or {}).items():
        assert old in text
        text = text.replace(old, new, 1)
    path.write_text(text, encoding="utf-8")
    ruleset = load_rules(rules, TemplateStore(variant_templates(tmp_path)))
    return [str(e) for e in ruleset.errors]


def test_a_rule_with_variants_loads_with_its_test(tmp_path: Path) -> None:
    rules = variant_rules(
        tmp_path, test="    variant_test: {metric: replied, min_sample: 400, then: send_winner}\n"
    )
    ruleset = load_rules(rules, TemplateStore(variant_templates(tmp_path)))
    assert ruleset.errors == []
    rule = ruleset.by_id("birthday-ab")
    assert [(v.id, v.template, v.weight) for v in rule.variants] == [
        ("warm", "birthday", 50),
        ("short", "birthday_short", 50),
    ]
    assert rule.variant_test is not None
    assert rule.variant_test.metric is VariantMetric.REPLIED
    assert rule.variant_test.min_sample == 400
    assert rule.variant_test.then is VariantThen.SEND_WINNER
    assert rule.template == "birthday"  # the first variant's


@pytest.mark.parametrize(
    ("channels", "metric"),
    [("email, sms", VariantMetric.CLICKED), ("sms, email", VariantMetric.REPLIED)],
)
def test_the_default_metric_follows_the_first_channel(
    tmp_path: Path, channels: str, metric: VariantMetric
) -> None:
    ruleset = load_rules(
        variant_rules(tmp_path, channels=channels), TemplateStore(variant_templates(tmp_path))
    )
    test = ruleset.by_id("birthday-ab").variant_test
    assert test is not None
    assert (test.metric, test.min_sample, test.then) == (metric, 100, VariantThen.REPORT)


def test_duplicate_variant_ids_are_refused_at_the_second(tmp_path: Path) -> None:
    errors = _errors(tmp_path, {"id: short": "id: warm"})
    assert any(
        e.endswith(
            "birthday-ab.yaml:13:14: variant id 'warm' is listed twice: each variant needs its own id"
        )
        for e in errors
    ), errors


def test_template_and_variants_are_one_or_the_other(tmp_path: Path) -> None:
    errors = _errors(tmp_path, {"    variants:": "    template: birthday\n    variants:"})
    assert any(
        e.endswith(
            "birthday-ab.yaml:11:15: a rule with variants takes its templates from "
            "them: remove template: (or the variants)"
        )
        for e in errors
    ), errors


@pytest.mark.parametrize("weight", ["0", "-5", "1.5", "ten"])
def test_weights_are_positive_integers(tmp_path: Path, weight: str) -> None:
    errors = _errors(tmp_path, {"weight: 50}": f"weight: {weight}}}"})
    assert errors and all("birthday-ab.yaml:12:" in e for e in errors), errors


def test_one_variant_is_not_a_test(tmp_path: Path) -> None:
    errors = _errors(tmp_path, {"      - {id: short, template: birthday_short, weight: 50}\n": ""})
    assert len(errors) == 1 and "birthday-ab.yaml:12:7: " in errors[0], errors
    assert "is too short" in errors[0]


def test_an_unknown_variant_template_is_named_at_its_place(tmp_path: Path) -> None:
    errors = _errors(tmp_path, {"template: birthday_short": "template: birthday_shrot"})
    assert any(
        "birthday-ab.yaml:13:31: unknown template 'birthday_shrot' (did you mean 'birthday_short'?)"
        in e
        for e in errors
    ), errors


def test_each_variant_template_gets_the_rules_template_checks(tmp_path: Path) -> None:
    """A variant's template is rendered with the rule's sample contexts, as the rule's own
    template is: a misspelt field in the second variant is caught at its line."""
    templates = variant_templates(tmp_path)
    (templates / "birthday_short" / "sms.en.txt").write_text(
        "Hi {{ customer.nmae }}. Reply STOP to opt out\n", encoding="utf-8"
    )
    ruleset = load_rules(variant_rules(tmp_path), TemplateStore(templates))
    errors = [str(e) for e in ruleset.errors]
    assert any(
        e.endswith(
            "birthday_short/sms.en.txt:1: undefined field customer.nmae "
            "(did you mean customer.name?)"
        )
        for e in errors
    ), errors


def test_a_variant_test_needs_variants(tmp_path: Path) -> None:
    rules = variant_rules(tmp_path, test="    variant_test: {metric: replied}\n")
    path = rules / "birthday-ab.yaml"
    text = path.read_text(encoding="utf-8")
    text = text.replace(
        "    variants:\n      - {id: warm, template: birthday, weight: 50}\n"
        "      - {id: short, template: birthday_short, weight: 50}\n",
        "    template: birthday\n",
    )
    path.write_text(text, encoding="utf-8")
    errors = [str(e) for e in load_rules(rules, TemplateStore(variant_templates(tmp_path))).errors]
    assert any(
        e.endswith(
            "birthday-ab.yaml:12:19: variant_test: compares a rule's variants, and this "
            "rule has none"
        )
        for e in errors
    ), errors


def test_clicks_are_not_a_metric_for_sms_only(tmp_path: Path) -> None:
    errors = _errors(tmp_path, channels="sms", test="    variant_test: {metric: clicked}\n")
    assert len(errors) == 1 and "birthday-ab.yaml:14:28: metric clicked counts email" in errors[0]


# -- assignment ------------------------------------------------------------------------------


def _independent(rule_id: str, customer_id: str, weights: list[int]) -> int:
    """The assignment as docs/rules.md states it, computed here on its own."""
    point = int(hashlib.sha256(f"{rule_id}|{customer_id}".encode()).hexdigest()[:16], 16)
    point %= sum(weights)
    bounds = [sum(weights[: i + 1]) for i in range(len(weights))]
    return next(i for i, b in enumerate(bounds) if point < b)


@given(
    st.text(min_size=1, max_size=20),
    st.text(min_size=1, max_size=20),
    st.lists(st.integers(min_value=1, max_value=1000), min_size=2, max_size=6),
)
def test_assignment_is_the_documented_hash(
    rule_id: str, customer_id: str, weights: list[int]
) -> None:
    assert assign(rule_id, customer_id, weights) == _independent(rule_id, customer_id, weights)


def test_assignment_is_the_same_in_another_process() -> None:
    """Not Python's hash(), which is salted per process: another interpreter (with another
    PYTHONHASHSEED) gives every customer the same variant."""
    ids = [f"C{i:05d}" for i in range(300)]
    here = [assign("birthday-ab", c, [50, 30, 20]) for c in ids]
    code = (
        "from caretouch.rules.variants import assign\n"
        f"print(''.join(str(assign('birthday-ab', c, [50, 30, 20])) for c in {ids!r}))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT / "plugins"), "PYTHONHASHSEED": "12345"},
    ).stdout.strip()
    assert other == "".join(map(str, here))
    assert len(set(here)) == 3


@pytest.mark.parametrize("weights", [[50, 50], [70, 20, 10], [1, 3], [5, 5, 5, 5]])
def test_assignment_spreads_as_the_weights_say(weights: list[int]) -> None:
    counts = Counter(assign("birthday-ab", f"C{i:06d}", weights) for i in range(10_000))
    total = sum(weights)
    for index, weight in enumerate(weights):
        expected = weight / total
        # 10,000 draws: a share's standard deviation is at most 0.005; 0.02 is 4 of them.
        assert abs(counts[index] / 10_000 - expected) < 0.02, (index, counts)


def test_a_rule_gives_a_customer_the_same_variant_every_time(tmp_path: Path) -> None:
    rule = load_rules(variant_rules(tmp_path), TemplateStore(variant_templates(tmp_path))).by_id(
        "birthday-ab"
    )
    first = [rule.variant_for(f"C{i}") for i in range(50)]
    assert first == [rule.variant_for(f"C{i}") for i in range(50)]
    assert {v.id for v in first if v is not None} == {"warm", "short"}
    # Another rule with the same variants splits the customers otherwise.
    assert [assign("other-rule", f"C{i}", [50, 50]) for i in range(50)] != [
        0 if v is not None and v.id == "warm" else 1 for v in first
    ]
