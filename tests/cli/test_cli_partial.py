"""Field test #11 (items 13 and 19): broken rules make a partial run (exit 3, touches left
planned), run summaries count what the ledger holds, destinations are checked before the work,
import files that cannot be read are file errors, global options go anywhere, no traceback."""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, update

import conftest
from caretouch.cli.root import main, spread_global_options
from caretouch.ledger import Ledger
from caretouch.ledger.models import TouchCurrent, TouchEvent
from caretouch.store.db import Store, open_store
from caretouch.store.models import Customer
from caretouch.vocab import TouchStatus
from conftest import (
    RULES_DIR,
    TEMPLATES_DIR,
    cli_url,
    customer_row,
    event_row,
    load_rows,
    policy_row,
)

DAY = "2026-11-23"
# 09:00 in Shanghai on the 23rd is 01:00Z: before it, touches wait; the day after, too late.
BEFORE = "2026-11-22T20:00:00Z"
DUE = "2026-11-23T02:00:00Z"
LATER = "2026-11-23T03:00:00Z"
WINDOW_PASSED = "2026-11-25T12:00:00Z"


class Care(conftest.Care):
    """``care`` (the shared fixture's) against one store, with run summaries in HOME/reports."""

    def __init__(self, home: Path, url: str, rules: Path = RULES_DIR) -> None:
        self.reports = home / "reports"
        super().__init__(
            home, store_url=url, rules=rules, env={"CARE_REPORTS_DIR": str(self.reports)}
        )


def fill(store: Store) -> None:
    """C1: a birthday (SMS). C2: a birthday with no usable channel (no_contact at plan).
    C3: a renewal reminder and a thank-you the same day (the cap keeps one)."""
    load_rows(
        store,
        customers=[
            customer_row("C1"),
            customer_row("C2", phone="12345", email=""),
            customer_row("C3", birth_date="1985-06-01"),
        ],
        policies=[policy_row("P1", "C3", start_date="2025-11-01", renewal_date="2026-11-30")],
        events=[event_row("E1", "C3", occurred_at="2026-11-22T09:00:00+08:00")],
    )


@pytest.fixture
def care(store: Store, tmp_path: Path) -> Care:
    fill(store)
    return Care(tmp_path, cli_url(store))


def broken_rules(tmp_path: Path) -> Path:
    """The shipped rules with birthday.yaml broken at line 15, column 5."""
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    path = rules / "birthday.yaml"
    path.write_text(
        path.read_text(encoding="utf-8").replace("priority: 30", "prority: 30"), encoding="utf-8"
    )
    return rules


BROKEN_AT = "birthday.yaml:15:5: unknown field 'prority'"


def ledger_counts(store: Store, run_id: str) -> dict[str, int]:
    """What ``run_id`` recorded, counted in the ledger directly."""
    with store.read_session() as session:
        rows = session.execute(
            select(TouchEvent.status, TouchEvent.reason).where(TouchEvent.run_id == run_id)
        ).all()
        in_flight = session.scalar(
            select(func.count(func.distinct(TouchEvent.touch_id)))
            .join(TouchCurrent, TouchCurrent.touch_id == TouchEvent.touch_id)
            .where(TouchEvent.run_id == run_id, TouchEvent.status == "sending")
            .where(TouchCurrent.status == "sending")
        )
    counts = Counter(
        "retry" if status == "planned" and reason else status
        for status, reason in rows
        if status != "sending"
    )
    return {
        "planned": counts["planned"],
        "suppressed": counts["suppressed"],
        "sent": counts["sent"],
        "failed": counts["failed"],
        "unknown": counts["unknown"],
        "retry": counts["retry"],
        "in_flight": in_flight or 0,
    }


def printed_counts(line: str) -> tuple[str, dict[str, int]]:
    """The run id and the counts of a ``this run (ID): k v, k v`` or ``dispatch (ID): ...`` line."""
    match = re.search(r"\((cli:[^()\s]+)\)(?: \(only [^)]*\))?: (.*)$", line)
    assert match, line
    counts = {k: int(v) for k, v in (part.rsplit(" ", 1) for part in match.group(2).split(", "))}
    return match.group(1), counts


def status_of(store: Store, key_prefix: str) -> list[tuple[str, str | None]]:
    ledger = Ledger(store)
    return [
        (s.status.value, s.reason)
        for s in ledger.states(ledger.touch_ids_in_status(set(TouchStatus)))
        if s.row.touch_key.startswith(key_prefix)
    ]


# -- 13: a broken rule makes a partial run ----------------------------------------------------


def test_every_planning_command_runs_the_healthy_rules_and_exits_3(
    sqlite_store: Store, tmp_path: Path
) -> None:
    fill(sqlite_store)
    rules = broken_rules(tmp_path)
    care = Care(tmp_path, sqlite_store.url, rules)
    events_csv = tmp_path / "events.csv"
    events_csv.write_text(
        "event_id,type,customer_id,occurred_at\nE2,policy_purchased,C1,2026-11-22T10:00:00+08:00\n",
        encoding="utf-8",
    )
    commands: list[tuple[str, ...]] = [
        ("plan", "--date", DAY, "--format", "json"),
        ("forecast", "--from", DAY, "--days", "2"),
        ("preview", "renewal-reminder", "--customer", "C3", "--date", DAY),
        ("campaign", "list"),
        ("run", "--date", DAY, "--now", DUE),
        ("dispatch", "--now", LATER),
        (
            "event",
            "emit",
            "--type",
            "claim_settled",
            "--customer",
            "C1",
            "--now",
            DUE,
            "--payload",
            '{"claim_id": "CL-1"}',
        ),
        ("event", "import", str(events_csv), "--now", DUE),
    ]
    for args in commands:
        result = care(*args)
        assert result.exit_code == 3, (args, result.output)
        assert BROKEN_AT in result.stderr, args
        assert "partial: 2 rule error(s)" in result.stderr.splitlines()[-1], args
        assert "Traceback" not in result.output
    # The healthy rules ran: the renewal reminder and the thank-you went out, no birthday.
    assert status_of(sqlite_store, "renewal-reminder") == [("sent", None)]
    assert status_of(sqlite_store, "birthday") == []
    assert len(status_of(sqlite_store, "thank-you|event:E2")) == 1  # the event was planned
    assert len(list((tmp_path / "outbox").rglob("*.json"))) == 1


def test_event_drain_plans_with_the_healthy_rules_and_exits_3(
    sqlite_store: Store, tmp_path: Path
) -> None:
    import redis_env

    client = redis_env.require_redis()
    stream = f"care-test:{uuid.uuid4().hex[:12]}"
    try:
        fill(sqlite_store)
        care = Care(tmp_path, sqlite_store.url, broken_rules(tmp_path))
        env = {"CARE_REDIS_URL": redis_env.REDIS_URL, "CARE_EVENT_STREAM": stream}
        added = care(
            *("event", "emit", "--type", "claim_settled", "--customer", "C1", "--id", "S1"),
            *("--payload", '{"claim_id": "CL-1"}'),
            *("--at", "2026-11-22T10:00:00+08:00", "--via", "stream"),
            env=env,
        )
        assert added.exit_code == 0, added.output  # no planning: the rules are not needed
        drained = care("event", "drain", "--consumer", "t", "--now", DUE, env=env)
        assert drained.exit_code == 3, drained.output
        assert BROKEN_AT in drained.stderr and "partial: 2 rule error(s)" in drained.stderr
        assert status_of(sqlite_store, "claim-settled|event:S1") == [("planned", None)]
    finally:
        for name in client.scan_iter(f"{stream}*"):
            client.delete(name)
        client.close()


def test_the_run_summary_names_the_broken_rules(sqlite_store: Store, tmp_path: Path) -> None:
    fill(sqlite_store)
    care = Care(tmp_path, sqlite_store.url, broken_rules(tmp_path))
    result = care("run", "--date", DAY, "--now", DUE)
    assert result.exit_code == 3
    assert "PARTIAL: 2 rule error(s)" in result.stdout and BROKEN_AT in result.stdout
    [stored] = [json.loads(p.read_text()) for p in care.reports.glob("runs/*/*.json")]
    assert stored["partial"] is True
    assert len(stored["rule_errors"]) == 2 and BROKEN_AT in stored["rule_errors"][1]
    dispatch = care("dispatch", "--now", LATER)
    assert dispatch.exit_code == 3 and BROKEN_AT in dispatch.stdout
    # A partial dispatch stores its summary even when it sent nothing.
    assert len(list(care.reports.glob("runs/*/*.json"))) == 2


def test_a_touch_whose_rule_breaks_stays_planned_and_goes_out_once_fixed(
    care: Care, store: Store
) -> None:
    planned = care("run", "--date", DAY, "--now", BEFORE)
    assert planned.exit_code == 0, planned.output
    assert status_of(store, "birthday|customer:C1") == [("planned", None)]
    good = care.rules
    care.rules = broken_rules(care.home)
    held = care("dispatch", "--now", DUE)
    assert held.exit_code == 3, held.output
    _, counts = printed_counts(held.stdout.splitlines()[0])
    assert counts["held"] == 1
    # Not no_contact: nothing was decided about it, so nothing is recorded.
    assert status_of(store, "birthday|customer:C1") == [("planned", None)]
    assert status_of(store, "renewal-reminder") == [("sent", None)]
    care.rules = good
    fixed = care("dispatch", "--now", LATER)
    assert fixed.exit_code == 0, fixed.output
    assert status_of(store, "birthday|customer:C1") == [("sent", None)]


def test_a_touch_of_a_broken_rule_past_its_window_is_too_late_and_says_why(
    care: Care, store: Store
) -> None:
    assert care("run", "--date", DAY, "--now", BEFORE).exit_code == 0
    care.rules = broken_rules(care.home)
    assert care("dispatch", "--now", WINDOW_PASSED).exit_code == 3
    assert status_of(store, "birthday|customer:C1") == [("suppressed", "too_late")]
    ledger = Ledger(store)
    [state] = [
        s
        for s in ledger.states(ledger.touch_ids_in_status({TouchStatus.SUPPRESSED}))
        if s.row.touch_key.startswith("birthday|customer:C1")
    ]
    explain = ledger.history(state.id)[-1].detail["explain"]
    assert "its rule birthday is not loaded (broken or removed)" in explain


def test_a_render_error_at_send_time_is_a_failed_touch_and_exit_3(
    sqlite_store: Store, tmp_path: Path
) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, templates)
    # Passes validation (the sample customer is not C1), fails for C1 when sent.
    (templates / "birthday" / "sms.zh-CN.txt").write_text(
        "{% if customer.customer_id == 'C1' %}{{ customer.name | longdate }}"
        "{% else %}生日快乐{% endif %}",
        encoding="utf-8",
    )
    fill(sqlite_store)
    result = Care(tmp_path, sqlite_store.url)(
        "run", "--date", DAY, "--now", DUE, templates=templates
    )
    assert result.exit_code == 3
    assert "render_error" in result.stderr
    assert status_of(sqlite_store, "birthday|customer:C1") == [("failed", "render_error")]
    run_id, counts = printed_counts(
        next(x for x in result.stdout.splitlines() if x.startswith("this run"))
    )
    assert counts["failed"] == 1
    assert {k: counts[k] for k in ledger_counts(sqlite_store, run_id)} == ledger_counts(
        sqlite_store, run_id
    )


# -- 19c: what a run prints is what the ledger recorded ----------------------------------------


def test_care_run_counts_are_the_ledgers_own(care: Care, store: Store) -> None:
    # A backfill past the window: the plan records planned touches and suppressions (no
    # channel, the daily cap), then each planned touch is suppressed as too_late.
    result = care("run", "--date", DAY, "--now", WINDOW_PASSED)
    assert result.exit_code == 0, result.output
    run_id, counts = printed_counts(
        next(x for x in result.stdout.splitlines() if x.startswith("this run"))
    )
    recorded = ledger_counts(store, run_id)
    assert {k: counts[k] for k in recorded} == recorded
    assert recorded["planned"] == 2 and recorded["suppressed"] == 4  # 2 at plan, 2 at send
    [stored] = [json.loads(p.read_text()) for p in care.reports.glob("runs/*/*.json")]
    assert {k: stored["this_run"][k] for k in recorded} == recorded
    # The rerun counts its own records only.
    again = care("run", "--date", DAY, "--now", WINDOW_PASSED)
    run_id, counts = printed_counts(
        next(x for x in again.stdout.splitlines() if x.startswith("this run"))
    )
    assert {k: counts[k] for k in recorded} == ledger_counts(store, run_id)


def test_care_dispatch_counts_are_the_ledgers_own(care: Care, store: Store) -> None:
    assert care("run", "--date", DAY, "--now", BEFORE).exit_code == 0
    # C1 withdraws SMS consent after the plan (email remains): at send time the touch is
    # deferred to the next plan (recorded as a suppression), the others go out.
    with store.session() as session:
        session.execute(
            update(Customer).where(Customer.customer_id == "C1").values(consent_sms=False)
        )
    result = care("dispatch", "--now", DUE)
    assert result.exit_code == 0, result.output
    run_id, counts = printed_counts(result.stdout.splitlines()[0])
    recorded = ledger_counts(store, run_id)
    assert {k: counts[k] for k in recorded} == recorded
    assert recorded["sent"] >= 1 and recorded["suppressed"] >= 1


def test_event_commands_count_what_they_recorded(sqlite_store: Store, tmp_path: Path) -> None:
    load_rows(sqlite_store, customers=[customer_row("C1", birth_date="")])
    care = Care(tmp_path, sqlite_store.url)
    result = care(
        *("event", "emit", "--type", "policy_purchased", "--customer", "C1", "--id", "X1"),
        *("--at", "2026-11-22T10:00:00+08:00", "--now", DUE),
    )
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stdout.splitlines() if x.startswith("event touches:"))
    counts = dict(part.rsplit(" ", 1) for part in line.split(": ", 1)[1].split(", "))
    with sqlite_store.read_session() as session:
        recorded = Counter(session.scalars(select(TouchEvent.status)))
    assert (int(counts["planned"]), int(counts["suppressed"])) == (
        recorded["planned"],
        recorded["suppressed"],
    )
    assert recorded["planned"] == 1


# -- 19a: destinations are checked before the work; never a traceback ---------------------------


@pytest.fixture
def blocker(tmp_path: Path) -> Path:
    """A plain file where a folder is wanted."""
    path = tmp_path / "blocker"
    path.write_text("I am a file\n", encoding="utf-8")
    return path


def test_forecast_output_into_a_missing_folder_is_created(care: Care) -> None:
    target = care.home / "new" / "deeper" / "forecast.csv"
    result = care(
        "forecast", "--from", DAY, "--days", "1", "--format", "csv", "--output", str(target)
    )
    assert result.exit_code == 0, result.output
    assert target.read_text(encoding="utf-8").startswith("day,")


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("forecast", "--from", DAY, "--days", "3", "--output", "{blocker}/f.csv"), 2, "--output"),
        (("forecast", "--from", DAY, "--format", "png", "--output", "{tmp}"), 2, "--output"),
        (("report", "--month", "2026-11", "--output", "{blocker}/r.html"), 2, "--output"),
        (
            ("store", "import", "--customers", "{csv}", "--rejects", "{blocker}/x.csv"),
            2,
            "--rejects",
        ),
        (("demo", "--dir", "{blocker}/demo", "--no-airflow"), 2, "--dir"),
        (("campaign", "dagfiles", "--dags", "{blocker}"), 2, "--dags"),
        (("campaign", "dagfiles", "--dags", "{tmp}/nodags"), 1, "DAG folder not found"),
        (("--outbox", "{blocker}", "run", "--date", DAY, "--now", DUE), 1, "outbox folder"),
        (("--outbox", "{blocker}", "dispatch", "--now", DUE), 1, "outbox folder"),
        (("--anchors", "{blocker}/a.jsonl", "run", "--date", DAY, "--now", DUE), 1, "anchor"),
        (("run", "--date", DAY, "--now", DUE), 1, "reports folder"),
        (("report", "--month", "2026-11"), 1, "reports folder"),
        (("--store", "sqlite:///{blocker}/care.db", "plan", "--date", DAY), 1, "error"),
        (("--rules", "{blocker}", "plan", "--date", DAY), 1, "rules directory"),
        (("--store", "sqlite:///{blocker}/care.db", "audit", "verify"), 1, "error"),
    ],
)
def test_bad_destinations_are_refused_before_the_work_without_a_traceback(
    care: Care,
    store: Store,
    blocker: Path,
    args: tuple[str, ...],
    code: int,
    says: str,
) -> None:
    csv_file = care.home / "customers.csv"
    csv_file.write_text("customer_id,name\nC9,Ann\n,Nameless\n", encoding="utf-8")
    values = {"blocker": str(blocker), "tmp": str(care.home), "csv": str(csv_file)}
    env = {"CARE_REPORTS_DIR": str(blocker)} if says == "reports folder" else None
    before = ledger_size(store)
    result = care(*(a.format(**values) for a in args), env=env)
    assert result.exit_code == code, result.output
    assert says in result.output
    assert "Traceback" not in result.output
    assert ledger_size(store) == before  # refused before anything was recorded
    assert not (care.home / "outbox").exists()


def ledger_size(store: Store) -> int:
    with store.read_session() as session:
        return int(session.scalar(select(func.count()).select_from(TouchEvent)) or 0)


def test_an_unexpected_error_is_one_line_not_a_traceback(
    care: Care, monkeypatch: pytest.MonkeyPatch
) -> None:
    import caretouch.plan as plan_module

    def boom(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("something nobody expected")

    monkeypatch.setattr(plan_module, "plan_day", boom)
    result = care("plan", "--date", DAY)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: RuntimeError: something nobody expected (run with -v for details)"
    )
    assert "Traceback" not in result.output
    verbose = care("plan", "--date", DAY, "-v")
    assert verbose.exit_code == 1 and "Traceback" in verbose.stderr


# -- 19b: a file that cannot be read is a file error, not a list of bad rows ---------------------


FILE_PROBLEMS = {
    "missing": None,
    "folder": "folder",
    "empty": b"",
    "not-utf8": "customer_id,name\nC9,Zoë\n".encode("latin-1"),
    "utf16": "customer_id,name\nC9,Zoë\n".encode("utf-16"),
    "headerless": b"C9,Ann,1990-01-01\nC8,Bob,1991-02-02\n",
}
FILE_MESSAGES = {
    "missing": ": cannot read: No such file or directory",
    "folder": "",  # click refuses a folder for a file option (exit 2), the event import too
    "empty": ":1: empty file (no header row)",
    "not-utf8": ":2: not UTF-8 text",
    "utf16": ":1: not UTF-8 text",
    "headerless": ":1: no header row: the first line must name the columns",
}


def problem_file(tmp_path: Path, problem: str, name: str) -> Path:
    path = tmp_path / name
    content = FILE_PROBLEMS[problem]
    if content == "folder":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    return path


@pytest.mark.parametrize("problem", list(FILE_PROBLEMS))
@pytest.mark.parametrize("option", ["--customers", "--policies", "--events"])
@pytest.mark.parametrize("skip", [False, True], ids=["all-or-nothing", "skip-invalid"])
def test_store_import_of_an_unreadable_file_is_a_file_error(
    sqlite_store: Store, tmp_path: Path, problem: str, option: str, skip: bool
) -> None:
    path = problem_file(tmp_path, problem, "data.csv")
    care = Care(tmp_path, sqlite_store.url)
    result = care(
        "store",
        "import",
        option,
        str(path),
        *(["--skip-invalid"] if skip else []),
        "--rejects",
        str(tmp_path / "rejects.csv"),
    )
    assert "Traceback" not in result.output
    if problem == "folder":
        assert result.exit_code == 2 and "is a directory" in result.output
        return
    assert result.exit_code == 1, result.output
    assert f"{path}{FILE_MESSAGES[problem]}" in result.stderr
    assert "1 file error(s); nothing was imported." in result.stderr
    assert "invalid row" not in result.output and "--skip-invalid" not in result.output
    assert not (tmp_path / "rejects.csv").exists()


def test_a_file_error_stops_the_other_files_too(sqlite_store: Store, tmp_path: Path) -> None:
    good = tmp_path / "customers.csv"
    good.write_text("customer_id,name\nC9,Ann\n", encoding="utf-8")
    care = Care(tmp_path, sqlite_store.url)
    result = care(
        "store",
        "import",
        "--customers",
        str(good),
        "--policies",
        str(tmp_path / "nope.csv"),
        "--skip-invalid",
    )
    assert result.exit_code == 1
    with sqlite_store.read_session() as session:
        assert session.scalar(select(func.count()).select_from(Customer)) == 0


@pytest.mark.parametrize("problem", list(FILE_PROBLEMS))
def test_event_import_of_an_unreadable_file_is_a_file_error(
    sqlite_store: Store, tmp_path: Path, problem: str
) -> None:
    path = problem_file(tmp_path, problem, "events.csv")
    care = Care(tmp_path, sqlite_store.url)
    result = care("event", "import", str(path), "--now", DUE)
    assert "Traceback" not in result.output
    if problem == "folder":
        assert result.exit_code == 2 and "is a directory" in result.output
        return
    assert result.exit_code == 1, result.output
    expected = FILE_MESSAGES[problem].replace(
        "the first line must name the columns", "the first line must name the columns (events"
    )
    assert f"{path}{expected}" in result.stderr
    assert "nothing was changed" in result.stderr


# -- 19d: global options before or after the command --------------------------------------------


def command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for name, command in sorted(group.commands.items()):
        paths.append((*prefix, name))
        if isinstance(command, click.Group):
            paths += command_paths(command, (*prefix, name))
    return paths


GLOBAL_ARGS = (
    *("--store", "sqlite:///x.db", "--rules", "r", "--templates", "t"),
    *("--outbox", "o", "--anchors", "a.jsonl", "-v"),
)


@pytest.mark.parametrize("path", command_paths(main), ids=" ".join)
def test_every_command_accepts_the_global_options_after_it(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, *GLOBAL_ARGS, "--help"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "No such option" not in result.output


def test_global_options_after_the_command_take_effect(tmp_path: Path) -> None:
    runner = CliRunner()
    first, second = tmp_path / "first.db", tmp_path / "second.db"
    result = runner.invoke(
        main,
        ["--store", f"sqlite:///{first}", "store", "init", "--store", f"sqlite:///{second}"],
    )
    assert result.exit_code == 0, result.output
    # Given in both places, the one after the command wins.
    assert second.exists() and not first.exists()
    result = runner.invoke(main, ["validate", "--rules", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert f"rules directory not found: {tmp_path / 'nowhere'}" in result.output
    result = runner.invoke(
        main,
        ["audit", "verify", "--store", f"sqlite:///{second}", "--anchors", str(tmp_path / "a")],
    )
    assert result.exit_code == 0, result.output
    load_rows(open_store(f"sqlite:///{second}"), customers=[customer_row("C1")])
    result = runner.invoke(
        main,
        [
            *("event", "emit", "--type", "policy_purchased", "--customer", "C1"),
            *("--store", f"sqlite:///{second}", "--rules", str(RULES_DIR)),
            *("--templates", str(TEMPLATES_DIR), "--now", DUE),
        ],
    )
    assert "inbox: 1 accepted" in result.output, result.output
    result = runner.invoke(main, ["store", "--store", f"sqlite:///{tmp_path / 'third.db'}", "init"])
    assert result.exit_code == 0 and (tmp_path / "third.db").exists()


def test_a_commands_own_option_wins_over_a_global_one() -> None:
    seen: dict[str, Any] = {}

    @click.group()
    @click.option("--store")
    @click.option("-v", "--verbose", is_flag=True)
    def group(store: str | None, verbose: bool) -> None:
        seen["group"] = store

    @group.command()
    @click.option("-v", "--value")
    def sub(value: str | None) -> None:
        seen["value"] = value

    spread_global_options(group)
    spread_global_options(group)  # idempotent
    names = [o for p in sub.params for o in p.opts]
    assert names.count("-v") == 1 and names.count("--store") == 1
    assert "--verbose" in names
    result = CliRunner().invoke(group, ["sub", "-v", "mine"], catch_exceptions=False)
    assert result.exit_code == 0 and seen["value"] == "mine"
