"""`care audit` for auditors: filters checked as the web view checks them (exit 2, with a
did-you-mean), exports that say when nothing matched, the same neutralised CSV as the web
view, `show` by id or key with the decision's policy clause and consent, `verify` strict about
anchors; and every CLI command that writes the ledger says who it was and anchors it."""

from __future__ import annotations

import csv
import getpass
import io
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from caretouch.ledger.audit import EXPORT_COLUMNS
from caretouch.schema.migrate import upgrade
from caretouch.store.db import open_store
from caretouch.web.app import create_audit_app
from caretouch.web.auth import AuditAuth, AuditTokens
from conftest import Care, customer_row, event_row, load_rows

KEY = "cli-audit-anchor-key"
TOKEN = "cli-audit-token-0123456789"
NOW = "2026-11-23T04:00:00Z"
# Customer ids a spreadsheet would run as formulas, ASCII and full-width.
HOSTILE = ["=SUM(1+1)", "+1-2", "-3", "@cmd", "\uff1dHYPERLINK(1)"]


def anchors(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "anchors.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARE_ANCHOR_KEY", KEY)


@pytest.fixture
def ran(care: Care, tmp_path: Path, keyed: None) -> Path:
    """A day run from the CLI: birthdays sent, C1's thank-you capped, hostile customer ids."""
    store = open_store(f"sqlite:///{tmp_path / 'care.db'}")
    upgrade(store)
    customers = [customer_row("C1"), customer_row("C2", phone="+8613812340002")]
    customers += [
        customer_row(cid, phone=f"+86139{n:08d}", consent_email="false")
        for n, cid in enumerate(HOSTILE)
    ]
    load_rows(
        store,
        customers=customers,
        events=[event_row("E1", "C1", occurred_at="2026-11-22T09:00:00+08:00")],
    )
    store.dispose()
    result = care("run", "--date", "2026-11-23", "--now", NOW)
    assert result.exit_code == 0, result.output
    return tmp_path


def ledger_rows(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    store = open_store(f"sqlite:///{tmp_path / 'care.db'}")
    with store.engine.connect() as conn:
        rows = [tuple(r) for r in conn.exec_driver_sql(sql)]
    store.dispose()
    return rows


# -- who, and anchors from every writing command ---------------------------------------------


def test_cli_rows_say_who_wrote_them(care: Care, ran: Path) -> None:
    who = re.escape(f"{getpass.getuser()}@{socket.gethostname()}")
    run_ids = {r[0] for r in ledger_rows(ran, "SELECT DISTINCT run_id FROM touch_events")}
    assert run_ids and all(re.fullmatch(rf"cli:{who}/[0-9a-f]{{12}}", r) for r in run_ids)
    changed = care("consent", "set", "C2", "--sms", "off")
    assert changed.exit_code == 0, changed.output
    (source,) = ledger_rows(ran, "SELECT source FROM consent_events WHERE customer_id = 'C2'")
    assert re.fullmatch(rf"cli:{who}", source[0])


def test_every_command_that_writes_the_ledger_anchors_it(care: Care, ran: Path) -> None:
    assert [a["n"] for a in anchors(ran)] == [1]  # care run
    assert care("consent", "set", "C2", "--email", "off").exit_code == 0
    assert [a["n"] for a in anchors(ran)] == [1, 2]
    emitted = care(
        *("event", "emit", "--type", "complaint_resolved", "--customer", "C2", "--id", "E9"),
        *("--payload", '{"case_id": "CS-9"}'),
        *("--at", "2026-11-22T10:00:00+08:00", "--now", NOW),
    )
    assert emitted.exit_code == 0, emitted.output
    assert [a["n"] for a in anchors(ran)] == [1, 2, 3]
    csv_path = ran / "customers.csv"
    row = customer_row("C1", consent_marketing="true")
    csv_path.write_text(",".join(row) + "\n" + ",".join(row.values()) + "\n", encoding="utf-8")
    imported = care("store", "import", "--customers", str(csv_path))
    assert imported.exit_code == 0, imported.output
    assert [a["n"] for a in anchors(ran)] == [1, 2, 3, 4]  # the import's consent change
    assert care("dispatch", "--now", "2026-11-23T05:00:00Z").exit_code == 0
    verified = care("audit", "verify")
    assert verified.exit_code == 0, verified.output
    assert f"{len(anchors(ran))} anchor(s) match" in verified.stdout


def test_unsigned_anchors_are_a_loud_warning(care: Care, tmp_path: Path) -> None:
    # A real process: the warning reaches stderr through the CLI's own logging set-up.
    store = open_store(f"sqlite:///{tmp_path / 'care.db'}")
    upgrade(store)
    load_rows(store, customers=[customer_row("C1")])
    store.dispose()
    env = {k: v for k, v in os.environ.items() if k != "CARE_ANCHOR_KEY"}
    base = [str(Path(sys.executable).with_name("care")), *care.options()]
    for args in (
        ["run", "--date", "2026-11-23", "--now", NOW],
        ["consent", "set", "C1", "--sms", "off"],
        ["audit", "verify"],
    ):
        proc = subprocess.run(
            [*base, *args], capture_output=True, text=True, env=env, timeout=120, check=False
        )
        assert proc.returncode == 0, (args, proc.stderr)
        assert "CARE_ANCHOR_KEY is not set: anchors are NOT signed" in proc.stderr, args


def test_verify_fails_without_the_anchor_file(care: Care, ran: Path) -> None:
    (ran / "anchors.jsonl").rename(ran / "elsewhere.jsonl")
    for extra in ([], ["--allow-unanchored"]):
        result = care("audit", "verify", *extra)
        assert result.exit_code == 1
        assert (
            "no anchor file at" in result.stderr and "the ledger records 1 anchor" in result.stderr
        )


def test_verify_allows_a_ledger_never_anchored_only_when_asked(
    care: Care, tmp_path: Path, keyed: None
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'care.db'}")
    upgrade(store)
    load_rows(store, customers=[customer_row("C1")])
    store.dispose()
    assert care("run", "--date", "2026-11-23", "--now", NOW).exit_code == 0
    (tmp_path / "anchors.jsonl").unlink()
    store = open_store(f"sqlite:///{tmp_path / 'care.db'}")
    with store.engine.begin() as conn:  # as a ledger from before anchors were recorded
        conn.exec_driver_sql("DELETE FROM ledger_chain WHERE table_name = 'ledger_anchors'")
        conn.exec_driver_sql("DELETE FROM ledger_anchors")
    store.dispose()
    strict = care("audit", "verify")
    assert strict.exit_code == 1 and "--allow-unanchored" in strict.stderr
    allowed = care("audit", "verify", "--allow-unanchored")
    assert allowed.exit_code == 0, allowed.output
    assert "cannot be detected" in allowed.stderr


# -- filters ------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["list", "export"])
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--status", "sentt"], "did you mean 'sent'?"),
        (["--status", "deliverd"], "did you mean 'delivered'?"),
        (["--channel", "smss"], "did you mean 'sms'?"),
        (
            ["--from", "2026-11-24", "--to", "2026-11-23"],
            "--from: 2026-11-24 is after to: 2026-11-23",
        ),
        (["--from", "23.11.2026"], "is not a date (YYYY-MM-DD)"),
        (["--customer", "C" * 200], "at most 128 characters"),
    ],
)
def test_bad_filters_are_usage_errors(
    care: Care, ran: Path, command: str, args: list[str], message: str
) -> None:
    result = care("audit", command, *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert result.stdout == ""


def test_the_web_view_refuses_the_same_filters_with_the_same_words(ran: Path) -> None:
    auth = AuditAuth(tokens=AuditTokens.parse(f"t:{TOKEN}"))
    with TestClient(
        create_audit_app(f"sqlite:///{ran / 'care.db'}", ran / "anchors.jsonl", auth)
    ) as c:
        for path in ("/audit", "/audit/export.csv"):
            answer = c.get(f"{path}?status=sentt", headers={"Authorization": f"Bearer {TOKEN}"})
            assert answer.status_code == 422
            assert "did you mean &#39;sent&#39;?" in answer.text


# -- export -------------------------------------------------------------------------------------


def test_export_with_no_match_says_so(care: Care, ran: Path) -> None:
    empty_csv = care("audit", "export", "--customer", "NOBODY")
    assert empty_csv.exit_code == 0
    assert empty_csv.stdout_bytes == (",".join(EXPORT_COLUMNS) + "\r\n").encode()  # a header
    assert "no touch matches the filters" in empty_csv.stderr
    empty_jsonl = care("audit", "export", "--customer", "NOBODY", "--format", "jsonl")
    assert empty_jsonl.exit_code == 0
    assert empty_jsonl.stdout == ""
    assert "no touch matches the filters" in empty_jsonl.stderr
    listed = care("audit", "list", "--customer", "NOBODY")
    assert listed.exit_code == 0 and "0 touch(es)" in listed.stdout


def test_cli_csv_is_the_web_export_and_neutralises_formulas(care: Care, ran: Path) -> None:
    cli = care("audit", "export")
    assert cli.exit_code == 0
    auth = AuditAuth(tokens=AuditTokens.parse(f"t:{TOKEN}"))
    with TestClient(
        create_audit_app(f"sqlite:///{ran / 'care.db'}", ran / "anchors.jsonl", auth)
    ) as c:
        web = c.get("/audit/export.csv", headers={"Authorization": f"Bearer {TOKEN}"})
    assert web.status_code == 200
    assert cli.stdout_bytes == web.content  # one export function, byte for byte
    records = list(csv.DictReader(io.StringIO(cli.stdout)))
    customers = {r["customer_id"] for r in records}
    assert {"'" + cid for cid in HOSTILE} <= customers
    for record in records:
        for value in record.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r", "\uff1d")), value
    # JSON lines are not for spreadsheets: the values stay as recorded.
    jsonl = care("audit", "export", "--format", "jsonl", "--customer", "=SUM(1+1)")
    assert [json.loads(line)["customer_id"] for line in jsonl.stdout.splitlines()] == ["=SUM(1+1)"]


# -- show -------------------------------------------------------------------------------------


def test_show_by_key_gives_the_clause_and_consent_the_web_view_gives(care: Care, ran: Path) -> None:
    (touch_id, key) = ledger_rows(
        ran,
        "SELECT t.id, t.touch_key FROM touches t JOIN touch_current c ON c.touch_id = t.id "
        "WHERE t.customer_id = 'C1' AND c.reason = 'frequency_cap'",
    )[0]
    by_key = care("audit", "show", key)
    by_id = care("audit", "show", str(touch_id))
    assert by_key.exit_code == 0, by_key.output
    assert by_key.stdout == by_id.stdout
    out = by_key.stdout
    assert re.search(r"^status +suppressed$", out, re.M)
    assert re.search(r"^reason +frequency_cap$", out, re.M)
    # The clause of the contact policy behind the suppression, with its place in policy.yaml.
    (why,) = [line.strip() for line in out.splitlines() if "caps.per_day=1 (" in line][:1]
    assert why.startswith("suppressed (frequency_cap): caps.per_day=1 (") and "policy.yaml:" in why
    assert out.index("why           ") < out.index(why) < out.index("consent       ")
    assert re.search(r"^consent +sms on, email on, marketing off \(when decided\)$", out, re.M)
    assert "      consent: sms on, email on, marketing off" in out  # in the history too
    auth = AuditAuth(tokens=AuditTokens.parse(f"t:{TOKEN}"))
    with TestClient(
        create_audit_app(f"sqlite:///{ran / 'care.db'}", ran / "anchors.jsonl", auth)
    ) as c:
        page = c.get(f"/audit/touches/{touch_id}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert why.replace("'", "&#39;").replace(">", "&gt;") in page.text
    assert "sms on, email on, marketing off" in page.text
    missing = care("audit", "show", "birthday|customer:NOBODY|2026-11-23")
    assert missing.exit_code == 1
    assert "no touch with id or key 'birthday|customer:NOBODY|2026-11-23'" in missing.stderr


def test_erase_content_refuses_a_period_out_of_range(care: Care) -> None:
    # -5 would erase everything up to five days ahead (all of it); a huge number overflowed.
    store = open_store(care.store_url)
    upgrade(store)
    store.dispose()
    for value in ("-5", "0", "99999999999999999999"):
        result = care("audit", "erase-content", "--older-than", value)
        assert result.exit_code == 2, (value, result.output)
        assert "--older-than" in result.output
