"""care_events: the stream doorbell trigger against the real Redis, the REST and conf paths,
and the whole way from a stream entry to a message in the outbox through real Airflow."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis_env
from sqlalchemy import func, select

import airflow_env
from caretouch.ledger import Ledger
from caretouch.ledger.audit import verify
from caretouch.rules.event_types import load_event_types
from caretouch.schema.migrate import upgrade
from caretouch.store.db import Store, open_store
from caretouch.store.models import Event
from caretouch.vocab import TouchStatus
from conftest import RULES_DIR, TEMPLATES_DIR, customer_row, load_rows

pytestmark = pytest.mark.airflow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def airflow_db() -> Path:
    return airflow_env.migrate()


@pytest.fixture(name="redis_client")
def _redis_client() -> Iterator[Any]:
    yield from redis_env.open_client()


@pytest.fixture(name="stream_key")
def _stream_key(redis_client: Any) -> Iterator[str]:
    yield from redis_env.own_stream_key(redis_client)


@pytest.fixture
def env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stream_key: str
) -> Iterator[dict[str, str]]:
    """A store with customer C1 and the environment a worker and a triggerer would have."""
    store_url = f"sqlite:///{tmp_path / 'care.db'}"
    values = {
        "CARE_STORE_URL": store_url,
        "CARE_RULES_DIR": str(RULES_DIR),
        "CARE_TEMPLATES_DIR": str(TEMPLATES_DIR),
        "CARE_OUTBOX_DIR": str(tmp_path / "outbox"),
        "CARE_ANCHOR_FILE": str(tmp_path / "anchors.jsonl"),
        "CARE_REDIS_URL": redis_env.REDIS_URL,
        "CARE_EVENT_STREAM": stream_key,
        "CARE_EVENT_GROUP": "caretouch",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    store = open_store(store_url)
    upgrade(store)
    store.dispose()
    yield values


def event(event_id: str = "E1", **overrides: Any) -> dict[str, Any]:
    raw = {
        "event_id": event_id,
        "type": "policy_purchased",
        "customer_id": "C1",
        "occurred_at": "2026-11-22T10:00:00+08:00",
    }
    raw.update(overrides)
    return raw


def inbox_count(store: Store) -> int:
    with store.read_session() as session:
        return int(session.scalar(select(func.count()).select_from(Event)) or 0)


# -- the DAG -----------------------------------------------------------------------------------


def test_care_events_is_scheduled_on_the_watched_asset_and_a_sweep(airflow_db: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import AssetOrTimeSchedule

    from caretouch.airflow.events import EventStreamTrigger

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    dag = bag.get_dag("care_events")
    assert {t.task_id for t in dag.tasks} == {"intake", "plan"}
    assert dag.get_task("plan").trigger_rule == "all_done"
    assert isinstance(dag.timetable, AssetOrTimeSchedule)
    [asset] = dag.timetable.asset_condition.objects
    assert asset.name == "care_events"
    [watcher] = asset.watchers
    assert isinstance(watcher.trigger, EventStreamTrigger)
    classpath, kwargs = watcher.trigger.serialize()
    assert classpath == "caretouch.airflow.events.EventStreamTrigger"
    assert EventStreamTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert "url" not in json.dumps(kwargs)  # no Redis URL (or password) in the metadata DB


# -- the doorbell trigger, run against the real Redis -------------------------------------------


async def _next_event(trigger: Any, timeout: float) -> Any:
    gen = trigger.run()
    try:
        return await asyncio.wait_for(gen.__anext__(), timeout)
    finally:
        await gen.aclose()


def _ring(trigger: Any, timeout: float, then: Any = None) -> Any:
    async def main() -> Any:
        waiting = asyncio.ensure_future(_next_event(trigger, timeout))
        await asyncio.sleep(0.3)
        if then is not None:
            then()
        return await waiting

    return asyncio.run(main())


def test_the_trigger_fires_on_a_new_entry_and_reads_nothing_for_the_group(
    env: dict[str, str], redis_client: Any, stream_key: str
) -> None:
    from caretouch.airflow.events import EventStreamTrigger

    trigger = EventStreamTrigger(stream=stream_key, group="caretouch", block_seconds=0.5)
    added: list[str] = []
    fired = _ring(trigger, 5, lambda: added.append(redis_client.xadd(stream_key, {"event": "{}"})))
    assert fired.payload == {
        "stream": stream_key,
        "first": added[0],
        "last": added[0],
        "count": 1,
    }
    # A restarted trigger (the triggerer restarts it after each event) does not ring again
    # for the same entry...
    with pytest.raises(TimeoutError):
        _ring(EventStreamTrigger(stream=stream_key, group="caretouch", block_seconds=0.5), 1.5)
    # ... but does for the next one.
    again = _ring(
        EventStreamTrigger(stream=stream_key, group="caretouch", block_seconds=0.5),
        5,
        lambda: redis_client.xadd(stream_key, {"event": "{}"}),
    )
    assert again.payload["count"] == 1
    # The doorbell consumed nothing: both entries are still there for the consumer group.
    from caretouch.events.stream import StreamConsumer

    store = open_store(env["CARE_STORE_URL"])
    report = StreamConsumer(redis_client, store, stream=stream_key, consumer="c").drain(
        lambda: dt.datetime(2026, 11, 23, tzinfo=dt.timezone.utc)
    )
    assert report.new == 2


def test_entries_added_while_the_triggerer_was_down_ring_at_once(
    env: dict[str, str], redis_client: Any, stream_key: str
) -> None:
    from caretouch.airflow.events import EventStreamTrigger

    for i in range(3):
        redis_client.xadd(stream_key, {"event": json.dumps(event(f"E{i}"))})
    trigger = EventStreamTrigger(stream=stream_key, group="caretouch", block_seconds=0.5)
    fired = _ring(trigger, 2)
    assert fired.payload["count"] == 3


def test_an_entry_that_is_not_utf8_rings_the_doorbell_and_is_dead_lettered(
    env: dict[str, str], redis_client: Any, stream_key: str
) -> None:
    from caretouch.airflow.events import EventStreamTrigger, intake

    store = open_store(env["CARE_STORE_URL"])
    load_rows(store, customers=[customer_row("C1")])
    undecodable = json.dumps(event("E\u00ff1")).encode().replace(b"\\u00ff", b"\xff")
    redis_client.xadd(stream_key, {"event": undecodable})
    redis_client.xadd(stream_key, {"event": json.dumps(event("E2"))})
    # Decoded strictly, the doorbell's XREAD failed on the first entry, and kept failing.
    fired = _ring(EventStreamTrigger(stream=stream_key, group="caretouch", block_seconds=0.5), 5)
    assert fired.payload["count"] == 2
    counts = intake({"run_id": "r1", "dag_run": SimpleNamespace(conf={})}, consumer="test")
    assert (counts["stream_accepted"], counts["stream_dead_lettered"]) == (1, 1)


# -- the REST API and conf paths -------------------------------------------------------------


def _asset_event(extra: dict[str, Any], event_id: int) -> Any:
    return SimpleNamespace(extra=extra, id=event_id)


def test_events_from_rest_asset_events_and_conf_all_reach_the_inbox(
    env: dict[str, str], redis_client: Any, stream_key: str
) -> None:
    from caretouch.airflow.events import intake

    store = open_store(env["CARE_STORE_URL"])
    load_rows(store, customers=[customer_row("C1")])
    # Two REST calls merged into one run, one of them with two events, plus the stream
    # doorbell's own asset event (no event in it) and a DAG run's conf.
    context = {
        "run_id": "asset_triggered__1",
        "triggering_asset_events": {
            "care_events": [
                _asset_event({**event("R1"), "from_rest_api": True}, 11),
                _asset_event(
                    {
                        "events": [event("R2"), event("R3", payload={"agent": "A7"})],
                        "from_rest_api": True,
                    },
                    12,
                ),
                _asset_event({"from_trigger": True, "stream": stream_key, "count": 1}, 13),
                _asset_event({"event": {"event_id": "R4"}, "from_rest_api": True}, 14),
            ]
        },
        "dag_run": SimpleNamespace(conf={"event": event("R5")}),
    }
    counts = intake(context, consumer="test")
    assert counts["api_accepted"] == 4
    assert counts["api_dead_lettered"] == 1  # R4 has no type, customer or time
    assert inbox_count(store) == 4
    # The same run retried (or the events posted again): nothing changes.
    again = intake(context, consumer="test")
    assert (again["api_accepted"], again["api_duplicates"]) == (0, 4)


def _deep(depth: int) -> dict[str, Any]:
    top: dict[str, Any] = {}
    node = top
    for _ in range(depth - 1):
        node["a"] = {}
        node = node["a"]
    return top


def test_hostile_rest_events_and_conf_are_dead_lettered_and_the_rest_go_in(
    env: dict[str, str], redis_client: Any, stream_key: str
) -> None:
    from caretouch.airflow.events import MAX_EVENTS_PER_CALL, intake
    from caretouch.events.inbox import dead_letters

    store = open_store(env["CARE_STORE_URL"])
    load_rows(store, customers=[customer_row("C1")])
    context = {
        "run_id": "asset_triggered__2",
        "triggering_asset_events": {
            "care_events": [
                _asset_event({"event": event("H1", payload=_deep(900)), "from_rest_api": True}, 1),
                _asset_event({"event": _deep(60_000), "from_rest_api": True}, 2),
                _asset_event({"events": [event("OK1"), {"x": "y" * 70_000}]}, 3),
                _asset_event(
                    {"events": [event(f"M{i}") for i in range(MAX_EVENTS_PER_CALL + 1)]}, 4
                ),
                _asset_event({"event": event("OK2")}, 5),
            ]
        },
        # A run's conf, 60,000 levels deep, flat (no "event" key).
        "dag_run": SimpleNamespace(conf={"payload": _deep(60_000)}),
    }
    counts = intake(context, consumer="test")
    assert (counts["api_accepted"], counts["api_dead_lettered"]) == (2, 5)
    reasons = sorted(letter.reason.split(":")[0] for letter in dead_letters(store))
    assert reasons == ["too_deep", "too_deep", "too_deep", "too_large", "too_many_items"]
    assert inbox_count(store) == 2


def test_intake_refuses_undeclared_event_types_from_the_api_and_the_stream(
    env: dict[str, str], redis_client: Any, stream_key: str
) -> None:
    from caretouch.airflow.events import intake
    from caretouch.events.stream import add
    from caretouch.store.models import EventDeadLetter

    store = open_store(env["CARE_STORE_URL"])
    load_rows(store, customers=[customer_row("C1")])
    add(redis_client, stream_key, event("S1", type="claim_setled"))
    add(redis_client, stream_key, event("S2", type="claim_settled", payload={"claim_no": "7"}))
    context = {
        "run_id": "r1",
        "triggering_asset_events": {
            "care_events": [_asset_event({"event": event("A1", type="polcy_purchased")}, 1)]
        },
        "dag_run": SimpleNamespace(conf={"event": event("A2")}),
    }
    counts = intake(context, consumer="test")
    assert (counts["api_accepted"], counts["api_dead_lettered"]) == (1, 1)
    assert (counts["stream_accepted"], counts["stream_dead_lettered"]) == (0, 2)
    with store.read_session() as session:
        letters = session.scalars(select(EventDeadLetter).order_by(EventDeadLetter.id))
        reasons = [(d.source, d.reason) for d in letters]
    # The types care_rules/events.yaml declares, in its order.
    declared = ", ".join(load_event_types(RULES_DIR)[0].types)
    assert reasons == [
        (
            "api",
            "unknown event type 'polcy_purchased' (did you mean 'policy_purchased'?); "
            f"{RULES_DIR / 'events.yaml'} declares {declared}",
        ),
        (
            "stream",
            "unknown event type 'claim_setled' (did you mean 'claim_settled'?); "
            f"{RULES_DIR / 'events.yaml'} declares {declared}",
        ),
        (
            "stream",
            "payload field 'claim_no' is not declared for claim_settled (did you mean "
            "'claim_id'?); declared: claim_id, amount, currency; payload field 'claim_id' is "
            "required for claim_settled",
        ),
    ]
    assert inbox_count(store) == 1


def test_events_posted_to_airflows_rest_api_reach_the_inbox(
    airflow_db: Path, env: dict[str, str], redis_client: Any, stream_key: str
) -> None:
    """Through Airflow's own API app: asset events (nested and flat ``extra``) and a DAG run's
    ``conf``, read back as Airflow stores them, then taken by the intake task."""
    from airflow.api_fastapi.app import create_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from fastapi.testclient import TestClient

    from caretouch.airflow.events import intake

    DagBundlesManager().sync_bundles_to_db()
    sync_bag_to_db(DagBag(dag_folder=str(ROOT / "dags")), "dags-folder", None)
    client = TestClient(create_app(apps="core"))
    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="ops", role="admin"))
    auth = {"Authorization": f"Bearer {token}"}
    found = client.get("/api/v2/assets", params={"name_pattern": "care_events"}, headers=auth)
    assert found.status_code == 200, found.text
    [asset] = [a for a in found.json()["assets"] if a["name"] == "care_events"]
    posted = [
        client.post(
            "/api/v2/assets/events",
            json={"asset_id": asset["id"], "extra": extra},
            headers=auth,
        )
        for extra in (
            {"event": event("A1", payload={"agent": "A7"})},
            {"events": [event("A2"), event("A3")]},
            event("A4"),
        )
    ]
    assert [p.status_code for p in posted] == [200, 200, 200], [p.text for p in posted]
    run = client.post(
        "/api/v2/dags/care_events/dagRuns",
        json={
            "logical_date": None,
            "conf": {"events": [event("A5"), event("A1", payload={"agent": "A7"})]},
        },
        headers=auth,
    )
    assert run.status_code == 200, run.text

    store = open_store(env["CARE_STORE_URL"])
    load_rows(store, customers=[customer_row("C1")])
    mine = {p.json()["id"] for p in posted}
    stored = client.get(
        "/api/v2/assets/events", params={"asset_id": asset["id"]}, headers=auth
    ).json()["asset_events"]
    context = {
        "run_id": run.json()["dag_run_id"],
        "triggering_asset_events": {
            "care_events": [
                SimpleNamespace(extra=e["extra"], id=e["id"]) for e in stored if e["id"] in mine
            ]
        },
        "dag_run": SimpleNamespace(conf=run.json()["conf"]),
    }
    counts = intake(context, consumer="test")
    assert (counts["api_accepted"], counts["api_duplicates"]) == (5, 1)
    assert inbox_count(store) == 5


def test_the_same_event_by_stream_api_and_cli_is_one_touch(
    env: dict[str, str],
    redis_client: Any,
    stream_key: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from caretouch.airflow.events import intake, plan
    from caretouch.events.inbox import Incoming, submit
    from caretouch.events.stream import add

    store = open_store(env["CARE_STORE_URL"])
    load_rows(store, customers=[customer_row("C1", birth_date="")])
    add(redis_client, stream_key, event("X1"))
    context = {
        "run_id": "r1",
        "triggering_asset_events": {"care_events": [_asset_event({"event": event("X1")}, 1)]},
        "dag_run": SimpleNamespace(conf={}),
    }
    counts = intake(context, consumer="test")
    assert (counts["api_accepted"], counts["stream_duplicates"]) == (1, 1)
    now = dt.datetime.now(dt.timezone.utc)
    cli = submit(store, [Incoming(event("X1"), "cli")], source="cli", now=now)
    assert cli.duplicates == ["X1"]
    reports = tmp_path / "reports"
    monkeypatch.setenv("CARE_REPORTS_DIR", str(reports))
    assert plan({"run_id": "r1"})["events"] == 1
    assert plan({"run_id": "r2"})["events"] == 0
    # The run that planned a touch stored its summary; the one with nothing to do did not.
    assert [p.name for p in reports.glob("runs/*/*.json")] == ["airflow_care_events_r1.json"]
    ledger = Ledger(store)
    keys = [s.row.touch_key for s in ledger.states(ledger.touch_ids_in_status(set(TouchStatus)))]
    assert keys == ["thank-you|event:X1|2026-11-23"]
    # Its plan task anchored the ledger, as every run that writes it does; r2 wrote nothing.
    anchors = [json.loads(line) for line in Path(env["CARE_ANCHOR_FILE"]).read_text().splitlines()]
    assert [(a["n"], a["run_id"]) for a in anchors] == [(1, "airflow:care_events/r1")]
    assert verify(store, anchor_file=Path(env["CARE_ANCHOR_FILE"])).ok


def test_care_events_plan_task_takes_a_poison_row_out_and_plans_the_rest(
    env: dict[str, str], redis_client: Any, stream_key: str
) -> None:
    from sqlalchemy import text

    from caretouch.airflow.events import intake, plan
    from caretouch.events.inbox import dead_letters

    store = open_store(env["CARE_STORE_URL"])
    load_rows(store, customers=[customer_row("C1", birth_date=""), customer_row("C2")])
    with store.session() as session:  # an older version accepted it: 900 levels deep
        session.execute(
            text(
                "INSERT INTO events (event_id, type, customer_id, occurred_at, payload) "
                "VALUES ('POISON', 'policy_purchased', 'C2', :at, :p)"
            ),
            {"at": dt.datetime(2026, 11, 22, 2), "p": '{"a":' * 900 + "1" + "}" * 900},
        )
        session.execute(
            text(
                "INSERT INTO event_receipts (event_id, source, received_at) "
                "VALUES ('POISON', 'stream', :at)"
            ),
            {"at": dt.datetime(2026, 11, 22, 2, 1)},
        )
    redis_client.xadd(stream_key, {"event": json.dumps(event("GOOD"))})
    assert (
        intake({"run_id": "r1", "dag_run": SimpleNamespace(conf={})}, consumer="t")[
            "stream_accepted"
        ]
        == 1
    )
    planned = plan({"run_id": "r1"})
    assert (planned["events"], planned["dead_lettered"]) == (2, 1)
    assert [d.event_id for d in dead_letters(store)] == ["POISON"]
    ledger = Ledger(store)
    keys = [s.row.touch_key for s in ledger.states(ledger.touch_ids_in_status(set(TouchStatus)))]
    assert keys == ["thank-you|event:GOOD|2026-11-23"]


# -- end to end through real Airflow ---------------------------------------------------------


@pytest.mark.slow
def test_a_stream_event_becomes_a_thank_you_sent_on_the_next_local_day(
    airflow_db: Path, env: dict[str, str], redis_client: Any, stream_key: str, tmp_path: Path
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    from caretouch.airflow.events import EventStreamTrigger
    from caretouch.events.stream import add

    # The DAGs read the real clock. The customer lives where it is about midday now; the
    # purchase was made yesterday, local time, so the 10:00 thank-you is due today.
    now = dt.datetime.now(dt.timezone.utc)
    offset = 12 - now.hour
    zone = f"Etc/GMT{-offset:+d}" if offset else "UTC"
    local_now = now.astimezone(ZoneInfo(zone))
    bought = (local_now - dt.timedelta(days=1)).replace(microsecond=0)
    store = open_store(env["CARE_STORE_URL"])
    load_rows(store, customers=[customer_row("C1", timezone=zone, birth_date="")])
    purchase = event("P-2026-0001", occurred_at=bought.isoformat(), payload={"agent": "A7"})

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    care_events = bag.get_dag("care_events")
    care_dispatch = bag.get_dag("care_dispatch")
    [asset] = care_events.timetable.asset_condition.objects
    [watcher] = asset.watchers
    assert watcher.trigger.stream == stream_key

    def ring_and_run() -> None:
        trigger = EventStreamTrigger(**{**watcher.trigger.serialize()[1], "block_seconds": 0.5})
        fired = _ring(trigger, 5, lambda: add(redis_client, stream_key, purchase))
        assert fired.payload["count"] == 1
        run = care_events.test()
        assert run.state == "success"

    ring_and_run()
    ledger = Ledger(store)
    [state] = ledger.states(ledger.touch_ids_in_status(set(TouchStatus)))
    assert state.row.touch_key == f"thank-you|event:P-2026-0001|{local_now.date()}"
    assert state.status is TouchStatus.PLANNED
    assert state.send_at <= now  # 10:00 local today

    run = care_dispatch.test()
    assert run.state == "success"
    files = list((tmp_path / "outbox").rglob("*.json"))
    assert len(files) == 1
    assert json.loads(files[0].read_text(encoding="utf-8"))["touch_key"] == state.row.touch_key
    [state] = ledger.states([state.id])
    assert state.status is TouchStatus.SENT

    # The same event added again: the doorbell rings, the run drains it, nothing changes.
    ring_and_run()
    assert care_dispatch.test().state == "success"
    assert len(list((tmp_path / "outbox").rglob("*.json"))) == 1
    assert inbox_count(store) == 1
    assert len(ledger.touch_ids_in_status(set(TouchStatus))) == 1
