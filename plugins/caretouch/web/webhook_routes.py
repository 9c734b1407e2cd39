"""Provider webhooks and unsubscribe links under ``/care/hooks`` (SPEC section 8, docs/webhooks.md).

| route | who calls it | authenticated by |
|---|---|---|
| ``POST /hooks/twilio/status?attempt=N`` | Twilio status callbacks | ``X-Twilio-Signature`` |
| ``POST /hooks/twilio/inbound`` | Twilio, for SMS sent to our number | ``X-Twilio-Signature`` |
| ``POST /hooks/sendgrid/events`` | SendGrid's signed Event Webhook | ECDSA signature |
| ``GET/POST /hooks/unsubscribe?t=TOKEN`` | the customer (link, RFC 8058 one-click) | HMAC token |

Not behind the auditor's authentication: each request proves where it comes from by its
signature. A missing or wrong signature is answered 403 and nothing is written. What a
verified request does is ``caretouch.webhooks.receive``'s business; this module only checks
signatures and speaks HTTP.

Credentials are read on the first request, not at import: from the environment by default
(``care serve``), from Airflow Connections when the plugin passes its own sources.
"""

from __future__ import annotations

import binascii
import datetime as dt
import html
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import inspect
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import ImmutableMultiDict

from ..bounds import Limits
from ..bounds import loads as bounded_loads
from ..channels.credentials import (
    SendGridCredentials,
    TwilioCredentials,
    sendgrid_from_env,
    twilio_from_env,
)
from ..config import CareConfig
from ..errors import CareError, ConfigurationError
from ..nul import NUL, nul_reason
from ..render.unsubscribe import unsubscribe_key
from ..store.db import Store, check_reachable, open_store
from ..webhooks import receive
from .app import AuditAuth, create_audit_app

log = logging.getLogger("caretouch.webhooks")

TWILIO_SIGNATURE = "X-Twilio-Signature"
SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
# Twilio posts a few KB; SendGrid batches events, up to about a megabyte per post. A larger
# body is refused (413) before it is read whole (docs/webhooks.md, "Limits").
MAX_FORM = 64 * 1024
MAX_FORM_FIELDS = 200
MAX_EVENTS = 8 * 1024 * 1024
# A SendGrid batch: an array of flat event objects (categories and custom arguments one level
# further down). Checked before it is parsed: a deeper body would exhaust the recursion limit.
SENDGRID_LIMITS = Limits(max_bytes=MAX_EVENTS, max_depth=8, max_items=1_000_000)
HOOK_TABLES = (
    "customers",
    "consent_events",
    "touches",
    "touch_attempts",
    "touch_events",
    "provider_events",
    "ledger_chain",
    "ledger_anchors",  # sealing reads every chained table
)


@dataclass(frozen=True)
class HookSources:
    """Where the webhooks' secrets come from, each called once, on first use."""

    twilio: Callable[[], TwilioCredentials | None] = twilio_from_env
    sendgrid: Callable[[], SendGridCredentials | None] = sendgrid_from_env
    unsubscribe_key: Callable[[], bytes] = unsubscribe_key


class _Forbidden(Exception):
    """A request whose signature is missing or wrong."""


class _TooLarge(Exception):
    """A body larger than the route takes: answered 413."""


class _Hooks:
    """The store and the providers' secrets, each resolved on first use (no I/O at import)."""

    def __init__(
        self,
        store_url: str | None,
        store: Store | None,
        sources: HookSources,
        clock: Callable[[], dt.datetime] | None,
    ) -> None:
        self._store_url = store_url
        self._store = store
        self.sources = sources
        self._clock = clock
        self._lock = threading.Lock()
        self._twilio: list[TwilioCredentials | None] = []
        self._verifier: list[Any] = []
        self._unsubscribe_key: list[bytes] = []

    def now(self) -> dt.datetime:
        if self._clock is not None:
            return self._clock()
        return dt.datetime.now(dt.timezone.utc)  # clock: web request

    @property
    def store(self) -> Store:
        with self._lock:
            if self._store is None:
                self._store = open_hook_store(CareConfig.from_env(store=self._store_url).store_url)
            return self._store

    def twilio(self) -> TwilioCredentials:
        with self._lock:
            if not self._twilio:
                self._twilio.append(self.sources.twilio())
        found = self._twilio[0]
        if found is None:
            raise ConfigurationError(
                "Twilio webhooks are not configured: set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN "
                "and CARE_SMS_FROM (or the care_twilio Connection)"
            )
        return found

    def sendgrid_verifier(self) -> Any:
        """SendGrid's ``EventWebhook`` holding the verification key."""
        with self._lock:
            if not self._verifier:
                from sendgrid.helpers.eventwebhook import EventWebhook

                credentials = self.sources.sendgrid()
                key = credentials.webhook_public_key if credentials else None
                if not key:
                    raise ConfigurationError(
                        "SendGrid's Event Webhook is not configured: set "
                        "SENDGRID_WEBHOOK_PUBLIC_KEY (or the care_sendgrid Connection's "
                        "webhook_public_key) to the verification key SendGrid shows"
                    )
                try:
                    self._verifier.append(EventWebhook(key.strip()))
                except (ValueError, TypeError) as exc:
                    raise ConfigurationError(
                        "the SendGrid webhook verification key is not a valid public key"
                    ) from exc
        return self._verifier[0]

    def unsubscribe_key(self) -> bytes:
        with self._lock:
            if not self._unsubscribe_key:
                self._unsubscribe_key.append(self.sources.unsubscribe_key())
        return self._unsubscribe_key[0]


def open_hook_store(url: str) -> Store:
    """Open the store the webhooks write to; its tables must exist (``care store init``)."""
    store = open_store(url)
    try:
        check_reachable(store)
        inspector = inspect(store.engine)
        # A deployment may map customers through a view (docs/store.md).
        found = set(inspector.get_table_names()) | set(inspector.get_view_names())
        missing = set(HOOK_TABLES) - found
        if missing:
            raise ConfigurationError(
                f"store {store.masked_url()} has no {', '.join(sorted(missing))} table(s): "
                "run `care store init`"
            )
    except BaseException:
        store.dispose()
        raise
    return store


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


def _storable(text: str, what: str) -> None:
    # No store can hold a lone surrogate (an escaped "\ud800" in JSON): refused here, not as
    # a 500 from the database. (NULs are refused where each field is read: nul.py.)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise CareError(f"{what} is not valid UTF-8 text (a lone surrogate)") from None


def _form(request: Request, body: bytes) -> ImmutableMultiDict[str, str]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
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
        _storable(name + value, "the form")
    return ImmutableMultiDict(pairs)


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
    # its own, the rest of its batch recorded (webhooks.receive): a refused batch would be
    # retried by SendGrid for a day, then dropped, good events and all.
    _storable(json.dumps(events, ensure_ascii=False), "the event batch")
    return events


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


def _check_twilio(hooks: _Hooks, request: Request, form: ImmutableMultiDict[str, str]) -> None:
    from twilio.request_validator import RequestValidator

    signature = request.headers.get(TWILIO_SIGNATURE)
    if not signature:
        raise _Forbidden("no X-Twilio-Signature")
    credentials = hooks.twilio()
    url = twilio_url(request, credentials.public_url)
    if not RequestValidator(credentials.auth_token).validate(url, form, signature):
        raise _Forbidden("X-Twilio-Signature does not match")


def _check_sendgrid(hooks: _Hooks, request: Request, body: bytes) -> str:
    signature = request.headers.get(SENDGRID_SIGNATURE)
    timestamp = request.headers.get(SENDGRID_TIMESTAMP)
    if not signature or not timestamp:
        raise _Forbidden("no SendGrid signature or timestamp header")
    verifier = hooks.sendgrid_verifier()
    try:
        payload = body.decode("utf-8")
        ok = verifier.verify_signature(payload, signature, timestamp)
    except (UnicodeDecodeError, binascii.Error, ValueError, TypeError):
        ok = False
    if not ok:
        raise _Forbidden("SendGrid signature does not match")
    return payload


# -- the unsubscribe page ----------------------------------------------------------------------

_PAGE_TEXT = {
    "zh-CN": {
        "title": "退订",
        "email": "确定不再接收我们的邮件吗？",
        "marketing": "确定不再接收我们的推广邮件吗？",
        "button": "确认退订",
        "done_email": "您已退订，我们不会再给您发送邮件。",
        "done_marketing": "您已退订，我们不会再给您发送推广邮件。",
        "invalid": "此退订链接无效。",
    },
    "zh-TW": {
        "title": "取消訂閱",
        "email": "確定不再接收我們的郵件嗎？",
        "marketing": "確定不再接收我們的推廣郵件嗎？",
        "button": "確認取消訂閱",
        "done_email": "您已取消訂閱，我們不會再寄送郵件給您。",
        "done_marketing": "您已取消訂閱，我們不會再寄送推廣郵件給您。",
        "invalid": "此取消訂閱連結無效。",
    },
    "en": {
        "title": "Unsubscribe",
        "email": "Stop receiving our emails?",
        "marketing": "Stop receiving our marketing emails?",
        "button": "Unsubscribe",
        "done_email": "You are unsubscribed: we will not email you again.",
        "done_marketing": "You are unsubscribed: we will not send you marketing emails again.",
        "invalid": "This unsubscribe link is not valid.",
    },
}


def _page(locale: str, message: str, *, form_action: str | None = None, status: int = 200) -> Any:
    text = _PAGE_TEXT.get(locale, _PAGE_TEXT["zh-CN"])
    lang = locale if locale in _PAGE_TEXT else "zh-CN"
    form = ""
    if form_action is not None:
        form = (
            f'<form method="post" action="{html.escape(form_action, quote=True)}">'
            f'<button type="submit">{html.escape(text["button"])}</button></form>'
        )
    body = (
        f'<!doctype html><html lang="{html.escape(lang)}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(text['title'])}</title>"
        "<style>body{font-family:sans-serif;max-width:32em;margin:3em auto;padding:0 1em}"
        "button{font-size:1em;padding:.5em 1.5em}</style></head>"
        f"<body><h1>{html.escape(text['title'])}</h1><p>{html.escape(message)}</p>{form}"
        "</body></html>"
    )
    return HTMLResponse(body, status_code=status)


def _text(locale: str, key: str) -> str:
    return _PAGE_TEXT.get(locale, _PAGE_TEXT["zh-CN"])[key]


# -- the router --------------------------------------------------------------------------------


def create_hooks_router(
    store_url: str | None = None,
    *,
    store: Store | None = None,
    sources: HookSources | None = None,
    clock: Callable[[], dt.datetime] | None = None,
) -> APIRouter:
    """The webhook routes (under ``/hooks``). ``store``/``clock`` are for tests; by default
    the store is ``$CARE_STORE_URL`` and time is the real clock, both read per request."""
    hooks = _Hooks(store_url, store, sources or HookSources(), clock)
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
            form = _form(request, await _body(request, MAX_FORM))
            _check_twilio(hooks, request, form)
            await run_in_threadpool(
                receive.twilio_status,
                hooks.store,
                dict(form),
                attempt=request.query_params.get("attempt"),
                now=hooks.now(),
            )
        except _Forbidden as exc:
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
            form = _form(request, await _body(request, MAX_FORM))
            _check_twilio(hooks, request, form)
            await run_in_threadpool(
                receive.twilio_inbound, hooks.store, dict(form), now=hooks.now()
            )
        except _Forbidden as exc:
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
            payload = _check_sendgrid(hooks, request, await _body(request, MAX_EVENTS))
            events = await run_in_threadpool(sendgrid_batch, payload)
            done = await run_in_threadpool(
                receive.sendgrid_events, hooks.store, events, now=hooks.now()
            )
        except _Forbidden as exc:
            return forbidden(request, str(exc))
        except _TooLarge as exc:
            return too_large(request, str(exc))
        except CareError as exc:
            return bad_request(request, str(exc))
        return JSONResponse({"received": done.events, "new": done.new})

    @router.get("/unsubscribe")
    async def unsubscribe_page(request: Request) -> Response:
        """The page an unsubscribe link opens: it asks, and changes nothing (link checkers
        and mail scanners open links; only the button, a POST, unsubscribes)."""
        token = request.query_params.get("t", "")
        try:
            found = await run_in_threadpool(
                receive.read_unsubscribe, hooks.store, token, hooks.unsubscribe_key()
            )
        except CareError:
            log.warning("webhook: unsubscribe link refused (403): token does not verify")
            return _page("zh-CN", _text("zh-CN", "invalid"), status=403)
        action = str(request.url.path) + "?" + urlencode({"t": token})
        return _page(found.locale, _text(found.locale, found.purpose), form_action=action)

    @router.post("/unsubscribe")
    async def unsubscribe(request: Request) -> Response:
        """Unsubscribe: the page's button, or a mail client's RFC 8058 one-click POST
        (``List-Unsubscribe=One-Click``)."""
        token = request.query_params.get("t", "")
        if not token:
            try:
                form = _form(request, await _body(request, MAX_FORM))
            except (CareError, _TooLarge):
                form = ImmutableMultiDict()
            token = form.get("t", "")
        try:
            done = await run_in_threadpool(
                receive.unsubscribe,
                hooks.store,
                token,
                hooks.unsubscribe_key(),
                now=hooks.now(),
            )
        except CareError:
            log.warning("webhook: unsubscribe refused (403): token does not verify")
            return _page("zh-CN", _text("zh-CN", "invalid"), status=403)
        return _page(done.locale, _text(done.locale, f"done_{done.purpose}"))

    return router


def create_care_app(
    store_url: str | None = None,
    anchor_file: str | Path | None = None,
    auth: AuditAuth | None = None,
    *,
    sources: HookSources | None = None,
    hooks_store: Store | None = None,
    clock: Callable[[], dt.datetime] | None = None,
) -> FastAPI:
    """Everything served under ``/care``: the auditor's view (``/audit``, its own
    authentication) and the webhooks (``/hooks``, signatures). No I/O until a request."""
    app = create_audit_app(store_url, anchor_file, auth)
    app.include_router(
        create_hooks_router(store_url, store=hooks_store, sources=sources, clock=clock)
    )
    return app


def create_standalone_app(**kwargs: Any) -> FastAPI:
    """``create_care_app`` mounted at ``/care``, as Airflow's api-server mounts it, so the
    URLs are the same with ``care serve`` as under Airflow."""
    root = FastAPI(title="Caretouch", docs_url=None, redoc_url=None, openapi_url=None)
    root.mount("/care", create_care_app(**kwargs))
    return root
