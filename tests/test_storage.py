"""Shared state behind URLs (caretouch.storage): anchors, run summaries and reports on S3.

A real S3 protocol server runs here: moto's server mode (``ThreadedMotoServer``), with a
bucket created with Object Lock. ``care run`` writes its anchor as a locked object and its
run summary beside the reports, ``care audit verify`` reads the anchors back from the bucket,
tampering is still detected, a locked anchor can be neither overwritten through us nor
deleted, and object storage without ``CARE_ANCHOR_KEY`` is refused at start. Local paths keep
working (tests/ledger/test_anchors.py); a local folder holds anchor objects like a bucket.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from caretouch import storage
from caretouch.config import CareConfig
from caretouch.ledger.anchors import AnchorError, anchor_hash, anchor_mac, object_name, sync_objects
from caretouch.ledger.audit import verify
from caretouch.reports.run_summary import stored_summaries
from caretouch.schema.migrate import upgrade
from caretouch.store.db import open_store
from conftest import RULES_DIR, TEMPLATES_DIR, Care, customer_row, load_rows

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

KEY = "storage-test-anchor-key"
BUCKET = "care-audit"
DAY = "2026-11-23"
NOW = "2026-11-23T04:00:00Z"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free port, for the module (state is reset per test)."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port())
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A bucket with Object Lock enabled, and the environment pointing the anchors and the
    reports at it (the standard AWS variables carry moto's fake credentials)."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "CARE_STORAGE_OPTIONS": json.dumps({"endpoint_url": s3_endpoint}),
        "CARE_ANCHOR_KEY": KEY,
        "CARE_REPORTS_DIR": f"s3://{BUCKET}/care/reports",
        "CARE_ANCHOR_RETENTION_DAYS": "30",
    }.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
    yield client
    # COMPLIANCE-locked versions cannot be deleted: reset moto's state for the next test.
    import requests

    requests.post(f"{s3_endpoint}/moto-api/reset", timeout=10)


@pytest.fixture
def ran(care: Care, tmp_path: Path, s3: Any) -> Care:
    """``care run`` for a day of birthdays, its anchors in the bucket."""
    store = open_store(f"sqlite:///{tmp_path / 'care.db'}")
    upgrade(store)
    load_rows(
        store,
        customers=[
            customer_row("C1"),
            customer_row("C2", phone="+8613812340002"),
            customer_row("C3", phone="+8613812340003", birth_date="1991-11-24"),
        ],
    )
    store.dispose()
    care.anchors = f"s3://{BUCKET}/care"  # type: ignore[assignment]
    result = care("run", "--date", DAY, "--now", NOW)
    assert result.exit_code == 0, result.output
    return care


def anchor_keys(client: Any) -> list[str]:
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix="care/anchors/")
    return [o["Key"] for o in listed.get("Contents", [])]


def test_a_run_writes_a_locked_anchor_object_and_its_summary_to_s3(ran: Care, s3: Any) -> None:
    [key] = anchor_keys(s3)
    record = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    assert key == f"care/anchors/{object_name(record)}"
    assert record["n"] == 1 and record["hash"] == anchor_hash(record)
    assert record["hmac"] == anchor_mac(KEY.encode(), record)
    head = s3.head_object(Bucket=BUCKET, Key=key)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    # 30 days after the run's instant (--now): the retention comes from the run, no clock.
    assert head["ObjectLockRetainUntilDate"] == dt.datetime(2026, 12, 23, 4, tzinfo=dt.timezone.utc)
    summaries = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"care/reports/runs/{DAY}/")
    assert len(summaries.get("Contents", [])) == 1
    config = CareConfig.from_env()
    [stored] = stored_summaries(storage.reports(config), dt.date.fromisoformat(DAY))
    assert stored["day"] == DAY and stored["this_run"]["sent"] == 2


def test_verify_reads_the_anchors_back_from_s3(ran: Care) -> None:
    result = ran("audit", "verify")
    assert result.exit_code == 0, result.output
    assert "1 anchor(s) match" in result.output
    # A second run anchors again: two objects, linked, both read back.
    again = ran("run", "--date", "2026-11-24", "--now", "2026-11-24T04:00:00Z")
    assert again.exit_code == 0, again.output
    result = ran("audit", "verify")
    assert result.exit_code == 0, result.output
    assert "2 anchor(s) match" in result.output


def test_tampering_with_the_ledger_is_detected_with_s3_anchors(ran: Care, tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'care.db'}")
    with store.engine.begin() as conn:
        # The newest row (the anchor's own record) and its chain entry, removed consistently.
        conn.exec_driver_sql("DELETE FROM ledger_anchors WHERE number = 1")
        conn.exec_driver_sql(
            "DELETE FROM ledger_chain WHERE seq = (SELECT max(seq) FROM ledger_chain)"
        )
    assert verify(store).ok  # the chain alone cannot tell
    store.dispose()
    result = ran("audit", "verify")
    assert result.exit_code == 1
    assert "ledger does NOT verify" in result.output
    assert "the ledger was cut back: it records 0 anchor(s), not anchor 1" in result.output
    assert f"s3://{BUCKET}/care/anchors/0000000001-" in result.output  # where, named


def test_a_forged_anchor_object_is_detected(ran: Care, s3: Any) -> None:
    [key] = anchor_keys(s3)
    record = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    forged = {**record, "n": 2, "prev": record["hash"], "run_id": "forger"}
    forged["hash"] = anchor_hash(forged)
    forged["hmac"] = anchor_mac(b"a guessed key", forged)
    s3.put_object(Bucket=BUCKET, Key=f"care/anchors/{object_name(forged)}", Body=json.dumps(forged))
    result = ran("audit", "verify")
    assert result.exit_code == 1
    assert "signature does not match" in result.output


def test_a_deleted_anchor_object_is_detected(ran: Care, s3: Any) -> None:
    [key] = anchor_keys(s3)
    s3.delete_object(Bucket=BUCKET, Key=key)  # a delete marker: the locked version stays
    result = ran("audit", "verify")
    assert result.exit_code == 1
    assert "no anchor objects in" in result.output and "deleted, emptied or moved" in result.output
    versions = s3.list_object_versions(Bucket=BUCKET, Prefix=key)["Versions"]
    assert len(versions) == 1  # what an operator restores the anchor from


def test_a_locked_anchor_cannot_be_deleted_or_replaced(ran: Care, s3: Any) -> None:
    [key] = anchor_keys(s3)
    [version] = s3.list_object_versions(Bucket=BUCKET, Prefix=key)["Versions"]
    with pytest.raises(s3.exceptions.ClientError, match="AccessDenied"):
        s3.delete_object(Bucket=BUCKET, Key=key, VersionId=version["VersionId"])
    with pytest.raises(s3.exceptions.ClientError, match="AccessDenied"):
        s3.delete_object(
            Bucket=BUCKET,
            Key=key,
            VersionId=version["VersionId"],
            BypassGovernanceRetention=True,  # COMPLIANCE: no bypass
        )
    # Through Caretouch an anchor object is created, never replaced.
    place = storage.anchors(CareConfig.from_env(anchors=f"s3://{BUCKET}/care")).child(
        "anchors", key.rsplit("/", 1)[1]
    )
    with pytest.raises(FileExistsError):
        place.create(b"{}")
    assert json.loads(place.read_bytes())["n"] == 1


def test_an_anchor_object_another_writer_created_is_checked_not_replaced(
    ran: Care, s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two writers racing: the second listed the folder before the first created anchor 1.
    Its conditional put is refused (no second version), and it accepts the object only if
    it is the same anchor."""
    store = open_store(f"sqlite:///{tmp_path / 'care.db'}")
    place = storage.anchors(CareConfig.from_env(anchors=f"s3://{BUCKET}/care"))
    [key] = anchor_keys(s3)
    monkeypatch.setattr(storage.Location, "objects", lambda self, suffix="": [])
    [again] = sync_objects(store, place)
    assert again["n"] == 1
    assert len(s3.list_object_versions(Bucket=BUCKET, Prefix=key)["Versions"]) == 1
    # Someone put another version over it (Object Lock keeps the first, not the name).
    s3.put_object(Bucket=BUCKET, Key=key, Body=b'{"n": 1, "forged": true}')
    with pytest.raises(AnchorError, match="is not the ledger's anchor 1; it was not replaced"):
        sync_objects(store, place)
    store.dispose()


def test_object_storage_without_the_anchor_key_is_refused(
    care: Care, tmp_path: Path, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CARE_ANCHOR_KEY")
    result = care("validate", anchors=f"s3://{BUCKET}/care")
    assert result.exit_code != 0
    assert "CARE_ANCHOR_KEY: required when the anchors are kept at s3://care-audit/care" in (
        result.output
    )
    # Development: a local anchor file only warns.
    monkeypatch.delenv("CARE_REPORTS_DIR")
    assert care("validate").exit_code == 0


def test_a_local_folder_holds_anchor_objects_like_a_bucket(
    care: Care, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARE_ANCHOR_KEY", KEY)
    store = open_store(f"sqlite:///{tmp_path / 'care.db'}")
    upgrade(store)
    load_rows(store, customers=[customer_row("C1")])
    store.dispose()
    folder = tmp_path / "anchor-objects"
    care.anchors = f"file://{folder}"  # type: ignore[assignment]
    assert care("run", "--date", DAY, "--now", NOW).exit_code == 0
    [written] = sorted((folder / "anchors").iterdir())
    assert written.name.startswith("0000000001-")
    assert care("audit", "verify").exit_code == 0
    written.write_text(written.read_text().replace('"n": 1', '"n": 1 '), encoding="utf-8")
    assert care("audit", "verify").exit_code == 0  # same JSON: still the anchor
    record = json.loads(written.read_text())
    record["chain_hash"] = "0" * 64
    written.write_text(json.dumps(record), encoding="utf-8")
    result = care("audit", "verify")
    assert result.exit_code == 1 and "anchor 1 was edited" in result.output


def test_the_api_server_s_verify_page_reads_the_s3_anchors(ran: Care, tmp_path: Path) -> None:
    """The audit view runs elsewhere than the workers: it sees the anchors they wrote."""
    from fastapi.testclient import TestClient

    from caretouch.web.app import create_audit_app
    from caretouch.web.auth import AuditAuth, AuditTokens

    token = "storage-audit-token-0123456789"
    auth = AuditAuth(tokens=AuditTokens.parse(f"t:{token}"))
    app = create_audit_app(f"sqlite:///{tmp_path / 'care.db'}", f"s3://{BUCKET}/care", auth)
    with TestClient(app) as client:
        page = client.get("/audit/verify", headers={"Authorization": f"Bearer {token}"})
    assert page.status_code == 200
    assert "The ledger verifies" in page.text
    assert f"s3://{BUCKET}/care" in page.text


def test_an_unreachable_bucket_stops_a_run_before_its_work(
    care: Care, tmp_path: Path, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'care.db'}")
    upgrade(store)
    load_rows(store, customers=[customer_row("C1")])
    store.dispose()
    monkeypatch.setenv("CARE_REPORTS_DIR", "s3://no-such-bucket/reports")
    result = care("run", "--date", DAY, "--now", NOW, anchors=f"s3://{BUCKET}/care")
    assert result.exit_code == 1
    assert "reports folder (CARE_REPORTS_DIR): s3://no-such-bucket/reports: no-such-bucket" in (
        result.output
    )
    assert anchor_keys(s3) == []  # nothing planned, nothing anchored
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM touches").scalar_one() == 0


def test_moving_the_anchors_from_a_file_to_a_bucket_writes_them_all(
    care: Care, tmp_path: Path, s3: Any
) -> None:
    """A deployment that kept a local anchor file points CARE_ANCHOR_FILE at a bucket: the
    next run writes every anchor the ledger records as objects, and verify passes there."""
    store = open_store(f"sqlite:///{tmp_path / 'care.db'}")
    upgrade(store)
    load_rows(
        store,
        customers=[customer_row("C1"), customer_row("C2", birth_date="1991-11-24")],
    )
    store.dispose()
    assert care("run", "--date", DAY, "--now", NOW).exit_code == 0  # tmp_path/anchors.jsonl
    assert len((tmp_path / "anchors.jsonl").read_text().splitlines()) == 1
    care.anchors = f"s3://{BUCKET}/care"  # type: ignore[assignment]
    result = care("run", "--date", "2026-11-24", "--now", "2026-11-24T04:00:00Z")
    assert result.exit_code == 0, result.output
    assert [k.rsplit("/", 1)[1][:10] for k in anchor_keys(s3)] == ["0000000001", "0000000002"]
    verified = care("audit", "verify")
    assert verified.exit_code == 0, verified.output
    assert "2 anchor(s) match" in verified.output


def test_a_bucket_without_object_lock_refuses_the_anchor(
    care: Care, tmp_path: Path, s3: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Retention was asked for and the bucket cannot keep it: no unlocked anchor is left
    there; the run's work stands, logs why, and verify fails until it is fixed."""
    s3.create_bucket(Bucket="no-lock")
    store = open_store(f"sqlite:///{tmp_path / 'care.db'}")
    upgrade(store)
    load_rows(store, customers=[customer_row("C1")])
    store.dispose()
    care.anchors = "s3://no-lock/care"  # type: ignore[assignment]
    with caplog.at_level("ERROR", logger="caretouch.ledger.anchors"):
        assert care("run", "--date", DAY, "--now", NOW).exit_code == 0
    assert "anchor NOT written" in caplog.text and "ObjectLockConfiguration" in caplog.text
    assert "Contents" not in s3.list_objects_v2(Bucket="no-lock", Prefix="care/anchors/")
    verified = care("audit", "verify")
    assert verified.exit_code == 1 and "no anchor objects in s3://no-lock/care/anchors" in (
        verified.output
    )


def test_the_standard_aws_endpoint_variable_is_enough(
    s3: Any, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No CARE_STORAGE_OPTIONS: s3fs (botocore) takes AWS_ENDPOINT_URL as any AWS tool does."""
    monkeypatch.delenv("CARE_STORAGE_OPTIONS")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    place = storage.reports(CareConfig.from_env()).child("probe.txt")
    assert place.options == {}
    place.write_text("through the AWS chain")
    body = s3.get_object(Bucket=BUCKET, Key="care/reports/probe.txt")["Body"].read()
    assert body == b"through the AWS chain"


# -- Location on a local disk ---------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "file://"])
def test_a_local_location_writes_whole_files_and_creates_once(tmp_path: Path, prefix: str) -> None:
    root = storage.at(f"{prefix}{tmp_path}/reports")
    assert root.is_local and root.local_path == tmp_path / "reports"
    summary = root.child("runs", DAY, "run-1.json")
    summary.write_text('{"a": 1}\n')
    summary.write_text('{"a": 2}\n')  # replaced whole
    assert summary.read_text() == '{"a": 2}\n'
    assert [p.name for p in root.child("runs", DAY).objects(".json")] == ["run-1.json"]
    assert root.child("nowhere").objects() == []
    once = root.child("anchors", "0000000001-ab.json")
    once.create(b"first")
    with pytest.raises(FileExistsError):
        once.create(b"second")
    assert once.read_bytes() == b"first"
    assert sorted(p.name for p in (tmp_path / "reports" / "anchors").iterdir()) == [
        "0000000001-ab.json"  # no temporary file left behind
    ]


def test_urls_and_paths() -> None:
    assert not storage.at("s3://bucket/care").is_local
    assert storage.at("s3://bucket/care/").child("anchors", "x.json").url == (
        "s3://bucket/care/anchors/x.json"
    )
    assert storage.at(Path("reports")).child("runs").url == str(Path("reports") / "runs")
    assert storage.absolute("s3://bucket/care") == "s3://bucket/care"
    assert storage.absolute("reports") == str(Path("reports").resolve())


def test_the_monthly_report_goes_to_the_reports_url(ran: Care, s3: Any) -> None:
    result = ran("report", "--month", "2026-11")
    assert result.exit_code == 0, result.output
    assert f"wrote s3://{BUCKET}/care/reports/care-report-2026-11.html" in result.output
    page = s3.get_object(Bucket=BUCKET, Key="care/reports/care-report-2026-11.html")
    assert b"<html" in page["Body"].read().lower()


# -- the outbox behind a URL: crash recovery on another host --------------------------------

CRASHING_SENDER = r"""
import datetime as dt, os, signal, sys
from caretouch import storage
from caretouch.channels.outbox import OutboxTransport
from caretouch.config import CareConfig
from caretouch.run.day import run_day
from caretouch.run.engine import open_engine
from caretouch.vocab import Channel

class DyingOutbox(OutboxTransport):
    sent = 0

    def post(self, payload):
        place = super().post(payload)
        DyingOutbox.sent += 1
        if DyingOutbox.sent == int(sys.argv[1]):
            # The provider (here: the bucket) has the message, the ledger does not know yet.
            os.kill(os.getpid(), signal.SIGKILL)
        return place

config = CareConfig.from_env()
outbox = storage.outbox(config)
engine = open_engine(config, transports={ch: DyingOutbox(ch, outbox) for ch in Channel})
run_day(engine, dt.date(2026, 11, 23), run_id="host-a", now=dt.datetime.fromisoformat(sys.argv[2]))
"""


def outbox_keys(client: Any) -> list[str]:
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix="care/outbox/")
    return [o["Key"] for o in listed.get("Contents", [])]


def test_a_sender_killed_on_one_host_is_recovered_on_another_without_resending(
    tmp_path: Path, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Host A sends into the outbox bucket and is killed after its third message, before the
    ledger knew; host B (another process, another working folder) recovers after the
    sending lease: it finds the three in the bucket, records them sent, and sends the rest
    once. With a local folder per host, B would have sent the three again."""
    import subprocess
    import sys
    from collections import Counter

    from caretouch.ledger import Ledger
    from caretouch.run.day import run_day
    from caretouch.run.engine import open_engine
    from caretouch.vocab import TouchStatus

    store = open_store(f"sqlite:///{tmp_path / 'care.db'}")
    upgrade(store)
    load_rows(
        store,
        customers=[customer_row(f"C{i}", phone=f"+86138123400{i:02d}") for i in range(8)],
    )
    for name, value in {
        "CARE_STORE_URL": store.url,
        "CARE_OUTBOX_DIR": f"s3://{BUCKET}/care/outbox",
        "CARE_ANCHOR_FILE": f"s3://{BUCKET}/care",
        "CARE_WORKERS": "2",  # several hosts: allowed, the outbox is a URL
        "CARE_RULES_DIR": str(RULES_DIR),
        "CARE_TEMPLATES_DIR": str(TEMPLATES_DIR),
    }.items():
        monkeypatch.setenv(name, value)
    host_a = tmp_path / "host-a"
    host_a.mkdir()
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_SENDER, "3", "2026-11-23T04:00:00+00:00"],
        cwd=host_a,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert crashed.returncode == -9, crashed.stderr
    assert len(outbox_keys(s3)) == 3
    states = Counter(s.status for s in Ledger(store).states_for_day(dt.date(2026, 11, 23)))
    assert states[TouchStatus.SENDING] >= 1

    # Host B: this process, its own working folder; 30 minutes later, past the lease.
    monkeypatch.chdir(tmp_path)
    engine = open_engine(CareConfig.from_env(), store=store)
    run_day(engine, dt.date(2026, 11, 23), run_id="host-b", now=utc_at("2026-11-23T04:30:00"))
    keys = outbox_keys(s3)
    assert len(keys) == 8, "every due touch went out"
    touch_keys = Counter(
        json.loads(s3.get_object(Bucket=BUCKET, Key=k)["Body"].read())["touch_key"] for k in keys
    )
    assert max(touch_keys.values()) == 1, "none twice"
    states = Counter(s.status for s in Ledger(store).states_for_day(dt.date(2026, 11, 23)))
    assert states == {TouchStatus.SENT: 8}
    store.dispose()


def utc_at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc)
