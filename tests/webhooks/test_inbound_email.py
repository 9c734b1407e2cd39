"""Customers' emails from SendGrid's Inbound Parse: the secret URL, the reply above the quoted
message, matched to the latest email touch; through the real app, posted as SendGrid posts
(multipart/form-data)."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from webhook_helpers import LATER, NOON, email_only, new_keys, provider_events, sent_touch, sources

from caretouch.ledger.audit import verify
from caretouch.ledger.replies import replies_between
from caretouch.store.db import Store
from caretouch.store.models import Event
from caretouch.vocab import ReplyKind
from caretouch.web.app import create_standalone_app
from caretouch.webhooks.inbound_email import reply_part
from conftest import RULES_DIR

TOKEN = "inbound-email-token-0123456789"
ADDRESS = "wang.fang@example.com"


@pytest.fixture(autouse=True)
def _configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARE_RULES_DIR", str(RULES_DIR))
    monkeypatch.setenv("CARE_INBOUND_EMAIL_TOKEN", TOKEN)
    monkeypatch.delenv("CARE_REPLY_WINDOW_DAYS", raising=False)


def app_at(store: Store, when: dt.datetime = LATER) -> TestClient:
    app = create_standalone_app(
        secrets=sources(new_keys()), webhook_store=store, clock=lambda: when
    )
    return TestClient(app, base_url="http://testserver")


def email(
    text: str,
    *,
    sender: str = f"Wang Fang <{ADDRESS.upper()}>",
    message_id: str = "<CAF1234@mail.example.com>",
    **extra: str,
) -> dict[str, str]:
    return {
        "from": sender,
        "to": "care@reply.example.com",
        "subject": "Re: 生日快乐",
        "text": text,
        "headers": f"Message-ID: {message_id}\nSubject: Re: 生日快乐\n",
        "envelope": '{"to":["care@reply.example.com"],"from":"' + ADDRESS + '"}',
        "SPF": "pass",
        **extra,
    }


def post(http: TestClient, fields: dict[str, str], *, token: str = TOKEN) -> Any:
    # An attachment makes it multipart/form-data, as SendGrid posts.
    return http.post(
        f"/care/hooks/sendgrid/inbound/{token}",
        data=fields,
        files={"attachment1": ("photo.jpg", b"\xff\xd8\xff" + b"\x00" * 100, "image/jpeg")},
    )


def events(store: Store) -> list[Event]:
    with store.read_session() as session:
        return list(session.scalars(select(Event).order_by(Event.id)))


def tier_c_email() -> dict[str, str]:
    return email_only("C1", tier="C")


QUOTED = (
    "\n\nOn Mon, Nov 23, 2026 at 8:00 PM Caretouch <care@example.com> wrote:\n"
    "> 王芳您好，祝您生日快乐！请回复1-5为我们的服务打分。\n"
)


def test_a_score_by_email_answers_the_email_touch(store: Store, tmp_path: Path) -> None:
    touch_id, attempt, _ = sent_touch(store, tmp_path, tier_c_email())
    assert attempt.channel == "email"
    answer = post(app_at(store), email("５" + QUOTED))
    assert answer.status_code == 200
    (event,) = provider_events(store)
    assert (event.provider, event.kind, event.provider_status) == (
        "sendgrid",
        "inbound",
        "satisfied",
    )
    assert (event.touch_id, event.attempt_id, event.customer_id) == (touch_id, attempt.id, "C1")
    assert event.payload["from"] == "W***@EXAMPLE.COM"
    assert "Wang Fang" not in str(event.payload) and ADDRESS not in str(event.payload).lower()
    (business,) = events(store)
    assert business.type == "reply_satisfied"
    assert business.payload == {"score": 5, "touch_id": touch_id, "rule_id": "birthday"}
    (heard,) = replies_between(store, NOON, LATER + dt.timedelta(seconds=1))
    assert (heard.provider, heard.kind, heard.score) == ("sendgrid", ReplyKind.SATISFIED, 5)
    assert verify(store).ok


def test_a_message_by_email_keeps_what_the_customer_wrote_not_the_quote(
    sqlite_store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    touch_id, _, _ = sent_touch(sqlite_store, tmp_path, tier_c_email())
    caplog.set_level(logging.DEBUG)
    written = "谢谢！\n请问保单什么时候续保？"
    assert post(app_at(sqlite_store), email(written + QUOTED)).status_code == 200
    (business,) = events(sqlite_store)
    assert business.type == "reply_message"
    assert business.payload == {"text": written, "touch_id": touch_id, "rule_id": "birthday"}
    # (The test client's own request log shows the URL; ours never do.)
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("caretouch"))
    assert "inbound email" in logged or "reply from" in logged
    for secret in ("保单什么时候", ADDRESS, TOKEN, "Wang Fang"):
        assert secret.lower() not in logged.lower()


def test_a_replayed_email_is_recorded_once(sqlite_store: Store, tmp_path: Path) -> None:
    sent_touch(sqlite_store, tmp_path, tier_c_email())
    http = app_at(sqlite_store)
    for _ in range(3):
        assert post(http, email("2")).status_code == 200
    assert len(provider_events(sqlite_store)) == 1
    assert [e.type for e in events(sqlite_store)] == ["reply_unsatisfied"]


def test_without_a_message_id_the_same_email_is_still_recorded_once(
    sqlite_store: Store, tmp_path: Path
) -> None:
    sent_touch(sqlite_store, tmp_path, tier_c_email())
    http = app_at(sqlite_store)
    fields = email("4", headers="Subject: Re\n")
    for _ in range(2):
        assert post(http, fields).status_code == 200
    assert len(provider_events(sqlite_store)) == 1


@pytest.mark.parametrize("token", ["wrong-token-0123456789abcdef", TOKEN[:-1], TOKEN + "x"])
def test_a_wrong_token_is_refused_and_writes_nothing(
    sqlite_store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture, token: str
) -> None:
    sent_touch(sqlite_store, tmp_path, tier_c_email())
    caplog.set_level(logging.INFO)
    answer = post(app_at(sqlite_store), email("5"), token=token)
    assert answer.status_code == 403
    assert provider_events(sqlite_store) == [] and events(sqlite_store) == []
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("caretouch"))
    assert "refused (403)" in ours
    assert token not in ours and TOKEN not in ours


@pytest.mark.parametrize("configured", [None, "short"])
def test_the_route_is_off_without_a_token(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch, configured: str | None
) -> None:
    if configured is None:
        monkeypatch.delenv("CARE_INBOUND_EMAIL_TOKEN")
    else:
        monkeypatch.setenv("CARE_INBOUND_EMAIL_TOKEN", configured)
    answer = post(app_at(sqlite_store), email("5"), token=configured or TOKEN)
    assert answer.status_code == 404
    assert provider_events(sqlite_store) == []


def test_an_email_from_an_unknown_address_is_recorded_without_a_customer(
    sqlite_store: Store, tmp_path: Path
) -> None:
    sent_touch(sqlite_store, tmp_path, tier_c_email())
    fields = email("hello", sender="someone@elsewhere.example", message_id="<x@y>")
    assert post(app_at(sqlite_store), fields).status_code == 200
    (event,) = provider_events(sqlite_store)
    assert (event.customer_id, event.touch_id, event.provider_status) == (None, None, "message")
    assert events(sqlite_store) == []


def test_a_urlencoded_post_and_an_html_only_email_are_read_too(
    sqlite_store: Store, tmp_path: Path
) -> None:
    sent_touch(sqlite_store, tmp_path, tier_c_email())
    fields = email("", html="<p>3</p><blockquote>old</blockquote>")
    answer = app_at(sqlite_store).post(f"/care/hooks/sendgrid/inbound/{TOKEN}", data=fields)
    assert answer.status_code == 200
    (business,) = events(sqlite_store)
    assert (business.type, business.payload["score"]) == ("reply_unsatisfied", 3)


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"text": "5"}, 400),  # no sender
        ({"from": "not an address", "text": "5"}, 400),
        (email("5\x00"), 400),  # a NUL
    ],
)
def test_emails_that_cannot_be_recorded_are_400_and_write_nothing(
    sqlite_store: Store, fields: dict[str, str], status: int
) -> None:
    assert post(app_at(sqlite_store), fields).status_code == status
    assert provider_events(sqlite_store) == [] and events(sqlite_store) == []


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("5\n\nOn Mon, Nov 23, 2026, Care <c@example.com> wrote:\n> hi", "5"),
        ("好的\n\n在 2026年11月23日 20:00，Care <c@example.com> 写道：\n> 您好", "好的"),
        ("ok\n-----Original Message-----\nFrom: Care", "ok"),
        ("ok\n\n发件人: Care\n发送时间: 2026年11月23日", "ok"),
        ("line one\nline two\n> quoted", "line one\nline two"),
        ("> all quoted", ""),
        ("", ""),
    ],
)
def test_the_reply_is_the_text_above_the_quote(text: str, written: str) -> None:
    assert reply_part(text) == written


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", "&".join(f"f{i}=1" for i in range(500))),
        ("application/x-www-form-urlencoded", "from=%00&text=5"),
        ("application/x-www-form-urlencoded", b"from=\xff\xfe&text=\xff"),
        ("application/json", "[" * 100_000 + "]" * 100_000),
        ("text/plain", b"\x00" * 1000),
        ("multipart/form-data; boundary=xyz", b"--xyz\r\nnot a part\r\n"),
        ("multipart/form-data", b"--xyz\r\n"),  # no boundary
        ("multipart/form-data; boundary=xyz", b"\xff" * 5000),
    ],
)
def test_hostile_bodies_are_4xx_and_write_nothing(
    sqlite_store: Store, content_type: str, body: str | bytes
) -> None:
    http = app_at(sqlite_store)
    answer = http.post(
        f"/care/hooks/sendgrid/inbound/{TOKEN}",
        content=body,
        headers={"Content-Type": content_type},
    )
    assert 400 <= answer.status_code < 500, answer.status_code
    assert provider_events(sqlite_store) == [] and events(sqlite_store) == []
