"""Message templates: where they live and how one message is rendered for its channel.

Layout: ``templates/<template_id>/<channel>.<locale>.<part>`` where the parts are
``txt`` for SMS and an agent task's brief (``agent_task``), ``subject.txt``, ``html`` and
``txt`` for email; folders whose name starts
with ``_`` are shared, not templates (``_layout/email.html``, the HTML shell every email
template extends). Templates render in Jinja's sandbox (``sandbox.py``) with
``StrictUndefined`` (a missing variable is an error, never an empty string) and HTML
autoescape for ``.html`` parts, so a customer named ``<script>`` or ``{{ 7*7 }}`` is printed
literally.

Every render runs on a budget (``budget.RenderBudget``). A template that overruns it
(``range`` nested three deep, ``'x' * 10**9``) fails with a ``RenderError`` naming its file
and line, like any template error: ``care validate`` refuses it (``validate.py``), ``care
preview`` says so, and at send time only that touch fails (recorded, not sent).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta

from ..errors import ConfigurationError, Location, RenderError, ValidationError
from ..nul import NUL
from ..vocab import Channel
from .budget import RenderBudget
from .filters import FILTERS
from .sandbox import BoundedLoader, BudgetedEnvironment, render_metered
from .validate import DeclaredPayload, check_template

PARTS: dict[Channel, tuple[str, ...]] = {
    Channel.SMS: ("txt",),
    Channel.EMAIL: ("subject.txt", "html", "txt"),
    # The agent's script or brief of an ``agent_task`` (the rule's ``task.brief``).
    Channel.AGENT_TASK: ("txt",),
}
_PART_NAMES = {"txt": "message text", "subject.txt": "subject", "html": "HTML part"}


@dataclass(frozen=True)
class RenderedMessage:
    """A message ready for a channel: what the customer will read.

    ``headers``: the email headers its content needs (``List-Unsubscribe``, added with the
    link by ``unsubscribe.UnsubscribeLinks.add_to``); not part of ``content_hash``."""

    channel: Channel
    body: str
    subject: str | None = None
    html: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def content_hash(self) -> str:
        h = hashlib.sha256()
        for part in (self.channel.value, self.subject or "", self.body, self.html or ""):
            h.update(part.encode("utf-8"))
            h.update(b"\x00")
        return h.hexdigest()


class TemplateStore:
    """The templates directory, with a sandboxed Jinja environment over it."""

    def __init__(self, root: str | Path, budget: RenderBudget | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ConfigurationError(f"templates directory not found: {self.root}")
        self.budget = budget or RenderBudget()
        self.env = BudgetedEnvironment(
            self.budget,
            loader=BoundedLoader(self.root, self.budget.max_source),
            undefined=jinja2.StrictUndefined,
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
            # A template is compiled once per store and not checked for changes before every
            # render (a stat of each file per message): the messages of a run are rendered
            # from the files whose hash it records (``template_hash``, also taken once).
            auto_reload=False,
        )
        self.env.install_filters(FILTERS)
        self._hashes: dict[tuple[str, Channel, str], str] = {}
        self._warnings: list[ValidationError] = []

    def template_ids(self) -> list[str]:
        """The templates rules may name: every folder but the shared ones (``_layout``)."""
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("_")
        )

    def relpath(self, template_id: str, channel: Channel, locale: str, part: str) -> str:
        return f"{template_id}/{channel.value}.{locale}.{part}"

    def paths(self, template_id: str, channel: Channel, locale: str) -> list[Path]:
        return [
            self.root / self.relpath(template_id, channel, locale, part) for part in PARTS[channel]
        ]

    def template_hash(self, template_id: str, channel: Channel, locale: str) -> str:
        """Content hash of the files that make one (template, channel, locale): its own
        parts, then the templates they extend, include or import (the email layout)."""
        key = (template_id, channel, locale)
        if key not in self._hashes:
            h = hashlib.sha256()
            for path in self.paths(template_id, channel, locale):
                h.update(path.name.encode())
                h.update(b"\x00")
                h.update(path.read_bytes())
                h.update(b"\x00")
            for name in self._shared(self.paths(template_id, channel, locale)):
                h.update(name.encode())
                h.update(b"\x00")
                h.update((self.root / name).read_bytes())
                h.update(b"\x00")
            self._hashes[key] = h.hexdigest()
        return self._hashes[key]

    def _shared(self, paths: Iterable[Path]) -> list[str]:
        """The templates ``paths`` extend, include or import, and theirs in turn."""
        found: list[str] = []
        todo = list(paths)
        while todo:
            source = todo.pop().read_text(encoding="utf-8")
            try:
                names = meta.find_referenced_templates(self.env.parse(source))
            except jinja2.TemplateSyntaxError:
                continue  # care validate names it; the hash is of the bytes anyway
            for name in names:
                if name is not None and name not in found and (self.root / name).is_file():
                    found.append(name)
                    todo.append(self.root / name)
        return found

    def render(
        self, template_id: str, channel: Channel, locale: str, context: Mapping[str, Any]
    ) -> RenderedMessage:
        """Render one message; raises ``RenderError`` naming the template file on failure."""
        rendered: dict[str, str] = {}
        for part in PARTS[channel]:
            name = self.relpath(template_id, channel, locale, part)
            try:
                # ``agent`` is in every context, None for a customer without one (and for a
                # context recorded before agents were part of it).
                text = self._render_part(name, {"agent": None, **context, "locale": locale})
            except jinja2.TemplateNotFound as exc:
                # The missing file may be the template or one it extends (the layout).
                raise RenderError(f"template not found: {self.root / (exc.name or name)}") from exc
            except Exception as exc:
                # Whatever a template does wrong (an undefined variable, a filter given the
                # wrong type, the budget overrun, a macro recursing forever) fails this
                # message only, as a RenderError naming the file and, where known, the line.
                where = _template_line(exc, self.root) or (str(self.root / name), None)
                if isinstance(exc, RenderError):
                    message = exc.message
                elif isinstance(exc, jinja2.TemplateError):
                    message = str(exc)
                elif isinstance(exc, RecursionError):
                    message = "macros or loops nested too deeply (recursion)"
                else:
                    message = f"{type(exc).__name__}: {exc}"
                raise RenderError(f"cannot render: {message}", location=Location(*where)) from exc
            if NUL in text:  # a "\x00" in an expression: nothing can send or record it
                raise RenderError(
                    "cannot render: the message would contain a NUL character (\\x00)",
                    location=Location(str(self.root / name)),
                )
            rendered[part] = text.strip() if part != "html" else text
            if not text.strip():
                # Never send a blank message: an SMS with no text, an email with no subject.
                raise RenderError(
                    f"cannot render: the {_PART_NAMES[part]} is empty",
                    location=Location(str(self.root / name)),
                )
        if channel is not Channel.EMAIL:  # an SMS, an agent's brief: the text only
            return RenderedMessage(channel, body=rendered["txt"])
        subject = " ".join(rendered["subject.txt"].split())
        return RenderedMessage(
            channel, body=rendered["txt"], subject=subject, html=rendered["html"]
        )

    def _render_part(self, name: str, context: Mapping[str, Any]) -> str:
        """One template file rendered on a fresh budget (``sandbox.render_metered``)."""
        return render_metered(self.env.get_template(name), context, self.budget)

    def check(
        self,
        template_id: str,
        channel: Channel,
        locales: Iterable[str],
        provided: Mapping[str, frozenset[str] | None],
        samples: Sequence[Mapping[str, Any]] = (),
        payload: DeclaredPayload | None = None,
        sms_warn_segments: int | None = None,
    ) -> list[ValidationError]:
        """The errors of one template for ``care validate`` (``validate.check_template``);
        its warnings are kept for ``take_warnings``."""
        errors, warnings = check_template(
            self, template_id, channel, locales, provided, samples, payload, sms_warn_segments
        )
        self._warnings.extend(warnings)
        return errors

    def take_warnings(self) -> list[ValidationError]:
        """The warnings of the checks since the last call (SMS longer than the policy likes)."""
        warnings, self._warnings = self._warnings, []
        return warnings


def _template_line(exc: BaseException, root: Path) -> tuple[str, int | None] | None:
    """The template file and line an exception was raised at: Jinja's own errors carry them;
    for others, the innermost template frame of the traceback (Jinja rewrites it so)."""
    lineno = getattr(exc, "lineno", None)
    filename = getattr(exc, "filename", None)
    if lineno is not None and filename:
        return str(filename), lineno
    prefix = os.path.normpath(str(root)) + os.sep
    found = None
    tb = exc.__traceback__
    while tb is not None:
        file = tb.tb_frame.f_code.co_filename
        if os.path.normpath(file).startswith(prefix):
            found = (file, tb.tb_lineno)
        tb = tb.tb_next
    return found
