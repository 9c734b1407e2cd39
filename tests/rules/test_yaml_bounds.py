"""Every YAML file the product reads is bounded: alias expansion, nesting depth and size.

A 700-byte "billion laughs" file stands for 9**9 nodes; expanding it used to take gigabytes
and die with MemoryError. Now each bound is refused with ``file:line:col``, and a bad file
never stops the others.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from caretouch.errors import ValidationError
from caretouch.render.templates import TemplateStore
from caretouch.rules import yamlpos
from caretouch.rules.loader import load_rules
from caretouch.rules.yamlpos import load_with_positions
from conftest import RULES_DIR, TEMPLATES_DIR


def _laughs(open_: str, close: str, item: str) -> str:
    """The classic bomb: nine levels, each nine aliases of the level below."""
    lines = [f"l0: &l0 {open_}{', '.join(item.format(i=i, ref='lol') for i in range(9))}{close}"]
    for level in range(1, 9):
        refs = ", ".join(item.format(i=i, ref=f"*l{level - 1}") for i in range(9))
        lines.append(f"l{level}: &l{level} {open_}{refs}{close}")
    return "\n".join(lines) + "\n"


SEQUENCE_BOMB = _laughs("[", "]", "{ref}")
MAPPING_BOMB = _laughs("{", "}", "k{i}: {ref}")
MERGE_BOMB = (
    "a: &a {x0: lol, x1: lol, x2: lol, x3: lol, x4: lol, x5: lol, x6: lol, x7: lol, x8: lol}\n"
    + "".join(
        f"m{n}: &m{n} {{<<: [*{prev}], " + ", ".join(f"k{i}: *{prev}" for i in range(8)) + "}\n"
        for n, prev in enumerate(["a", "m0", "m1", "m2", "m3", "m4", "m5", "m6"])
    )
)
BLOCK_BOMB = "a: &a\n  - lol\n  - lol\n  - lol\n  - lol\n" + "".join(
    f"b{n}: &b{n}\n" + "".join(f"  - *{prev}\n" for _ in range(6))
    for n, prev in enumerate(["a", "b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8"])
)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        pytest.param(SEQUENCE_BOMB, 4, id="sequences"),
        pytest.param(MAPPING_BOMB, 4, id="mappings"),
        pytest.param(MERGE_BOMB, 4, id="merge-keys"),
        pytest.param(BLOCK_BOMB, None, id="block-style"),
    ],
)
def test_alias_bombs_are_refused_at_the_alias(text: str, line: int | None) -> None:
    assert len(text.encode()) < 2000
    with pytest.raises(ValidationError) as caught:
        load_with_positions(text, "bomb.yaml")
    error = caught.value
    assert "aliases expand to more than" in error.message
    assert error.location is not None and error.location.file == "bomb.yaml"
    assert error.location.col is not None  # file:line:col
    if line is not None:
        assert error.location.line == line


@pytest.mark.parametrize(
    ("text", "message", "where"),
    [
        ("a: &a [1, *a]\n", "refers to the node that contains it", (1, 11)),
        ("a: &a {b: *a}\n", "refers to the node that contains it", (1, 11)),
        ("a: &a {<<: *a}\n", "refers to the node that contains it", (1, 12)),
        ("[" * 70 + "]" * 70, f"nested more than {yamlpos.MAX_DEPTH} levels deep", (1, 65)),
        ("{a: " * 70 + "1" + "}" * 70, "nested more than", (1, 257)),
        ("".join("  " * i + f"k{i}:\n" for i in range(70)), "nested more than", (65, 129)),
        ("? [1, 2]\n: x\n", "a key must be a plain value", (1, 3)),
        ("a: &a {x: 1}\nb: {<<: 5}\n", "a merge key (<<) takes a mapping", (2, 9)),
    ],
)
def test_recursion_depth_and_odd_keys_are_refused(
    text: str, message: str, where: tuple[int, int]
) -> None:
    with pytest.raises(ValidationError) as caught:
        load_with_positions(text, "f.yaml")
    assert message in caught.value.message
    assert caught.value.location is not None
    assert (caught.value.location.line, caught.value.location.col) == where


def test_modest_aliases_and_merge_keys_work_with_positions() -> None:
    text = (
        "base: &base {channels: [sms, email], priority: 30}\n"
        "rule:\n"
        "  <<: *base\n"
        "  priority: 50\n"
        "copy: *base\n"
    )
    data, pos = load_with_positions(text, "f.yaml")
    assert data["rule"] == {"channels": ["sms", "email"], "priority": 50}
    assert data["copy"] == {"channels": ["sms", "email"], "priority": 30}
    # The rule's own key wins and keeps its position; merged keys point where they were written.
    assert str(pos.at(("rule", "priority"))) == "f.yaml:4:13"
    assert str(pos.at(("rule", "channels"))) == "f.yaml:1:24"
    assert str(pos.at(("copy",))) == "f.yaml:5:7"


def test_a_huge_file_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * yamlpos.MAX_BYTES + "\n", encoding="utf-8")
    with pytest.raises(ValidationError) as caught:
        yamlpos.read_yaml_bytes(big)
    assert str(caught.value).startswith(f"{big}:1:1: file is ")
    with pytest.raises(ValidationError, match="YAML files are limited"):
        load_with_positions(big.read_text(encoding="utf-8"), str(big))


# --- every YAML file the product reads ----------------------------------------------------


GOOD_RULE = (RULES_DIR / "birthday.yaml").read_text(encoding="utf-8")


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    d = tmp_path / "rules"
    d.mkdir()
    for name in ("policy.yaml", "events.yaml", "birthday.yaml"):
        if (RULES_DIR / name).is_file():
            shutil.copy(RULES_DIR / name, d / name)
    (d / "campaigns").mkdir()
    return d


@pytest.mark.parametrize(
    "target",
    ["bomb.yaml", "campaigns/bomb.yaml", "policy.yaml", "events.yaml"],
)
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (SEQUENCE_BOMB, "aliases expand to more than"),
        (MERGE_BOMB, "aliases expand to more than"),
        ("[" * 70 + "]" * 70, "nested more than"),
        ("# " + "x" * yamlpos.MAX_BYTES, "YAML files are limited"),
    ],
    ids=["laughs", "merge", "deep", "huge"],
)
def test_every_yaml_file_is_bounded(
    rules_dir: Path, target: str, content: str, message: str
) -> None:
    path = rules_dir / target
    path.write_text(content, encoding="utf-8")
    ruleset = load_rules(rules_dir, TemplateStore(TEMPLATES_DIR))
    mine = [e for e in ruleset.errors if e.location and e.location.file == str(path)]
    assert len(mine) == 1, [str(e) for e in ruleset.errors]
    assert message in mine[0].message
    assert mine[0].location is not None and mine[0].location.line is not None
    if target == "policy.yaml":
        assert ruleset.policy_errors == mine  # a broken policy stops planning altogether
    else:
        assert "birthday" in [r.id for r in ruleset.rules]  # the others still load
