"""Unsubscribe links: a page that asks, a POST (RFC 8058 one-click) that records it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from webhook_helpers import UNSUBSCRIBE_KEY, consent, counts, new_keys, sms_only, twilio_post
from webhook_helpers import client as make_client

from caretouch.render.unsubscribe import make_token
from caretouch.store.consent import consent_history
from caretouch.store.db import Store
from conftest import customer_row, load_rows

ROUTE = "/care/hooks/unsubscribe"


def test_link_page_asks_in_the_customers_language_and_changes_nothing(
    sqlite_store: Store,
) -> None:
    load_rows(sqlite_store, customers=[customer_row("C1", locale="zh-TW")])
    http = make_client(sqlite_store, new_keys())
    token = make_token("C1", "email", UNSUBSCRIBE_KEY)
    page = http.get(ROUTE, params={"t": token})
    assert page.status_code == 200
    assert 'lang="zh-TW"' in page.text and "確定不再接收我們的郵件嗎" in page.text
    assert f'action="{ROUTE}?t={token}"' in page.text
    assert consent(sqlite_store, "C1")["email"] is True
    assert counts(sqlite_store)["consent_events"] == 0


def test_page_button_unsubscribes(sqlite_store: Store) -> None:
    load_rows(sqlite_store, customers=[customer_row("C1", locale="en")])
    http = make_client(sqlite_store, new_keys())
    token = make_token("C1", "email", UNSUBSCRIBE_KEY)
    done = http.post(ROUTE, params={"t": token})
    assert done.status_code == 200 and "You are unsubscribed" in done.text
    assert consent(sqlite_store, "C1")["email"] is False
    (event,) = consent_history(sqlite_store, "C1")
    assert (event.purpose, event.granted, event.source) == ("email", False, "unsubscribe-link")
    # Clicking twice records nothing more.
    assert http.post(ROUTE, params={"t": token}).status_code == 200
    assert len(consent_history(sqlite_store, "C1")) == 1


def test_one_click_post_rfc8058(store: Store) -> None:
    load_rows(store, customers=[customer_row("C1", consent_marketing="true")])
    http = make_client(store, new_keys())
    token = make_token("C1", "marketing", UNSUBSCRIBE_KEY)
    answer = http.post(
        f"{ROUTE}?t={token}",
        content="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 200
    assert "推广邮件" in answer.text
    # A marketing link withdraws marketing only; service emails still reach the customer.
    assert consent(store, "C1") == {"sms": True, "email": True, "marketing": False}


def test_token_in_the_form_body(sqlite_store: Store) -> None:
    load_rows(sqlite_store, customers=[customer_row("C1")])
    http = make_client(sqlite_store, new_keys())
    token = make_token("C1", "email", UNSUBSCRIBE_KEY)
    answer = http.post(ROUTE, data={"t": token})
    assert answer.status_code == 200
    assert consent(sqlite_store, "C1")["email"] is False


@pytest.mark.parametrize(
    "token",
    [
        make_token("C1", "email", b"some-other-key-0123456789"),
        make_token("C2", "email", UNSUBSCRIBE_KEY)[:-2] + "AA",
        "",
        "<script>alert(1)</script>",
        "not.a.token",
    ],
)
def test_forged_link_is_refused(sqlite_store: Store, token: str) -> None:
    load_rows(sqlite_store, customers=[customer_row("C1"), customer_row("C2")])
    http = make_client(sqlite_store, new_keys())
    page = http.get(ROUTE, params={"t": token})
    assert page.status_code == 403
    assert "<script>" not in page.text
    assert http.post(ROUTE, params={"t": token}).status_code == 403
    assert consent(sqlite_store, "C1")["email"] is True
    assert consent(sqlite_store, "C2")["email"] is True
    assert counts(sqlite_store)["consent_events"] == 0


def test_link_of_a_deleted_customer_is_harmless(sqlite_store: Store) -> None:
    http = make_client(sqlite_store, new_keys())
    token = make_token("GONE", "email", UNSUBSCRIBE_KEY)
    assert http.get(ROUTE, params={"t": token}).status_code == 200
    assert http.post(ROUTE, params={"t": token}).status_code == 200
    assert counts(sqlite_store)["consent_events"] == 0


def test_postgres_refuses_to_change_provider_events(pg_store: Store) -> None:
    load_rows(pg_store, customers=[sms_only()])
    http = make_client(pg_store, new_keys())
    params = {"MessageSid": "SM" + "e" * 32, "From": "+8613812348000", "Body": "STOP"}
    assert twilio_post(http, "inbound", params).status_code == 200
    for statement in (
        "UPDATE provider_events SET status = 'delivered'",
        "DELETE FROM provider_events",
        "TRUNCATE provider_events",
    ):
        with pytest.raises(DBAPIError, match="append-only"), pg_store.engine.begin() as conn:
            conn.execute(text(statement))
    assert counts(pg_store)["provider_events"] == 1


def test_verify_detects_an_edited_provider_event(sqlite_store: Store) -> None:
    from caretouch.ledger.audit import verify

    load_rows(sqlite_store, customers=[sms_only()])
    http = make_client(sqlite_store, new_keys())
    params = {"MessageSid": "SM" + "e" * 32, "From": "+8613812348000", "Body": "STOP"}
    assert twilio_post(http, "inbound", params).status_code == 200
    assert verify(sqlite_store).ok
    with sqlite_store.engine.begin() as conn:
        conn.execute(text("UPDATE provider_events SET provider_status = 'message'"))
    report = verify(sqlite_store)
    assert not report.ok
    assert "provider_events row 1" in (report.problem or "")


def test_store_without_the_tables_is_a_clear_503(tmp_path: Path) -> None:
    from caretouch.store.db import open_store

    store = open_store(f"sqlite:///{tmp_path / 'empty.db'}")
    with store.engine.begin() as conn:
        conn.execute(text("CREATE TABLE customers (customer_id TEXT)"))
    from fastapi.testclient import TestClient

    from caretouch.web.app import create_standalone_app
    from caretouch.web.webhook_context import WebhookSecrets

    app = create_standalone_app(
        store_url=store.url, secrets=WebhookSecrets(unsubscribe_key=lambda: UNSUBSCRIBE_KEY)
    )
    answer = TestClient(app).post(ROUTE, params={"t": make_token("C1", "email", UNSUBSCRIBE_KEY)})
    assert answer.status_code == 503
    assert "care store init" in answer.text
    store.dispose()
