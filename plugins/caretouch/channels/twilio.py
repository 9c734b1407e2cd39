"""SMS through Twilio's Messages API, with the official ``twilio`` SDK.

- Payload: ``To``, ``From`` (or ``MessagingServiceSid`` when the sender is ``MG...``),
  ``Body`` (up to 1,600 characters: Twilio splits it into segments), and a ``StatusCallback``
  carrying our attempt id when ``$CARE_PUBLIC_URL`` says where we can be reached.
- Answers: a Message resource is ``sent`` (to the provider) with its SID; error 21610 is
  ``rejected-opted-out`` (the runner records the opt-out); 21211 and its kind are
  ``rejected-invalid-recipient``; 429 and 5xx are retryable (``Retry-After`` honoured); a
  refused connection is retryable; a timeout or a connection dropped after the request went
  out is *ambiguous*: before trying again we look the message up in Twilio's message list.
- Credentials refused (401/403, error 20003): the run stops; nothing is marked failed.

The SDK's client is one per sending thread (``channels.provider``: ``requests`` sessions are
not meant to be shared between threads); its HTTP client records each response's headers,
which the SDK's exceptions do not carry, so a 429's ``Retry-After`` can be read.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, ClassVar

import requests
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from ..mask import scrub
from ..sms import SMS_MAX_CHARS
from ..vocab import Channel, Outcome
from .base import OutboundMessage, SendResult
from .credentials import TwilioCredentials
from .limits import parse_retry_after
from .provider import ProviderTransport
from .shared_limits import account_key

# Error codes: https://www.twilio.com/docs/api/errors
OPTED_OUT = frozenset({21610})
INVALID_RECIPIENT = frozenset({21211, 21214, 21217, 21401, 21407, 21421, 21612, 21614})
AUTH_FAILED = frozenset({20003, 20005})
TOO_MANY_REQUESTS = frozenset({20429, 14107})
# Message statuses that mean Twilio refused it on the spot.
_REFUSED = frozenset({"failed", "undelivered", "canceled"})
# Reconciliation: how far back, before the attempt was claimed, a message may be dated
# (clock skew between us and Twilio), and how many of a number's messages to look through.
_SKEW = dt.timedelta(minutes=5)
_LOOKUP_LIMIT = 200
# The SDK logs every request's URL and query at INFO (a reconcile's ``To=+86...``): personal
# data. Its HTTP clients log to this logger instead, which lets only warnings through.
_SDK_LOG = logging.getLogger("caretouch.channels.twilio.sdk")
_SDK_LOG.setLevel(logging.WARNING)
# urllib3 logs each request line at DEBUG, query included (a reconcile's ``To=``).
logging.getLogger("urllib3.connectionpool").setLevel(logging.INFO)


class _HeaderKeepingClient(TwilioHttpClient):
    """Remembers the last response's headers (for ``Retry-After`` on a 429)."""

    def request(self, *args: Any, **kwargs: Any) -> Response:
        response = super().request(*args, **kwargs)
        self.last_headers = dict(response.headers or {})
        return response


class TwilioTransport(ProviderTransport[TwilioCredentials, Client]):
    name: ClassVar[str] = "twilio"
    serves: ClassVar[Channel] = Channel.SMS
    max_body: ClassVar[int] = SMS_MAX_CHARS  # 1,600: Twilio refuses longer bodies
    rate_per_sec: ClassVar[float] = 10.0
    concurrency: ClassVar[int] = 4

    def account(self) -> str:
        """The account and its sender (a number or a Messaging Service): what Twilio rates."""
        return account_key(self.name, self.credentials.account_sid, self.credentials.sender)

    def new_client(self) -> Client:
        http = _HeaderKeepingClient(timeout=self.timeout, logger=_SDK_LOG)
        client = Client(self.credentials.account_sid, self.credentials.auth_token, http_client=http)
        client.api.base_url = self.credentials.api_base.rstrip("/")
        return client

    def _last_headers(self) -> dict[str, str]:
        http = getattr(self.thread_client(), "http_client", None)
        return dict(getattr(http, "last_headers", {}) or {})

    # -- the three steps ---------------------------------------------------------------

    def build_payload(self, message: OutboundMessage) -> dict[str, Any]:
        payload: dict[str, Any] = {"to": message.recipient, "body": message.body}
        sender = self.credentials.sender
        if sender.startswith("MG"):
            payload["messaging_service_sid"] = sender
        else:
            payload["from_"] = sender
        callback = self.credentials.status_callback
        if callback and message.attempt_id is not None:
            payload["status_callback"] = f"{callback}?attempt={message.attempt_id}"
        return payload

    def post(self, payload: dict[str, Any]) -> Any:
        return self.client().messages.create(**payload)

    def parse_result(self, raw: Any) -> SendResult:
        status = str(getattr(raw, "status", "") or "")
        raw_info = {
            "status": status,
            "num_segments": getattr(raw, "num_segments", None),
            "error_code": getattr(raw, "error_code", None),
        }
        if status in _REFUSED:
            code = getattr(raw, "error_code", None)
            return SendResult(
                Outcome.PERMANENT_FAILURE,
                provider_message_id=raw.sid,
                detail=f"Twilio answered status {status} (error {code})",
                provider_raw=raw_info,
                provider_code=int(code) if code else None,
            )
        return SendResult(Outcome.SENT, provider_message_id=raw.sid, provider_raw=raw_info)

    def parse_error(self, exc: Exception) -> SendResult:
        if isinstance(exc, TwilioRestException):
            return self._rest_error(exc)
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return SendResult(Outcome.RETRYABLE_FAILURE, detail="connect timeout")
        if isinstance(exc, requests.exceptions.ConnectionError) and _never_connected(exc):
            return SendResult(Outcome.RETRYABLE_FAILURE, detail="connection refused")
        if isinstance(exc, requests.exceptions.RequestException):
            # A read timeout or a connection dropped mid-answer: Twilio may have it.
            return SendResult(
                Outcome.RETRYABLE_FAILURE,
                detail=f"{type(exc).__name__} after the request was sent",
                ambiguous=True,
            )
        return super().parse_error(exc)

    def _rest_error(self, exc: TwilioRestException) -> SendResult:
        code = int(exc.code) if isinstance(exc.code, int) or str(exc.code).isdigit() else None
        status = int(exc.status or 0)
        detail = f"Twilio {status} error {code}: {scrub(str(exc.msg or ''))}"[:500]
        raw = {"status": status, "code": code}
        if status in (401, 403) or code in AUTH_FAILED:
            return SendResult(
                Outcome.RETRYABLE_FAILURE,
                detail=f"Twilio refused the credentials ({status}, error {code})",
                stop_run=True,
                provider_raw=raw,
                provider_code=code,
            )
        if code in OPTED_OUT:
            return SendResult(
                Outcome.REJECTED_OPTED_OUT, detail=detail, provider_raw=raw, provider_code=code
            )
        if code in INVALID_RECIPIENT:
            return SendResult(
                Outcome.REJECTED_INVALID_RECIPIENT,
                detail=detail,
                provider_raw=raw,
                provider_code=code,
            )
        if status == 429 or code in TOO_MANY_REQUESTS or status >= 500:
            headers = {k.lower(): v for k, v in self._last_headers().items()}
            return SendResult(
                Outcome.RETRYABLE_FAILURE,
                detail=detail,
                retry_after=parse_retry_after(headers.get("retry-after")),
                provider_raw=raw,
                provider_code=code,
            )
        return SendResult(
            Outcome.PERMANENT_FAILURE, detail=detail, provider_raw=raw, provider_code=code
        )

    # -- after a crash or an ambiguous try ------------------------------------------------

    def reconcile(self, message: OutboundMessage) -> SendResult | None:
        """Look the message up in Twilio's message list: same number, same body, sent after
        the attempt was claimed. Found: ``sent``. Nothing sent to that number since: ``not
        found`` (safe to send). Other messages but none with this body: cannot tell."""
        since = (message.created_at - _SKEW) if message.created_at else None
        query: dict[str, Any] = {"to": message.recipient, "limit": _LOOKUP_LIMIT}
        sender = self.credentials.sender
        if not sender.startswith("MG"):
            query["from_"] = sender
        # No DateSent filter: a message still queued at Twilio has no DateSent yet.
        others = 0
        for found in self.client().messages.stream(**query):
            created = getattr(found, "date_created", None)
            if since is not None and created is not None and created < since:
                continue
            if (found.body or "") == message.body:
                return SendResult(
                    Outcome.SENT,
                    provider_message_id=found.sid,
                    detail=f"found in Twilio's message list ({found.status})",
                )
            others += 1
        if others:
            return None
        return SendResult(Outcome.NOT_SENT, detail="not found")


def _never_connected(exc: requests.exceptions.ConnectionError) -> bool:
    """True when the connection was refused or never made (nothing reached Twilio)."""
    text = repr(exc)
    return any(
        marker in text
        for marker in ("NewConnectionError", "ConnectionRefusedError", "NameResolutionError")
    )
