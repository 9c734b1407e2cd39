"""`care event`: emit, import, drain and dead-letters, with exit statuses users can rely on."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis_env

from caretouch.ledger import Ledger
from caretouch.schema.migrate import upgrade
from caretouch.store.db import open_store
from caretouch.vocab import TouchStatus
from conftest import Care, customer_row, load_rows

NOW = "2026-11-22T02:30:00Z"


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    store = open_store(f"sqlite:///{tmp_path / 'care.db'}")
    upgrade(store)
    load_rows(store, customers=[customer_row("C1", birth_date="")])
    store.dispose()
    return tmp_path


def touch_keys(tmp_path: Path) -> list[str]:
    ledger = Ledger(open_store(f"sqlite:///{tmp_path / 'care.db'}"))
    return [s.row.touch_key for s in ledger.states(ledger.touch_ids_in_status(set(TouchStatus)))]


def test_emit_records_the_event_and_plans_its_touch_once(care: Care, filled: Path) -> None:
    args = [
        "event",
        "emit",
        "--type",
        "policy_purchased",
        "--customer",
        "C1",
        "--at",
        "2026-11-22T10:00:00+08:00",
        "--payload",
        '{"agent": "A7"}',
        "--id",
        "E1",
        "--now",
        NOW,
    ]
    first = care(*args)
    assert first.exit_code == 0, first.output
    assert "1 accepted" in first.output
    assert "planned 1" in first.output
    again = care(*args)
    assert again.exit_code == 0
    assert "0 accepted, 1 already there" in again.output
    assert touch_keys(filled) == ["thank-you|event:E1|2026-11-23"]


def test_emit_refuses_a_malformed_event_and_keeps_it(care: Care, filled: Path) -> None:
    result = care(
        *("event", "emit", "--type", "policy_purchased", "--customer", "C1"),
        *("--at", "yesterday", "--now", NOW),
    )
    assert result.exit_code == 1
    assert "is not an ISO 8601 timestamp" in result.output
    letters = care("event", "dead-letters", "--format", "json")
    [line] = letters.output.splitlines()
    letter = json.loads(line)
    assert letter["source"] == "cli"
    assert "ISO 8601" in letter["reason"]


def test_import_feeds_a_csv_through_the_inbox(care: Care, filled: Path) -> None:
    path = filled / "events.csv"
    path.write_text(
        "event_id,type,customer_id,occurred_at,payload\n"
        'E1,complaint_resolved,C1,2026-11-20T15:00:00+08:00,"{""case_id"": ""CS-1""}"\n'
        "E2,policy_purchased,C404,2026-11-21T15:00:00+08:00,\n",
        encoding="utf-8",
    )
    result = care("event", "import", str(path), "--now", NOW)
    assert result.exit_code == 3  # partial: one row dead-lettered
    assert f"{path}:3: unknown customer_id 'C404'" in result.output
    assert touch_keys(filled) == ["complaint-follow-up|event:E1|2026-11-23"]
    bad = filled / "bad.csv"
    bad.write_text("id,type\n", encoding="utf-8")
    refused = care("event", "import", str(bad))
    assert refused.exit_code == 1
    assert f"{bad}:1:1: unknown column 'id'" in refused.output


def test_emit_and_import_bound_the_payload_at_the_door(care: Care, filled: Path) -> None:
    deep = '{"a":' * 899 + "{}" + "}" * 899  # 900 levels, about 6 KB
    emitted = care(
        *("event", "emit", "--type", "policy_purchased", "--customer", "C1", "--id", "D1"),
        *("--payload", deep, "--now", NOW),
    )
    assert emitted.exit_code == 1
    assert "too_deep: payload is nested 900 levels deep; at most 16 are accepted" in emitted.output
    path = filled / "events.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["event_id", "type", "customer_id", "occurred_at", "payload"])
        writer.writerow(["D2", "policy_purchased", "C1", "2026-11-22T10:00:00+08:00", deep])
        writer.writerow(
            [
                "OK",
                "complaint_resolved",
                "C1",
                "2026-11-20T15:00:00+08:00",
                json.dumps({"case_id": "CS-1"}),
            ]
        )
        writer.writerow(["D3", "policy_purchased", "C1", "2026-11-22T10:00:00+08:00",
                         json.dumps({"note": "x" * 40_000})])  # fmt: skip
    imported = care("event", "import", str(path), "--now", NOW)
    assert imported.exit_code == 3
    assert f"{path}:2: too_deep: payload is nested 900 levels deep" in imported.output
    assert f"{path}:4: too_large: payload is 40,012 bytes" in imported.output
    assert touch_keys(filled) == ["complaint-follow-up|event:OK|2026-11-23"]
    letters = care("event", "dead-letters", "--format", "json")
    # emit refuses at the door (exit 1, nothing written); the CSV's rows are dead letters
    assert len(letters.output.splitlines()) == 2


def test_dead_letters_limit_out_of_range_is_a_usage_error(care: Care, filled: Path) -> None:
    for value in ("99999999999999999999", "0", "-1", "abc"):
        result = care("event", "dead-letters", "--limit", value)
        assert result.exit_code == 2, (value, result.output)
        assert "Invalid value for '--limit'" in result.output


@pytest.fixture(name="redis_client")
def _redis_client() -> Iterator[Any]:
    yield from redis_env.open_client()


@pytest.fixture(name="stream_key")
def _stream_key(redis_client: Any) -> Iterator[str]:
    yield from redis_env.own_stream_key(redis_client)


def test_emit_via_the_stream_then_drain(
    care: Care, filled: Path, redis_client: Any, stream_key: str
) -> None:
    env = {"CARE_REDIS_URL": redis_env.REDIS_URL, "CARE_EVENT_STREAM": stream_key}
    added = care(
        *("event", "emit", "--type", "claim_settled", "--customer", "C1", "--id", "S1"),
        *("--at", "2026-11-22T10:00:00+08:00", "--via", "stream"),
        *("--payload", '{"claim_id": "CL-1"}'),
        env=env,
    )
    assert added.exit_code == 0, added.output
    assert f"to stream {stream_key}" in added.output
    assert redis_client.xlen(stream_key) == 1
    drained = care("event", "drain", "--consumer", "t", "--now", NOW, env=env)
    assert drained.exit_code == 0, drained.output
    assert "new 1, acked 1, accepted 1" in drained.output
    assert touch_keys(filled) == ["claim-settled|event:S1|2026-11-22"]


# -- the declared event types (care_rules/events.yaml) -----------------------------------------

REFUSED = [
    (
        ("--type", "claim_setled", "--payload", '{"claim_id": "CL-1"}'),
        "error: unknown event type 'claim_setled' (did you mean 'claim_settled'?)",
    ),
    (
        ("--type", "claim_settled", "--payload", '{"claim_no": "CL-1"}'),
        "error: payload field 'claim_no' is not declared for claim_settled (did you mean "
        "'claim_id'?); declared: claim_id, amount, currency",
    ),
    (
        ("--type", "claim_settled"),
        "error: payload field 'claim_id' is required for claim_settled",
    ),
    (
        ("--type", "claim_settled", "--payload", '{"claim_id": "CL-1", "amount": "lots"}'),
        "error: payload field 'amount' must be a decimal number",
    ),
    (("--type", "claim_settled", "--payload", "[1]"), "--payload must be a JSON object"),
]


@pytest.mark.parametrize("via", ["inbox", "stream"])
@pytest.mark.parametrize(("args", "message"), REFUSED)
def test_emit_refuses_what_events_yaml_does_not_declare_and_writes_nothing(
    care: Care,
    filled: Path,
    redis_client: Any,
    stream_key: str,
    via: str,
    args: tuple[str, ...],
    message: str,
) -> None:
    env = {"CARE_REDIS_URL": redis_env.REDIS_URL, "CARE_EVENT_STREAM": stream_key}
    result = care(
        *("event", "emit", "--customer", "C1", "--id", "X1", "--now", NOW, "--via", via),
        *("--at", "2026-11-22T10:00:00+08:00", *args),
        env=env,
    )
    assert result.exit_code == 1
    assert message in result.output
    assert "nothing was written" in result.output or "JSON object" in result.output
    assert redis_client.xlen(stream_key) == 0
    assert care("event", "dead-letters").output == ""
    assert touch_keys(filled) == []


def test_import_dead_letters_undeclared_events_with_file_and_line(care: Care, filled: Path) -> None:
    path = filled / "events.csv"
    path.write_text(
        "event_id,type,customer_id,occurred_at,payload\n"
        "E1,claim_setled,C1,2026-11-21T15:00:00+08:00,\n"
        'E2,claim_settled,C1,2026-11-21T15:00:00+08:00,"{""claim_no"": ""CL-1""}"\n'
        'E3,claim_settled,C1,2026-11-21T15:00:00+08:00,"{""claim_id"": ""CL-1""}"\n',
        encoding="utf-8",
    )
    result = care("event", "import", str(path), "--now", NOW)
    assert result.exit_code == 3
    assert f"{path}:2: unknown event type 'claim_setled' (did you mean 'claim_settled'?)" in (
        result.output
    )
    assert f"{path}:3: payload field 'claim_no' is not declared for claim_settled" in result.output
    assert touch_keys(filled) == ["claim-settled|event:E3|2026-11-21"]


def test_store_import_rejects_undeclared_events_with_file_and_line(
    care: Care, filled: Path
) -> None:
    path = filled / "events.csv"
    path.write_text(
        "event_id,type,customer_id,occurred_at,payload\n"
        'E1,complaint_resolved,C1,2026-11-21T15:00:00+08:00,"{""case_id"": ""CS-1""}"\n'
        'E2,complaint_resolved,C1,2026-11-21T15:00:00+08:00,"{""case_no"": ""CS-2""}"\n',
        encoding="utf-8",
    )
    result = care("store", "import", "--events", str(path))
    assert result.exit_code == 1  # all-or-nothing: nothing imported
    assert (
        f"{path}:3: payload field 'case_no' is not declared for complaint_resolved (did you "
        "mean 'case_id'?)" in result.output
    )
