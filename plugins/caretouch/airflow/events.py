"""``care_events``: business events through Airflow Assets, made durable before anything acts.

Three ways in, one inbox (docs/events.md):
- the Redis Stream: an ``AssetWatcher`` whose trigger (``EventStreamTrigger``) only notices that
  the stream has entries it has not rung for yet and fires an asset event, a doorbell; the run
  then drains the stream through the consumer group (ack after commit);
- Airflow's REST API: ``POST /api/v2/assets/events`` on the ``care_events`` asset with the event
  in ``extra`` (``{"event": {...}}`` or ``{"events": [...]}``), or a DAG run with ``conf`` of the
  same shape;
- a sweep every five minutes (the schedule is asset-or-time), so that a lost or merged doorbell
  costs latency, never an event.
Each run drains everything new, whatever woke it, and plans the new events' touches; delayed
ones wait in the ledger for ``care_dispatch``.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from airflow.sdk import Asset, AssetOrTimeSchedule, AssetWatcher, CronTriggerTimetable, dag, task
from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from .. import storage
from ..config import CareConfig
from ..events.inbox import Incoming
from ..events.stream import StreamSettings
from ..vocab import DeadLetterReason
from .daily import DEFAULT_ARGS, _engine, _now, fail_if_partial, rule_errors, task_run_id

log = logging.getLogger("caretouch.airflow")

ASSET_NAME = "care_events"
SWEEP = "*/5 * * * *"
# Events in one asset event's extra or one run's conf (``{"events": [...]}``).
MAX_EVENTS_PER_CALL = 10_000
# Keys Airflow adds to an asset event's extra; not part of an event.
_AIRFLOW_KEYS = {"from_rest_api", "from_trigger"}


class EventStreamTrigger(BaseEventTrigger):
    """Fires once when the event stream has entries this doorbell has not rung for.

    It reads nothing on behalf of the consumer group (the entries stay undelivered for
    ``care_events`` to read and acknowledge): it blocks on ``XREAD`` after the last entry it
    rang for, remembered in Redis (``<stream>:doorbell:<group>``), so that a restart of the
    trigger (the triggerer restarts it after every event) does not ring again for the same
    entries, and entries added while the triggerer was down ring as soon as it is back. The
    first time, it starts from the group's last delivered entry. No polling delay: ``XREAD
    BLOCK`` returns as soon as an entry is added.
    """

    def __init__(self, stream: str, group: str, block_seconds: float = 30.0) -> None:
        super().__init__()
        self.stream = stream
        self.group = group
        self.block_seconds = block_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"stream": self.stream, "group": self.group, "block_seconds": self.block_seconds},
        )

    @property
    def mark_key(self) -> str:
        return f"{self.stream}:doorbell:{self.group}"

    async def _start(self, client: Any) -> str:
        mark = await client.get(self.mark_key)
        if mark:
            return str(mark)
        import redis

        try:
            groups = await client.xinfo_groups(self.stream)
        except redis.ResponseError:  # no stream yet: every entry to come is new
            return "0-0"
        for group in groups:
            if group.get("name") == self.group:
                return str(group.get("last-delivered-id") or "0-0")
        return "0-0"

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import redis.asyncio as aioredis

        # Read in the triggerer at run time: the URL (with any password) is not serialised.
        url = CareConfig.from_env().redis_url
        # As the consumer reads it (events.stream.connect): an entry that is not UTF-8 must
        # not fail every XREAD of the doorbell for good.
        client = aioredis.Redis.from_url(
            url, decode_responses=True, encoding_errors="surrogateescape"
        )
        try:
            last = await self._start(client)
            while True:
                answer: Any = await client.xread(
                    {self.stream: last}, count=1000, block=int(self.block_seconds * 1000)
                )
                if not answer:
                    continue
                entries = answer[0][1]
                newest = entries[-1][0]
                await client.set(self.mark_key, newest)
                yield TriggerEvent(
                    {
                        "stream": self.stream,
                        "first": entries[0][0],
                        "last": newest,
                        "count": len(entries),
                    }
                )
                return
        finally:
            await client.aclose()


def events_asset(settings: StreamSettings | None = None) -> Asset:
    """The ``care_events`` asset, watched by the stream doorbell."""
    settings = settings or StreamSettings.from_env()
    trigger = EventStreamTrigger(stream=settings.stream, group=settings.group)
    return Asset(
        ASSET_NAME, watchers=[AssetWatcher(name="care_event_stream_doorbell", trigger=trigger)]
    )


def _events_in(blob: Mapping[str, Any], ref: str) -> list[Incoming]:
    """The events one asset event's ``extra`` (or a run's ``conf``) carries. Each is bounded
    by the inbox (``EVENT_LIMITS``); a call with more than ``MAX_EVENTS_PER_CALL`` is refused
    whole, as one dead letter."""
    if "events" in blob:
        many = blob["events"]
        if isinstance(many, list) and len(many) > MAX_EVENTS_PER_CALL:
            reason = (
                f"{DeadLetterReason.TOO_MANY_ITEMS.value}: {len(many):,} events in one call; "
                f"at most {MAX_EVENTS_PER_CALL:,} (split them into several calls)"
            )
            return [Incoming(dict(blob), ref, refusal=reason)]
        # Anything else than a list of objects is refused item by item (dead letters).
        return [Incoming(e, ref) for e in many] if isinstance(many, list) else [Incoming(many, ref)]
    if "event" in blob:
        return [Incoming(blob["event"], ref)]
    fields = {k: v for k, v in blob.items() if k not in _AIRFLOW_KEYS}
    return [Incoming(fields, ref)] if fields else []


def events_from_context(
    triggering_asset_events: Mapping[Any, Iterable[Any]] | None,
    conf: Mapping[str, Any] | None,
    run_id: str,
) -> list[Incoming]:
    """Every event a run was handed: in asset events from the REST API (several may be merged
    into one run) and in the run's ``conf``. Doorbells from the stream trigger carry none."""
    items: list[Incoming] = []
    for asset_events in (triggering_asset_events or {}).values():
        for asset_event in asset_events:
            extra = dict(getattr(asset_event, "extra", None) or {})
            if extra.get("from_trigger"):
                continue  # the stream doorbell: the events are in the stream
            ref = f"asset_event:{getattr(asset_event, 'id', None) or run_id}"
            items += _events_in(extra, ref)
    if conf:
        items += _events_in(conf, f"dag_run:{run_id}")
    return items


def intake(context: Mapping[str, Any], *, consumer: str | None = None) -> dict[str, int]:
    """The ``intake`` task: API events to the inbox, then drain the stream into it."""
    from ..config import CareConfig
    from ..store.db import open_store

    store = open_store(CareConfig.from_env().store_url)
    try:
        return _intake(store, context, consumer)
    finally:
        store.dispose()


def _intake(store: Any, context: Mapping[str, Any], consumer: str | None) -> dict[str, int]:
    from ..config import CareConfig
    from ..events.inbox import submit
    from ..events.stream import StreamConsumer, connect
    from ..rules.event_types import load_event_types
    from ..schema import require_current_schema

    require_current_schema(store)
    # Events must be of a declared type with the declared payload (care_rules/events.yaml);
    # with none declared (or a broken file, which `care validate` reports) nothing is checked.
    declared, errors = load_event_types(CareConfig.from_env().rules_dir)
    for error in errors:
        log.error("%s", error)
    event_types = declared if declared.available else None
    dag_run = context.get("dag_run")
    items = events_from_context(
        context.get("triggering_asset_events"),
        getattr(dag_run, "conf", None),
        str(context.get("run_id")),
    )
    counts: dict[str, int] = {}
    if items:
        api = submit(store, items, source="api", now=_now(), event_types=event_types)
        counts.update({f"api_{k}": v for k, v in api.as_dict().items()})
    settings = StreamSettings.from_env()
    reader = StreamConsumer(
        connect(settings.url),
        store,
        stream=settings.stream,
        group=settings.group,
        consumer=consumer or f"airflow:{socket.gethostname()}",
        event_types=event_types,
    )
    counts.update({f"stream_{k}": v for k, v in reader.drain(_now).as_dict().items()})
    log.info("intake: %s", counts)
    return counts


def plan(context: Mapping[str, Any]) -> dict[str, int]:
    """The ``plan`` task: the touches of every event in the inbox not planned yet."""
    from ..events.planning import plan_new_events
    from ..reports.run_summary import store_dispatch_summary
    from ..run.engine import anchor

    engine = _engine()
    run_id = task_run_id(context, "care_events")
    report = plan_new_events(engine, run_id=run_id, now=_now())
    anchor(engine, run_id=run_id, now=_now())
    log.info("planned: %s", report.as_dict())
    errors = rule_errors(engine)
    stored = store_dispatch_summary(
        engine.ledger,
        storage.reports(engine.config),
        report.as_dict(),
        run_id=run_id,
        kind="care_events",
        now=_now(),
        rule_errors=errors,
    )
    if stored is not None:
        log.info("summary stored in %s", stored)
    fail_if_partial(errors, "care_events")
    return report.as_dict()


def build_care_events() -> Any:
    @dag(
        dag_id="care_events",
        description="Take business events into the inbox and plan their touches.",
        schedule=AssetOrTimeSchedule(
            timetable=CronTriggerTimetable(SWEEP, timezone="UTC"), assets=[events_asset()]
        ),
        start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["caretouch"],
    )
    def care_events() -> None:
        @task(task_id="intake")
        def intake_task(**context: Any) -> dict[str, int]:
            return intake(context)

        # Runs even when the stream could not be read: events from the API are in already.
        @task(task_id="plan", trigger_rule="all_done")
        def plan_task(**context: Any) -> dict[str, int]:
            return plan(context)

        intake_task() >> plan_task()

    return care_events()
