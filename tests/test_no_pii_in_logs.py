"""Personal data never appears in clear in what the engine logs or prints about a run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from caretouch.ledger.audit import Filters, touches
from caretouch.schema.migrate import upgrade
from caretouch.store.db import open_store
from conftest import (
    SHORT_NUMBERS,
    Care,
    badly_masked,
    customer_row,
    event_row,
    load_rows,
    policy_row,
)

PHONE = re.compile(r"\+\d{10,15}")  # an E.164 number in clear


def raw_values(customers: list[dict[str, str]]) -> set[str]:
    values = set()
    for c in customers:
        for field in ("phone", "email"):
            if c[field]:
                values.add(c[field])
                values.add(c[field].lstrip("+"))
    return values


def test_cli_run_and_audit_never_print_phones_or_emails(care: Care) -> None:
    customers = [
        customer_row(f"C{i}", phone=f"+86139{i:08d}", email=f"person{i}@example.com")
        for i in range(12)
    ]
    customers += [
        customer_row(f"S{i}", phone=phone, email=f"short{i}@example.com", consent_email="false")
        for i, phone in enumerate(SHORT_NUMBERS)
    ]
    # A number inside message content: the name is rendered into the SMS.
    customers.append(customer_row("N", name="陈 +852 9123 4567", phone="+85261234567"))
    customers += [
        customer_row("BAD", phone="+8613", email="broken@@example", consent_email="true"),
        customer_row("OPT", consent_sms="false", consent_email="false"),
    ]
    store = open_store(care.store_url)
    upgrade(store)
    load_rows(
        store,
        customers=customers,
        policies=[policy_row("P1", "C1", renewal_date="2026-11-30")],
        events=[event_row("E1", "C2", occurred_at="2026-11-22T10:00:00+08:00")],
    )
    base = [str(Path(sys.executable).with_name("care")), "-v", *care.options()]

    def care_cli(args: list[str]) -> str:
        proc = subprocess.run(
            [*base, *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=dict(os.environ),
        )
        assert proc.returncode in (0, 3), (args, proc.stderr)
        return proc.stdout + proc.stderr

    def touches_of(*customer_ids: str) -> list[dict[str, object]]:
        found = [t for c in customer_ids for t in touches(store, Filters(customer_id=c))]
        assert len(found) == len(customer_ids)
        return found

    output = care_cli(["run", "--date", "2026-11-23", "--now", "2026-11-23T04:00:00Z"])
    commands = [
        ["plan", "--date", "2026-11-23", "--explain"],
        ["plan", "--date", "2026-11-23", "--format", "json", "--explain"],
        ["dispatch", "--now", "2026-11-23T05:00:00Z"],
        ["audit", "list"],
        ["audit", "export", "--format", "jsonl"],
        ["audit", "export", "--format", "csv"],
        ["audit", "show", "1"],
        *[["audit", "show", str(t["touch_id"])] for t in touches_of("S0", "N")],
        ["consent", "show", "C3"],
        ["consent", "show", "S0"],
        ["preview", "birthday", "--customer", "C4", "--date", "2026-11-23", "--channel", "email"],
        ["preview", "birthday", "--customer", "S1", "--date", "2026-11-23"],
    ]
    output = ""
    for args in commands:
        output += care_cli(args)
    assert "sent" in output and "C3" in output
    national = {phone[-8:] for phone in [*SHORT_NUMBERS, "+85291234567"]}
    leaked = sorted(v for v in raw_values(customers) | national if v in output)
    assert leaked == [], f"raw contact data in CLI output: {leaked[:5]}"
    # Anything that looks like a long phone number must be masked.
    assert not [
        m for m in PHONE.findall(output) if "*" not in m and len(re.sub(r"\D", "", m)) >= 11
    ]
    # ... and masked well enough: the short numbers were shown (list, export, show, consent,
    # preview), each hiding at least 4 of its 8 digits.
    for phone in SHORT_NUMBERS:
        cc = "65" if phone.startswith("+65") else phone[1:4]
        assert f"+{cc} ****{phone[-4:]}" in output, phone
    assert "陈 +852 ****4567" in output  # the number in the message, in `audit show`
    assert badly_masked(output) == []
