"""The pytest plugin of ``care test``: every rule fixture file (``<rules>/tests/*.yaml``,
beside a ``policy.yaml``) is collected as a module, each of its tests as one test item, so
that a project's suite runs its rule fixtures with its other tests.

Installed with Caretouch (the ``pytest11`` entry point ``caretouch``); point pytest at the
folder (``pytest care_rules/tests``) or list it in ``testpaths``. The templates are the
``templates`` folder beside the rules directory, else ``$CARE_TEMPLATES_DIR``'s;
``--care-update-snapshots`` writes snapshots as ``care test --update-snapshots`` does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .fixtures import FIXTURE_DIR, Case

_RUNNERS = pytest.StashKey[dict[Path, Any]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("caretouch", "Caretouch rule fixtures (care test)")
    group.addoption(
        "--care-update-snapshots",
        action="store_true",
        default=False,
        help="Write the snapshots of rule fixtures from what renders now.",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_RUNNERS] = {}


def pytest_unconfigure(config: pytest.Config) -> None:
    for runner in config.stash.get(_RUNNERS, {}).values():
        runner.close()


def is_fixture_file(path: Path) -> bool:
    """A YAML file in a ``tests`` folder of a rules directory (one with a policy.yaml)."""
    return (
        path.suffix in (".yaml", ".yml")
        and path.parent.name == FIXTURE_DIR
        and (path.parent.parent / "policy.yaml").is_file()
    )


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if is_fixture_file(file_path):
        return RuleFixtureFile.from_parent(parent, path=file_path)
    return None


def _runner(config: pytest.Config, rules_dir: Path) -> Any:
    """One runner per rules directory and session: its rules and templates loaded once."""
    from ..config import CareConfig
    from ..render.templates import TemplateStore
    from ..rules.loader import load_rules
    from .runner import FixtureRunner

    runners = config.stash[_RUNNERS]
    if rules_dir not in runners:
        beside = rules_dir.parent / "templates"
        overrides: dict[str, Any] = {"rules": rules_dir}
        if beside.is_dir():
            overrides["templates"] = beside
        care = CareConfig.from_env(**overrides)
        templates = TemplateStore(care.templates_dir)
        ruleset = load_rules(care.rules_dir, templates)
        runners[rules_dir] = FixtureRunner(
            care,
            ruleset,
            templates,
            update_snapshots=bool(config.getoption("care_update_snapshots")),
        )
    return runners[rules_dir]


class RuleFixtureFailed(Exception):
    """A rule fixture's failures (or its file's errors), one per line."""


class RuleFixtureFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        runner = _runner(self.config, self.path.parent.parent.resolve())
        cases, errors = runner.load(self.path)
        if errors:
            yield FixtureFileErrors.from_parent(self, name="fixture file", errors=errors)
        for case in cases:
            yield RuleFixtureItem.from_parent(self, name=case.name, case=case)


class FixtureFileErrors(pytest.Item):
    """The errors of a fixture file (each ``file:line:col``): a failing item of their own,
    so that a broken test is never silently left out."""

    def __init__(self, *, errors: list[Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.errors = errors

    def runtest(self) -> None:
        raise RuleFixtureFailed("\n".join(str(e) for e in self.errors))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, RuleFixtureFailed):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, 0, f"care test: errors in {self.path.name}"


class RuleFixtureItem(pytest.Item):
    def __init__(self, *, case: Case, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case

    def runtest(self) -> None:
        from .runner import Results

        runner = _runner(self.config, self.path.parent.parent.resolve())
        results = Results()
        runner.run_case(self.case, results)
        problems = [str(e) for e in results.errors] + [str(f) for f in results.failures]
        if problems:
            raise RuleFixtureFailed("\n".join(problems))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, RuleFixtureFailed):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        line = (self.case.where.line or 1) - 1
        return self.path, line, f"care test: {self.case.name}"
