"""Provider credentials: from the environment (CLI, ``care serve``) or Airflow Connections.

The engine core never imports Airflow: ``caretouch.airflow.hooks`` builds these same objects
from the ``care_twilio`` / ``care_sendgrid`` Connections. Secrets never reach a log line: the
``repr`` of each class masks them, and errors name the missing variable, never its value.

Environment variables (SPEC section 8):

- Twilio: ``TWILIO_ACCOUNT_SID``, ``TWILIO_AUTH_TOKEN``, ``CARE_SMS_FROM`` (an E.164 number or
  a Messaging Service SID ``MG...``), optional ``CARE_TWILIO_API_BASE``.
- SendGrid: ``SENDGRID_API_KEY``, ``CARE_EMAIL_FROM``, optional ``CARE_SENDGRID_API_BASE`` and
  ``SENDGRID_WEBHOOK_PUBLIC_KEY`` (the Event Webhook's verification key, base64 DER).
- Both: ``CARE_PUBLIC_URL``, where the providers reach ``/care/hooks/...`` (status callbacks,
  unsubscribe links); ``CARE_SMS_RATE`` / ``CARE_EMAIL_RATE`` (messages per second allowed by
  the account) and ``CARE_SMS_CONCURRENCY`` / ``CARE_EMAIL_CONCURRENCY``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import ConfigurationError

TWILIO_API_BASE = "https://api.twilio.com"
SENDGRID_API_BASE = "https://api.sendgrid.com"


def _secret(value: str) -> str:
    return f"{value[:4]}…({len(value)} chars)" if value else "(empty)"


@dataclass(frozen=True)
class TwilioCredentials:
    account_sid: str
    auth_token: str
    sender: str
    api_base: str = TWILIO_API_BASE
    public_url: str | None = None
    rate_per_sec: float | None = None
    concurrency: int | None = None

    def __repr__(self) -> str:
        return (
            f"TwilioCredentials(account_sid={_secret(self.account_sid)}, "
            f"auth_token={_secret(self.auth_token)}, api_base={self.api_base!r})"
        )

    __str__ = __repr__

    @property
    def status_callback(self) -> str | None:
        """The status callback URL given to Twilio with every message, if we are reachable."""
        if not self.public_url:
            return None
        return self.public_url.rstrip("/") + "/care/hooks/twilio/status"


@dataclass(frozen=True)
class SendGridCredentials:
    api_key: str
    sender: str
    api_base: str = SENDGRID_API_BASE
    public_url: str | None = None
    webhook_public_key: str | None = None
    rate_per_sec: float | None = None
    concurrency: int | None = None

    def __repr__(self) -> str:
        return (
            f"SendGridCredentials(api_key={_secret(self.api_key)}, sender=…, "
            f"api_base={self.api_base!r})"
        )

    __str__ = __repr__

    @property
    def unsubscribe_base(self) -> str | None:
        if not self.public_url:
            return None
        return self.public_url.rstrip("/") + "/care/hooks/unsubscribe"


def _number(env: Mapping[str, str], name: str, kind: type) -> float | int | None:
    raw = env.get(name)
    if not raw:
        return None
    try:
        value = kind(raw)
    except ValueError as exc:
        raise ConfigurationError(f"${name} must be a number, not {raw!r}") from exc
    if value <= 0:
        raise ConfigurationError(f"${name} must be positive, not {raw!r}")
    return value


def _whole(env: Mapping[str, str], name: str) -> int | None:
    value = _number(env, name, int)
    return None if value is None else int(value)


def _partial(names: dict[str, str | None], provider: str) -> None:
    """Some but not all of a provider's variables set: a mistake, said plainly."""
    missing = [n for n, v in names.items() if not v]
    if missing and len(missing) < len(names):
        raise ConfigurationError(
            f"{provider} is half configured: set {', '.join('$' + m for m in missing)} "
            f"(or unset {', '.join('$' + n for n, v in names.items() if v)} to use the outbox)"
        )


def twilio_from_env(env: Mapping[str, str] | None = None) -> TwilioCredentials | None:
    """Twilio credentials from the environment; ``None`` when none are set (outbox)."""
    env = os.environ if env is None else env
    names = {
        "TWILIO_ACCOUNT_SID": env.get("TWILIO_ACCOUNT_SID"),
        "TWILIO_AUTH_TOKEN": env.get("TWILIO_AUTH_TOKEN"),
        "CARE_SMS_FROM": env.get("CARE_SMS_FROM"),
    }
    _partial(names, "Twilio")
    if not all(names.values()):
        return None
    return TwilioCredentials(
        account_sid=str(names["TWILIO_ACCOUNT_SID"]),
        auth_token=str(names["TWILIO_AUTH_TOKEN"]),
        sender=str(names["CARE_SMS_FROM"]),
        api_base=env.get("CARE_TWILIO_API_BASE") or TWILIO_API_BASE,
        public_url=env.get("CARE_PUBLIC_URL") or None,
        rate_per_sec=_number(env, "CARE_SMS_RATE", float),
        concurrency=_whole(env, "CARE_SMS_CONCURRENCY"),
    )


def sendgrid_from_env(env: Mapping[str, str] | None = None) -> SendGridCredentials | None:
    """SendGrid credentials from the environment; ``None`` when none are set (outbox)."""
    env = os.environ if env is None else env
    names = {
        "SENDGRID_API_KEY": env.get("SENDGRID_API_KEY"),
        "CARE_EMAIL_FROM": env.get("CARE_EMAIL_FROM"),
    }
    _partial(names, "SendGrid")
    if not all(names.values()):
        return None
    return SendGridCredentials(
        api_key=str(names["SENDGRID_API_KEY"]),
        sender=str(names["CARE_EMAIL_FROM"]),
        api_base=env.get("CARE_SENDGRID_API_BASE") or SENDGRID_API_BASE,
        public_url=env.get("CARE_PUBLIC_URL") or None,
        webhook_public_key=env.get("SENDGRID_WEBHOOK_PUBLIC_KEY") or None,
        rate_per_sec=_number(env, "CARE_EMAIL_RATE", float),
        concurrency=_whole(env, "CARE_EMAIL_CONCURRENCY"),
    )
