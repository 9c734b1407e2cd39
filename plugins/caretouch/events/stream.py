"""The Redis Stream intake: a consumer group whose entries are acknowledged only after commit.

A core system adds one entry per event to the stream (``XADD care:events * event '{...}'``, or
the event's fields flat: ``XADD care:events * event_id E1 type policy_purchased ...``).
``StreamConsumer.drain`` reads as a member of the consumer group and, for each batch:

1. commits the batch to the inbox (``inbox.submit``: accepted, duplicate or dead-lettered);
2. only then acknowledges the entries (``XACK``).

A consumer that dies between 1 and 2 leaves its entries pending in the group; they are read
again by the same consumer when it comes back (its own pending list is read first) or claimed
by another one once idle for ``claim_idle`` (``XAUTOCLAIM``). Re-delivery is harmless: the
inbox keys events by ``event_id``. Entries added while no consumer runs wait in the stream.

One entry never stalls the others: an entry the inbox refuses (malformed, too large, too
deep...) is dead-lettered and acknowledged like any other. Should committing a batch fail
for another reason, its entries are committed one by one, so that only the one that fails
on its own stays pending; once it has been delivered ``MAX_DELIVERIES`` times (Redis counts,
``XPENDING``) and still fails alone, it is dead-lettered with the error and acknowledged.
Failures that are not one entry's fault (the store unreachable) stop the drain instead, and
nothing is dead-lettered for them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import InterfaceError, OperationalError

from ..config import DEFAULT_GROUP, DEFAULT_REDIS_URL, DEFAULT_STREAM, CareConfig
from ..errors import ConfigurationError
from ..mask import scrub
from ..rules.event_types import EventTypes
from ..store.db import Store
from ..vocab import DeadLetterReason
from .inbox import Incoming, IntakeReport, dead_letter, submit

log = logging.getLogger("caretouch.events")

# An entry pending this long in a consumer's list is taken to belong to a dead consumer.
DEFAULT_CLAIM_IDLE = dt.timedelta(minutes=2)
BATCH = 500
# An entry that failed this many deliveries, and fails once more on its own, is dead-lettered.
MAX_DELIVERIES = 5
# Failures that are not one entry's fault (the store or Redis unreachable, a broken set-up):
# they stop the drain, the entries stay pending, and nothing is dead-lettered for them.
_NOT_ONE_ENTRYS_FAULT = (
    ConfigurationError,
    OperationalError,
    InterfaceError,
    RedisConnectionError,
    RedisTimeoutError,
    MemoryError,
)

Clock = Callable[[], dt.datetime]
# Test seam: called with ("read" | "committed", entry ids) around the commit.
Checkpoint = Callable[[str, list[str]], None]


@dataclass(frozen=True)
class StreamSettings:
    """Where the event stream is: ``$CARE_REDIS_URL``, ``$CARE_EVENT_STREAM``,
    ``$CARE_EVENT_GROUP`` (defaults: local Redis, ``care:events``, ``caretouch``)."""

    url: str = DEFAULT_REDIS_URL
    stream: str = DEFAULT_STREAM
    group: str = DEFAULT_GROUP

    @classmethod
    def from_env(cls, config: CareConfig | None = None) -> StreamSettings:
        """From ``config`` (else ``CareConfig.from_env()``)."""
        config = config or CareConfig.from_env()
        return cls(url=config.redis_url, stream=config.event_stream, group=config.event_group)


def connect(url: str) -> Any:
    """A Redis client (text answers) for ``url``; ``ConfigurationError`` if unusable."""
    import redis

    try:
        # Bytes that are not UTF-8 are read as lone surrogates (the inbox refuses them as
        # "not UTF-8 text"): strictly decoded, one such entry would fail every read for good.
        return redis.Redis.from_url(
            url, decode_responses=True, encoding_errors="surrogateescape", socket_timeout=30
        )
    except ValueError as exc:
        raise ConfigurationError(f"invalid Redis URL: {exc}") from exc


def entry_event(fields: Mapping[str, str] | None) -> Mapping[str, Any] | str:
    """The event an entry carries: its ``event`` field (JSON text), or its fields flat."""
    if not fields:
        return {}
    if set(fields) == {"event"}:
        return fields["event"]
    return dict(fields)


def add(client: Any, stream: str, event: Mapping[str, Any], *, maxlen: int | None = None) -> str:
    """Add one event to the stream (as a single JSON ``event`` field); returns the entry id."""
    text = json.dumps(dict(event), ensure_ascii=False, default=str)
    if maxlen is None:
        return str(client.xadd(stream, {"event": text}))
    return str(client.xadd(stream, {"event": text}, maxlen=maxlen, approximate=True))


@dataclass
class DrainReport:
    """What one ``drain`` did: entries by how they came, and what the inbox made of them."""

    own_pending: int = 0  # re-read from this consumer's own pending list
    claimed: int = 0  # taken over from dead consumers
    new: int = 0  # read for the first time
    acked: int = 0
    left_pending: int = 0  # entries that failed on their own: delivered again next drain
    intake: IntakeReport = field(default_factory=IntakeReport)

    def as_dict(self) -> dict[str, int]:
        return {
            "own_pending": self.own_pending,
            "claimed": self.claimed,
            "new": self.new,
            "acked": self.acked,
            **self.intake.as_dict(),
            "left_pending": self.left_pending,
        }


class StreamConsumer:
    """One member (``consumer``) of the stream's consumer group, feeding the inbox."""

    def __init__(
        self,
        client: Any,
        store: Store,
        *,
        stream: str = DEFAULT_STREAM,
        group: str = DEFAULT_GROUP,
        consumer: str,
        claim_idle: dt.timedelta = DEFAULT_CLAIM_IDLE,
        batch: int = BATCH,
        checkpoint: Checkpoint | None = None,
        event_types: EventTypes | None = None,
    ) -> None:
        self.client = client
        self.event_types = event_types  # declared types: checked at intake when given
        self.store = store
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.claim_idle = claim_idle
        self.batch = batch
        self.checkpoint = checkpoint

    def ensure_group(self) -> None:
        """Create the group (and the stream) if missing; it starts at the stream's first entry,
        so events added before any consumer existed are read too."""
        import redis

        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _commit(self, entries: list[tuple[str, Any]], clock: Clock, report: DrainReport) -> None:
        """Commit ``entries`` to the inbox, then acknowledge them."""
        ids = [entry_id for entry_id, _ in entries]
        if self.checkpoint:
            self.checkpoint("read", ids)
        items = [
            Incoming(entry_event(fields), ref=f"{self.stream}/{entry_id}")
            for entry_id, fields in entries
        ]
        report.intake.merge(
            submit(self.store, items, source="stream", now=clock(), event_types=self.event_types)
        )
        if self.checkpoint:
            self.checkpoint("committed", ids)
        report.acked += int(self.client.xack(self.stream, self.group, *ids))

    def _deliveries(self, entries: list[tuple[str, Any]]) -> dict[str, int]:
        """How many times each of these entries (pending for this consumer) was delivered."""
        answer = self.client.xpending_range(
            self.stream,
            self.group,
            min=entries[0][0],
            max=entries[-1][0],
            count=len(entries),
            consumername=self.consumer,
        )
        return {str(p["message_id"]): int(p["times_delivered"]) for p in answer}

    def _give_up(
        self, entry: tuple[str, Any], times: int, exc: Exception, clock: Clock, report: DrainReport
    ) -> None:
        entry_id, fields = entry
        ref = f"{self.stream}/{entry_id}"
        reason = (
            f"{DeadLetterReason.DELIVERY_LIMIT.value}: failed {times} deliveries; last: "
            f"{type(exc).__name__}: {scrub(str(exc))}"
        )
        dead_letter(
            self.store, Incoming(entry_event(fields), ref), reason, source="stream", now=clock()
        )
        report.intake.dead.append((ref, reason))
        report.acked += int(self.client.xack(self.stream, self.group, entry_id))

    def _process(self, entries: list[tuple[str, Any]], clock: Clock, report: DrainReport) -> None:
        if not entries:
            return
        try:
            self._commit(entries, clock, report)
            return
        except _NOT_ONE_ENTRYS_FAULT:
            raise
        except Exception as exc:
            log.warning(
                "stream %s: a batch of %d failed (%s); committing its entries one by one",
                self.stream,
                len(entries),
                type(exc).__name__,
            )
        deliveries = self._deliveries(entries)
        for entry in entries:
            try:
                self._commit([entry], clock, report)
            except _NOT_ONE_ENTRYS_FAULT:
                raise
            except Exception as exc:
                times = deliveries.get(entry[0], 1)
                if times >= MAX_DELIVERIES:
                    self._give_up(entry, times, exc, clock, report)
                else:
                    report.left_pending += 1
                    log.warning(
                        "stream %s: entry %s failed (delivery %d of %d; %s): left pending",
                        self.stream,
                        entry[0],
                        times,
                        MAX_DELIVERIES,
                        type(exc).__name__,
                    )

    def _read(self, start: str) -> list[tuple[str, Any]]:
        answer = self.client.xreadgroup(
            self.group, self.consumer, {self.stream: start}, count=self.batch
        )
        return list(answer[0][1]) if answer else []

    def drain(self, clock: Clock, *, max_entries: int | None = None) -> DrainReport:
        """Process everything this consumer may: its own pending entries, entries idle in dead
        consumers' lists, then every new entry, batch by batch, until the stream is empty (or
        ``max_entries`` were read). Non-blocking."""
        report = DrainReport()
        self.ensure_group()
        # 1. This consumer's own pending entries (it crashed before acknowledging them, or
        # they failed): each read once per drain, from the oldest on.
        after = "0"
        while True:
            entries = self._read(after)
            if not entries:
                break
            report.own_pending += len(entries)
            self._process(entries, clock, report)
            after = entries[-1][0]
        # 2. Entries a dead consumer read and never acknowledged.
        start = "0-0"
        idle_ms = int(self.claim_idle.total_seconds() * 1000)
        while True:
            answer = self.client.xautoclaim(
                self.stream, self.group, self.consumer, idle_ms, start_id=start, count=self.batch
            )
            start, entries = answer[0], list(answer[1])
            # Entries deleted from the stream (answer[2]) left the pending list with them.
            entries = [(i, f) for i, f in entries if f is not None]
            report.claimed += len(entries)
            self._process(entries, clock, report)
            if start in ("0-0", "0"):
                break
        # 3. New entries.
        while max_entries is None or report.new < max_entries:
            entries = self._read(">")
            if not entries:
                break
            report.new += len(entries)
            self._process(entries, clock, report)
        if report.acked or report.left_pending:
            log.info("stream %s: %s", self.stream, report.as_dict())
        return report
