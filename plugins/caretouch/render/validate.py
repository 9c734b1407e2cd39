"""Template checks for ``care validate``: the files exist and compile, use only the variables
and fields a rule provides (and, for an event rule, only declared payload fields), render
with sample data, and make an SMS providers take.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from difflib import get_close_matches
from pathlib import Path
from typing import Any, Protocol

import jinja2
from jinja2 import nodes

from ..errors import Location, RenderError, ValidationError
from ..nul import NUL
from ..sms import SMS_MAX_CHARS, SmsSize, sms_size
from ..vocab import Channel


class Templates(Protocol):
    """What the checks need of the template store (``templates.TemplateStore``, which calls
    them: this module does not import it)."""

    @property
    def root(self) -> Path: ...

    @property
    def env(self) -> jinja2.Environment: ...

    def paths(self, template_id: str, channel: Channel, locale: str) -> list[Path]: ...

    def relpath(self, template_id: str, channel: Channel, locale: str, part: str) -> str: ...

    def render(
        self, template_id: str, channel: Channel, locale: str, context: Mapping[str, Any]
    ) -> Any: ...


class DeclaredPayload(Protocol):
    """What a template check needs of an event type (``rules.event_types.EventType``)."""

    @property
    def name(self) -> str: ...

    @property
    def fields(self) -> Mapping[str, Any]: ...


def check_template(
    store: Templates,
    template_id: str,
    channel: Channel,
    locales: Iterable[str],
    provided: Mapping[str, frozenset[str] | None],
    samples: Sequence[Mapping[str, Any]] = (),
    payload: DeclaredPayload | None = None,
    sms_warn_segments: int | None = None,
) -> tuple[list[ValidationError], list[ValidationError]]:
    """``(errors, warnings)``: that the template's files exist, compile, and use only
    ``provided`` names.

    ``provided`` maps each top-level variable to the attributes it offers (``None``: any).
    Each of ``samples`` (contexts shaped like the real ones, e.g. an event without a
    policy) is then rendered, so that what only fails at run time (an unguarded
    ``policy.product`` when there is no policy, a filter given the wrong type) is
    caught by ``care validate`` instead of at send time. ``payload``, for an event rule,
    is its event type: ``event.payload.X`` must name one of its declared fields. An SMS
    that renders longer than providers take (``sms.SMS_MAX_CHARS``) is an error; one of
    more than ``sms_warn_segments`` segments, a warning.
    """
    errors: list[ValidationError] = []
    warnings: list[ValidationError] = []
    for locale in locales:
        complete = True
        for path in store.paths(template_id, channel, locale):
            if not path.is_file():
                complete = False
                errors.append(
                    ValidationError(
                        f"missing template file for channel {channel.value}, locale {locale}",
                        location=Location(str(path)),
                    )
                )
                continue
            found = check_source(store.env, path, provided, payload)
            complete = complete and not found
            errors.extend(found)
        if not complete:
            continue
        longest: tuple[SmsSize, int, str] | None = None
        shown_none = False
        for sample in samples:
            described = sample.get("_sample", "typical values")
            try:
                message = store.render(template_id, channel, locale, sample)
            except RenderError as exc:
                errors.append(
                    ValidationError(
                        f"{exc.message} (with sample data: {described})",
                        location=exc.location,
                    )
                )
                break
            printed = _printed_none(message)
            if printed is not None and not shown_none:
                shown_none = True  # once per locale; the other samples are still rendered
                part = "txt" if printed != "subject" else "subject.txt"
                if printed == "html":
                    part = "html"
                errors.append(
                    ValidationError(
                        f"the {printed} prints 'None' with sample data ({described}): an "
                        "empty value is printed as it is; guard it ({% if x is not none %}…"
                        "{% endif %}) or give a default (x | default('…'))",
                        location=Location(
                            str(store.root / store.relpath(template_id, channel, locale, part))
                        ),
                    )
                )
            if channel is Channel.SMS:
                size = sms_size(message.body)
                if longest is None or len(message.body) > longest[1]:
                    longest = (size, len(message.body), described)
        if longest is not None:
            where = store.root / store.relpath(template_id, Channel.SMS, locale, "txt")
            error, warning = _check_sms_size(where, longest, sms_warn_segments)
            errors.extend(error)
            warnings.extend(warning)
    return errors, warnings


# Python's None as a template prints it: a word no message of ours means to say.
_NONE_WORD = re.compile(r"(?<![A-Za-z0-9_])None(?![A-Za-z0-9_])")


def _printed_none(message: Any) -> str | None:
    """Which part of a rendered message shows ``None`` (an empty value printed), if any."""
    for part, text in (
        ("subject", message.subject),
        ("text", message.body),
        ("html", message.html),
    ):
        if text and _NONE_WORD.search(text):
            return part
    return None


def _check_sms_size(
    path: Path, longest: tuple[SmsSize, int, str], warn_segments: int | None
) -> tuple[list[ValidationError], list[ValidationError]]:
    """An SMS over the provider's limit is an error; one of more segments than the
    contact policy's ``sms.warn_segments`` a warning."""
    size, chars, described = longest
    where = Location(str(path))
    if chars > SMS_MAX_CHARS:
        error = ValidationError(
            f"the SMS is {chars:,} characters with sample data ({described}); "
            f"providers take at most {SMS_MAX_CHARS:,} (Twilio)",
            location=where,
        )
        return [error], []
    if warn_segments is not None and size.segments > warn_segments:
        warning = ValidationError(
            f"the SMS is {size} with sample data ({described}), more than "
            f"sms.warn_segments={warn_segments} of the contact policy: each segment "
            "is billed",
            location=where,
        )
        return [], [warning]
    return [], []


def payload_reads(tree: nodes.Template) -> Iterator[tuple[str, int]]:
    """``(field, line)`` for each ``event.payload.X``, ``event.payload['X']`` and
    ``event.payload.get('X')`` in a template."""

    def is_payload(node: nodes.Node) -> bool:
        return (
            isinstance(node, nodes.Getattr)
            and node.attr == "payload"
            and isinstance(node.node, nodes.Name)
            and node.node.name == "event"
        )

    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Call)):
        if isinstance(node, nodes.Getattr) and is_payload(node.node):
            if node.attr not in _DICT_METHODS:
                yield node.attr, node.lineno
        elif isinstance(node, nodes.Getitem) and is_payload(node.node):
            if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                yield node.arg.value, node.lineno
        elif (
            isinstance(node, nodes.Call)
            and isinstance(node.node, nodes.Getattr)
            and node.node.attr == "get"
            and is_payload(node.node.node)
            and node.args
            and isinstance(node.args[0], nodes.Const)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value, node.lineno


_DICT_METHODS = frozenset({"get", "items", "keys", "values"})


def check_source(
    env: jinja2.Environment,
    path: Path,
    provided: Mapping[str, frozenset[str] | None],
    payload: DeclaredPayload | None = None,
) -> list[ValidationError]:
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
    assigned |= {m.name for m in tree.find_all(nodes.Macro)}
    assigned |= {i.target for i in tree.find_all(nodes.Import)}
    for imported in tree.find_all(nodes.FromImport):
        assigned |= {n if isinstance(n, str) else n[1] for n in imported.names}
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
    if payload is not None and "event" in provided:
        for name, line in payload_reads(tree):
            if name in payload.fields:
                continue
            hint = get_close_matches(name, sorted(payload.fields), n=1)
            suggestion = f" (did you mean event.payload.{hint[0]}?)" if hint else ""
            errors.append(
                ValidationError(
                    f"payload field {name!r} is not declared for {payload.name}{suggestion}; "
                    f"declared: {', '.join(payload.fields) or 'none'} (events.yaml)",
                    location=Location(str(path), line),
                )
            )
    return errors
