"""``care serve``: the same webhooks over real HTTP, without Airflow."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from twilio.request_validator import RequestValidator
from webhook_helpers import consent, counts, sms_only

from caretouch.schema.migrate import upgrade
from caretouch.store.db import open_store
from conftest import Care, load_rows

TOKEN = "care-serve-twilio-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_care_serve_checks_signatures_and_records(care: Care) -> None:
    store = open_store(care.store_url)
    upgrade(store)
    load_rows(store, customers=[sms_only()])
    port = _free_port()
    env = {
        **os.environ,
        "TWILIO_ACCOUNT_SID": "AC" + "2" * 32,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "CARE_SMS_FROM": "+15005550006",
        "CARE_PUBLIC_URL": "https://care.example.com",
    }
    executable = Path(sys.executable).with_name("care")
    proc = subprocess.Popen(
        [str(executable), *care.options(), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                httpx.get(base + "/care/hooks/unsubscribe", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()[1][-2000:]
                time.sleep(0.1)
        params = {"MessageSid": "SM" + "7" * 32, "From": "+8613812348000", "Body": "退订"}
        unsigned = httpx.post(base + "/care/hooks/twilio/inbound", data=params)
        assert unsigned.status_code == 403
        assert counts(store)["provider_events"] == 0
        signature = RequestValidator(TOKEN).compute_signature(
            "https://care.example.com/care/hooks/twilio/inbound", params
        )
        signed = httpx.post(
            base + "/care/hooks/twilio/inbound",
            data=params,
            headers={"X-Twilio-Signature": signature},
        )
        assert signed.status_code == 200
        assert consent(store, "C1")["sms"] is False
        # The audit view is served too, behind its own authentication.
        assert httpx.get(base + "/care/audit").status_code == 401
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        store.dispose()
    assert "webhooks: Twilio on" in err
    assert "8613812348000" not in err
