"""Running a day: idempotent reruns, waiting for send time, races and crashes never duplicate."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from caretouch.config import CareConfig
from caretouch.ledger import Ledger
from caretouch.plan import plan_day
from caretouch.run.day import pending_ids, plan_and_record, run_day
from caretouch.run.engine import CareEngine, open_engine
from caretouch.run.send import send_touches
from caretouch.store.db import Store
from caretouch.vocab import TouchStatus
from conftest import RULES_DIR, TEMPLATES_DIR, customer_row, event_row, load_rows, policy_row, utc

DAY = dt.date(2026, 11, 23)
# 12:00 UTC: 20:00 in Shanghai (allowed, after 09:00), 12:00 in London, 04:00 in Los Angeles.
NOON = utc(2026, 11, 23, 12, 0)
# A restart after a crash: past the sending lease, still before quiet hours in Shanghai.
RESTART = utc(2026, 11, 23, 12, 15)
# 08:30 in Shanghai on the 24th: quiet hours are over, within 24 hours of the 09:00 send time.
NEXT_MORNING = utc(2026, 11, 24, 0, 30)


def engine_for(store: Store, tmp_path: Path) -> CareEngine:
    config = CareConfig(store.url, RULES_DIR, TEMPLATES_DIR, tmp_path / "outbox")
    engine = open_engine(config, store=store)
    return engine


def outbox_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "outbox").rglob("*.json"))


def birthday_customers(n: int, zones: tuple[str, ...] = ("Asia/Shanghai",)) -> list[dict[str, str]]:
    """``n`` customers born on DAY, of tier C: no shipped cadence check-in falls on their day
    (the tests count the birthdays)."""
    return [
        customer_row(f"C{i:05d}", timezone=zones[i % len(zones)], phone=f"+86138{i:08d}", tier="C")
        for i in range(n)
    ]


def test_second_run_sends_nothing(sqlite_store: Store, tmp_path: Path) -> None:
    load_rows(sqlite_store, customers=birthday_customers(20))
    engine = engine_for(sqlite_store, tmp_path)
    first = run_day(engine, DAY, run_id="t1", now=NOON)
    assert first.sent == 20 and first.failed == 0
    assert len(outbox_files(tmp_path)) == 20
    second = run_day(engine, DAY, run_id="t2", now=NOON)
    assert second.sent == 0
    assert len(outbox_files(tmp_path)) == 20
    states = Ledger(sqlite_store).states_for_day(DAY)
    assert Counter(s.status for s in states) == {TouchStatus.SENT: 20}


def test_touch_waits_for_send_time_and_quiet_hours(sqlite_store: Store, tmp_path: Path) -> None:
    load_rows(
        sqlite_store,
        customers=[
            customer_row("SH", timezone="Asia/Shanghai"),
            customer_row("LA", timezone="America/Los_Angeles", phone="+14155550123"),
        ],
    )
    engine = engine_for(sqlite_store, tmp_path)
    # 00:30 UTC: 08:30 in Shanghai (before 09:00), 16:30 the day before in Los Angeles.
    early = run_day(engine, DAY, run_id="t1", now=utc(2026, 11, 23, 0, 30))
    assert (early.sent, early.waiting) == (0, 2)
    # 14:00 UTC: Shanghai is at 22:00 (quiet hours), Los Angeles at 06:00 (before 09:00).
    quiet = send_touches(engine, pending_ids(engine, DAY), run_id="t2", now=utc(2026, 11, 23, 14))
    assert (quiet.sent, quiet.waiting) == (0, 2)
    # 17:30 UTC: 09:30 in Los Angeles; Shanghai still quiet (01:30 on the 24th).
    la = send_touches(engine, pending_ids(engine, DAY), run_id="t3", now=utc(2026, 11, 23, 17, 30))
    assert (la.sent, la.waiting) == (1, 1)
    sh = send_touches(engine, pending_ids(engine, DAY), run_id="t4", now=NEXT_MORNING)
    assert (sh.sent, sh.waiting) == (1, 0)
    assert pending_ids(engine, DAY) == []


def test_consent_given_later_replans_a_suppressed_touch(
    sqlite_store: Store, tmp_path: Path
) -> None:
    load_rows(
        sqlite_store, customers=[customer_row("C1", consent_sms="false", consent_email="false")]
    )
    engine = engine_for(sqlite_store, tmp_path)
    run_day(engine, DAY, run_id="t1", now=NOON)
    (state,) = Ledger(sqlite_store).states_for_day(DAY)
    assert (state.status, state.reason) == (TouchStatus.SUPPRESSED, "no_contact")
    load_rows(
        sqlite_store, customers=[customer_row("C1", consent_sms="true", consent_email="false")]
    )
    report = run_day(engine, DAY, run_id="t2", now=NOON)
    assert report.sent == 1
    history = [e.status for e in Ledger(sqlite_store).history(state.id)]
    assert history == ["suppressed", "planned", "sending", "sent"]


def test_consent_withdrawn_after_planning_is_honoured(sqlite_store: Store, tmp_path: Path) -> None:
    load_rows(sqlite_store, customers=[customer_row("C1")])
    engine = engine_for(sqlite_store, tmp_path)
    plan_and_record(engine, DAY, run_id="t1", now=NOON)
    load_rows(
        sqlite_store, customers=[customer_row("C1", consent_sms="false", consent_email="false")]
    )
    report = send_touches(engine, pending_ids(engine, DAY), run_id="t2", now=NOON)
    assert (report.sent, report.suppressed) == (0, 1)
    assert outbox_files(tmp_path) == []


def test_ledger_records_versions_and_content(sqlite_store: Store, tmp_path: Path) -> None:
    load_rows(sqlite_store, customers=[customer_row("C1", name="<script>x</script>")])
    engine = engine_for(sqlite_store, tmp_path)
    run_day(engine, DAY, run_id="t1", now=NOON)
    (state,) = Ledger(sqlite_store).states_for_day(DAY)
    (attempt,) = Ledger(sqlite_store).attempts(state.id)
    assert state.row.touch_key == "birthday|customer:C1|2026-11-23"
    assert len(state.row.rule_hash) == 64 and len(attempt.template_hash) == 64
    assert attempt.channel == "sms" and attempt.recipient == "+8613812348000"
    assert "<script>x</script>" in (attempt.body or "")
    sent = [e for e in Ledger(sqlite_store).history(state.id) if e.status == "sent"]
    assert sent and sent[0].provider_message_id.startswith("outbox:")
    file = json.loads(outbox_files(tmp_path)[0].read_text(encoding="utf-8"))
    assert file["body"] == attempt.body


def test_racing_workers_send_each_touch_once(store: Store, tmp_path: Path) -> None:
    total = 150
    load_rows(store, customers=birthday_customers(total))
    engine = engine_for(store, tmp_path)
    ids = plan_and_record(engine, DAY, run_id="plan", now=NOON)
    reports = []
    errors: list[BaseException] = []

    def worker(name: str, order: list[int]) -> None:
        # Small chunks and different orders make the workers collide often.
        try:
            reports.append(send_touches(engine, order, run_id=name, now=NOON, chunk_size=7))
        except BaseException as exc:  # a deadlock or lock timeout must fail the test
            errors.append(exc)

    orders = [ids, ids[::-1], ids[len(ids) // 2 :] + ids[: len(ids) // 2], ids]
    threads = [threading.Thread(target=worker, args=(f"w{i}", o)) for i, o in enumerate(orders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(r.sent for r in reports) == total
    assert len(outbox_files(tmp_path)) == total
    keys = Counter(
        json.loads(f.read_text(encoding="utf-8"))["touch_key"] for f in outbox_files(tmp_path)
    )
    assert max(keys.values()) == 1
    attempts = Counter(
        a.attempt_no
        for s in Ledger(store).states_for_day(DAY)
        for a in Ledger(store).attempts(s.id)
    )
    assert attempts == {1: total}


CRASHING_RUN = r"""
import datetime as dt, os, signal, sys
from pathlib import Path
from caretouch.channels.outbox import OutboxTransport
from caretouch.config import CareConfig
from caretouch.run.day import run_day
from caretouch.run.engine import CareEngine, open_engine
from caretouch.vocab import Channel

store_url, outbox, kill_after = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
now = dt.datetime.fromisoformat(sys.argv[6])
count = [0]

class DyingOutbox(OutboxTransport):
    def post(self, payload):
        path = super().post(payload)
        count[0] += 1
        if count[0] == kill_after:
            # The worst moment: the provider has the message, the ledger does not know yet.
            os.kill(os.getpid(), signal.SIGKILL)
        return path

config = CareConfig(store_url, Path(sys.argv[4]), Path(sys.argv[5]), outbox)
engine = open_engine(config, transports={ch: DyingOutbox(ch, outbox) for ch in Channel})
report = run_day(engine, dt.date(2026, 11, 23), run_id=f"pid{os.getpid()}", now=now)
print(report.as_dict())
"""


def _run(
    store: Store, tmp_path: Path, kill_after: int, now: dt.datetime = NOON
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-c",
            CRASHING_RUN,
            store.url,
            str(tmp_path / "outbox"),
            str(kill_after),
            str(RULES_DIR),
            str(TEMPLATES_DIR),
            now.isoformat(),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_run_killed_between_provider_and_ledger_never_duplicates(
    sqlite_store: Store, tmp_path: Path
) -> None:
    load_rows(sqlite_store, customers=birthday_customers(40))
    minutes = dt.timedelta(minutes=1)
    # Each restart comes after the sending lease of the run before, which it reconciles.
    for kill_after, at in ((7, NOON), (1, NOON + 15 * minutes), (13, NOON + 30 * minutes)):
        proc = _run(sqlite_store, tmp_path, kill_after, now=at)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
    # Within the sending lease a restart leaves the crashed attempts alone (their worker
    # might still be sending them); after it, they are reconciled with the outbox.
    within = _run(sqlite_store, tmp_path, 10_000, now=NOON + 31 * minutes)
    assert within.returncode == 0, within.stderr
    in_flight = Counter(s.status for s in Ledger(sqlite_store).states_for_day(DAY))
    assert in_flight[TouchStatus.SENDING] >= 1
    final = _run(sqlite_store, tmp_path, 10_000, now=NOON + 45 * minutes)
    assert final.returncode == 0, final.stderr
    files = outbox_files(tmp_path)
    keys = Counter(json.loads(f.read_text(encoding="utf-8"))["touch_key"] for f in files)
    assert len(keys) == 40, "every due touch was delivered"
    assert max(keys.values()) == 1, "no touch was delivered twice"
    states = Ledger(sqlite_store).states_for_day(DAY)
    assert Counter(s.status for s in states) == {TouchStatus.SENT: 40}


@pytest.mark.slow
def test_run_killed_at_random_times_never_duplicates(sqlite_store: Store, tmp_path: Path) -> None:
    total = 1200
    load_rows(
        sqlite_store, customers=birthday_customers(total, zones=("Asia/Shanghai", "Europe/London"))
    )
    env = {**os.environ, "CARE_STORE_URL": sqlite_store.url}
    cmd = [
        str(Path(sys.executable).with_name("care")),
        "--rules",
        str(RULES_DIR),
        "--templates",
        str(TEMPLATES_DIR),
        "--outbox",
        str(tmp_path / "outbox"),
        "run",
        "--date",
        DAY.isoformat(),
        "--now",
        NOON.isoformat(),
    ]
    # First a kill during planning, then kills while messages are being written, each
    # as soon as the outbox has grown past a threshold.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.8)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_midway = 0
    for threshold in (1, 200, 450, 800):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while (
            len(outbox_files(tmp_path)) < threshold
            and proc.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.returncode == -signal.SIGKILL and len(outbox_files(tmp_path)) < total:
            killed_midway += 1
    assert killed_midway >= 3, "the kills must land while messages are being sent"
    cmd[-1] = RESTART.isoformat()
    final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert final.returncode == 0, final.stderr
    keys = Counter(
        json.loads(f.read_text(encoding="utf-8"))["touch_key"] for f in outbox_files(tmp_path)
    )
    assert len(keys) == total
    assert max(keys.values()) == 1
    states = Ledger(sqlite_store).states_for_day(DAY)
    assert Counter(s.status for s in states) == {TouchStatus.SENT: total}


def test_render_error_fails_the_touch_and_a_fixed_template_sends_it(
    sqlite_store: Store, tmp_path: Path
) -> None:
    import shutil

    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, templates)
    sms = templates / "birthday" / "sms.zh-CN.txt"
    good = sms.read_text(encoding="utf-8")
    # Passes `care validate` (its sample customer is not C1), fails at send time for C1.
    sms.write_text(
        "{% if customer.customer_id == 'C1' %}{{ customer.name | longdate }}{% endif %}生日快乐",
        encoding="utf-8",
    )
    load_rows(sqlite_store, customers=[customer_row("C1"), customer_row("C2", locale="en")])
    config = CareConfig(sqlite_store.url, RULES_DIR, templates, tmp_path / "outbox")
    engine = open_engine(config)
    first = run_day(engine, DAY, run_id="t1", now=NOON)
    assert (first.sent, first.failed) == (1, 1)
    assert "render_error" in first.failures[0] and "sms.zh-CN.txt" in first.failures[0]
    sms.write_text(good, encoding="utf-8")
    engine = open_engine(config)
    second = run_day(engine, DAY, run_id="t2", now=NOON)
    assert (second.sent, second.failed) == (1, 0)
    assert len(outbox_files(tmp_path)) == 2


def test_a_touch_planned_later_cannot_exceed_the_daily_cap(
    sqlite_store: Store, tmp_path: Path
) -> None:
    # The birthday goes out in the morning; a purchase the evening before, recorded late,
    # makes a thank-you due the same day. It outranks the birthday but the day is taken.
    load_rows(sqlite_store, customers=[customer_row("C1")])
    engine = engine_for(sqlite_store, tmp_path)
    assert run_day(engine, DAY, run_id="morning", now=utc(2026, 11, 23, 2)).sent == 1
    load_rows(
        sqlite_store,
        events=[event_row("E1", "C1", occurred_at="2026-11-22T23:30:00+08:00")],
    )
    later = run_day(engine, DAY, run_id="afternoon", now=utc(2026, 11, 23, 6))
    assert later.sent == 0
    states = {s.row.rule_id: s for s in Ledger(sqlite_store).states_for_day(DAY)}
    assert states["birthday"].status is TouchStatus.SENT
    assert (states["thank-you"].status, states["thank-you"].reason) == (
        TouchStatus.SUPPRESSED,
        "frequency_cap",
    )


def test_template_instants_are_in_the_customers_zone(sqlite_store: Store, tmp_path: Path) -> None:
    load_rows(
        sqlite_store,
        customers=[customer_row("C1", birth_date="1990-01-01", locale="zh-CN")],
        events=[event_row("E1", "C1", occurred_at="2026-11-22T07:00:00+08:00")],
    )
    engine = engine_for(sqlite_store, tmp_path)
    (touch,) = plan_day(engine.store, engine.ruleset, DAY)
    occurred = touch.template_context()["event"]["occurred_at"]
    assert (occurred.date(), occurred.utcoffset()) == (dt.date(2026, 11, 22), dt.timedelta(hours=8))
    rendered = engine.templates.env.from_string("{{ d | longdate }}").render(
        d=occurred, locale="zh-CN"
    )
    assert rendered == "2026年11月22日"


@pytest.mark.parametrize(
    ("now", "window", "reason"),
    [
        # 2 days later: the 24-hour sending window is long gone.
        (utc(2026, 11, 25, 4), 24, "too_late"),
        # 21:30 in Shanghai, 12.5 hours after the 09:00 send time, with a 13-hour window:
        # still in the window, but quiet hours last until 08:00, beyond it.
        (utc(2026, 11, 23, 13, 30), 13, "quiet_hours"),
    ],
)
def test_touches_outside_their_window_are_suppressed(
    sqlite_store: Store, tmp_path: Path, now: dt.datetime, window: int, reason: str
) -> None:
    import shutil

    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    policy = rules / "policy.yaml"
    policy.write_text(
        policy.read_text(encoding="utf-8") + f"sending_window_hours: {window}\n", encoding="utf-8"
    )
    load_rows(sqlite_store, customers=[customer_row("C1")])
    engine = open_engine(CareConfig(sqlite_store.url, rules, TEMPLATES_DIR, tmp_path / "outbox"))
    report = run_day(engine, DAY, run_id="late", now=now)
    assert (report.sent, report.suppressed) == (0, 1)
    (state,) = Ledger(sqlite_store).states_for_day(DAY)
    assert (state.status, state.reason) == (TouchStatus.SUPPRESSED, reason)
    assert outbox_files(tmp_path) == []


def test_a_late_touch_respects_the_caps_of_the_day_it_would_go_out(
    sqlite_store: Store, tmp_path: Path
) -> None:
    # The birthday of the 23rd was planned but never sent (a dispatcher down all day); the
    # 24th has a renewal reminder. On the morning of the 24th the birthday may still go (within
    # 24 hours) but the 24th already has its one touch: the late one gives way.
    load_rows(
        sqlite_store,
        customers=[customer_row("C1")],
        policies=[policy_row("P1", "C1", start_date="2025-12-01", renewal_date="2026-11-25")],
    )
    engine = engine_for(sqlite_store, tmp_path)
    plan_and_record(engine, DAY, run_id="d23", now=utc(2026, 11, 22, 12))
    plan_and_record(engine, DAY + dt.timedelta(days=1), run_id="d24", now=utc(2026, 11, 23, 12))
    morning = send_touches(engine, pending_ids(engine), run_id="late", now=utc(2026, 11, 24, 0, 30))
    assert (morning.sent, morning.suppressed, morning.waiting) == (0, 1, 1)
    birthday = next(
        s for s in Ledger(sqlite_store).states_for_day(DAY) if s.row.rule_id == "birthday"
    )
    assert (birthday.status, birthday.reason) == (TouchStatus.SUPPRESSED, "frequency_cap")
    later = send_touches(engine, pending_ids(engine), run_id="later", now=utc(2026, 11, 24, 2, 30))
    assert later.sent == 1
