"""Email through SendGrid's v3 Mail Send API, with the official ``sendgrid`` SDK.

- Payload: one personalization (the customer), the subject, a ``text/plain`` part and, when
  the template has one, a ``text/html`` part; ``custom_args`` carry our attempt id and touch
  key, which SendGrid echoes in every Event Webhook event; the message's ``headers`` as they
  are. ``care`` and ``marketing`` emails come with their unsubscribe link (in both parts) and
  the ``List-Unsubscribe`` / ``List-Unsubscribe-Post`` headers (RFC 8058 one-click) already
  in them: the sender puts them there (``render.unsubscribe``), pointing at this transport's
  ``unsubscribe_base``; SendGrid without a public URL (``$CARE_PUBLIC_URL``) is a
  configuration error.
- Answers: 202 is ``sent`` with the ``X-Message-Id``; 429 and 5xx are retryable (honouring
  ``Retry-After`` or ``X-RateLimit-Reset``); a 400 naming the recipient is
  ``rejected-invalid-recipient``, any other 4xx a permanent failure; 401/403 stop the run.
- SendGrid offers no way to ask whether it took a message, so a timeout or a dropped
  connection after the request went out makes the touch ``unknown`` (for review), unless
  the message allows resending (``resend_unknown`` on the rule).
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import urllib.error
from typing import Any, ClassVar

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import (
    Content,
    CustomArg,
    Email,
    Header,
    Mail,
    Personalization,
    To,
)

from ..errors import ConfigurationError
from ..mask import scrub
from ..vocab import Channel, Outcome
from .base import OutboundMessage, SendResult
from .credentials import SendGridCredentials
from .limits import parse_retry_after
from .provider import ProviderTransport
from .shared_limits import account_key

# python_http_client logs each request's payload (addresses) and headers (the API key) at
# DEBUG: never let that through, whatever level the application runs at.
logging.getLogger("python_http_client.client").setLevel(logging.WARNING)


class SendGridTransport(ProviderTransport[SendGridCredentials, SendGridAPIClient]):
    name: ClassVar[str] = "sendgrid"
    serves: ClassVar[Channel] = Channel.EMAIL
    max_body: ClassVar[int] = 1_000_000
    rate_per_sec: ClassVar[float] = 10.0
    concurrency: ClassVar[int] = 4

    def __init__(
        self,
        credentials: SendGridCredentials,
        *,
        timeout: float = 20.0,
        **limits: Any,
    ) -> None:
        super().__init__(credentials, timeout=timeout, **limits)
        if not credentials.unsubscribe_base:
            raise ConfigurationError(
                "SendGrid needs $CARE_PUBLIC_URL (where customers reach /care/hooks/unsubscribe): "
                "care and marketing emails must carry an unsubscribe link"
            )
        self.unsubscribe_base = credentials.unsubscribe_base

    def account(self) -> str:
        """The API key's id (``SG.<id>.<secret>``; the whole key, hashed, if it has no id):
        every process sending with that key shares its budget."""
        parts = self.credentials.api_key.split(".")
        key_id = parts[1] if len(parts) == 3 and parts[0] == "SG" and parts[1] else None
        return account_key(self.name, key_id or self.credentials.api_key)

    def new_client(self) -> SendGridAPIClient:
        client = SendGridAPIClient(
            self.credentials.api_key, host=self.credentials.api_base.rstrip("/")
        )
        client.client.timeout = self.timeout
        return client

    # -- the three steps ---------------------------------------------------------------

    def build_payload(self, message: OutboundMessage) -> dict[str, Any]:
        text, html = message.body, message.html
        mail = Mail()
        mail.from_email = Email(self.credentials.sender)
        mail.subject = message.subject or ""
        person = Personalization()
        person.add_to(To(message.recipient))
        mail.add_personalization(person)
        mail.add_content(Content("text/plain", text))
        if html:
            mail.add_content(Content("text/html", html))
        args = {"care_touch": message.touch_key}
        if message.attempt_id is not None:
            args["care_attempt"] = str(message.attempt_id)
        for key, value in args.items():
            # Per personalization: the contract types the top-level ``custom_args`` as a
            # string (Prism refuses an object there); SendGrid echoes both in its events.
            person.add_custom_arg(CustomArg(key, value))
        for name, value in message.headers.items():
            mail.add_header(Header(name, value))
        return mail.get()

    def post(self, payload: dict[str, Any]) -> Any:
        return self.client().send(payload)

    def parse_result(self, raw: Any) -> SendResult:
        status = int(getattr(raw, "status_code", 0))
        headers = {k.lower(): v for k, v in dict(getattr(raw, "headers", {}) or {}).items()}
        message_id = headers.get("x-message-id")
        if 200 <= status < 300:
            return SendResult(
                Outcome.SENT, provider_message_id=message_id, provider_raw={"status": status}
            )
        return SendResult(Outcome.UNKNOWN, detail=f"SendGrid answered {status}")

    def parse_error(self, exc: Exception) -> SendResult:
        if isinstance(exc, HTTPError):
            return self._http_error(exc)
        if isinstance(exc, urllib.error.URLError) and isinstance(
            exc.reason, (ConnectionRefusedError, socket.gaierror)
        ):
            return SendResult(Outcome.RETRYABLE_FAILURE, detail="connection refused")
        if isinstance(
            exc, (TimeoutError, http.client.HTTPException, ConnectionError, urllib.error.URLError)
        ):
            return SendResult(
                Outcome.RETRYABLE_FAILURE,
                detail=f"{type(exc).__name__} after the request was sent",
                ambiguous=True,
            )
        return super().parse_error(exc)

    def _http_error(self, exc: HTTPError) -> SendResult:
        status = int(getattr(exc, "status_code", 0) or 0)
        headers = {k.lower(): v for k, v in dict(getattr(exc, "headers", {}) or {}).items()}
        errors = _errors(getattr(exc, "body", b""))
        detail = f"SendGrid {status}: " + "; ".join(
            scrub(f"{e.get('field') or ''} {e.get('message') or ''}".strip()) for e in errors
        )
        raw = {"status": status, "errors": [scrub(str(e.get("message"))) for e in errors]}
        if status in (401, 403):
            return SendResult(
                Outcome.RETRYABLE_FAILURE,
                detail=f"SendGrid refused the API key ({status})",
                stop_run=True,
                provider_raw=raw,
            )
        if status == 429 or status >= 500:
            wait = parse_retry_after(headers.get("retry-after")) or parse_retry_after(
                headers.get("x-ratelimit-reset")
            )
            return SendResult(
                Outcome.RETRYABLE_FAILURE, detail=detail, retry_after=wait, provider_raw=raw
            )
        if status == 400 and any(
            "to" in str(e.get("field") or "") and "email" in str(e.get("field") or "")
            for e in errors
        ):
            return SendResult(Outcome.REJECTED_INVALID_RECIPIENT, detail=detail, provider_raw=raw)
        return SendResult(Outcome.PERMANENT_FAILURE, detail=detail, provider_raw=raw)


def _errors(body: Any) -> list[dict[str, Any]]:
    try:
        data = json.loads(body.decode("utf-8") if isinstance(body, bytes) else body or "{}")
    except (ValueError, AttributeError):
        return []
    errors = data.get("errors") if isinstance(data, dict) else None
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []
