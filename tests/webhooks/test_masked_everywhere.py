"""8-digit national numbers (Hong Kong, Macau, Singapore) are masked well enough wherever
the engine shows one outside the CLI (tests/test_no_pii_in_logs.py covers the CLI)."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from webhook_helpers import client as hooks_client
from webhook_helpers import engine_for, new_keys, provider_events, twilio_post

from caretouch.run.day import run_day
from caretouch.schema.migrate import upgrade
from caretouch.store.db import open_store
from caretouch.web.app import create_audit_app
from conftest import SHORT_NUMBERS, badly_masked, customer_row, load_rows, utc

NOON = utc(2026, 11, 23, 12)


def test_web_view_exports_logs_and_webhooks_mask_short_numbers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The paths the CLI test does not take: the auditor's web view and its CSV export, the
    engine's logs, and what a webhook keeps and logs, all with 8-digit national numbers."""
    caplog.set_level(logging.DEBUG)
    url = f"sqlite:///{tmp_path / 'care.db'}"
    store = open_store(url)
    upgrade(store)
    customers = [
        customer_row(f"S{i}", phone=phone, consent_email="false")
        for i, phone in enumerate(SHORT_NUMBERS)
    ]
    # A number inside message content (the name is rendered into the SMS).
    customers.append(customer_row("N", name="陈 +852 9123 4567", consent_email="false"))
    load_rows(store, customers=customers)
    report = run_day(engine_for(store, tmp_path), dt.date(2026, 11, 23), run_id="t", now=NOON)
    assert report.sent == 4

    monkeypatch.setenv("CARE_AUDIT_TOKENS", "alice:alice-audit-token-0123456789")
    bearer = {"Authorization": "Bearer alice-audit-token-0123456789"}
    shown = ""
    with TestClient(create_audit_app(url, tmp_path / "anchors.jsonl")) as web:
        paths = ["/audit", "/audit/export.csv", *[f"/audit/customers/S{i}" for i in range(3)]]
        paths += [f"/audit/touches/{n}" for n in range(1, 5)]
        for path in paths:
            answer = web.get(path, headers=bearer)
            assert answer.status_code == 200, path
            shown += answer.text

    http = hooks_client(store, new_keys())
    for i, phone in enumerate([*SHORT_NUMBERS, "+85261234567"]):  # the last one is no customer's
        params = {"MessageSid": f"SM{i:032d}", "From": phone, "To": "+15005550006", "Body": "hi"}
        assert twilio_post(http, "inbound", params).status_code == 200
    kept = json.dumps([e.payload for e in provider_events(store)], ensure_ascii=False)
    store.dispose()

    everything = shown + caplog.text + kept
    for phone in [*SHORT_NUMBERS, "+85291234567", "+85261234567"]:
        assert phone[-8:] not in everything, phone
    assert "****2077" in shown and "****2077" in kept and "****4567" in caplog.text
    assert badly_masked(everything) == []
