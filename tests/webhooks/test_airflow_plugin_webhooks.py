"""The webhooks as Airflow's api-server serves them: the plugin mounts them under /care/hooks."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from twilio.request_validator import RequestValidator
from webhook_helpers import consent, counts, sms_only

import airflow_env
from caretouch.schema.migrate import upgrade
from caretouch.store.db import Store, open_store
from conftest import load_rows

TOKEN = "airflow-plugin-twilio-token"


@pytest.mark.airflow
def test_plugin_serves_signed_webhooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow's own API app loads plugins/care_plugin.py; with no care_twilio Connection the
    credentials come from the environment, read on the first request."""
    airflow_env.migrate()
    url = f"sqlite:///{tmp_path / 'care.db'}"
    store: Store = open_store(url)
    upgrade(store)
    load_rows(store, customers=[sms_only()])
    for name, value in {
        "CARE_STORE_URL": url,
        "TWILIO_ACCOUNT_SID": "AC" + "1" * 32,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "CARE_SMS_FROM": "+15005550006",
        "CARE_PUBLIC_URL": "https://care.example.com",
    }.items():
        monkeypatch.setenv(name, value)
    from airflow.api_fastapi.app import create_app

    params = {"MessageSid": "SM" + "9" * 32, "From": "+8613812348000", "Body": "STOP"}
    signature = RequestValidator(TOKEN).compute_signature(
        "https://care.example.com/care/hooks/twilio/inbound", params
    )
    with TestClient(create_app(apps="core")) as c:
        forged = c.post(
            "/care/hooks/twilio/inbound",
            data=params,
            headers={"X-Twilio-Signature": "forged"},
        )
        assert forged.status_code == 403
        assert counts(store)["provider_events"] == 0
        ok = c.post(
            "/care/hooks/twilio/inbound", data=params, headers={"X-Twilio-Signature": signature}
        )
        assert ok.status_code == 200, ok.text[:500]
        assert "<Response/>" in ok.text
    assert consent(store, "C1")["sms"] is False
    assert counts(store)["provider_events"] == 1
    store.dispose()
