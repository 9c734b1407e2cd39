"""Message templates: where they live, how they are checked, how they are rendered.

Layout: ``templates/<template_id>/<channel>.<locale>.<part>`` where the parts are
``txt`` for SMS and ``subject.txt``, ``html`` and ``txt`` for email. Templates render in Jinja's
sandbox with ``StrictUndefined`` (a missing variable is an error, never an empty string) and
HTML autoescape for ``.html`` parts, so a customer named ``<script>`` or ``{{ 7*7 }}`` is printed
literally.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.sandbox import SandboxedEnvironment

from .errors import ConfigurationError, Location, RenderError, ValidationError
from .nul import NUL
from .vocab import Channel, Locale

PARTS: dict[Channel, tuple[str, ...]] = {
    Channel.SMS: ("txt",),
    Channel.EMAIL: ("subject.txt", "html", "txt"),
}


@dataclass(frozen=True)
class RenderedMessage:
    """A message ready for a channel: what the customer will read."""

    channel: Channel
    body: str
    subject: str | None = None
    html: str | None = None

    def content_hash(self) -> str:
        h = hashlib.sha256()
        for part in (self.channel.value, self.subject or "", self.body, self.html or ""):
            h.update(part.encode("utf-8"))
            h.update(b"\x00")
        return h.hexdigest()


_MONTHS_EN = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]


def _format_date(ctx: Any, value: Any) -> str:
    """``{{ policy.renewal_date | longdate }}`` in the customer's locale."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        value = value.date()
    if not isinstance(value, dt.date):
        raise RenderError(f"longdate expects a date, got {type(value).__name__}")
    locale = ctx.get("locale", Locale.EN.value)
    if str(locale).startswith("zh"):
        return f"{value.year}年{value.month}月{value.day}日"
    return f"{value.day} {_MONTHS_EN[value.month - 1]} {value.year}"


def _format_money(value: Any) -> str:
    if value is None:
        return ""
    return f"{Decimal(str(value)):,.2f}"


class TemplateStore:
    """The templates directory, with a sandboxed Jinja environment over it."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ConfigurationError(f"templates directory not found: {self.root}")
        self.env = SandboxedEnvironment(
            loader=jinja2.FileSystemLoader(str(self.root)),
            undefined=jinja2.StrictUndefined,
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["longdate"] = jinja2.pass_context(_format_date)
        self.env.filters["money"] = _format_money
        self._hashes: dict[tuple[str, Channel, str], str] = {}

    def template_ids(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    def relpath(self, template_id: str, channel: Channel, locale: str, part: str) -> str:
        return f"{template_id}/{channel.value}.{locale}.{part}"

    def paths(self, template_id: str, channel: Channel, locale: str) -> list[Path]:
        return [
            self.root / self.relpath(template_id, channel, locale, part) for part in PARTS[channel]
        ]

    def template_hash(self, template_id: str, channel: Channel, locale: str) -> str:
        """Content hash of the files that make one (template, channel, locale)."""
        key = (template_id, channel, locale)
        if key not in self._hashes:
            h = hashlib.sha256()
            for path in self.paths(template_id, channel, locale):
                h.update(path.name.encode())
                h.update(b"\x00")
                h.update(path.read_bytes())
                h.update(b"\x00")
            self._hashes[key] = h.hexdigest()
        return self._hashes[key]

    def render(
        self, template_id: str, channel: Channel, locale: str, context: Mapping[str, Any]
    ) -> RenderedMessage:
        """Render one message; raises ``RenderError`` naming the template file on failure."""
        rendered: dict[str, str] = {}
        for part in PARTS[channel]:
            name = self.relpath(template_id, channel, locale, part)
            try:
                text = self.env.get_template(name).render({**context, "locale": locale})
            except jinja2.TemplateNotFound as exc:
                raise RenderError(f"template not found: {self.root / name}") from exc
            except (
                jinja2.TemplateError,
                RenderError,
                TypeError,
                ValueError,
                ArithmeticError,
            ) as exc:
                # A filter's own error (RenderError, TypeError...) carries no line; a Jinja
                # error does. Either way the message names the template file.
                lineno = getattr(exc, "lineno", None)
                message = exc.message if isinstance(exc, RenderError) else str(exc)
                raise RenderError(
                    f"cannot render: {message}", location=Location(str(self.root / name), lineno)
                ) from exc
            if NUL in text:  # a "\x00" in an expression: nothing can send or record it
                raise RenderError(
                    "cannot render: the message would contain a NUL character (\\x00)",
                    location=Location(str(self.root / name)),
                )
            rendered[part] = text.strip() if part != "html" else text
        if channel is Channel.SMS:
            return RenderedMessage(channel, body=rendered["txt"])
        subject = " ".join(rendered["subject.txt"].split())
        return RenderedMessage(
            channel, body=rendered["txt"], subject=subject, html=rendered["html"]
        )

    def check(
        self,
        template_id: str,
        channel: Channel,
        locales: Iterable[str],
        provided: Mapping[str, frozenset[str] | None],
        samples: Sequence[Mapping[str, Any]] = (),
    ) -> list[ValidationError]:
        """Check that the template's files exist, compile, and use only ``provided`` names.

        ``provided`` maps each top-level variable to the attributes it offers (``None``: any).
        Each of ``samples`` (contexts shaped like the real ones, e.g. an event without a
        policy) is then rendered, so that what only fails at run time (an unguarded
        ``policy.product`` when there is no policy, a filter given the wrong type) is
        caught by ``care validate`` instead of at send time.
        """
        errors: list[ValidationError] = []
        for locale in locales:
            complete = True
            for path in self.paths(template_id, channel, locale):
                if not path.is_file():
                    complete = False
                    errors.append(
                        ValidationError(
                            f"missing template file for channel {channel.value}, locale {locale}",
                            location=Location(str(path)),
                        )
                    )
                    continue
                found = _check_source(self.env, path, provided)
                complete = complete and not found
                errors.extend(found)
            if not complete:
                continue
            for sample in samples:
                try:
                    self.render(template_id, channel, locale, sample)
                except RenderError as exc:
                    errors.append(
                        ValidationError(
                            f"{exc.message} (with sample data: {sample.get('_sample', 'typical values')})",
                            location=exc.location,
                        )
                    )
                    break
        return errors


def _check_source(
    env: jinja2.Environment, path: Path, provided: Mapping[str, frozenset[str] | None]
) -> list[ValidationError]:
    from difflib import get_close_matches

    source = path.read_text(encoding="utf-8")
    if NUL in source:
        # It would be sent and recorded as it is; the store cannot hold it (nul.py).
        before = source[: source.index(NUL)]
        line, col = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        return [
            ValidationError(
                "a NUL character (\\x00) is not allowed in a template",
                location=Location(str(path), line, col),
            )
        ]
    try:
        tree = env.parse(source, filename=str(path))
        # Compiling also checks what parsing does not, such as unknown filters and tests.
        env.compile(tree, filename=str(path))
    except jinja2.TemplateSyntaxError as exc:
        return [
            ValidationError(
                f"template syntax error: {exc.message}", location=Location(str(path), exc.lineno)
            )
        ]
    errors: list[ValidationError] = []
    assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    known = set(provided) | assigned | {"locale", "loop", "range", "true", "false", "none"}
    for name_node in tree.find_all(nodes.Name):
        if name_node.ctx != "load" or name_node.name in known:
            continue
        hint = get_close_matches(name_node.name, sorted(provided), n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        errors.append(
            ValidationError(
                f"undefined variable {name_node.name!r}{suggestion}; "
                f"available: {', '.join(sorted(provided))}",
                location=Location(str(path), name_node.lineno),
            )
        )
    for attr_node in tree.find_all(nodes.Getattr):
        target = attr_node.node
        if not isinstance(target, nodes.Name) or target.name not in provided:
            continue
        allowed = provided[target.name]
        if allowed is None or attr_node.attr in allowed:
            continue
        hint = get_close_matches(attr_node.attr, sorted(allowed), n=1)
        suggestion = f" (did you mean {target.name}.{hint[0]}?)" if hint else ""
        errors.append(
            ValidationError(
                f"undefined field {target.name}.{attr_node.attr}{suggestion}",
                location=Location(str(path), attr_node.lineno),
            )
        )
    return errors
