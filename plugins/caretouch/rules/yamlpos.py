"""YAML loading that remembers where every key and value stood in the file.

Rule authors get errors as ``file:line:col``; to give them, every value we build from YAML is
paired with its position. ``load_with_positions`` returns plain Python data plus a ``Positions``
map from a path (tuple of keys and indexes) to the 1-based (line, col) of that value, and of
each mapping key under ``path + (KEY, name)``.
"""

from __future__ import annotations

import copy
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


# Bounds on every YAML file the product reads (rules, campaigns, policy.yaml, events.yaml):
# a few hundred bytes of aliases can stand for billions of nodes ("billion laughs"), and a deep
# nesting exhausts the parser's recursion. Real files are far inside these limits.
MAX_BYTES = 1 << 20  # 1 MiB
MAX_DEPTH = 64  # nested mappings and lists
MAX_ALIAS_NODES = 5_000  # nodes that aliases (*name, <<: *name) may add, in all


class _Refused(Exception):
    """A bound of this module was crossed at ``mark``."""

    def __init__(self, message: str, mark: Any) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


class _BoundedLoader(_Loader):
    """Composes with a depth limit, and marks each use of an alias with its own position.

    PyYAML resolves ``*name`` to the very node the anchor defined, so the node graph stays
    small however often it is used; expanding it is what explodes. Each use becomes a shallow
    copy carrying the alias's position and ``alias_of``, so that ``_build`` can charge the
    expansion to a budget, and refuse it where it stands in the file.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            target = super().compose_node(parent, index)
            alias: Any = copy.copy(target)
            alias.start_mark = alias.end_mark = mark
            alias.alias_of = target
            return alias
        if not self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent):
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(
                    f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


@dataclass
class _Expansion:
    """What aliases have added so far, and the size of each anchored node (memoised)."""

    added: int = 0
    inside: int = 0  # > 0 while building an alias's expansion (already charged)
    sizes: dict[int, int] = field(default_factory=dict)

    def size(self, node: yaml.Node, alias: yaml.Node, busy: frozenset[int] = frozenset()) -> int:
        node = getattr(node, "alias_of", node)
        key = id(node)
        if key in self.sizes:
            return self.sizes[key]
        if key in busy:
            raise _Refused("an alias refers to the node that contains it", alias.start_mark)
        busy = busy | {key}
        total = 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                total += self.size(k, alias, busy) + self.size(v, alias, busy)
                if total > MAX_ALIAS_NODES:
                    break  # the exact figure does not matter beyond the budget
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                total += self.size(item, alias, busy)
                if total > MAX_ALIAS_NODES:
                    break
        self.sizes[key] = total
        return total

    def charge(self, alias: yaml.Node) -> None:
        if self.inside:
            return
        self.added += self.size(alias, alias)
        if self.added > MAX_ALIAS_NODES:
            raise _Refused(
                f"aliases expand to more than {MAX_ALIAS_NODES} nodes in all; write the values "
                "out, or share less (a file of nested aliases can stand for billions of nodes)",
                alias.start_mark,
            )


def _loc(mark: Any) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1)


def _build(
    node: yaml.Node, path: Path, pos: Positions, loader: _Loader, expansion: _Expansion
) -> Any:
    pos.marks[path] = _loc(node.start_mark)
    if hasattr(node, "alias_of"):
        # The alias's whole expansion is charged here; aliases within it are part of it.
        expansion.charge(node)
        expansion.inside += 1
        try:  # its parts keep the positions where the anchor defined them
            return _build(node.alias_of, path, pos, loader, expansion)
        finally:
            expansion.inside -= 1
            pos.marks[path] = _loc(node.start_mark)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        merged: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                merged.append(value_node)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise _Refused(
                    "a key must be a plain value, not a list or mapping", key_node.start_mark
                )
            key = _no_nul(loader.construct_object(key_node, deep=True), key_node, pos)
            if key in out:
                raise ValidationError(
                    f"duplicate key {key!r}",
                    location=Location(pos.file, *_loc(key_node.start_mark)),
                )
            pos.marks[(*path, KEY, key)] = _loc(key_node.start_mark)
            out[key] = _build(value_node, (*path, key), pos, loader, expansion)
        for value_node in merged:
            _merge(out, value_node, path, pos, loader, expansion)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(item, (*path, i), pos, loader, expansion) for i, item in enumerate(node.value)
        ]
    return _no_nul(loader.construct_object(node, deep=True), node, pos)


def _no_nul(value: Any, node: yaml.Node, pos: Positions) -> Any:
    # YAML refuses a raw NUL but makes one of a "\0" escape; the store cannot hold it (nul.py).
    if isinstance(value, str) and NUL in value:
        raise ValidationError(
            "a NUL character (\\0) is not allowed",
            location=Location(pos.file, node.start_mark.line + 1, node.start_mark.column + 1),
        )
    return value


def _merge(
    out: dict[Any, Any],
    value_node: yaml.Node,
    path: Path,
    pos: Positions,
    loader: _Loader,
    expansion: _Expansion,
) -> None:
    """``<<: *a`` or ``<<: [*a, *b]``: the keys of the merged mappings that ``out`` lacks
    (YAML's merge key: the mapping's own keys win, then the earlier merged mapping)."""
    target = getattr(value_node, "alias_of", value_node)
    sources = [value_node]
    if isinstance(target, yaml.SequenceNode):
        if value_node is not target:
            expansion.charge(value_node)
        sources = target.value
    for source in sources:
        scratch = Positions(pos.file)
        built = _build(source, (), scratch, loader, expansion)
        if not isinstance(built, dict):
            raise _Refused(
                "a merge key (<<) takes a mapping or a list of mappings", source.start_mark
            )
        for key, value in built.items():
            if key in out:
                continue
            out[key] = value
            for sub, mark in scratch.marks.items():
                if sub[:1] == (key,) or sub[:2] == (KEY, key):
                    pos.marks[(*path, *sub)] = mark


def read_yaml_bytes(path: Any) -> bytes:
    """The bytes of a YAML file, refusing one over ``MAX_BYTES`` before reading it."""
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise ValidationError(
            f"file is {size:,} bytes; YAML files are limited to {MAX_BYTES:,}",
            location=Location(str(path), 1, 1),
        )
    return bytes(path.read_bytes())


def load_with_positions(text: str, file: str) -> tuple[Any, Positions]:
    """Parse one YAML document, returning its data and the positions of everything in it.

    Raises ``ValidationError`` with the file, line and column of a syntax error, and of
    whatever crosses a bound: size (``MAX_BYTES``), nesting (``MAX_DEPTH``), alias expansion
    (``MAX_ALIAS_NODES``).
    """
    pos = Positions(file)
    if len(text) > MAX_BYTES:
        raise ValidationError(
            f"file is {len(text):,} characters; YAML files are limited to {MAX_BYTES:,}",
            location=Location(file, 1, 1),
        )
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, pos
        return _build(node, (), pos, loader, _Expansion()), pos
    except _Refused as exc:
        raise ValidationError(exc.message, location=Location(file, *_loc(exc.mark))) from None
    except RecursionError:
        raise ValidationError(
            "nested too deeply (through aliases)", location=Location(file, 1, 1)
        ) from None
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
