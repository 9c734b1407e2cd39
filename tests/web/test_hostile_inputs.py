"""Every route served under ``/care`` (``care serve`` and the Airflow plugin: the audit view and
the webhooks) walked with hostile values: numbers too big for 64 bits, negative, not numbers,
control characters, huge and malformed bodies, deeply nested JSON, signed or not. Every answer
is a 4xx or a success, never a 5xx, and nothing is written. On SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.dependencies.utils import get_flat_dependant
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import text
from starlette.routing import Mount

from caretouch.store.db import Store
from caretouch.web.app import create_standalone_app
from caretouch.web.auth import AuditAuth, AuditTokens
from caretouch.webhooks.verify import MAX_EVENTS, MAX_FORM
from conftest import PG_URL, customer_row, load_rows

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "webhooks"))
from webhook_helpers import (
    LATER,
    Keys,
    counts,
    new_keys,
    sources,
    twilio_post,
)

TOKEN = "hostile-audit-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
# As they appear in a URL (already percent-encoded where needed).
HOSTILE = [
    "99999999999999999999999",
    "9223372036854775808",  # 2**63: one more than a 64-bit integer holds
    "-1",
    "-9223372036854775809",
    "abc",
    "1e3",
    "0x10",
    "",
    "%00",
    "%01%7F",
    "%FF%FE",  # not UTF-8
    "%E2%80%AE",  # right-to-left override
    "%ED%A0%80",  # an encoded lone surrogate
    "9" * 1500,
    "x" * 1500,
    "%5B" * 500,  # [[[...
]
# Query names read by some route, declared or read by hand (hooks read theirs from the URL).
EXTRA_QUERY = ["after", "attempt", "t", "next", "customer", "rule", "channel", "status",
               "from", "to"]  # fmt: skip


def deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


def signed_sendgrid(keys: Keys, payload: str) -> dict[str, str]:
    stamp = "1795435200"
    raw = keys.private.sign((stamp + payload).encode(), ec.ECDSA(hashes.SHA256()))
    return {
        "Content-Type": "application/json",
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(raw).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
    }


def routes(app: Any) -> list[tuple[str, set[str], list[str], list[str]]]:
    """(path, methods, path parameters, query parameters) of every route under the mount."""
    mount = next(r for r in app.routes if isinstance(r, Mount))
    out = []
    for route in mount.app.routes:
        if not isinstance(route, APIRoute):
            continue
        query = [f.alias for f in get_flat_dependant(route.dependant).query_params]
        out.append(
            (
                route.path,
                set(route.methods or ()),
                list(route.param_convertors),
                sorted(set(query) | set(EXTRA_QUERY)),
            )
        )
    return out


def fill(path: str, value: str) -> str:
    return "/care" + re.sub(r"\{[^}]+\}", value if value else "%20", path)


@pytest.fixture
def served(store: Store, tmp_path: Path) -> Iterator[tuple[TestClient, Store, Keys]]:
    load_rows(store, customers=[customer_row("C1")])
    url = store.url
    if store.engine.dialect.name == "postgresql":
        with store.engine.connect() as conn:
            schema = conn.execute(text("select current_schema()")).scalar_one()
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    keys = new_keys()
    app = create_standalone_app(
        store_url=url,
        anchor_file=tmp_path / "anchors.jsonl",
        auth=AuditAuth(tokens=AuditTokens({"hostile": TOKEN})),
        secrets=sources(keys),
        webhook_store=store,
        clock=lambda: LATER,
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, store, keys


def test_the_field_tests_requests_answer_4xx(served: tuple[TestClient, Store, Keys]) -> None:
    client, store, keys = served
    for path in ("/care/audit?after=99999999999999999999999", "/care/audit/touches/9223372036854775808"):  # fmt: skip
        answer = client.get(path, headers=BEARER)
        assert answer.status_code == 422, (path, answer.status_code)
        assert "9223372036854775807" in answer.text or "less than or equal" in answer.text
    before = counts(store)
    payload = deep_json(100_000)
    deep = client.post(
        "/care/hooks/sendgrid/events", content=payload, headers=signed_sendgrid(keys, payload)
    )
    assert deep.status_code == 400
    assert deep.text.startswith("too_deep: the event batch is nested 100,000 levels deep")
    assert counts(store) == before


def test_every_route_answers_hostile_values_without_a_5xx(
    served: tuple[TestClient, Store, Keys],
) -> None:
    client, store, _ = served
    found = routes(client.app)
    paths = {path for path, *_ in found}
    # The walk covers what is served (a new route is walked without changing this test).
    assert {"/audit", "/audit/touches/{touch_id}", "/hooks/sendgrid/events"} <= paths
    before = counts(store)
    failures: list[str] = []
    for path, methods, _, query in found:
        for value in HOSTILE:
            url = fill(path, value) + "?" + "&".join(f"{name}={value}" for name in query)
            for headers in ({}, BEARER):
                for method in methods & {"GET", "POST"}:
                    answer = client.request(method, url, headers=headers)
                    if answer.status_code >= 500:
                        failures.append(f"{method} {url[:120]} -> {answer.status_code}")
    assert failures == []
    assert counts(store) == before


BODIES = [
    ("application/x-www-form-urlencoded", "&".join(f"f{i}=1" for i in range(500))),
    ("application/x-www-form-urlencoded", "token=%00&next=%00&MessageSid=%00&t=%00"),
    ("application/x-www-form-urlencoded", b"token=\xff\xfe&t=\xff"),
    ("application/x-www-form-urlencoded", "t=" + "%5B" * 20_000),
    ("application/json", deep_json(100_000)),
    ("application/json", '{"a":' * 60_000 + "1" + "}" * 60_000),
    ("application/json", "[" + ",".join(["1"] * 50_000) + "]"),
    ("text/plain", b"\x00" * 1000),
]


def test_every_post_route_answers_hostile_bodies_without_a_5xx(
    served: tuple[TestClient, Store, Keys],
) -> None:
    client, store, keys = served
    before = counts(store)
    failures = []
    posts = [path for path, methods, *_ in routes(client.app) if "POST" in methods]
    assert len(posts) >= 5
    for path in posts:
        url = fill(path, "1")
        for kind, body in BODIES:
            for headers in ({"Content-Type": kind}, {"Content-Type": kind, **BEARER}):
                answer = client.post(url, content=body, headers=headers)
                if answer.status_code >= 500:
                    failures.append(f"POST {url} {kind} {str(body)[:40]} -> {answer.status_code}")
            if path == "/hooks/sendgrid/events" and isinstance(body, str):
                # Signed, so that it passes the signature and meets the bounds.
                answer = client.post(url, content=body, headers=signed_sendgrid(keys, body))
                if answer.status_code >= 500:
                    failures.append(f"signed {str(body)[:40]} -> {answer.status_code}")
    assert failures == []
    assert counts(store) == before


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (deep_json(9), "too_deep: "),  # one level more than SENDGRID_LIMITS
        ("[" + ",".join(["1"] * 1_000_001) + "]", "too_many_items: "),  # 2 MB
        (
            '[{"event": "delivered", "sg_event_id": "e\\ud800", "email": "a@example.com"}]',
            "the event batch is not valid UTF-8 text",
        ),
    ],
    ids=["depth-9", "1000001-items", "lone-surrogate"],
    # (A NUL refuses its own event only: tests/webhooks/test_nul_requests.py.)
)
def test_signed_sendgrid_bodies_that_cannot_be_stored_are_400_and_write_nothing(
    served: tuple[TestClient, Store, Keys], payload: str, why: str
) -> None:
    client, store, keys = served
    before = counts(store)
    answer = client.post(
        "/care/hooks/sendgrid/events", content=payload, headers=signed_sendgrid(keys, payload)
    )
    assert answer.status_code == 400, answer.text[:200]
    assert answer.text.startswith(why)
    assert counts(store) == before


def test_large_bodies_are_413_before_they_are_read_whole(
    served: tuple[TestClient, Store, Keys],
) -> None:
    client, store, _ = served
    big_form = "Body=" + "x" * MAX_FORM
    answer = twilio_post(client, "inbound", {"MessageSid": "SM1", "Body": "x" * MAX_FORM})
    assert answer.status_code == 413
    for route in ("twilio/status", "twilio/inbound"):
        answer = client.post(
            f"/care/hooks/{route}",
            content=big_form,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert answer.status_code == 413, route

    # A declared length over the limit is refused before the body is read: the stream
    # handed to the app would fail if anything tried to read it.
    def endless() -> Iterator[bytes]:
        yield b"["
        raise AssertionError("the body was read")

    declared = client.post(
        "/care/hooks/sendgrid/events",
        content=endless(),
        headers={"Content-Type": "application/json", "Content-Length": str(MAX_EVENTS + 1)},
    )
    assert declared.status_code == 413
    # Without a length (chunked), reading stops at the limit.
    chunked = client.post(
        "/care/hooks/sendgrid/events",
        content=iter([b"[" + b" " * (1024 * 1024)] * 9),
        headers={"Content-Type": "application/json"},
    )
    assert chunked.status_code == 413
    assert counts(store) == {"provider_events": 0, "touch_events": 0, "consent_events": 0}


def test_twilio_forms_with_too_many_fields_or_a_nul_are_400(
    served: tuple[TestClient, Store, Keys],
) -> None:
    client, store, _ = served
    many = {f"F{i}": "1" for i in range(250)} | {"MessageSid": "SM1", "MessageStatus": "sent"}
    assert twilio_post(client, "status", many).status_code == 400
    nul = {"MessageSid": "SM\x00", "MessageStatus": "delivered"}
    assert twilio_post(client, "status", nul).status_code == 400
    inbound = {"MessageSid": "SM2", "From": "+8613812348000", "Body": "STOP\x00"}
    assert twilio_post(client, "inbound", inbound).status_code == 400
    assert counts(store) == {"provider_events": 0, "touch_events": 0, "consent_events": 0}
    # A number out of range in the callback's query is ignored (it names no attempt).
    ok = twilio_post(
        client,
        "status",
        {"MessageSid": "SM3", "MessageStatus": "delivered"},
        query={"attempt": "99999999999999999999999"},
    )
    assert ok.status_code == 204


def test_login_form_with_too_many_fields_is_400(served: tuple[TestClient, Store, Keys]) -> None:
    client, _, _ = served
    answer = client.post(
        "/care/audit/login",
        content="&".join(f"f{i}=1" for i in range(20)),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 400
    assert "set-cookie" not in answer.headers
