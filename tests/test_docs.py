"""The documentation against the code, where a machine can tell that they disagree.

Checked: the reason words, statuses, channel outcomes and dead-letter reasons listed in the
docs are exactly the enums of ``caretouch.vocab``; every ``care ...`` command line in README.md
and docs/ names commands and options that exist, and README's command table lists every
command and every option; the exit statuses; every environment variable the engine reads is
in docs/deploy.md's table, and the table names none it does not read; no "not built yet"
phrase except on the lines listed below as still true.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from caretouch.cli import common
from caretouch.cli import root as cli
from caretouch.vocab import DeadLetterReason, Outcome, SuppressionReason, TouchStatus

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench/README.md"]

# Lines that say something is not built (yet), or use words that usually do: each must still
# be true. (file, text on the line) -> why it stays.
STILL_TRUE = {
    # Its items: no scheduled erase-content; no command re-sends a failed or unknown touch.
    ("docs/ledger.md", "## Not built yet"): "the list under it is still true",
    ("docs/rules.md", "cannot be written yet"): "no trigger counts days before an anniversary",
    ("docs/rules.md", "2027 has no data yet"): "chinese-calendar has no 2027 schedule",
    ("docs/scale.md", "Not built: today they are plain tables"): "the ledger is not partitioned",
}
# The same words in another sense (not about what is built).
OTHER_SENSE = (
    "not yet sent",
    "not yet attempted",
    "not yet recorded",
    "not planned yet",
    "the first version stays",
    "touches sent so far",
    "the later `sent`",
)
NOT_BUILT = re.compile(
    r"not built|\byet\b|later work|later version|first version|never run|been run"
    r"|at the moment|so far\b|\bfor now\b|\blater `",
    re.IGNORECASE,
)


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _section(path: Path, heading: str) -> str:
    """The text under ``heading`` (a whole line, e.g. ``## Commands``) up to the next heading
    of the same or a higher level."""
    lines = path.read_text(encoding="utf-8").splitlines()
    level = len(heading) - len(heading.lstrip("#"))
    try:
        start = lines.index(heading) + 1
    except ValueError:
        pytest.fail(f"{_rel(path)}: no heading {heading!r}")
    end = len(lines)
    for number in range(start, len(lines)):
        match = re.match(r"(#+) ", lines[number])
        if match and len(match.group(1)) <= level:
            end = number
            break
    return "\n".join(lines[start:end])


def _first_cells(text: str) -> list[str]:
    """The first cell of every body row of the markdown tables in ``text``."""
    cells = []
    for line in text.splitlines():
        if not line.startswith("|") or re.match(r"\|\s*-", line):
            continue
        cells.append(re.split(r"(?<!\\)\|", line)[1].strip())
    return cells[1:] if cells else cells  # the header row


def _words(cell: str) -> set[str]:
    return set(re.findall(r"`([^`]+)`", cell))


def _table_words(path: Path, heading: str, table: int = 0) -> set[str]:
    """Backticked words of the first column of the ``table``-th table under ``heading``."""
    tables: list[list[str]] = []
    previous = ""
    for line in _section(path, heading).splitlines():
        if line.startswith("|"):
            if not previous.startswith("|"):
                tables.append([])
            tables[-1].append(line)
        previous = line
    words: set[str] = set()
    for cell in _first_cells("\n".join(tables[table])):
        words |= _words(cell)
    return words


# -- closed vocabularies ------------------------------------------------------------------


def test_readme_lists_every_reason_word_and_no_other() -> None:
    section = _section(ROOT / "README.md", "## The contact policy (for operations)")
    listed = re.findall(r"^- `([a-z_]+)`", section, re.MULTILINE)
    assert sorted(listed) == sorted(r.value for r in SuppressionReason)


def test_rules_md_reason_table_is_the_enum() -> None:
    words = _table_words(ROOT / "docs/rules.md", "## Reasons you will see")
    assert words == {r.value for r in SuppressionReason}


def test_ledger_md_status_table_is_the_enum() -> None:
    words = _table_words(ROOT / "docs/ledger.md", "## Status history")
    assert words == {s.value for s in TouchStatus}


def test_audit_md_status_filter_list_is_the_enum() -> None:
    text = _section(ROOT / "docs/audit.md", "## Commands")
    match = re.search(r"a status that is not one of (.*?), or a channel", text, re.DOTALL)
    assert match, "docs/audit.md: the sentence listing the statuses a filter accepts is gone"
    assert set(re.findall(r"`([a-z_]+)`", match.group(1))) == {s.value for s in TouchStatus}


def test_channels_md_outcome_table_is_the_enum() -> None:
    words = _table_words(ROOT / "docs/channels.md", "## What happens to each message")
    assert words == {o.value for o in Outcome}


def test_events_md_dead_letter_reasons_are_the_enum() -> None:
    words = _table_words(ROOT / "docs/events.md", "### Dead-letter reasons")
    assert words == {r.value for r in DeadLetterReason}


def test_readme_exit_statuses_are_the_clis() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"Exit statuses: (.*?)\.?\n\n", text, re.DOTALL)
    assert match, "README.md: no 'Exit statuses:' paragraph"
    listed = [int(n) for n in re.findall(r"(?:^|, )(\d) ", match.group(1))]
    assert listed == [common.EXIT_OK, common.EXIT_INVALID, common.EXIT_USAGE, common.EXIT_PARTIAL]


# -- commands and options -----------------------------------------------------------------


def _leaves(command: click.Command, path: tuple[str, ...] = ("care",)) -> dict:
    if isinstance(command, click.Group):
        found: dict = {}
        for name, sub in command.commands.items():
            found.update(_leaves(sub, (*path, name)))
        return found
    return {" ".join(path): command}


LEAVES = _leaves(cli.main)


def _options(command: click.Command) -> dict[str, bool]:
    """Option name -> takes a value."""
    found = {}
    for param in command.params:
        if isinstance(param, click.Option):
            for name in [*param.opts, *param.secondary_opts]:
                found[name] = not param.is_flag and not param.count
    return {**found, "--help": False, "-h": False}


GLOBAL = _options(cli.main)


def _command_lines(path: Path) -> list[tuple[int, str]]:
    """``care ...`` as written in the doc: inline code spans, and lines of code blocks."""
    found = []
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"\\\n\s*", " ", text)  # shell line continuations
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            stripped = re.sub(r"^\$ ", "", line.strip())
            if stripped.startswith("care "):
                found.append((number, stripped.split("  #")[0]))
            continue
        for span in re.findall(r"`(care [^`]+)`", line):
            found.append((number, span))
    return found


def _resolve(words: list[str]) -> tuple[list[str], list[str]]:
    """(leaf command paths, problems) for the words after ``care``."""
    problems: list[str] = []
    paths = [("care", cli.main, [])]  # (path, command, options seen)
    index = 0
    while index < len(words):
        word = words[index].strip("[]()")
        index += 1
        if not word or word in ("...", "…"):
            continue
        if word.startswith("-"):
            takes = None
            for name in word.split("=")[0].split("|"):  # --policy|--campaign: alternatives
                for _, command, seen in paths:
                    options = {**GLOBAL, **_options(command)}
                    if name in options:
                        takes = options[name]
                    seen.append(name)
            if takes and "=" not in word:
                index += 1
            continue
        nxt = []
        for path, command, seen in paths:
            if not isinstance(command, click.Group):
                nxt.append((path, command, seen))  # an argument
                continue
            for alternative in word.replace("\\|", "|").split("|"):
                sub = command.commands.get(alternative)
                if sub is None:
                    problems.append(f"no command '{path} {alternative}'")
                else:
                    nxt.append((f"{path} {alternative}", sub, list(seen)))
        paths = nxt
    leaves = []
    for path, command, seen in paths:
        if isinstance(command, click.Group):
            continue  # a group named on its own (`care audit`)
        leaves.append(path)
        known = {**GLOBAL, **_options(command)}
        problems += [f"'{path}' has no option {o}" for o in seen if o not in known]
    return leaves, problems


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line.replace("\\|", "|"))
    except ValueError:
        return line.split()


@pytest.mark.parametrize("path", DOC_FILES, ids=_rel)
def test_every_care_command_in_the_docs_exists(path: Path) -> None:
    problems = []
    for number, line in _command_lines(path):
        _, found = _resolve(_split(line)[1:])
        problems += [f"{_rel(path)}:{number}: {p} (in `{line}`)" for p in found]
    assert not problems, "\n".join(problems)


def _readme_table() -> dict[str, list[str]]:
    """README's command table: leaf command -> the synopses naming it."""
    section = _section(ROOT / "README.md", "## Commands")
    table: dict[str, list[str]] = {}
    for cell in _first_cells(section):
        for synopsis in re.findall(r"`(care [^`]+)`", cell):
            leaves, problems = _resolve(_split(synopsis)[1:])
            assert not problems, problems
            for leaf in leaves:
                table.setdefault(leaf, []).append(synopsis)
    return table


def test_readme_command_table_lists_every_command() -> None:
    assert sorted(_readme_table()) == sorted(LEAVES)


def test_readme_command_table_lists_every_option() -> None:
    missing = []
    for leaf, synopses in _readme_table().items():
        written = set(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", " ".join(synopses)))
        for param in LEAVES[leaf].params:
            if (
                isinstance(param, click.Option)
                and not param.hidden
                and not set(param.opts) & written
            ):
                missing.append(f"{leaf} {param.opts[-1]}")
    assert not missing, f"README's command table does not show: {missing}"


def test_readme_names_every_global_option() -> None:
    section = _section(ROOT / "README.md", "## Commands")
    missing = [
        p.opts[-1]
        for p in cli.main.params
        if isinstance(p, click.Option) and not any(f"`{o}" in section for o in p.opts)
    ]
    assert not missing, f"README's Commands section does not name: {missing}"


# -- environment variables ----------------------------------------------------------------


def _variables_read() -> set[str]:
    # Every variable is a field of CareConfig; nothing else reads one (tests/test_config.py).
    from caretouch.config import CareConfig

    return set(CareConfig.variables())


def test_deploy_md_env_table_is_what_the_engine_reads() -> None:
    words = _table_words(ROOT / "docs/deploy.md", "## Environment variables")
    documented = {w for w in words if re.fullmatch(r"[A-Z][A-Z0-9_]+", w)}
    read = _variables_read()
    assert sorted(read - documented) == [], "read by plugins/ but not in docs/deploy.md's table"
    assert sorted(documented - read) == [], "in docs/deploy.md's table but read nowhere"


@pytest.mark.parametrize("path", [*DOC_FILES, ROOT / "docker-compose.yml"], ids=_rel)
def test_docs_name_no_unknown_variable(path: Path) -> None:
    read = _variables_read()
    named = set(re.findall(r"\bCARE_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(encoding="utf-8")))
    assert sorted(named - read - {"CARE_TEST_PG_URL"}) == []


# -- "not built yet" ----------------------------------------------------------------------


def test_no_not_built_yet_claim_but_those_still_true() -> None:
    unexplained, used = [], set()
    for path in [*DOC_FILES, ROOT / "docker-compose.yml"]:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not NOT_BUILT.search(line) or any(s in line for s in OTHER_SENSE):
                continue
            keys = [k for k in STILL_TRUE if k[0] == _rel(path) and k[1] in line]
            if keys:
                used.update(keys)
            else:
                unexplained.append(f"{_rel(path)}:{number}: {line.strip()}")
    assert not unexplained, "true? then add it to STILL_TRUE:\n" + "\n".join(unexplained)
    assert set(STILL_TRUE) == used, (
        f"STILL_TRUE lines no longer in the docs: {set(STILL_TRUE) - used}"
    )
