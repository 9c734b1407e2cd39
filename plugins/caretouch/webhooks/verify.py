"""Shared verification of incoming webhooks: is the request signed by who it says, and is
its body fit to record? Every provider's route goes through here before ``webhooks.twilio``,
``webhooks.sendgrid`` or ``webhooks.unsubscribe`` sees it.

- Signatures: Twilio's ``X-Twilio-Signature`` (HMAC-SHA1 over the URL and the form, keyed by
  the Auth Token); SendGrid's signed Event Webhook (ECDSA over timestamp and body, checked
  with the verification key SendGrid shows). A missing or wrong one is ``SignatureRefused``.
- Bodies: bounded (``MAX_FORM``, ``MAX_EVENTS``, ``SENDGRID_LIMITS``, checked before parsing),
  UTF-8, no NUL, no lone surrogate; anything else is a ``CareError`` naming what is wrong.

Nothing here speaks HTTP: the web layer (``caretouch.web.webhook_routes``) reads the body and
the headers and passes them in.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from ..bounds import Limits
from ..bounds import loads as bounded_loads
from ..channels.credentials import SendGridCredentials, TwilioCredentials
from ..errors import CareError, ConfigurationError
from ..nul import NUL, nul_reason

TWILIO_SIGNATURE = "X-Twilio-Signature"
SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
# Twilio posts a few KB; SendGrid batches events, up to about a megabyte per post. A larger
# body is refused (413) before it is read whole (docs/webhooks.md, "Limits").
MAX_FORM = 64 * 1024
MAX_FORM_FIELDS = 200
MAX_EVENTS = 8 * 1024 * 1024
# SendGrid's Inbound Parse posts the whole email, attachments included (it takes up to 30 MB);
# a text field (the email's text or HTML) is taken up to 4 MB, what it says is cut far shorter.
MAX_INBOUND_EMAIL = 32 * 1024 * 1024
MAX_INBOUND_FIELD = 4 * 1024 * 1024
# A SendGrid batch: an array of flat event objects (categories and custom arguments one level
# further down). Checked before it is parsed: a deeper body would exhaust the recursion limit.
SENDGRID_LIMITS = Limits(max_bytes=MAX_EVENTS, max_depth=8, max_items=1_000_000)


class SignatureRefused(Exception):
    """A request whose signature is missing or wrong: answered 403, nothing recorded.

    Not a ``CareError`` on purpose: a bad request (400) and a forged one (403) are told apart.
    """


def storable(text: str, what: str) -> None:
    """No store can hold a lone surrogate (an escaped "\\ud800" in JSON): refused here, not as
    a 500 from the database. (NULs are refused where each field is read: nul.py.)"""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise CareError(f"{what} is not valid UTF-8 text (a lone surrogate)") from None


def form_pairs(content_type: str, body: bytes) -> list[tuple[str, str]]:
    """The fields of a urlencoded form body, each fit to store (``CareError`` otherwise)."""
    kind = content_type.split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise CareError("expected a form (application/x-www-form-urlencoded)")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CareError("the form is not UTF-8") from exc
    try:
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except ValueError:  # "Max number of fields exceeded"
        raise CareError(f"the form has more than {MAX_FORM_FIELDS} fields") from None
    for name, value in pairs:
        if NUL in name + value:  # PostgreSQL text cannot hold one (nul.py)
            raise CareError(nul_reason(f"the form's field {name.replace(NUL, '?')[:64]}"))
        storable(name + value, "the form")
    return pairs


def sendgrid_batch(payload: str) -> list[Any]:
    """The events of a verified SendGrid body, bounded (``SENDGRID_LIMITS``) before it is
    parsed; ``CareError`` (a 400) for anything else than a JSON array fit to store."""
    try:
        events = bounded_loads(payload, SENDGRID_LIMITS, "the event batch")
    except json.JSONDecodeError as exc:
        raise CareError("the event batch is not JSON") from exc
    if not isinstance(events, list):
        raise CareError("the event batch is not a JSON array")
    # Bounded above, so this cannot recurse too deep. An event holding a NUL is refused on
    # its own, the rest of its batch recorded (webhooks.sendgrid): a refused batch would be
    # retried by SendGrid for a day, then dropped, good events and all.
    storable(json.dumps(events, ensure_ascii=False), "the event batch")
    return events


def check_twilio(
    credentials: TwilioCredentials, url: str, form: Mapping[str, str], signature: str | None
) -> None:
    """Twilio's signature of ``form`` posted to ``url`` (the URL as Twilio called it)."""
    from twilio.request_validator import RequestValidator

    if not signature:
        raise SignatureRefused(f"no {TWILIO_SIGNATURE}")
    if not RequestValidator(credentials.auth_token).validate(url, form, signature):
        raise SignatureRefused(f"{TWILIO_SIGNATURE} does not match")


def sendgrid_verifier(credentials: SendGridCredentials | None) -> Any:
    """SendGrid's ``EventWebhook`` holding the verification key (``ConfigurationError``
    without a valid one)."""
    from sendgrid.helpers.eventwebhook import EventWebhook

    key = credentials.webhook_public_key if credentials else None
    if not key:
        raise ConfigurationError(
            "SendGrid's Event Webhook is not configured: set "
            "SENDGRID_WEBHOOK_PUBLIC_KEY (or the care_sendgrid Connection's "
            "webhook_public_key) to the verification key SendGrid shows"
        )
    try:
        return EventWebhook(key.strip())
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            "the SendGrid webhook verification key is not a valid public key"
        ) from exc


def check_sendgrid(verifier: Any, body: bytes, signature: str | None, timestamp: str | None) -> str:
    """The body as text once SendGrid's signature over it checks out."""
    if not signature or not timestamp:
        raise SignatureRefused("no SendGrid signature or timestamp header")
    try:
        payload = body.decode("utf-8")
        ok = verifier.verify_signature(payload, signature, timestamp)
    except (UnicodeDecodeError, binascii.Error, ValueError, TypeError):
        ok = False
    if not ok:
        raise SignatureRefused("SendGrid signature does not match")
    return payload
