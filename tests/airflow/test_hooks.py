"""Provider credentials from Airflow Connections (``care_twilio``, ``care_sendgrid``)."""

from __future__ import annotations

import json

import pytest

import airflow_env  # noqa: F401  (before Airflow is imported)
from caretouch.airflow.hooks import (
    SendGridHook,
    TwilioHook,
    executor_workers,
    sendgrid_credentials,
    task_transports,
    twilio_credentials,
)
from caretouch.channels.sendgrid import SendGridTransport
from caretouch.channels.shared_limits import SharedRateLimiter
from caretouch.channels.twilio import TwilioTransport
from caretouch.errors import ConfigurationError
from caretouch.vocab import Channel

PROVIDER_VARS = (
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "CARE_SMS_FROM",
    "SENDGRID_API_KEY",
    "CARE_EMAIL_FROM",
    "CARE_PUBLIC_URL",
    "AIRFLOW_CONN_CARE_TWILIO",
    "AIRFLOW_CONN_CARE_SENDGRID",
    "CARE_SEND_POOL_SLOTS",
    "CARE_RATE_LIMIT_URL",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROVIDER_VARS:
        monkeypatch.delenv(name, raising=False)


def connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: object) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))


def test_no_connection_and_no_environment_means_outbox(tmp_path) -> None:
    assert twilio_credentials() is None
    assert sendgrid_credentials() is None
    transports = task_transports(tmp_path)
    # Every message channel writes to the outbox; a task is assigned in the ledger.
    assert {c: type(t).__name__ for c, t in transports.items()} == {
        Channel.SMS: "OutboxTransport",
        Channel.EMAIL: "OutboxTransport",
        Channel.AGENT_TASK: "AgentTaskTransport",
    }


def test_twilio_connection_gives_credentials_and_hides_the_token(monkeypatch) -> None:
    connection(
        monkeypatch,
        "care_twilio",
        conn_type="care_twilio",
        login="AC" + "1" * 32,
        password="very-secret-auth-token",
        extra={"from": "+15005550006", "rate_per_sec": 30, "concurrency": 6},
    )
    creds = TwilioHook().credentials()
    assert creds is not None
    assert (creds.account_sid, creds.sender, creds.rate_per_sec, creds.concurrency) == (
        "AC" + "1" * 32,
        "+15005550006",
        30.0,
        6,
    )
    assert "very-secret-auth-token" not in repr(creds) + str(creds)


def test_connection_wins_over_environment(monkeypatch) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "ACenv")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "envtoken")
    monkeypatch.setenv("CARE_SMS_FROM", "+15550000000")
    assert twilio_credentials().account_sid == "ACenv"  # type: ignore[union-attr]
    connection(
        monkeypatch,
        "care_twilio",
        conn_type="care_twilio",
        login="ACconn",
        password="conntoken",
        extra={"from": "+15005550006"},
    )
    assert twilio_credentials().account_sid == "ACconn"  # type: ignore[union-attr]


def test_incomplete_connections_are_configuration_errors(monkeypatch) -> None:
    connection(monkeypatch, "care_twilio", conn_type="care_twilio", login="AC1", password="t")
    with pytest.raises(ConfigurationError, match="extra 'from'"):
        TwilioHook().credentials()
    connection(monkeypatch, "care_sendgrid", conn_type="care_sendgrid", extra={"from": "a@b.c"})
    with pytest.raises(ConfigurationError, match="password"):
        SendGridHook().credentials()


@pytest.mark.parametrize("shared", [False, True])
def test_send_tasks_share_each_providers_rate_by_pool_slots_or_in_redis(
    monkeypatch, tmp_path, shared: bool
) -> None:
    """Without CARE_RATE_LIMIT_URL each task takes 1/slots of each rate; with it, each takes
    the account's whole budget, shared in Redis with every other sender."""
    monkeypatch.setenv("CARE_SEND_POOL_SLOTS", "4")
    if shared:  # building the limiter does not connect: no Redis needed here
        monkeypatch.setenv("CARE_RATE_LIMIT_URL", "redis://:pw@127.0.0.1:6379/5")
    monkeypatch.setenv("CARE_UNSUBSCRIBE_KEY", "k" * 32)
    connection(
        monkeypatch,
        "care_twilio",
        conn_type="care_twilio",
        login="AC1",
        password="t",
        extra={"from": "+15005550006", "rate_per_sec": 40},
    )
    connection(
        monkeypatch,
        "care_sendgrid",
        conn_type="care_sendgrid",
        password="SG.key",
        extra={"from": "care@example.com", "public_url": "https://care.example", "rate_per_sec": 8},
    )
    transports = task_transports(tmp_path)
    sms, email = transports[Channel.SMS], transports[Channel.EMAIL]
    assert isinstance(sms, TwilioTransport) and isinstance(email, SendGridTransport)
    if not shared:
        assert (sms.rate, email.rate) == (10.0, 2.0)
        assert not (sms.shared_limiter or email.shared_limiter)
        return
    assert (sms.rate, email.rate) == (40.0, 8.0)
    assert isinstance(sms.limiter, SharedRateLimiter)
    assert isinstance(email.limiter, SharedRateLimiter)
    assert (sms.limiter.window_amount, email.limiter.window_amount) == (40, 8)
    assert sms.limiter.account != email.limiter.account
    assert sms.limiter.url == "redis://:***@127.0.0.1:6379/5"


@pytest.mark.parametrize(
    ("executor", "workers"),
    [
        ("LocalExecutor", 1),
        ("SequentialExecutor", 1),
        ("CeleryExecutor", 2),
        ("KubernetesExecutor", 2),
        ("LocalExecutor,CeleryExecutor", 2),  # Airflow 3: several executors
        ("airflow.providers.edge3.executors.EdgeExecutor", 2),
        ("fast:airflow.executors.local_executor.LocalExecutor", 1),  # an alias
    ],
)
def test_the_executor_says_whether_tasks_run_on_several_machines(
    monkeypatch: pytest.MonkeyPatch, executor: str, workers: int
) -> None:
    """What ``run.engine.check_outbox`` is told (the outbox needs a shared folder then)."""
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", executor)
    assert executor_workers() == workers
