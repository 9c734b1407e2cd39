"""caretouch.config: every setting typed, checked at start, documented, and read only there."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Literal

import pytest
from click.testing import CliRunner
from pydantic import Field

from caretouch import cli
from caretouch.config import CareConfig
from caretouch.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in CareConfig.variables():
        monkeypatch.delenv(variable, raising=False)


def _problems(**environment: str) -> list[str]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        with pytest.raises(ConfigurationError) as caught:
            CareConfig.from_env()
    return str(caught.value).splitlines()


# -- defaults, overrides ------------------------------------------------------------------


def test_defaults_are_today_s() -> None:
    config = CareConfig.from_env()
    assert config.store_url == "sqlite:///care.db"
    assert (config.rules_dir, config.templates_dir) == (Path("care_rules"), Path("templates"))
    assert (config.outbox_dir, config.reports_dir) == ("outbox", "reports")  # paths or URLs
    assert config.anchor_file == "ledger-anchors.jsonl"  # a path or a URL (caretouch.storage)
    assert config.send_pool_slots == 4
    assert config.redis_url == "redis://127.0.0.1:6379/0"
    assert (config.event_stream, config.event_group) == ("care:events", "caretouch")
    assert config.anchor_key is None and config.report_email_to == ()


def test_options_beat_the_environment_which_beats_the_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CARE_STORE_URL", "sqlite:///env.db")
    monkeypatch.setenv("CARE_RULES_DIR", str(tmp_path / "env-rules"))
    monkeypatch.setenv("CARE_OUTBOX_DIR", str(tmp_path / "env-outbox"))
    config = CareConfig.from_env(store="sqlite:///option.db", outbox=tmp_path / "option-outbox")
    assert config.store_url == "sqlite:///option.db"
    assert config.outbox_dir == str(tmp_path / "option-outbox")
    assert config.rules_dir == tmp_path / "env-rules"  # no option: the environment
    assert config.templates_dir == Path("templates")  # neither: the default
    assert CareConfig.from_env(store="").store_url == "sqlite:///env.db"  # empty is unset


def test_arguments_given_win_and_the_rest_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CARE_SEND_POOL_SLOTS", "7")
    monkeypatch.setenv("CARE_STORE_URL", "sqlite:///env.db")
    config = CareConfig("sqlite:///given.db", "rules", "templates", "outbox")
    assert (config.store_url, config.rules_dir) == ("sqlite:///given.db", Path("rules"))
    assert config.send_pool_slots == 7


def test_an_empty_variable_is_an_unset_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARE_SEND_POOL_SLOTS", "")
    monkeypatch.setenv("CARE_REDIS_URL", "")
    config = CareConfig.from_env()
    assert (config.send_pool_slots, config.redis_url) == (4, "redis://127.0.0.1:6379/0")


def test_comma_separated_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARE_REPORT_EMAIL_TO", " a@example.com, ,b@example.com ")
    assert CareConfig.from_env().report_email_to == ("a@example.com", "b@example.com")


# -- one line per bad variable, naming it -------------------------------------------------


def test_bad_integer() -> None:
    assert _problems(CARE_SEND_POOL_SLOTS="x") == [
        "CARE_SEND_POOL_SLOTS: must be an integer ≥ 1, got 'x'"
    ]
    assert _problems(CARE_SMS_CONCURRENCY="0") == [
        "CARE_SMS_CONCURRENCY: must be an integer ≥ 1, got '0'"
    ]


def test_bad_number() -> None:
    assert _problems(CARE_EMAIL_RATE="fast") == [
        "CARE_EMAIL_RATE: must be a number > 0, got 'fast'"
    ]
    assert _problems(CARE_SMS_RATE="-1") == ["CARE_SMS_RATE: must be a number > 0, got '-1'"]


def test_bad_url() -> None:
    assert _problems(CARE_PUBLIC_URL="care.example.com") == [
        "CARE_PUBLIC_URL: must be an http(s) URL such as https://care.example.com, "
        "got 'care.example.com'"
    ]
    [line] = _problems(CARE_REDIS_URL="http://127.0.0.1:6379")
    assert line.startswith("CARE_REDIS_URL: must be a Redis URL")
    [line] = _problems(CARE_STORE_URL="care.db")
    assert line.startswith("CARE_STORE_URL: must be a database URL") and "'care.db'" in line


def test_bad_path(tmp_path: Path) -> None:
    a_file = tmp_path / "rules.yaml"
    a_file.write_text("", encoding="utf-8")
    assert _problems(CARE_RULES_DIR=str(a_file)) == [
        f"CARE_RULES_DIR: must be a rules directory, got '{a_file}' (it is a file)"
    ]
    folder = tmp_path / "anchors.jsonl"
    folder.mkdir()
    expect = "a local .jsonl file, or a folder URL such as s3://bucket/care"
    assert _problems(CARE_ANCHOR_FILE=str(folder)) == [
        f"CARE_ANCHOR_FILE: must be {expect}, got '{folder}' (it is a folder)"
    ]
    # Not a .jsonl: a folder of anchor objects (docs/audit.md#anchors), which a file is not.
    assert _problems(CARE_ANCHOR_FILE=str(a_file)) == [
        f"CARE_ANCHOR_FILE: must be {expect}, got '{a_file}' (it is a file)"
    ]
    assert _problems(CARE_ANCHOR_FILE="s3://bucket/anchors.jsonl", CARE_ANCHOR_KEY="k") == [
        f"CARE_ANCHOR_FILE: must be {expect}, got 's3://bucket/anchors.jsonl' (object storage "
        "cannot append to a file: give a folder URL)"
    ]


def test_a_bad_option_is_named_as_the_option(tmp_path: Path) -> None:
    folder = tmp_path / "anchors.jsonl"
    folder.mkdir()
    with pytest.raises(ConfigurationError) as caught:
        CareConfig.from_env(anchors=folder)
    assert str(caught.value) == (
        "--anchors (CARE_ANCHOR_FILE): must be a local .jsonl file, or a folder URL such as "
        f"s3://bucket/care, got '{folder}' (it is a folder)"
    )


def test_anchors_on_object_storage_need_the_key() -> None:
    """Outside development (anchors anywhere but this machine's disk) unsigned anchors could
    be forged by anyone who can write the bucket: the configuration refuses them."""
    for place in ("s3://bucket/care", "gs://bucket/care"):
        assert _problems(CARE_ANCHOR_FILE=place)[0].startswith(
            f"CARE_ANCHOR_KEY: required when the anchors are kept at {place} (CARE_ANCHOR_FILE)"
        )
    with pytest.raises(ConfigurationError, match=r"CARE_ANCHOR_KEY: required .* \(--anchors\)"):
        CareConfig.from_env(anchors="s3://bucket/care")
    assert CareConfig(anchor_file="s3://bucket/care", anchor_key="k").anchor_file == (
        "s3://bucket/care"
    )
    # Development: a local file or folder, plain or file://, only warns (docs/audit.md).
    for place in ("ledger-anchors.jsonl", "file:///tmp/care-anchors", "anchors"):
        assert CareConfig(anchor_file=place).anchor_key is None


def test_storage_options_are_a_json_object_and_never_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _problems(CARE_STORAGE_OPTIONS="[1]")[0].startswith("CARE_STORAGE_OPTIONS: must be")
    monkeypatch.setenv("CARE_STORAGE_OPTIONS", '{"endpoint_url": "http://s3", "secret": "s-42"}')
    config = CareConfig.from_env()
    assert config.storage_options() == {"endpoint_url": "http://s3", "secret": "s-42"}
    assert "s-42" not in repr(config)
    assert _problems(CARE_ANCHOR_RETENTION_DAYS="-1") == [
        "CARE_ANCHOR_RETENTION_DAYS: must be an integer ≥ 0, got '-1'"
    ]
    assert _problems(CARE_ANCHOR_LOCK_MODE="LEGAL")[0].startswith(
        "CARE_ANCHOR_LOCK_MODE: must be one of 'COMPLIANCE' or 'GOVERNANCE'"
    )


class _Choices(CareConfig):
    """No setting today is a boolean or a choice; these two show how they would be reported."""

    dry_run: bool = Field(False, validation_alias="CARE_TEST_DRY_RUN")
    mode: Literal["outbox", "live"] = Field("outbox", validation_alias="CARE_TEST_MODE")


def test_bad_boolean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARE_TEST_DRY_RUN", "maybe")
    with pytest.raises(ConfigurationError) as caught:
        _Choices()
    assert str(caught.value) == (
        "CARE_TEST_DRY_RUN: must be true or false (also 1/0, yes/no, on/off), got 'maybe'"
    )


def test_unknown_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARE_TEST_MODE", "loud")
    with pytest.raises(ConfigurationError) as caught:
        _Choices()
    assert str(caught.value) == "CARE_TEST_MODE: must be one of 'outbox' or 'live', got 'loud'"


def test_every_bad_variable_has_its_own_line() -> None:
    problems = _problems(CARE_SEND_POOL_SLOTS="x", CARE_SMS_RATE="y", CARE_PUBLIC_URL="z")
    assert sorted(p.split(":")[0] for p in problems) == [
        "CARE_PUBLIC_URL",
        "CARE_SEND_POOL_SLOTS",
        "CARE_SMS_RATE",
    ]


def test_the_cli_prints_the_error_without_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARE_SEND_POOL_SLOTS", "x")
    result = CliRunner().invoke(cli.main, ["validate"])
    assert result.exit_code != 0
    assert "configuration error: CARE_SEND_POOL_SLOTS: must be an integer ≥ 1, got 'x'" in (
        result.output
    )
    assert "Traceback" not in result.output


# -- secrets ------------------------------------------------------------------------------


def test_secrets_never_show(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "CARE_ANCHOR_KEY": "anchor-secret-123456",
        "CARE_UNSUBSCRIBE_KEY": "unsubscribe-secret-123456",
        "CARE_AUDIT_TOKENS": "alice:audit-secret-123456",
        "TWILIO_ACCOUNT_SID": "ACsecret-sid-123456",
        "TWILIO_AUTH_TOKEN": "twilio-secret-123456",
        "SENDGRID_API_KEY": "SG.sendgrid-secret-123456",
        "CARE_STORE_URL": "postgresql://care:db-secret-123456@db/care",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    config = CareConfig.from_env()
    shown = repr(config) + str(config)
    assert "secret-123456" not in shown
    assert config.anchor_key is not None
    assert config.anchor_key.get_secret_value() == "anchor-secret-123456"


# -- the documented table is the settings --------------------------------------------------


def _deploy_table() -> dict[str, list[str]]:
    text = (ROOT / "docs/deploy.md").read_text(encoding="utf-8")
    section = text.split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if not line.startswith("| `") or len(cells) != 4:
            continue
        variable = cells[0].strip("`")
        assert variable not in rows, f"{variable} is in docs/deploy.md's table twice"
        rows[variable] = cells
    return rows


def test_every_setting_is_documented_and_nothing_else() -> None:
    documented = set(_deploy_table())
    fields = set(CareConfig.variables())
    assert sorted(fields - documented) == [], "settings missing from docs/deploy.md's table"
    assert sorted(documented - fields) == [], "in docs/deploy.md's table but no setting"


@pytest.mark.parametrize("variable", sorted(CareConfig.variables()))
def test_the_table_gives_each_setting_s_description_and_default(variable: str) -> None:
    field = CareConfig.model_fields[CareConfig.variables()[variable]]
    _, default, _, what = _deploy_table()[variable]
    assert what == field.description
    if field.default not in (None, ()):
        assert f"`{field.default}`" in default


# -- only config.py reads the environment's CARE_* variables -------------------------------

_ENV_READ = re.compile(r"os\.environ|getenv|environ\.get")


def _is_env(node: ast.expr) -> bool:
    """``os.environ``, ``environ``, or a variable named like an environment (``env``...)."""
    name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")
    return "env" in name.lower()


def _reads_of_care_variables(text: str, where: str) -> list[str]:
    """Lines of ``text`` that read a CARE_* (or provider) variable from the environment."""
    found = [
        f"{where}:{number}: {line.strip()}"
        for number, line in enumerate(text.splitlines(), start=1)
        if _ENV_READ.search(line) and re.search(r"CARE_|TWILIO_|SENDGRID_", line)
    ]
    for node in ast.walk(ast.parse(text)):
        # env.get("CARE_X"), env["CARE_X"], os.getenv("CARE_X"), click's envvar="CARE_X"
        key = None
        if isinstance(node, ast.Call) and node.args and isinstance(node.func, ast.Attribute):
            if node.func.attr == "getenv" or (
                node.func.attr in ("get", "pop", "setdefault") and _is_env(node.func.value)
            ):
                key = node.args[0]
        elif isinstance(node, ast.Subscript) and _is_env(node.value):
            key = node.slice
        elif isinstance(node, ast.keyword) and node.arg in ("envvar", "auto_envvar_prefix"):
            key = node.value
        if (
            isinstance(key, ast.Constant)
            and isinstance(key.value, str)
            and re.match(r"(CARE|TWILIO|SENDGRID)_", key.value)
        ):
            found.append(f"{where}:{key.lineno}: reads {key.value}")
    return found


def test_no_module_but_config_reads_care_variables() -> None:
    sources = [*(ROOT / "plugins").rglob("*.py"), *(ROOT / "dags").rglob("*.py")]
    config = ROOT / "plugins/caretouch/config.py"
    found = [
        line
        for source in sources
        if source != config
        for line in _reads_of_care_variables(
            source.read_text(encoding="utf-8"), str(source.relative_to(ROOT))
        )
    ]
    assert found == [], "read these through caretouch.config.CareConfig:\n" + "\n".join(found)


def test_the_check_finds_every_kind_of_read() -> None:
    sample = (
        "import os\n"
        'a = os.environ.get("CARE_X")\n'
        'b = env["TWILIO_Y"]\n'
        'c = os.getenv("SENDGRID_Z")\n'
        '@click.option("--x", envvar="CARE_W")\n'
        "def f(): pass\n"
    )
    found = {line.split(":")[1] for line in _reads_of_care_variables(sample, "sample")}
    assert found == {"2", "3", "4", "5"}
