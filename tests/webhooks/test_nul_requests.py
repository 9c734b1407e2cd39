"""A NUL character in a webhook or an audit-view query is a clear refusal, on both stores.

PostgreSQL cannot store or even compare a NUL (psycopg refuses the parameter): before these
checks such a request ended in a 500 and a traceback.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from webhook_helpers import client as make_client
from webhook_helpers import (
    consent,
    counts,
    new_keys,
    provider_events,
    sendgrid_post,
    sms_only,
    twilio_post,
)

from caretouch.store.db import Store
from caretouch.web.app import create_audit_app
from conftest import PG_URL, customer_row, load_rows


@pytest.mark.parametrize("field", ["Body", "From", "MessageSid"])
def test_twilio_inbound_with_a_nul_is_refused_and_writes_nothing(store: Store, field: str) -> None:
    load_rows(store, customers=[sms_only()])
    params = {"MessageSid": "SM" + "e" * 32, "From": "+8613812348000", "Body": "STOP"}
    params[field] += "\x00"
    answer = twilio_post(make_client(store, new_keys()), "inbound", params)
    assert answer.status_code == 400
    assert f"field {field} contains a NUL character" in answer.text
    assert counts(store) == {"provider_events": 0, "touch_events": 0, "consent_events": 0}
    assert consent(store, "C1")["sms"] is True


def test_twilio_status_callback_with_a_nul_is_refused(store: Store) -> None:
    params = {"MessageSid": "SM" + "f" * 32, "MessageStatus": "failed", "To": "+86138\x00"}
    answer = twilio_post(make_client(store, new_keys()), "status", params, query={"attempt": "1"})
    assert answer.status_code == 400 and "field To contains a NUL" in answer.text
    assert counts(store)["provider_events"] == 0


def test_sendgrid_events_with_a_nul_are_refused_one_by_one(store: Store) -> None:
    load_rows(store, customers=[customer_row("C1"), customer_row("C2", email="li.lei@example.com")])
    keys = new_keys()
    http = make_client(store, keys)
    batch = [
        {"event": "bounce", "email": "wang.fang@example.com\x00", "sg_event_id": "ev-1"},
        {"event": "delivered", "email": "x@example.com", "sg_event_id": "ev-2\x00"},
        {"event": "open", "email": "x@example.com", "sg_event_id": "ev-3", "args": {"k": "\x00"}},
        {"event": "bounce", "email": "li.lei@example.com", "sg_event_id": "ev-4"},
    ]
    answer = sendgrid_post(http, batch, keys)
    assert answer.status_code == 200 and answer.json() == {"received": 4, "new": 4}
    events = provider_events(store)
    assert [(e.kind, e.payload.get("refused")) for e in events] == [
        ("refused", "email contains a NUL character (\\x00), which the store cannot hold"),
        ("refused", "sg_event_id contains a NUL character (\\x00), which the store cannot hold"),
        ("refused", "args.k contains a NUL character (\\x00), which the store cannot hold"),
        ("bounce", None),
    ]
    # The good bounce in the same batch did its work; the refused one changed nothing.
    assert (consent(store, "C1")["email"], consent(store, "C2")["email"]) == (True, False)
    # SendGrid retrying the batch changes nothing.
    assert sendgrid_post(http, batch, keys).json() == {"received": 4, "new": 0}


def _audit_url(store: Store, tmp_path: Path) -> str:
    if store.is_sqlite:
        return store.url
    with store.engine.connect() as conn:
        schema = conn.execute(text("SELECT current_schema()")).scalar_one()
    return f"{PG_URL}?options={quote(f'-csearch_path={schema}')}"


def test_audit_view_filters_with_a_nul_are_refused(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARE_AUDIT_TOKENS", "alice:alice-audit-token-0123456789")
    bearer = {"Authorization": "Bearer alice-audit-token-0123456789"}
    with TestClient(create_audit_app(_audit_url(store, tmp_path), tmp_path / "a.jsonl")) as web:
        assert web.get("/audit?customer=C1", headers=bearer).status_code == 200
        for path in (
            "/audit?customer=C1%00",
            "/audit?rule=birthday%00",
            "/audit/export.csv?customer=%00",
            "/audit/customers/C1%00",
        ):
            answer = web.get(path, headers=bearer)
            assert answer.status_code == 422, path  # the view's answer to a bad filter
            assert "control characters are not allowed" in answer.text
        login = web.get("/audit/login?next=/audit%00x")
        assert login.status_code == 200 and "%00" not in login.text
