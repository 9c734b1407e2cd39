"""YAML loading that remembers where every key and value stood in the file.

Rule authors get errors as ``file:line:col``; to give them, every value we build from YAML is
paired with its position. ``load_with_positions`` returns plain Python data plus a ``Positions``
map from a path (tuple of keys and indexes) to the 1-based (line, col) of that value, and of
each mapping key under ``path + (KEY, name)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import Location, ValidationError
from ..nul import NUL

Path = tuple[Any, ...]
KEY = "<key>"


@dataclass
class Positions:
    file: str
    marks: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def at(self, path: Path, *, key: bool = False) -> Location:
        """The location of the value at ``path`` (or of its key), else of the nearest parent."""
        if key and path:
            mark = self.marks.get((*path[:-1], KEY, path[-1]))
            if mark:
                return Location(self.file, *mark)
        probe = tuple(path)
        while True:
            mark = self.marks.get(probe)
            if mark:
                return Location(self.file, *mark)
            if not probe:
                return Location(self.file, 1, 1)
            probe = probe[:-1]


class _Loader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1 surprises that bite rule authors."""


# "09:00" must stay a string (YAML 1.1 reads 9:00 as the sexagesimal integer 540), and
# "yes"/"no"/"on"/"off" must not silently become booleans: only true/false are booleans.
_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, rx)
        for tag, rx in resolvers
        if tag
        not in (
            "tag:yaml.org,2002:bool",
            "tag:yaml.org,2002:int",
            "tag:yaml.org,2002:float",
            # Dates stay strings: the schema checks their form, the loader parses them.
            "tag:yaml.org,2002:timestamp",
        )
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9_]*)$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?\.[0-9_]+(?:[eE][-+]?[0-9]+)?$"),
    list("-+0123456789."),
)


def _build(node: yaml.Node, path: Path, pos: Positions, loader: _Loader) -> Any:
    pos.marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _no_nul(loader.construct_object(key_node, deep=True), key_node, pos)
            if isinstance(key, (list, dict)):
                key = str(key)
            if key in out:
                raise ValidationError(
                    f"duplicate key {key!r}",
                    location=Location(
                        pos.file, key_node.start_mark.line + 1, key_node.start_mark.column + 1
                    ),
                )
            pos.marks[(*path, KEY, key)] = (
                key_node.start_mark.line + 1,
                key_node.start_mark.column + 1,
            )
            out[key] = _build(value_node, (*path, key), pos, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), pos, loader) for i, item in enumerate(node.value)]
    return _no_nul(loader.construct_object(node, deep=True), node, pos)


def _no_nul(value: Any, node: yaml.Node, pos: Positions) -> Any:
    # YAML refuses a raw NUL but makes one of a "\0" escape; the store cannot hold it (nul.py).
    if isinstance(value, str) and NUL in value:
        raise ValidationError(
            "a NUL character (\\0) is not allowed",
            location=Location(pos.file, node.start_mark.line + 1, node.start_mark.column + 1),
        )
    return value


def load_with_positions(text: str, file: str) -> tuple[Any, Positions]:
    """Parse one YAML document, returning its data and the positions of everything in it.

    Raises ``ValidationError`` with the file, line and column of a syntax error.
    """
    pos = Positions(file)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, pos
        return _build(node, (), pos, loader), pos
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        problem = exc.problem or str(exc)
        ctx = exc.context_mark
        if (
            exc.context
            and ctx is not None
            and (ctx.line, ctx.column) != (mark.line if mark else -1, mark.column if mark else -1)
        ):
            problem += (
                f" ({exc.context} that started at line {ctx.line + 1}, column {ctx.column + 1})"
            )
        raise ValidationError(
            f"YAML syntax error: {problem}", location=Location(file, line, col)
        ) from None
    except yaml.YAMLError as exc:
        raise ValidationError(f"YAML error: {exc}", location=Location(file)) from None
    finally:
        loader.dispose()
