"""The app factories: the audit view (``/audit``), and everything served under ``/care``.

Mounted by the Airflow plugin (``plugins/care_plugin.py``) under ``/care``, or served by
``care serve`` (``create_standalone_app``). This module assembles the parts and answers errors;
each part has its module: ``auth`` (who may look), ``audit_routes`` (the pages),
``webhook_routes`` (the providers' callbacks), ``pages`` (templates) and
``unsubscribe_page``.

Nothing here imports Airflow: the host's login is passed in (``AuditAuth.host_login``, by
``caretouch.airflow.web_auth``), so the app works with API tokens alone where Airflow is absent.
Building an app does no I/O: the store, the tokens and the providers' secrets are read on
first use.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import ConfigurationError
from ..mask import scrub
from ..store.db import Store
from .audit_routes import AuditLedger, BadRequest, create_audit_router
from .auth import AuditAuth, AuditGate, NotAuthenticated, create_login_router, next_of
from .pages import Pages, root_path
from .webhook_context import WebhookSecrets
from .webhook_routes import create_webhook_router

log = logging.getLogger("caretouch.web.app")

# No scripts at all, nothing fetched from elsewhere. It applies to the sandboxed srcdoc
# iframe of an email's HTML too (srcdoc documents inherit it), so tracking pixels and remote
# images in a message are not loaded when an auditor looks at it.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        "form-action 'self'; frame-ancestors 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "SAMEORIGIN",
    # Query strings carry customer ids: do not hand them to other sites, do not cache pages.
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class _SecurityHeaders:
    """Adds ``SECURITY_HEADERS`` to every response, error pages and streams included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _answer_errors(app: FastAPI, pages: Pages) -> None:
    """Every error as a page of the view: 401 with a link to log in, 422, 503, the rest."""

    @app.exception_handler(NotAuthenticated)
    async def not_authenticated(request: Request, exc: NotAuthenticated) -> Response:
        login = f"{root_path(request)}/audit/login?" + urlencode({"next": next_of(request)})
        response = pages.page(
            request,
            "unauthorized.html",
            who=None,
            status_code=401,
            title="Authentication required",
            login=login,
            reason=str(exc),
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="caretouch-audit"'
        return response

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> Response:
        return pages.error_page(request, 422, "Invalid request", str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_parameter(request: Request, exc: RequestValidationError) -> Response:
        where = ", ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:])}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        return pages.error_page(request, 422, "Invalid request", where or "invalid parameters")

    @app.exception_handler(ConfigurationError)
    async def misconfigured(request: Request, exc: ConfigurationError) -> Response:
        log.error("audit view: %s", exc)
        return pages.error_page(request, 503, "Audit view unavailable", scrub(str(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return pages.error_page(
            request, exc.status_code, str(exc.status_code), str(exc.detail), **(exc.headers or {})
        )


def create_audit_app(
    store_url: str | None = None,
    anchor_file: str | Path | None = None,
    auth: AuditAuth | None = None,
    *,
    page_size: int = 50,
) -> FastAPI:
    """The audit view as a FastAPI app; its pages are under ``/audit``.

    ``store_url`` and ``anchor_file`` default to ``CareConfig.from_env()`` (``$CARE_STORE_URL``,
    ``$CARE_ANCHOR_FILE``), read on the first request: creating the app does no I/O, so the
    Airflow plugin can build it at import. ``auth`` defaults to API tokens from
    ``$CARE_AUDIT_TOKENS``; the Airflow plugin adds Airflow's login (``AuditAuth.host_login``).
    """
    gate = AuditGate(auth or AuditAuth())
    ledger = AuditLedger(store_url, anchor_file or None)
    pages = Pages()
    # No /docs, /redoc or /openapi.json: they would be public, since Airflow protects nothing.
    app = FastAPI(title="Caretouch audit", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.care_audit_gate = gate
    app.add_middleware(_SecurityHeaders)
    _answer_errors(app, pages)
    app.include_router(create_audit_router(ledger, pages, page_size=page_size))
    app.include_router(create_login_router(gate, pages))
    return app


def create_care_app(
    store_url: str | None = None,
    anchor_file: str | Path | None = None,
    auth: AuditAuth | None = None,
    *,
    secrets: WebhookSecrets | None = None,
    webhook_store: Store | None = None,
    clock: Callable[[], dt.datetime] | None = None,
) -> FastAPI:
    """Everything served under ``/care``: the auditor's view (``/audit``, its own
    authentication) and the webhooks (``/hooks``, signatures). No I/O until a request."""
    app = create_audit_app(store_url, anchor_file, auth)
    app.include_router(
        create_webhook_router(store_url, store=webhook_store, secrets=secrets, clock=clock)
    )
    return app


def create_standalone_app(**kwargs: Any) -> FastAPI:
    """``create_care_app`` mounted at ``/care``, as Airflow's api-server mounts it, so the
    URLs are the same with ``care serve`` as under Airflow."""
    root = FastAPI(title="Caretouch", docs_url=None, redoc_url=None, openapi_url=None)
    root.mount("/care", create_care_app(**kwargs))
    return root
