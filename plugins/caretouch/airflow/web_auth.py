"""Airflow's login for the audit view: a JWT minted by Airflow's auth manager opens it.

The web app (``caretouch.web``) does not import Airflow; the plugin (``plugins/care_plugin.py``)
passes ``AirflowLogin()`` as its ``AuditAuth.host_login``. The JWT comes as
``Authorization: Bearer`` or in the UI's ``_token`` cookie and is checked by Airflow's own
``GetUserDep``. Airflow's security module is imported on the first check, not at import.
"""

from __future__ import annotations

import logging
from typing import Any, get_args

from fastapi import HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials

log = logging.getLogger("caretouch.web.app")

# Airflow's UI keeps its JWT in this cookie (``COOKIE_NAME_JWT_TOKEN``).
AIRFLOW_JWT_COOKIE = "_token"


class AirflowLogin:
    """A ``caretouch.web.HostLogin``: the Airflow user behind a JWT, or None."""

    via = "airflow"
    cookie = AIRFLOW_JWT_COOKIE

    def __init__(self) -> None:
        self._get_user: list[Any] = []

    def looks_like(self, credential: str) -> bool:
        return credential.count(".") == 2 and len(credential) > 20

    def _dependency(self) -> Any | None:
        """Airflow's own ``GetUserDep`` dependency, or None where Airflow cannot give it."""
        if not self._get_user:
            try:
                from airflow.api_fastapi.core_api.security import GetUserDep
            except Exception as exc:  # an Airflow that cannot configure itself
                log.info("audit view: Airflow JWTs not accepted (%s: %s)", type(exc).__name__, exc)
                self._get_user.append(None)
            else:
                # GetUserDep is Annotated[BaseUser, Depends(get_user)]. It is called directly
                # rather than declared on the routes because an API token must be able to
                # stand in for it: declared, it would answer 401 before the token was looked at.
                self._get_user.append(get_args(GetUserDep)[1].dependency)
        return self._get_user[0]

    async def user(self, request: Request, bearer: str | None) -> str | None:
        """The Airflow user name behind the request's JWT (header or ``_token`` cookie)."""
        get_user = self._dependency()
        if get_user is None:
            return None
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
