"""Who may look at the audit view: API tokens, login sessions, and the host's own login.

Airflow does not authenticate plugin apps, so the view does, on every page: an API token from
``$CARE_AUDIT_TOKENS`` (``name:token,name:token``), sent as ``Authorization: Bearer`` or
exchanged at ``/audit/login`` for an HttpOnly session cookie; or, where the app is mounted by a
host that has its own login (Airflow's api-server), the host's credential, checked by a
``HostLogin`` the host passes in (``caretouch.airflow.web_auth``). This module never imports
Airflow. Anyone authenticated is an auditor, and an auditor can only read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Protocol
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ..config import CareConfig
from ..errors import ConfigurationError
from .pages import Pages, root_path

log = logging.getLogger("caretouch.web.app")

SESSION_COOKIE = "care_audit_session"
_TOKEN_NAME_RX = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_LOGIN_BODY = 8192


class NotAuthenticated(Exception):
    """No valid credential: answered with 401 and a link to the login form."""


@dataclass(frozen=True)
class Auditor:
    """Whoever is looking: an API token's name or a host user; read-only either way."""

    name: str
    via: str  # "token" (bearer), "session" (login cookie) or the host login's ``via``


class HostLogin(Protocol):
    """The login of the host that mounts the view (Airflow's JWT: ``caretouch.airflow.web_auth``).

    ``user`` answers the user name behind a bearer credential (``bearer``) or, without one,
    behind the host's session cookie (named ``cookie``); None when it does not check out.
    """

    via: str  # shown beside the user's name ("airflow": "Airflow user")
    cookie: str  # the cookie the host keeps its credential in

    def looks_like(self, credential: str) -> bool: ...

    async def user(self, request: Request, bearer: str | None) -> str | None: ...


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
    def from_env(cls, config: CareConfig | None = None) -> AuditTokens:
        """``$CARE_AUDIT_TOKENS`` as ``config`` (else ``CareConfig.from_env()``) has it."""
        secret = (config or CareConfig.from_env()).audit_tokens
        return cls.parse(secret.get_secret_value() if secret is not None else None)

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
    host_login: HostLogin | None = None  # the mounting host's login; None: API tokens only
    session: dt.timedelta = field(default=dt.timedelta(hours=8))  # login cookie lifetime


class AuditGate:
    """Checks every request's credentials; the tokens are read on first use (no I/O at import)."""

    def __init__(self, auth: AuditAuth) -> None:
        self.auth = auth
        self._tokens = auth.tokens

    @property
    def tokens(self) -> AuditTokens:
        if self._tokens is None:
            self._tokens = AuditTokens.from_env()
            if not self._tokens:
                log.info(
                    "audit view: %s is empty; only the host's login is accepted", AuditTokens.ENV
                )
        return self._tokens

    async def authenticate(self, request: Request) -> Auditor:
        """Bearer header first (API token, else the host's credential); without one, the
        login cookie, else the host's cookie. Anything else is 401."""
        now = dt.datetime.now(dt.timezone.utc)  # clock: web request
        tokens = self.tokens
        host = self.auth.host_login
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        credential = credential.strip()
        if scheme.lower() == "bearer" and credential:
            name = tokens.match(credential)
            if name is not None:
                return Auditor(name, "token")
            if host is not None and host.looks_like(credential):
                user = await host.user(request, credential)
                if user is not None:
                    return Auditor(user, host.via)
            raise NotAuthenticated("the bearer token is not valid")
        if scheme:
            raise NotAuthenticated("only Bearer authorization is accepted")
        session = request.cookies.get(SESSION_COOKIE)
        if session:
            name = tokens.session_name(session, now)
            if name is not None:
                return Auditor(name, "session")
        if host is not None and request.cookies.get(host.cookie):
            user = await host.user(request, None)
            if user is not None:
                return Auditor(user, host.via)
        raise NotAuthenticated("no valid credentials")


async def _auditor(request: Request) -> Auditor:
    gate: AuditGate = request.app.state.care_audit_gate
    return await gate.authenticate(request)


# Module-level (not in a factory) so FastAPI can resolve it from string annotations.
AuditorDep = Annotated[Auditor, Depends(_auditor)]


def safe_next(value: str, root: str) -> str:
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


def next_of(request: Request) -> str:
    """The page a 401 was for, to come back to after logging in (GET pages only)."""
    if request.method != "GET":
        return ""
    # The full path: under a mount, Starlette keeps the mount prefix in the scope's path.
    query = request.url.query
    return f"{request.url.path}?{query}" if query else request.url.path


def create_login_router(gate: AuditGate, pages: Pages) -> APIRouter:
    """``/audit/login`` (exchange an API token for a session cookie) and ``/audit/logout``."""
    router = APIRouter()

    @router.get("/audit/login", response_class=HTMLResponse)
    def login_form(
        request: Request, next_page: Annotated[str, Query(alias="next")] = ""
    ) -> HTMLResponse:
        """A form to exchange an API token for a session cookie."""
        return pages.page(
            request,
            "login.html",
            who=None,
            title="Log in",
            next=safe_next(next_page, root_path(request)),
            error=None,
        )

    @router.post("/audit/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        """Check the token; on success set an HttpOnly session cookie and go back."""
        now = dt.datetime.now(dt.timezone.utc)  # clock: web request
        root = root_path(request)
        if request.headers.get("content-type", "").split(";")[0].strip() != (
            "application/x-www-form-urlencoded"
        ):
            return pages.error_page(request, 415, "Unsupported form", "send the login form")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > _MAX_LOGIN_BODY:
                return pages.error_page(request, 413, "Too large", "the login form is too large")
        try:
            form = parse_qs(body.decode("utf-8", "replace"), max_num_fields=10)
        except ValueError:  # more fields than a login form has
            return pages.error_page(request, 400, "Invalid form", "send the login form")
        token = (form.get("token") or [""])[0].strip()
        target = safe_next((form.get("next") or [""])[0], root)
        name = gate.tokens.match(token) if token else None
        if name is None:
            client = request.client.host if request.client else "?"
            log.warning("audit view: login refused from %s (token not recognised)", client)
            return pages.page(
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
            gate.tokens.session_value(name, now + gate.auth.session),
            max_age=int(gate.auth.session.total_seconds()),
            path=f"{root}/audit",
            httponly=True,
            secure=request.url.scheme == "https",
            samesite="strict",
        )
        return response

    @router.get("/audit/logout")
    def logout(request: Request) -> Response:
        """Forget the session cookie (harmless without one, so no credentials needed)."""
        root = root_path(request)
        response = RedirectResponse(f"{root}/audit/login", status_code=303)
        response.delete_cookie(
            SESSION_COOKIE, path=f"{root}/audit", httponly=True, samesite="strict"
        )
        return response

    return router
