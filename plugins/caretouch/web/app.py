"""The auditor's web view: search, a customer's timeline, a touch's detail, verify, CSV export.

Mounted by the Airflow plugin (``plugins/care_plugin.py``) under ``/care``; the pages live
under ``/audit``. Every page calls the same engine functions as ``care audit`` (``audit.py``):
filters checked by ``make_filters``, the CSV written by ``CsvExport``, a touch by
``touch_detail``, which masks recipients, message content and provider details, so no phone
number or email address reaches a page (verify's messages are masked here too).

Airflow does not authenticate plugin apps, so this app does, on every page: either Airflow's
JWT (``Authorization: Bearer`` or the UI's ``_token`` cookie), checked by Airflow's own
``GetUserDep``, or an API token from ``$CARE_AUDIT_TOKENS`` (``name:token,name:token``), sent
as ``Authorization: Bearer`` or exchanged at ``/audit/login`` for an HttpOnly session cookie.
Anyone authenticated is an auditor, and an auditor can only read: there are no write routes.

Airflow is imported only when a JWT has to be checked, so importing this module (or the
engine) never imports Airflow, and the app works with tokens alone where Airflow is absent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, get_args
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy import inspect
from sqlalchemy.engine import make_url
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import CareConfig
from ..errors import ConfigurationError
from ..ledger.audit import (
    ROW_ID_MAX,
    CsvExport,
    Filters,
    InvalidFilter,
    anchor_key,
    make_filters,
    touch_detail,
    touches,
    verify,
)
from ..mask import scrub
from ..store.db import Store, check_reachable, open_store
from ..vocab import Channel, TouchStatus

log = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).with_name("templates")
SESSION_COOKIE = "care_audit_session"
# Airflow's UI keeps its JWT in this cookie (``COOKIE_NAME_JWT_TOKEN``); named here so that a
# request without it, and without a bearer token, is refused without importing Airflow.
AIRFLOW_JWT_COOKIE = "_token"
LEDGER_TABLES = (
    "touches",
    "touch_attempts",
    "touch_events",
    "ledger_chain",
    "provider_events",
    "consent_events",
    "ledger_anchors",
)
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
_TOKEN_NAME_RX = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_LOGIN_BODY = 8192
# Every number a route takes is a ledger row id: a non-negative 64-bit integer. Anything else
# (too big for the database, negative, not a number) answers 422 naming the parameter.
RowIdPath = Annotated[int, PathParam(ge=0, le=ROW_ID_MAX)]
RowIdQuery = Annotated[int, Query(ge=0, le=ROW_ID_MAX)]


# -- who may look ------------------------------------------------------------------------------


class NotAuthenticated(Exception):
    """No valid credential: answered with 401 and a link to the login form."""


class BadRequest(Exception):
    """An invalid filter or form value: answered with 422, naming it."""


@dataclass(frozen=True)
class Auditor:
    """Whoever is looking: an API token's name or an Airflow user; read-only either way."""

    name: str
    via: str  # "token" (bearer), "session" (login cookie) or "airflow" (Airflow's JWT)


class AuditTokens:
    """API tokens of the audit view: ``name:token`` pairs, e.g. from ``$CARE_AUDIT_TOKENS``.

    Tokens are compared in constant time and never logged or shown; a browser session is an
    HMAC keyed by the token, so removing a token from the list ends its sessions too.
    """

    MIN_LENGTH = 16
    ENV = "CARE_AUDIT_TOKENS"

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self._tokens: dict[str, bytes] = {}
        for name, token in tokens.items():
            if not _TOKEN_NAME_RX.fullmatch(name):
                raise ConfigurationError(
                    f"{self.ENV}: token name {name[:64]!r} must be 1-64 of A-Z a-z 0-9 _ -"
                )
            if len(token) < self.MIN_LENGTH:
                raise ConfigurationError(
                    f"{self.ENV}: the token of {name!r} is shorter than {self.MIN_LENGTH} "
                    "characters (use e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`)"
                )
            self._tokens[name] = token.encode("utf-8")
        self._digests = {name: hashlib.sha256(t).digest() for name, t in self._tokens.items()}

    @classmethod
    def parse(cls, value: str | None) -> AuditTokens:
        """``"alice:tok1, audit-team:tok2"`` -> tokens; a malformed entry is a configuration
        error naming its position (never its token)."""
        pairs: dict[str, str] = {}
        for number, item in enumerate((value or "").split(","), start=1):
            if not item.strip():
                continue
            name, sep, token = item.strip().partition(":")
            name, token = name.strip(), token.strip()
            if not sep or not name or not token:
                raise ConfigurationError(f"{cls.ENV}: entry {number} is not name:token")
            if name in pairs:
                raise ConfigurationError(f"{cls.ENV}: token name {name!r} appears twice")
            pairs[name] = token
        return cls(pairs)

    @classmethod
    def from_env(cls) -> AuditTokens:
        return cls.parse(os.environ.get(cls.ENV))

    def __len__(self) -> int:
        return len(self._tokens)

    def match(self, presented: str) -> str | None:
        """The name of the token ``presented`` is, or None. Compares fixed-length digests
        against every token (no early exit), so timing tells nothing about the tokens."""
        digest = hashlib.sha256(presented.encode("utf-8")).digest()
        found = None
        for name, expected in self._digests.items():
            if hmac.compare_digest(digest, expected):
                found = name
        return found

    def session_value(self, name: str, expires: dt.datetime) -> str:
        """The login cookie of token ``name``, valid until ``expires``."""
        stamp = str(int(expires.timestamp()))
        return f"{name}.{stamp}.{self._session_mac(name, stamp)}"

    def session_name(self, value: str, now: dt.datetime) -> str | None:
        """The token name a login cookie stands for, or None if forged, stale or revoked."""
        parts = value.split(".")
        if len(parts) != 3:
            return None
        name, stamp, mac = parts
        if name not in self._tokens or not stamp.isdigit():
            return None
        if not hmac.compare_digest(
            mac.encode("ascii", "replace"), self._session_mac(name, stamp).encode("ascii")
        ):
            return None
        return name if int(stamp) > now.timestamp() else None

    def _session_mac(self, name: str, stamp: str) -> str:
        message = f"caretouch-audit-session|{name}|{stamp}".encode()
        return hmac.new(self._tokens[name], message, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class AuditAuth:
    """How the audit view authenticates."""

    tokens: AuditTokens | None = None  # None: read $CARE_AUDIT_TOKENS on first use
    airflow_jwt: bool = True  # accept Airflow's JWT where Airflow is importable and running
    session: dt.timedelta = field(default=dt.timedelta(hours=8))  # login cookie lifetime


_AIRFLOW_GET_USER: list[Any] = []


def _airflow_get_user() -> Any | None:
    """Airflow's own ``GetUserDep`` dependency, or None where Airflow cannot be imported."""
    if not _AIRFLOW_GET_USER:
        try:
            from airflow.api_fastapi.core_api.security import GetUserDep
        except Exception as exc:  # not installed, or an Airflow that cannot configure itself
            log.info("audit view: Airflow JWTs not accepted (%s: %s)", type(exc).__name__, exc)
            _AIRFLOW_GET_USER.append(None)
        else:
            # GetUserDep is Annotated[BaseUser, Depends(get_user)]. It is called directly
            # rather than declared on the routes because an API token must be able to stand
            # in for it: declared, it would answer 401 before the token could be looked at.
            _AIRFLOW_GET_USER.append(get_args(GetUserDep)[1].dependency)
    return _AIRFLOW_GET_USER[0]


async def _airflow_user(request: Request, bearer: str | None) -> str | None:
    """The Airflow user name behind the request's JWT (header or ``_token`` cookie), or None."""
    get_user = _airflow_get_user()
    if get_user is None:
        return None
    from fastapi import HTTPException
    from fastapi.security import HTTPAuthorizationCredentials

    credentials = (
        HTTPAuthorizationCredentials(scheme="Bearer", credentials=bearer) if bearer else None
    )
    try:
        user = await get_user(request, None, credentials)
    except HTTPException as exc:
        # Missing, expired (401) or invalid (403) JWT: all mean "not authenticated" here.
        log.info("audit view: Airflow JWT refused (%s)", exc.detail)
        return None
    except RuntimeError as exc:
        # The auth manager is not initialised: not running inside Airflow's api-server.
        log.warning("audit view: cannot check an Airflow JWT here: %s", exc)
        return None
    return str(user.get_name())


def _looks_like_jwt(value: str) -> bool:
    return value.count(".") == 2 and len(value) > 20


# -- the ledger, opened on first use ---------------------------------------------------------


def open_ledger(url: str) -> Store:
    """Open the store for reading the ledger, changing nothing.

    Only the ledger tables are required (not ``caretouch.schema.require_current_schema``'s
    version: the view reads the ledger and nothing else). A missing SQLite file is refused
    rather than created empty.
    """
    store = open_store(url)
    try:
        parsed = make_url(store.url)
        if (
            parsed.get_backend_name() == "sqlite"
            and parsed.database not in (None, "", ":memory:")
            and not Path(parsed.database).exists()
        ):
            raise ConfigurationError(
                f"store {store.masked_url()} does not exist (check $CARE_STORE_URL)"
            )
        check_reachable(store)
        # A read-only connection: on SQLite it does not take the write lock (store.db).
        reader = store.engine.execution_options(care_read_only=True)
        missing = set(LEDGER_TABLES) - set(inspect(reader).get_table_names())
        if missing:
            raise ConfigurationError(
                f"store {store.masked_url()} has no ledger table(s) {', '.join(sorted(missing))}:"
                " run `care store init`"
            )
    except BaseException:
        store.dispose()
        raise
    return store


class _AuditView:
    """Configuration, tokens and the store, each resolved on first use (no I/O at import)."""

    def __init__(
        self, store_url: str | None, anchor_file: Path | None, auth: AuditAuth, page_size: int
    ) -> None:
        self.auth = auth
        self.page_size = page_size
        self._store_url = store_url
        self._anchor_file = anchor_file
        self._config: CareConfig | None = None
        self._tokens = auth.tokens
        self._store: Store | None = None
        self._lock = threading.Lock()

    @property
    def config(self) -> CareConfig:
        if self._config is None:
            self._config = CareConfig.from_env(store=self._store_url, anchors=self._anchor_file)
        return self._config

    @property
    def tokens(self) -> AuditTokens:
        if self._tokens is None:
            self._tokens = AuditTokens.from_env()
            if not self._tokens:
                log.info("audit view: %s is empty; only Airflow JWTs are accepted", AuditTokens.ENV)
        return self._tokens

    @property
    def store(self) -> Store:
        with self._lock:
            if self._store is None:
                self._store = open_ledger(self.config.store_url)
            return self._store

    async def authenticate(self, request: Request) -> Auditor:
        """Bearer header first (API token, else Airflow JWT); without one, the login cookie,
        else Airflow's ``_token`` cookie. Anything else is 401."""
        now = dt.datetime.now(dt.timezone.utc)  # clock: web request
        tokens = self.tokens
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        credential = credential.strip()
        if scheme.lower() == "bearer" and credential:
            name = tokens.match(credential)
            if name is not None:
                return Auditor(name, "token")
            if self.auth.airflow_jwt and _looks_like_jwt(credential):
                user = await _airflow_user(request, credential)
                if user is not None:
                    return Auditor(user, "airflow")
            raise NotAuthenticated("the bearer token is not valid")
        if scheme:
            raise NotAuthenticated("only Bearer authorization is accepted")
        session = request.cookies.get(SESSION_COOKIE)
        if session:
            name = tokens.session_name(session, now)
            if name is not None:
                return Auditor(name, "session")
        if self.auth.airflow_jwt and request.cookies.get(AIRFLOW_JWT_COOKIE):
            user = await _airflow_user(request, None)
            if user is not None:
                return Auditor(user, "airflow")
        raise NotAuthenticated("no valid credentials")


# -- pages -------------------------------------------------------------------------------------


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


def _templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["urlpart"] = lambda value: quote(str(value), safe="")
    env.filters["query"] = lambda params: urlencode(
        {k: v for k, v in params.items() if v not in (None, "")}
    )
    return env


def _root(request: Request) -> str:
    # "/care" under Airflow (plus any [api] base_url path), "" when served on its own.
    return str(request.scope.get("root_path", "")).rstrip("/")


def _filters(form: dict[str, str]) -> Filters:
    """The search form's filters, checked as ``care audit`` checks its options."""
    try:
        return make_filters(
            first=form["from"],
            last=form["to"],
            customer_id=form["customer"],
            rule_id=form["rule"],
            channel=form["channel"],
            status=form["status"],
        )
    except InvalidFilter as exc:
        raise BadRequest(str(exc)) from None


def _safe_next(value: str, root: str) -> str:
    """Where to go after logging in: a page of this view only (no open redirect)."""
    home = f"{root}/audit"
    parts = urlsplit(value)
    if (
        parts.scheme
        or parts.netloc
        or not value.startswith(home)
        or "\\" in value
        or any(c in value for c in "\r\n\x00")
    ):
        return home
    return value


def _detail_json(detail: Any) -> str:
    if detail in (None, {}, ""):
        return ""
    return json.dumps(detail, ensure_ascii=False, sort_keys=True, indent=2, default=str)


async def _auditor(request: Request) -> Auditor:
    view: _AuditView = request.app.state.care_audit
    return await view.authenticate(request)


# Module-level (not in the factory) so FastAPI can resolve them from string annotations.
AuditorDep = Annotated[Auditor, Depends(_auditor)]


def _filter_form(
    customer: str = "",
    rule: str = "",
    channel: str = "",
    status: str = "",
    first: Annotated[str, Query(alias="from")] = "",
    last: Annotated[str, Query(alias="to")] = "",
) -> dict[str, str]:
    return {
        "customer": customer,
        "rule": rule,
        "channel": channel,
        "status": status,
        "from": first,
        "to": last,
    }


FormDep = Annotated[dict[str, str], Depends(_filter_form)]


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
    Airflow plugin can build it at import.
    """
    view = _AuditView(
        store_url, Path(anchor_file) if anchor_file else None, auth or AuditAuth(), page_size
    )
    templates = _templates()
    # No /docs, /redoc or /openapi.json: they would be public, since Airflow protects nothing.
    app = FastAPI(title="Caretouch audit", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.care_audit = view
    app.add_middleware(_SecurityHeaders)

    def page(
        request: Request,
        template: str,
        *,
        who: Auditor | None,
        status_code: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        html = templates.get_template(template).render(root=_root(request), who=who, **context)
        return HTMLResponse(html, status_code=status_code)

    def error_page(
        request: Request, status_code: int, title: str, message: str, **headers: str
    ) -> HTMLResponse:
        response = page(
            request, "error.html", who=None, status_code=status_code, title=title, message=message
        )
        response.headers.update(headers)
        return response

    @app.exception_handler(NotAuthenticated)
    async def not_authenticated(request: Request, exc: NotAuthenticated) -> Response:
        login = f"{_root(request)}/audit/login?" + urlencode({"next": _next_of(request)})
        response = page(
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
        return error_page(request, 422, "Invalid request", str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_parameter(request: Request, exc: RequestValidationError) -> Response:
        where = ", ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:])}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        return error_page(request, 422, "Invalid request", where or "invalid parameters")

    @app.exception_handler(ConfigurationError)
    async def misconfigured(request: Request, exc: ConfigurationError) -> Response:
        log.error("audit view: %s", exc)
        return error_page(request, 503, "Audit view unavailable", scrub(str(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error_page(
            request, exc.status_code, str(exc.status_code), str(exc.detail), **(exc.headers or {})
        )

    @app.get("/audit", response_class=HTMLResponse)
    def search(
        request: Request,
        who: AuditorDep,
        form: FormDep,
        after: RowIdQuery = 0,
    ) -> HTMLResponse:
        """Search form and one page of matching touches, in id order (keyset pagination)."""
        filters = _filters(form)
        rows = list(touches(view.store, filters, after=after, limit=view.page_size + 1))
        more = len(rows) > view.page_size
        rows = rows[: view.page_size]
        return page(
            request,
            "search.html",
            who=who,
            title="Search touches",
            form=form,
            rows=rows,
            after=after,
            next_after=rows[-1]["touch_id"] if more else None,
            channels=[c.value for c in Channel],
            statuses=[s.value for s in TouchStatus],
        )

    @app.get("/audit/customers/{customer_id:path}", response_class=HTMLResponse)
    def customer(request: Request, who: AuditorDep, customer_id: str) -> HTMLResponse:
        """Every touch of one customer, newest first, with its current status."""
        customer_id = _filters({**_filter_form(), "customer": customer_id}).customer_id or ""
        rows = sorted(
            touches(view.store, Filters(customer_id=customer_id)),
            key=lambda r: (r["occurrence"], r["touch_id"]),
            reverse=True,
        )
        return page(
            request,
            "customer.html",
            who=who,
            title=f"Customer {customer_id}",
            customer_id=customer_id,
            rows=rows,
        )

    @app.get("/audit/touches/{touch_id}", response_class=HTMLResponse)
    def touch(request: Request, who: AuditorDep, touch_id: RowIdPath) -> HTMLResponse:
        """One touch: versions and hashes, why it was decided under which consent, every
        attempt's message, the status history (as ``care audit show``; masked there)."""
        detail = touch_detail(view.store, touch_id)
        if detail is None:
            return error_page(request, 404, "Not found", f"no touch with id {touch_id}")
        for event in detail["history"]:
            event["other"] = _detail_json(event["other"])
        return page(request, "touch.html", who=who, title=f"Touch {touch_id}", t=detail)

    @app.get("/audit/verify", response_class=HTMLResponse)
    def verify_page(request: Request, who: AuditorDep) -> HTMLResponse:
        """Walk the hash chain and the anchors, as ``care audit verify`` does."""
        report = verify(view.store, anchor_file=view.config.anchor_file, key=anchor_key())
        return page(
            request,
            "verify.html",
            who=who,
            title="Verify the ledger",
            report=report,
            problem=scrub(report.problem or ""),
            warnings=[scrub(w) for w in report.warnings],
            anchor_file=str(view.config.anchor_file),
            keyed=anchor_key() is not None,
        )

    @app.get("/audit/export.csv")
    def export(who: AuditorDep, form: FormDep) -> StreamingResponse:
        """The touches matching the filters as CSV, streamed (recipients masked)."""
        filters = _filters(form)
        log.info("audit view: %s (%s) exports touches %s", who.name, who.via, filters)
        return StreamingResponse(
            iter(CsvExport(view.store, filters)),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="caretouch-touches.csv"'},
        )

    @app.get("/audit/login", response_class=HTMLResponse)
    def login_form(
        request: Request, next_page: Annotated[str, Query(alias="next")] = ""
    ) -> HTMLResponse:
        """A form to exchange an API token for a session cookie."""
        return page(
            request,
            "login.html",
            who=None,
            title="Log in",
            next=_safe_next(next_page, _root(request)),
            error=None,
        )

    @app.post("/audit/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        """Check the token; on success set an HttpOnly session cookie and go back."""
        now = dt.datetime.now(dt.timezone.utc)  # clock: web request
        root = _root(request)
        if request.headers.get("content-type", "").split(";")[0].strip() != (
            "application/x-www-form-urlencoded"
        ):
            return error_page(request, 415, "Unsupported form", "send the login form")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > _MAX_LOGIN_BODY:
                return error_page(request, 413, "Too large", "the login form is too large")
        try:
            form = parse_qs(body.decode("utf-8", "replace"), max_num_fields=10)
        except ValueError:  # more fields than a login form has
            return error_page(request, 400, "Invalid form", "send the login form")
        token = (form.get("token") or [""])[0].strip()
        target = _safe_next((form.get("next") or [""])[0], root)
        name = view.tokens.match(token) if token else None
        if name is None:
            client = request.client.host if request.client else "?"
            log.warning("audit view: login refused from %s (token not recognised)", client)
            return page(
                request,
                "login.html",
                who=None,
                status_code=401,
                title="Log in",
                next=target,
                error="That token is not recognised.",
            )
        log.info("audit view: %s logged in with a token", name)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            view.tokens.session_value(name, now + view.auth.session),
            max_age=int(view.auth.session.total_seconds()),
            path=f"{root}/audit",
            httponly=True,
            secure=request.url.scheme == "https",
            samesite="strict",
        )
        return response

    @app.get("/audit/logout")
    def logout(request: Request) -> Response:
        """Forget the session cookie (harmless without one, so no credentials needed)."""
        root = _root(request)
        response = RedirectResponse(f"{root}/audit/login", status_code=303)
        response.delete_cookie(
            SESSION_COOKIE, path=f"{root}/audit", httponly=True, samesite="strict"
        )
        return response

    return app


def _next_of(request: Request) -> str:
    """The page a 401 was for, to come back to after logging in (GET pages only)."""
    if request.method != "GET":
        return ""
    # The full path: under a mount, Starlette keeps the mount prefix in the scope's path.
    query = request.url.query
    return f"{request.url.path}?{query}" if query else request.url.path
