"""Provider credentials from Airflow Connections, in the style of Airflow's provider hooks.

"Hooks" here are Airflow's (``BaseHook``: a client built from a Connection); the providers'
callbacks to us are *webhooks* (``caretouch.webhooks``, routes in ``caretouch.web.webhook_routes``).

``care_twilio``: login = Account SID, password = Auth Token, extra
``{"from": "+1..." or "MG...", "api_base": ..., "public_url": ..., "rate_per_sec": 10,
"concurrency": 4}``. ``care_sendgrid``: password = API key, extra ``{"from":
"care@example.com", "api_base": ..., "public_url": ..., "webhook_public_key": ...,
"rate_per_sec": ..., "concurrency": ...}``. Where a Connection does not exist, the
environment variables of the CLI are used; where neither is set, the outbox is.

Send tasks run in the ``care_send`` pool (``$CARE_SEND_POOL_SLOTS`` slots, default 4): at most
that many send side by side. With ``$CARE_RATE_LIMIT_URL`` they take their requests from each
account's one budget in Redis, shared with every other sender (``channels.shared_limits``);
without it, each takes its share of each provider's rate (1/slots), so together the tasks of
this pool stay within the account's limit, but nothing else is counted.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook

from ..channels.base import Transport
from ..channels.credentials import (
    SendGridCredentials,
    TwilioCredentials,
    sendgrid_from_env,
    twilio_from_env,
)
from ..channels.registry import build_transports
from ..config import CareConfig
from ..errors import ConfigurationError
from ..vocab import Channel

SEND_POOL = "care_send"


def _connection(conn_id: str) -> Any | None:
    try:
        return BaseHook.get_connection(conn_id)
    except Exception as exc:  # AirflowNotFoundException, or no Airflow context at all
        if type(exc).__name__ in ("AirflowNotFoundException", "RuntimeError", "ImportError"):
            return None
        if "not found" in str(exc).lower() or "isn't defined" in str(exc).lower():
            return None
        raise


def _number(extra: dict[str, Any], key: str, kind: type, conn_id: str) -> Any:
    if extra.get(key) in (None, ""):
        return None
    try:
        return kind(extra[key])
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"Connection {conn_id}: extra {key!r} must be a number") from exc


class TwilioHook(BaseHook):
    """Twilio credentials from the ``care_twilio`` Connection."""

    conn_name_attr = "twilio_conn_id"
    default_conn_name = "care_twilio"
    conn_type = "care_twilio"
    hook_name = "Caretouch Twilio"

    def __init__(self, twilio_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.twilio_conn_id = twilio_conn_id

    def credentials(self) -> TwilioCredentials | None:
        conn = _connection(self.twilio_conn_id)
        if conn is None:
            return None
        extra = dict(conn.extra_dejson or {})
        if not (conn.login and conn.password and extra.get("from")):
            raise ConfigurationError(
                f"Connection {self.twilio_conn_id} needs login (Account SID), password (Auth "
                "Token) and extra 'from' (the sender number or Messaging Service SID)"
            )
        config = CareConfig.from_env()
        return TwilioCredentials(
            account_sid=conn.login,
            auth_token=conn.password,
            sender=str(extra["from"]),
            api_base=extra.get("api_base") or config.twilio_api_base,
            public_url=extra.get("public_url") or config.public_url,
            rate_per_sec=_number(extra, "rate_per_sec", float, self.twilio_conn_id),
            concurrency=_number(extra, "concurrency", int, self.twilio_conn_id),
        )


class SendGridHook(BaseHook):
    """SendGrid credentials from the ``care_sendgrid`` Connection."""

    conn_name_attr = "sendgrid_conn_id"
    default_conn_name = "care_sendgrid"
    conn_type = "care_sendgrid"
    hook_name = "Caretouch SendGrid"

    def __init__(self, sendgrid_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.sendgrid_conn_id = sendgrid_conn_id

    def credentials(self) -> SendGridCredentials | None:
        conn = _connection(self.sendgrid_conn_id)
        if conn is None:
            return None
        extra = dict(conn.extra_dejson or {})
        if not (conn.password and extra.get("from")):
            raise ConfigurationError(
                f"Connection {self.sendgrid_conn_id} needs password (the API key) and extra "
                "'from' (the sender address)"
            )
        config = CareConfig.from_env()
        return SendGridCredentials(
            api_key=conn.password,
            sender=str(extra["from"]),
            api_base=extra.get("api_base") or config.sendgrid_api_base,
            public_url=extra.get("public_url") or config.public_url,
            webhook_public_key=extra.get("webhook_public_key")
            or config.sendgrid_webhook_public_key,
            rate_per_sec=_number(extra, "rate_per_sec", float, self.sendgrid_conn_id),
            concurrency=_number(extra, "concurrency", int, self.sendgrid_conn_id),
        )


def twilio_credentials() -> TwilioCredentials | None:
    """The ``care_twilio`` Connection, else the environment, else None (outbox)."""
    return TwilioHook().credentials() or twilio_from_env()


def sendgrid_credentials() -> SendGridCredentials | None:
    """The ``care_sendgrid`` Connection, else the environment, else None (outbox)."""
    return SendGridHook().credentials() or sendgrid_from_env()


# Executors that run every task on the scheduler's machine; any other spreads tasks.
LOCAL_EXECUTORS = frozenset({"LocalExecutor", "SequentialExecutor", "DebugExecutor"})


def executor_workers() -> int:
    """2 when Airflow's configured executor(s) (``[core] executor``, a comma-separated list
    in Airflow 3, e.g. ``CeleryExecutor``) may run tasks on several machines, else 1: what
    ``run.engine.check_outbox`` needs to know."""
    from airflow.configuration import conf

    names = [n.strip() for n in str(conf.get("core", "executor", fallback="")).split(",")]
    # An alias ("team:CeleryExecutor") or a module path: the class name is what counts.
    classes = {n.split(":")[-1].rsplit(".", 1)[-1] for n in names if n.strip()}
    return 2 if classes - LOCAL_EXECUTORS else 1


def task_transports(outbox_dir: Any) -> dict[Channel, Transport]:
    """The transports of one send task: real providers where configured, each provider's
    rate the account's budget shared in Redis (``$CARE_RATE_LIMIT_URL``), else split between
    the ``care_send`` pool's slots."""
    config = CareConfig.from_env()
    return build_transports(
        outbox_dir,
        twilio=twilio_credentials(),
        sendgrid=sendgrid_credentials(),
        share=config.send_pool_slots,
        rate_limit_url=config.rate_limit_url,
    )
