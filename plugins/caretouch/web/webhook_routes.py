"""Routes of the provider webhooks and unsubscribe links under ``/care/hooks`` (SPEC section 8,
docs/webhooks.md). HTTP only: reading bodies, answering status codes.

| route | who calls it | authenticated by |
|---|---|---|
| ``POST /hooks/twilio/status?attempt=N`` | Twilio status callbacks | ``X-Twilio-Signature`` |
| ``POST /hooks/twilio/inbound`` | Twilio, for SMS sent to our number | ``X-Twilio-Signature`` |
| ``POST /hooks/sendgrid/events`` | SendGrid's signed Event Webhook | ECDSA signature |
| ``POST /hooks/sendgrid/inbound/TOKEN`` | SendGrid's Inbound Parse (customers' emails) | the secret token in the URL |
| ``GET/POST /hooks/unsubscribe?t=TOKEN`` | the customer (link, RFC 8058 one-click) | HMAC token |

Not behind the auditor's authentication: each request proves where it comes from by its
signature (``caretouch.webhooks.verify``). A missing or wrong signature is answered 403 and
nothing is written. What a verified request does is the business of ``caretouch.webhooks``
(one module per provider); this module only speaks HTTP.

The store and the secrets are read on the first request, not at import (``webhook_context``).
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import ImmutableMultiDict
from starlette.formparsers import MultiPartException, MultiPartParser

from ..errors import CareError
from ..store.db import Store
from ..webhooks import inbound_email, sendgrid, twilio
from ..webhooks import unsubscribe as unsubscribe_link
from ..webhooks.verify import (
    MAX_EVENTS,
    MAX_FORM,
    MAX_FORM_FIELDS,
    MAX_INBOUND_EMAIL,
    MAX_INBOUND_FIELD,
    SENDGRID_SIGNATURE,
    SENDGRID_TIMESTAMP,
    TWILIO_SIGNATURE,
    SignatureRefused,
    check_sendgrid,
    check_twilio,
    form_pairs,
    sendgrid_batch,
    storable,
)
from .unsubscribe_page import DEFAULT_LOCALE, unsubscribe_page
from .webhook_context import WebhookContext, WebhookSecrets

log = logging.getLogger("caretouch.webhooks")

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


class _TooLarge(Exception):
    """A body larger than the route takes: answered 413."""


async def _body(request: Request, limit: int) -> bytes:
    """The body, at most ``limit`` bytes: a larger declared length is refused before anything
    is read, a longer stream as soon as it passes the limit (``_TooLarge``)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise CareError("invalid Content-Length")
        if int(declared) > limit:
            raise _TooLarge(f"the body is {int(declared):,} bytes; at most {limit:,} are taken")
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge(f"the body is larger than {limit:,} bytes")
        parts.append(chunk)
    return b"".join(parts)


async def _form(request: Request) -> ImmutableMultiDict[str, str]:
    body = await _body(request, MAX_FORM)
    return ImmutableMultiDict(form_pairs(request.headers.get("content-type", ""), body))


async def _email_fields(request: Request) -> dict[str, str]:
    """The text fields of SendGrid's Inbound Parse post (multipart, as SendGrid sends it, or a
    urlencoded form), each once; attachments are left aside (not kept)."""
    body = await _body(request, MAX_INBOUND_EMAIL)
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "multipart/form-data":
        return dict(form_pairs(content_type, body))

    async def stream() -> Any:
        yield body

    parser = MultiPartParser(
        request.headers,
        stream(),
        max_files=1000,
        max_fields=MAX_FORM_FIELDS,
        max_part_size=MAX_INBOUND_FIELD,
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise CareError(f"the inbound email is not a readable form: {exc.message}") from None
    try:
        fields: dict[str, str] = {}
        for name, value in form.multi_items():
            if isinstance(value, str):
                storable(name + value, "the inbound email")
                fields.setdefault(name, value)
        return fields
    finally:
        await form.close()


def twilio_url(request: Request, public_url: str | None) -> str:
    """The URL Twilio called, as it signed it.

    With ``$CARE_PUBLIC_URL``: that base, ``/care``, the route and the query exactly as
    received (the callback URL we gave Twilio is built the same way). Without it, the URL
    the request arrived at, which is only right when nothing (a proxy ending TLS, a path
    rewrite) stands between Twilio and this server.
    """
    if not public_url:
        return str(request.url)
    root = str(request.scope.get("root_path", "")).rstrip("/")
    path = request.url.path
    route = path[len(root) :] if root and path.startswith(root) else path
    query = request.url.query
    return public_url.rstrip("/") + "/care" + route + (f"?{query}" if query else "")


def _check_twilio(
    resolved: WebhookContext, request: Request, form: ImmutableMultiDict[str, str]
) -> None:
    signature = request.headers.get(TWILIO_SIGNATURE)
    if not signature:
        raise SignatureRefused(f"no {TWILIO_SIGNATURE}")
    credentials = resolved.twilio()
    check_twilio(credentials, twilio_url(request, credentials.public_url), form, signature)


def _check_sendgrid(resolved: WebhookContext, request: Request, body: bytes) -> str:
    signature = request.headers.get(SENDGRID_SIGNATURE)
    timestamp = request.headers.get(SENDGRID_TIMESTAMP)
    if not signature or not timestamp:  # refused before the key is looked for
        raise SignatureRefused("no SendGrid signature or timestamp header")
    return check_sendgrid(resolved.sendgrid_verifier(), body, signature, timestamp)


def create_webhook_router(
    store_url: str | None = None,
    *,
    store: Store | None = None,
    secrets: WebhookSecrets | None = None,
    clock: Callable[[], dt.datetime] | None = None,
) -> APIRouter:
    """The webhook routes (under ``/hooks``). ``store``/``clock`` are for tests; by default
    the store is ``$CARE_STORE_URL`` and time is the real clock, both read per request."""
    resolved = WebhookContext(store_url, store, secrets or WebhookSecrets(), clock)
    router = APIRouter(prefix="/hooks")

    def forbidden(request: Request, why: str) -> Response:
        client = request.client.host if request.client else "?"
        log.warning("webhook %s refused (403) from %s: %s", request.url.path, client, why)
        return Response("forbidden\n", status_code=403, media_type="text/plain")

    def too_large(request: Request, why: str) -> Response:
        log.warning("webhook %s: refused (413): %s", request.url.path, why)
        return Response(f"{why}\n", status_code=413, media_type="text/plain")

    def bad_request(request: Request, why: str) -> Response:
        log.warning("webhook %s: bad request (400): %s", request.url.path, why)
        return Response(f"{why}\n", status_code=400, media_type="text/plain")

    @router.post("/twilio/status")
    async def twilio_status(request: Request) -> Response:
        """Twilio's status callback for a message we sent."""
        try:
            form = await _form(request)
            _check_twilio(resolved, request, form)
            callbacks = resolved.callbacks_ready() or await run_in_threadpool(
                lambda: resolved.callbacks
            )
            # Accepted (durable) in the intake and recorded with whatever else is pending,
            # in batches (webhooks.intake); the request waits without holding a thread.
            assert callbacks is not None  # callbacks_ready() or the store's own, opened above
            pending = await callbacks.record_status(
                dict(form), attempt=request.query_params.get("attempt")
            )
            if pending is not None:
                log.info("webhook: status callback %d accepted; recorded by a later drain", pending)
        except SignatureRefused as exc:
            return forbidden(request, str(exc))
        except _TooLarge as exc:
            return too_large(request, str(exc))
        except CareError as exc:
            return bad_request(request, str(exc))
        return Response(status_code=204)

    @router.post("/twilio/inbound")
    async def twilio_inbound(request: Request) -> Response:
        """An SMS sent to our number: STOP/START words change SMS consent."""
        try:
            form = await _form(request)
            _check_twilio(resolved, request, form)
            await run_in_threadpool(
                lambda: twilio.twilio_inbound(
                    resolved.store, dict(form), now=resolved.now(), replies=resolved.replies()
                )
            )
        except SignatureRefused as exc:
            return forbidden(request, str(exc))
        except _TooLarge as exc:
            return too_large(request, str(exc))
        except CareError as exc:
            return bad_request(request, str(exc))
        # Empty TwiML: no reply of ours (Twilio answers its standard keywords itself).
        return Response(EMPTY_TWIML, media_type="text/xml")

    @router.post("/sendgrid/events")
    async def sendgrid_events(request: Request) -> Response:
        """A batch of SendGrid events (signed Event Webhook)."""
        try:
            payload = _check_sendgrid(resolved, request, await _body(request, MAX_EVENTS))
            events = await run_in_threadpool(sendgrid_batch, payload)
            done = await run_in_threadpool(
                sendgrid.sendgrid_events, resolved.store, events, now=resolved.now()
            )
        except SignatureRefused as exc:
            return forbidden(request, str(exc))
        except _TooLarge as exc:
            return too_large(request, str(exc))
        except CareError as exc:
            return bad_request(request, str(exc))
        return JSONResponse({"received": done.events, "new": done.new})

    @router.post("/sendgrid/inbound/{token}")
    async def sendgrid_inbound(request: Request, token: str) -> Response:
        """An email a customer sent us (SendGrid's Inbound Parse): a reply, heard like an
        inbound SMS. Logs never show the URL: its token is the route's only guard."""
        where = "/hooks/sendgrid/inbound/…"
        expected = resolved.inbound_email_token()
        if expected is None:
            log.warning("webhook %s: not found (404): CARE_INBOUND_EMAIL_TOKEN is not set", where)
            return Response("not found\n", status_code=404, media_type="text/plain")
        try:
            if not hmac.compare_digest(token.encode("utf-8"), expected.encode("utf-8")):
                raise SignatureRefused("the URL's token is not CARE_INBOUND_EMAIL_TOKEN")
            fields = await _email_fields(request)
            await run_in_threadpool(
                lambda: inbound_email.sendgrid_inbound(
                    resolved.store, fields, now=resolved.now(), replies=resolved.replies()
                )
            )
        except SignatureRefused as exc:
            client = request.client.host if request.client else "?"
            log.warning("webhook %s refused (403) from %s: %s", where, client, exc)
            return Response("forbidden\n", status_code=403, media_type="text/plain")
        except _TooLarge as exc:
            log.warning("webhook %s: refused (413): %s", where, exc)
            return Response(f"{exc}\n", status_code=413, media_type="text/plain")
        except CareError as exc:
            log.warning("webhook %s: bad request (400): %s", where, exc)
            return Response(f"{exc}\n", status_code=400, media_type="text/plain")
        return Response(status_code=200)

    @router.get("/unsubscribe")
    async def unsubscribe_form(request: Request) -> Response:
        """The page an unsubscribe link opens: it asks, and changes nothing (link checkers
        and mail scanners open links; only the button, a POST, unsubscribes)."""
        token = request.query_params.get("t", "")
        try:
            found = await run_in_threadpool(
                unsubscribe_link.read_unsubscribe,
                resolved.store,
                token,
                resolved.unsubscribe_key(),
            )
        except CareError:
            log.warning("webhook: unsubscribe link refused (403): token does not verify")
            return unsubscribe_page(DEFAULT_LOCALE, "invalid", status=403)
        action = str(request.url.path) + "?" + urlencode({"t": token})
        return unsubscribe_page(found.locale, found.purpose, form_action=action)

    @router.post("/unsubscribe")
    async def unsubscribe(request: Request) -> Response:
        """Unsubscribe: the page's button, or a mail client's RFC 8058 one-click POST
        (``List-Unsubscribe=One-Click``)."""
        token = request.query_params.get("t", "")
        if not token:
            try:
                form = await _form(request)
            except (CareError, _TooLarge):
                form = ImmutableMultiDict()
            token = form.get("t", "")
        try:
            done = await run_in_threadpool(
                unsubscribe_link.unsubscribe,
                resolved.store,
                token,
                resolved.unsubscribe_key(),
                now=resolved.now(),
            )
        except CareError:
            log.warning("webhook: unsubscribe refused (403): token does not verify")
            return unsubscribe_page(DEFAULT_LOCALE, "invalid", status=403)
        return unsubscribe_page(done.locale, f"done_{done.purpose}")

    return router
