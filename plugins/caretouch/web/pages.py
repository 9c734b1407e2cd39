"""The web pages' HTML: one Jinja environment over ``web/templates/``, and page responses.

Every page is a template (autoescaped, undefined names are errors); nothing builds HTML in
Python strings. ``root_path`` is the mount prefix links carry (``/care`` under Airflow).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

TEMPLATES_DIR = Path(__file__).with_name("templates")


def environment() -> Environment:
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


def root_path(request: Request) -> str:
    # "/care" under Airflow (plus any [api] base_url path), "" when served on its own.
    return str(request.scope.get("root_path", "")).rstrip("/")


class Pages:
    """Renders the audit view's templates into responses."""

    def __init__(self, env: Environment | None = None) -> None:
        self.env = env or environment()

    def page(
        self,
        request: Request,
        template: str,
        *,
        who: Any | None,
        status_code: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        html = self.env.get_template(template).render(root=root_path(request), who=who, **context)
        return HTMLResponse(html, status_code=status_code)

    def error_page(
        self, request: Request, status_code: int, title: str, message: str, **headers: str
    ) -> HTMLResponse:
        response = self.page(
            request, "error.html", who=None, status_code=status_code, title=title, message=message
        )
        response.headers.update(headers)
        return response
