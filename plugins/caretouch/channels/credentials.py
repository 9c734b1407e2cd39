"""Provider credentials: from the environment (CLI, ``care serve``) or Airflow Connections.

The engine core never imports Airflow: ``caretouch.airflow.hooks`` builds these same objects
from the ``care_twilio`` / ``care_sendgrid`` Connections. Secrets never reach a log line: the
``repr`` of each class masks them, and errors name the missing variable, never its value.

Environment variables (SPEC section 8), read through ``caretouch.config.CareConfig``, which
checks the numbers and URLs:

- Twilio: ``TWILIO_ACCOUNT_SID``, ``TWILIO_AUTH_TOKEN``, ``CARE_SMS_FROM`` (an E.164 number or
  a Messaging Service SID ``MG...``), optional ``CARE_TWILIO_API_BASE``.
- SendGrid: ``SENDGRID_API_KEY``, ``CARE_EMAIL_FROM``, optional ``CARE_SENDGRID_API_BASE`` and
  ``SENDGRID_WEBHOOK_PUBLIC_KEY`` (the Event Webhook's verification key, base64 DER).
- Both: ``CARE_PUBLIC_URL``, where the providers reach ``/care/hooks/...`` (status callbacks,
  unsubscribe links); ``CARE_SMS_RATE`` / ``CARE_EMAIL_RATE`` (messages per second allowed by
  the account) and ``CARE_SMS_CONCURRENCY`` / ``CARE_EMAIL_CONCURRENCY``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import SENDGRID_API_BASE, TWILIO_API_BASE, CareConfig
from ..errors import ConfigurationError


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


def _partial(names: dict[str, str | None], provider: str) -> None:
    """Some but not all of a provider's variables set: a mistake, said plainly."""
    missing = [n for n, v in names.items() if not v]
    if missing and len(missing) < len(names):
        raise ConfigurationError(
            f"{provider} is half configured: set {', '.join('$' + m for m in missing)} "
            f"(or unset {', '.join('$' + n for n, v in names.items() if v)} to use the outbox)"
        )


def _plain(value: object) -> str | None:
    if value is None:
        return None
    return value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)


def twilio_from_env(config: CareConfig | None = None) -> TwilioCredentials | None:
    """Twilio credentials from the environment (``config``, else ``CareConfig.from_env()``);
    ``None`` when none are set (outbox)."""
    config = config or CareConfig.from_env()
    names = {
        "TWILIO_ACCOUNT_SID": _plain(config.twilio_account_sid),
        "TWILIO_AUTH_TOKEN": _plain(config.twilio_auth_token),
        "CARE_SMS_FROM": config.sms_from,
    }
    _partial(names, "Twilio")
    if not all(names.values()):
        return None
    return TwilioCredentials(
        account_sid=str(names["TWILIO_ACCOUNT_SID"]),
        auth_token=str(names["TWILIO_AUTH_TOKEN"]),
        sender=str(names["CARE_SMS_FROM"]),
        api_base=config.twilio_api_base,
        public_url=config.public_url,
        rate_per_sec=config.sms_rate,
        concurrency=config.sms_concurrency,
    )


def sendgrid_from_env(config: CareConfig | None = None) -> SendGridCredentials | None:
    """SendGrid credentials from the environment (``config``, else ``CareConfig.from_env()``);
    ``None`` when none are set (outbox)."""
    config = config or CareConfig.from_env()
    names = {
        "SENDGRID_API_KEY": _plain(config.sendgrid_api_key),
        "CARE_EMAIL_FROM": config.email_from,
    }
    _partial(names, "SendGrid")
    if not all(names.values()):
        return None
    return SendGridCredentials(
        api_key=str(names["SENDGRID_API_KEY"]),
        sender=str(names["CARE_EMAIL_FROM"]),
        api_base=config.sendgrid_api_base,
        public_url=config.public_url,
        webhook_public_key=config.sendgrid_webhook_public_key,
        rate_per_sec=config.email_rate,
        concurrency=config.email_concurrency,
    )
