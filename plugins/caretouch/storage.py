"""Shared state behind URLs: the anchors, run summaries and reports (docs/deploy.md#storage).

Every module that writes or reads those goes through a ``Location``: a URL opened with fsspec
(``s3://bucket/prefix``, ``file:///srv/care``, or a plain path for backward compatibility and
development), with the storage options of ``$CARE_STORAGE_OPTIONS``. Plain paths and
``file://`` URLs are *local*: they are on the disk of the worker that runs the task, unless
that disk is shared. Anything else (``s3://``, ``gs://``, ``abfs://``, ...) is shared by
every worker and the API server.

Credentials are not settings of ours: s3fs takes them from the standard AWS chain
(``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, a profile, an instance role) and the
endpoint from ``AWS_ENDPOINT_URL`` or ``{"endpoint_url": ...}`` in ``$CARE_STORAGE_OPTIONS``.

Writes are whole objects: ``write_bytes`` replaces (atomically on a local disk: temporary
file, then rename), ``create`` refuses to replace (``FileExistsError``): a local exclusive
create, S3's conditional put (``If-None-Match: *``), with S3 Object Lock retention when
given a ``Retention``.
"""

from __future__ import annotations

import datetime as dt
import os
import posixpath
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from .config import CareConfig, is_local_url, unwritable
from .errors import ConfigurationError


@dataclass(frozen=True)
class Retention:
    """S3 Object Lock retention for an object written once: its mode (``COMPLIANCE``: nobody,
    not even the account's root, can delete or shorten it; ``GOVERNANCE``: users with
    ``s3:BypassGovernanceRetention`` can) and the instant until which it is kept."""

    mode: str
    until: dt.datetime


@dataclass(frozen=True)
class Location:
    """A file or folder behind a URL or a plain path (see the module's docstring)."""

    url: str
    options: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    # -- what it is

    @property
    def is_local(self) -> bool:
        return is_local_url(self.url)

    @property
    def local_path(self) -> Path | None:
        """The path on this machine, for a local location; None otherwise."""
        if not self.is_local:
            return None
        return Path(self.url[len("file://") :] if self.url.startswith("file://") else self.url)

    @property
    def name(self) -> str:
        return posixpath.basename(self.url.rstrip("/"))

    def child(self, *parts: str) -> Location:
        """A location inside this one (``parts`` are plain names, joined with ``/``)."""
        local = self.local_path
        if local is not None and not self.url.startswith("file://"):
            return Location(str(local.joinpath(*parts)), self.options)
        return Location(posixpath.join(self.url.rstrip("/"), *parts), self.options)

    def __str__(self) -> str:
        return self.url

    def _fs(self) -> tuple[Any, str]:
        import fsspec  # here, not at import: the CLI starts fast

        try:
            fs, path = fsspec.url_to_fs(self.url, **(self.options if not self.is_local else {}))
        except (ImportError, ValueError) as exc:
            raise ConfigurationError(f"{self.url}: cannot open this storage URL ({exc})") from None
        return fs, path

    # -- reading

    def exists(self) -> bool:
        fs, path = self._fs()
        fs.invalidate_cache(path)
        return bool(fs.exists(path))

    def read_bytes(self) -> bytes:
        """The whole object; ``FileNotFoundError`` when there is none."""
        fs, path = self._fs()
        return bytes(fs.cat_file(path))

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def objects(self, suffix: str = "") -> list[Location]:
        """The objects directly in this folder whose names end with ``suffix``, by name; an
        empty list when the folder does not exist."""
        fs, path = self._fs()
        fs.invalidate_cache(path)
        try:
            entries = fs.ls(path, detail=True)
        except FileNotFoundError:
            return []
        names = sorted(
            posixpath.basename(str(e["name"]).rstrip("/"))
            for e in entries
            if e.get("type") == "file"
        )
        return [self.child(n) for n in names if n.endswith(suffix)]

    def read_all(self, suffix: str = "") -> list[tuple[Location, bytes]]:
        """Every object ``objects`` finds, with its content, fetched concurrently where the
        file system can (s3fs: one batch of GETs, not one round trip after another)."""
        items = self.objects(suffix)
        if not items:
            return []
        fs, _ = self._fs()
        paths = [item._fs()[1] for item in items]
        found = fs.cat(paths, on_error="raise")
        return [(item, bytes(found[path])) for item, path in zip(items, paths, strict=True)]

    # -- writing

    def write_bytes(self, data: bytes) -> None:
        """Write the whole object, replacing any; on a local disk atomically (a reader sees
        the old file or the new one, never half of it)."""
        local = self.local_path
        if local is not None:
            tmp = local.with_name(f".{local.name}.{uuid.uuid4().hex[:8]}.tmp")
            try:
                tmp.write_bytes(data)
            except FileNotFoundError:
                # The folder is made when the first file needs it, not checked before every
                # write (the outbox writes one file per message into the same few folders).
                local.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_bytes(data)
            os.replace(tmp, local)
            return
        fs, path = self._fs()
        fs.pipe_file(path, data)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def create(self, data: bytes, *, retention: Retention | None = None) -> None:
        """Write a new object, never replacing one: ``FileExistsError`` if it exists. On S3
        with ``retention``, the object is locked (Object Lock) until ``retention.until``."""
        local = self.local_path
        if local is not None:
            local.parent.mkdir(parents=True, exist_ok=True)
            tmp = local.with_name(f".{local.name}.{uuid.uuid4().hex[:8]}.tmp")
            tmp.write_bytes(data)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            try:
                os.link(tmp, local)  # fails if it exists: an exclusive, whole-file create
            finally:
                tmp.unlink()
            return
        fs, path = self._fs()
        extra: dict[str, Any] = {}
        if retention is not None:
            protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
            if "s3" not in protocols:
                raise ConfigurationError(
                    f"{self.url}: object retention (S3 Object Lock) needs an s3:// location"
                )
            extra = {
                "ObjectLockMode": retention.mode,
                "ObjectLockRetainUntilDate": retention.until,
            }
        if fs.exists(path):  # every store; S3's conditional put below closes the race
            raise FileExistsError(self.url)
        fs.pipe_file(path, data, mode="create", **extra)

    def problem(self, *, folder: bool) -> str | None:
        """Why this place cannot be written, or None (``config.unwritable`` for a local one;
        for a remote one, whether its bucket or root can be reached)."""
        local = self.local_path
        if local is not None:
            return unwritable(local, folder=folder)
        fs, path = self._fs()
        root = path.split("/", 1)[0]
        try:
            if not fs.exists(root):
                return f"{self.url}: {root} does not exist (or these credentials cannot see it)"
        except Exception as exc:  # any backend's error: the operator reads it
            return f"{self.url}: cannot be reached ({type(exc).__name__}: {exc})"
        return None


def at(place: Location | str | PurePath, config: CareConfig | None = None) -> Location:
    """The location of a URL, a path or a location (returned as it is), with the storage
    options of ``config`` (else none: a local path needs none)."""
    if isinstance(place, Location):
        return place
    options = config.storage_options() if config is not None else {}
    return Location(os.fspath(place) if isinstance(place, PurePath) else str(place), options)


def reports(config: CareConfig) -> Location:
    """Where run summaries and reports go (``$CARE_REPORTS_DIR``)."""
    return at(config.reports_dir, config)


def anchors(config: CareConfig) -> Location:
    """Where the anchors go (``$CARE_ANCHOR_FILE``): a local ``.jsonl`` file, or a folder."""
    return at(config.anchor_file, config)


def outbox(config: CareConfig) -> Location:
    """Where the outbox channel writes messages (``$CARE_OUTBOX_DIR``)."""
    return at(config.outbox_dir, config)


def check_destinations(config: CareConfig, *, outbox: bool = False) -> None:
    """Before a run's work: every place it writes at the end (run summaries, anchors and,
    with ``outbox``, message files) can be written, local (``CareConfig.check_destinations``)
    or behind a URL (its bucket can be reached). Raises ``ConfigurationError`` naming the
    place and its setting."""
    config.check_destinations(outbox=outbox)
    places = [
        (reports(config), True, "reports folder (CARE_REPORTS_DIR)"),
        (anchors(config), not config.anchor_file.endswith(".jsonl"), "anchors (CARE_ANCHOR_FILE)"),
    ]
    if outbox:
        places.append((at(config.outbox_dir, config), True, "outbox (--outbox, CARE_OUTBOX_DIR)"))
    for place, folder, what in places:
        if not place.is_local:
            problem = place.problem(folder=folder)
            if problem:
                raise ConfigurationError(f"{what}: {problem}")


def absolute(url: str) -> str:
    """A plain path made absolute (for a process started elsewhere); a URL as it is."""
    if is_local_url(url) and not url.startswith("file://"):
        return str(Path(url).resolve())
    return url
