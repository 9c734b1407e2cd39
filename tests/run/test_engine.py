"""The engine is assembled in one place (``run.engine.open_engine``) and never patched after."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from pathlib import Path

import pytest

from caretouch.config import CareConfig
from caretouch.errors import ConfigurationError, ValidationFailed
from caretouch.run.engine import open_engine
from caretouch.store.db import Store
from caretouch.vocab import Channel
from conftest import RULES_DIR, TEMPLATES_DIR, utc


def config_for(store: Store, tmp_path: Path, rules: Path = RULES_DIR) -> CareConfig:
    return CareConfig(store.url, rules, TEMPLATES_DIR, tmp_path / "outbox")


def test_open_engine_assembles_rules_templates_store_and_channels(
    sqlite_store: Store, tmp_path: Path
) -> None:
    clock = lambda: utc(2026, 11, 23, 12)  # noqa: E731
    engine = open_engine(config_for(sqlite_store, tmp_path), store=sqlite_store, clock=clock)
    assert engine.store is sqlite_store
    assert engine.ruleset.rules and engine.ruleset.errors == []
    assert engine.policy is engine.ruleset.policy
    assert set(engine.transports) == set(Channel)  # the outbox without provider credentials
    assert engine.stamp(dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)) == clock()


def test_an_engine_is_not_patched_after_assembly(sqlite_store: Store, tmp_path: Path) -> None:
    engine = open_engine(config_for(sqlite_store, tmp_path), store=sqlite_store)
    with pytest.raises(dataclasses.FrozenInstanceError):
        engine.clock = lambda: utc(2026, 11, 23, 12)  # type: ignore[misc]


def test_open_engine_refuses_a_missing_rules_directory(sqlite_store: Store, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="rules directory not found"):
        open_engine(config_for(sqlite_store, tmp_path, tmp_path / "nowhere"), store=sqlite_store)


def test_open_engine_refuses_a_broken_contact_policy(sqlite_store: Store, tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    (rules / "policy.yaml").write_text("caps: {per_day: -1}\n", encoding="utf-8")
    with pytest.raises(ValidationFailed):
        open_engine(config_for(sqlite_store, tmp_path, rules), store=sqlite_store)


def test_open_engine_checks_the_store_is_initialised(tmp_path: Path) -> None:
    config = CareConfig(
        f"sqlite:///{tmp_path / 'missing.db'}", RULES_DIR, TEMPLATES_DIR, tmp_path / "outbox"
    )
    with pytest.raises(ConfigurationError, match="care store init"):
        open_engine(config)


# -- the outbox with several workers (docs/deploy.md#the-outbox-with-several-workers) --------


@pytest.mark.parametrize(
    ("workers", "variables", "refused"),
    [
        (1, {}, False),  # one machine: its own folder is the only one
        (2, {}, True),  # the Airflow glue says the executor spreads tasks
        (1, {"CARE_WORKERS": "3"}, True),
        (2, {"CARE_OUTBOX_SHARED": "true"}, False),  # the operator vouches for the folder
        (1, {"CARE_WORKERS": "3", "CARE_OUTBOX_SHARED": "true"}, False),
    ],
)
def test_the_outbox_refuses_several_workers_unless_its_folder_is_shared(
    sqlite_store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    workers: int,
    variables: dict[str, str],
    refused: bool,
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    config = config_for(sqlite_store, tmp_path)
    if not refused:
        open_engine(config, store=sqlite_store, workers=workers)
        return
    with pytest.raises(ConfigurationError, match="CARE_OUTBOX_SHARED") as caught:
        open_engine(config, store=sqlite_store, workers=workers)
    assert "crash recovery on another worker would not find a message" in str(caught.value)
    assert "email/sms channel(s)" in str(caught.value)


def test_an_outbox_behind_a_url_is_shared_by_every_worker(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARE_WORKERS", "3")
    config = CareConfig(sqlite_store.url, RULES_DIR, TEMPLATES_DIR, "s3://bucket/care/outbox")
    engine = open_engine(config, store=sqlite_store, workers=2)  # no CARE_OUTBOX_SHARED
    assert engine.transports[Channel.SMS].name == "outbox"


def test_providers_need_no_shared_outbox(sqlite_store: Store, tmp_path: Path) -> None:
    """Twilio and SendGrid answer crash recovery themselves: the rule is the outbox's."""

    class Provider:
        name = "twilio"

    transports = {ch: Provider() for ch in Channel}
    open_engine(
        config_for(sqlite_store, tmp_path),
        store=sqlite_store,
        transports=transports,  # type: ignore[arg-type]
        workers=2,
    )
