"""The `care` command line: exit statuses, JSON lines, messages users can act on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from caretouch.schema.migrate import upgrade
from caretouch.store.db import open_store
from conftest import RULES_DIR, Care, customer_row, event_row, load_rows, policy_row

PLAN_KEYS = [
    "rule_id",
    "customer_id",
    "policy_id",
    "event_id",
    "occurrence",
    "channel",
    "send_at",
    "decision",
    "reason",
]


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    store = open_store(f"sqlite:///{tmp_path / 'care.db'}")
    upgrade(store)
    load_rows(
        store,
        customers=[
            customer_row("C1"),
            customer_row("C2", phone="12345", email="", name="Bad Phone"),
            customer_row("C3", birth_date="1985-06-01"),
        ],
        policies=[policy_row("P1", "C3", start_date="2025-11-01", renewal_date="2026-11-30")],
        events=[event_row("E1", "C3", occurred_at="2026-11-22T09:00:00+08:00")],
    )
    store.dispose()
    return tmp_path


def test_plan_json_lines(care: Care, filled: Path) -> None:
    result = care("plan", "--date", "2026-11-23", "--format", "json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert all(list(line) == PLAN_KEYS for line in lines)
    by_key = {(d["rule_id"], d["customer_id"]): d for d in lines}
    assert by_key[("birthday", "C1")] == {
        "rule_id": "birthday",
        "customer_id": "C1",
        "policy_id": None,
        "event_id": None,
        "occurrence": "2026-11-23",
        "channel": "sms",
        "send_at": "2026-11-23T01:00:00Z",
        "decision": "send",
        "reason": None,
    }
    assert by_key[("birthday", "C2")]["decision"] == "suppress"
    assert by_key[("birthday", "C2")]["reason"] == "no_contact"
    assert by_key[("birthday", "C2")]["channel"] is None
    assert by_key[("renewal-reminder", "C3")]["policy_id"] == "P1"
    assert by_key[("renewal-reminder", "C3")]["send_at"] == "2026-11-23T02:00:00Z"
    assert by_key[("thank-you", "C3")]["event_id"] == "E1"
    # A dry run writes nothing.
    assert not (filled / "outbox").exists()
    again = care("plan", "--date", "2026-11-23", "--format", "json")
    assert again.output == result.output


def test_plan_explain_names_the_clause(care: Care, filled: Path) -> None:
    result = care("plan", "--date", "2026-11-23", "--explain")
    assert result.exit_code == 0
    assert "sms: phone not valid E.164" in result.output
    assert "customer.birth_date 1990-11-23 -> anniversary, year 36" in result.output
    assert "12345" not in result.output.replace("phone not valid", "")


def test_run_then_plan_shows_already_sent(care: Care, filled: Path) -> None:
    run = care("run", "--date", "2026-11-23", "--now", "2026-11-23T04:00:00Z")
    assert run.exit_code == 0, run.output
    assert (
        "this run" in run.output and "sent 2" in run.output
    )  # C3: thank-you loses to renewal (cap)
    lines = [
        json.loads(x)
        for x in care("plan", "--date", "2026-11-23", "--format", "json").output.splitlines()
    ]
    assert {d["reason"] for d in lines if d["customer_id"] == "C1"} == {"already_sent"}
    rerun = care("run", "--date", "2026-11-23", "--now", "2026-11-23T04:00:00Z")
    assert "sent 0" in rerun.output


def test_preview_renders_for_a_real_customer(care: Care, filled: Path) -> None:
    result = care(
        "preview",
        "birthday",
        "--customer",
        "C1",
        "--date",
        "2026-11-23",
        "--channel",
        "email",
    )
    assert result.exit_code == 0, result.output
    assert "Subject:" in result.output and "王芳" in result.output
    assert "\nsms: " not in result.output  # an email has no segments
    assert "w***@example.com" in result.output and "wang.fang@example.com" not in result.output
    missing = care("preview", "birthday", "--customer", "C1", "--date", "2026-11-24")
    assert missing.exit_code == 1 and "has no touch for customer C1" in missing.output


def test_preview_shows_an_sms_s_encoding_and_segments(care: Care, filled: Path) -> None:
    from caretouch.sms import sms_size

    result = care("preview", "birthday", "--customer", "C1", "--date", "2026-11-23")
    assert result.exit_code == 0, result.output
    assert "channel: sms" in result.output
    body = result.output.split("\n\n", 1)[1].rstrip("\n")
    size = sms_size(body)
    assert size.encoding == "UCS-2" and size.segments >= 1  # Chinese text
    assert f"sms: {size}" in result.output


def test_validate_reports_positions_and_exit_1(care: Care, tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    text = (
        (rules / "birthday.yaml").read_text(encoding="utf-8").replace("priority: 30", "prority: 30")
    )
    (rules / "birthday.yaml").write_text(text, encoding="utf-8")
    result = care("validate", rules=rules)
    assert result.exit_code == 1
    assert (
        f"{rules / 'birthday.yaml'}:15:5: unknown field 'prority' (did you mean 'priority'?)"
        in result.output
    )
    assert "Traceback" not in result.output


def test_good_rules_validate(care: Care, shipped_rules) -> None:
    result = care("validate")
    rules = [r.id for r in shipped_rules.rules if not shipped_rules.is_campaign(r.id)]
    assert len(rules) > 10
    assert result.exit_code == 0 and f"{len(rules)} rule(s) valid" in result.output


def test_usage_errors_exit_2(care: Care) -> None:
    assert care("plan").exit_code == 2
    assert care("plan", "--date", "2026-02-30").exit_code == 2
    assert care("nonsense").exit_code == 2


def test_missing_rules_directory_is_a_clear_error(care: Care, tmp_path: Path) -> None:
    result = care("validate", rules=tmp_path / "nowhere")
    assert result.exit_code == 1
    assert "rules directory not found" in result.output


def test_broken_rule_leaves_others_running(care: Care, filled: Path) -> None:
    rules = filled / "rules"
    shutil.copytree(RULES_DIR, rules)
    (rules / "birthday.yaml").write_text("rules: [", encoding="utf-8")
    result = care("plan", "--date", "2026-11-23", "--format", "json", rules=rules)
    assert result.exit_code == 3  # partial: the healthy rules are planned, the broken one not
    rules_seen = {json.loads(x)["rule_id"] for x in result.stdout.splitlines() if x.startswith("{")}
    assert rules_seen == {"renewal-reminder", "thank-you"}
    assert "birthday.yaml:1:" in result.stderr


def test_store_import_reports_file_line(care: Care, tmp_path: Path) -> None:
    csv_path = tmp_path / "customers.csv"
    csv_path.write_text(
        "customer_id,name,birth_date,tier\nC1,Ann,1990-01-01,A\nC2,Bob,2023-02-29,B\nC3,Cy,1990-01-01,Z\n",
        encoding="utf-8",
    )
    result = care("store", "import", "--customers", str(csv_path))
    assert result.exit_code == 1
    assert (
        f"{csv_path}:3: birth_date: '2023-02-29' is not a real date (YYYY-MM-DD)" in result.output
    )
    assert f"{csv_path}:4: tier: 'Z' is not one of A, B, C, D" in result.output
    assert "nothing was imported" in result.output
    ok = care(
        "store",
        "import",
        "--customers",
        str(csv_path),
        "--skip-invalid",
        "--rejects",
        str(tmp_path / "rej.csv"),
    )
    assert ok.exit_code == 0 and "customer: 1 inserted" in ok.output
    assert (tmp_path / "rej.csv").read_text(encoding="utf-8").count("\n") == 3


def test_broken_contact_policy_stops_planning(care: Care, filled: Path) -> None:
    rules = filled / "rules"
    shutil.copytree(RULES_DIR, rules)
    (rules / "policy.yaml").write_text("version: 1\ncaps:\n  per_dya: 1\n", encoding="utf-8")
    result = care("plan", "--date", "2026-11-23", rules=rules)
    assert result.exit_code == 1
    assert (
        f"{rules / 'policy.yaml'}:3:3: unknown field 'per_dya' (did you mean 'per_day'?)"
        in result.output
    )
    run = care("run", "--date", "2026-11-23", "--now", "2026-11-23T04:00:00Z", rules=rules)
    assert run.exit_code == 1
    assert not (filled / "outbox").exists()


def test_plan_on_a_store_without_tables_says_so(care: Care, tmp_path: Path) -> None:
    result = care("plan", "--date", "2026-11-23")
    assert result.exit_code == 1
    assert "does not exist: run `care store init`" in result.output
    assert not (tmp_path / "care.db").exists(), "a mistyped path must not create a database"
    (tmp_path / "care.db").touch()
    empty = care("plan", "--date", "2026-11-23")
    assert empty.exit_code == 1
    assert "has no customers, events, policies table(s): run `care store init`" in empty.output


def test_dispatch_plans_late_events_and_sends_what_is_due(care: Care, filled: Path) -> None:
    # Nothing planned yet: dispatch plans the dates in effect and sends what is due now
    # (04:00Z is 12:00 in Shanghai on the 23rd).
    result = care("dispatch", "--now", "2026-11-23T04:00:00Z")
    assert result.exit_code == 0, result.output
    assert "sent 2" in result.output
    store = open_store(f"sqlite:///{filled / 'care.db'}")
    # A purchase recorded after that: its thank-you is due on the 24th, Shanghai time.
    load_rows(store, events=[event_row("E9", "C1", occurred_at="2026-11-23T20:00:00+08:00")])
    nothing_yet = care("dispatch", "--now", "2026-11-23T04:30:00Z")
    assert "sent 0" in nothing_yet.output
    next_day = care("dispatch", "--now", "2026-11-24T02:30:00Z")
    assert "sent 1" in next_day.output
    lines = care("plan", "--date", "2026-11-24", "--format", "json").output.splitlines()
    thank_you = [json.loads(x) for x in lines if '"E9"' in x]
    assert thank_you and thank_you[0]["reason"] == "already_sent"
