"""`care send-test`: refused addresses exit 1 naming the policy key; an allowed one gets the
customer's message through the channel, recorded as a test touch the audit view marks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from caretouch.store.db import Store
from conftest import RULES_DIR, Care, cli_url, customer_row, load_rows

TESTER = "+8613900001234"
NOW = "2026-11-23T12:00:00Z"  # 20:00 in Shanghai, C1's birthday


def rules_with_tester(home: Path) -> Path:
    rules = home / "rules"
    shutil.copytree(RULES_DIR, rules)
    policy = rules / "policy.yaml"
    policy.write_text(
        policy.read_text(encoding="utf-8") + f'\ntest_recipients: ["{TESTER}"]\n', encoding="utf-8"
    )
    return rules


@pytest.fixture
def ready(store: Store, care: Care) -> Care:
    """``care`` on ``store`` (SQLite and PostgreSQL) with C1, and a policy with a tester."""
    load_rows(store, customers=[customer_row("C1")])  # the store is migrated already
    care.store_url = cli_url(store)
    care.rules = rules_with_tester(care.home)
    return care


def send(care: Care, to: str, *more: str) -> object:
    return care(
        "send-test",
        "birthday",
        "--customer",
        "C1",
        "--date",
        "2026-11-23",
        "--to",
        to,
        "--now",
        NOW,
        *more,
    )


def test_an_address_off_the_list_exits_1_and_sends_nothing(ready: Care) -> None:
    result = send(ready, "+8613900009999")
    assert result.exit_code == 1  # type: ignore[attr-defined]
    out = result.output  # type: ignore[attr-defined]
    assert "not in test_recipients of the contact policy" in out and "nothing was sent" in out
    assert "+8613900009999" not in out  # masked
    assert not list(ready.outbox.rglob("*.json"))
    listed = ready("audit", "list")
    assert "0 touch(es)" in listed.output


def test_a_test_send_is_sent_and_marked_in_the_audit_view(ready: Care) -> None:
    result = send(ready, TESTER)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    out = result.output  # type: ignore[attr-defined]
    assert "test send: sms via outbox to +86 139****1234" in out
    assert "the customer's touch: send on sms (unchanged by this test)" in out
    assert "\nsms: 1 segment(s)" in out or "\nsms: 2 segment(s)" in out
    assert "\nsent: test touch " in out
    (message,) = [json.loads(p.read_text("utf-8")) for p in ready.outbox.rglob("*.json")]
    assert message["to"] == TESTER and message["body"] in out
    listed = ready("audit", "list")
    assert "birthday [test]" in listed.output and "1 touch(es)" in listed.output
    key = out.split("(test:", 1)[1].split(")", 1)[0]
    shown = ready("audit", "show", f"test:{key}")
    assert shown.exit_code == 0, shown.output
    assert "a test send (care send-test)" in shown.output
    # The customer's own birthday SMS still goes out the same day (caps: per_day 1).
    run = ready("run", "--date", "2026-11-23", "--now", NOW)
    assert run.exit_code == 0, run.output
    assert sorted(json.loads(p.read_text("utf-8"))["to"] for p in ready.outbox.rglob("*.json")) == [
        "+8613812348000",
        TESTER,
    ]
    assert ready("audit", "verify").exit_code == 0


def test_the_channel_must_fit_the_address(ready: Care) -> None:
    result = send(ready, TESTER, "--channel", "email")
    assert result.exit_code == 1  # type: ignore[attr-defined]
    assert "not an address of the email channel" in result.output  # type: ignore[attr-defined]


def test_an_unknown_customer_or_rule(ready: Care) -> None:
    result = ready(
        "send-test",
        "birthday",
        "--customer",
        "NOPE",
        "--date",
        "2026-11-23",
        "--to",
        TESTER,
        "--now",
        NOW,
    )
    assert result.exit_code == 1 and "has no touch for customer NOPE" in result.output
    unknown = ready("send-test", "birthdya", "--customer", "C1", "--to", TESTER, "--now", NOW)
    assert unknown.exit_code == 2 and "did you mean" in unknown.output.lower()
    assert not list(ready.outbox.rglob("*.json"))
