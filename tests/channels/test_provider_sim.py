"""The provider simulator, driven by the official Twilio and SendGrid SDKs.

What each fault looks like to the SDK is asserted here, so the channels can rely on it:

- Twilio create/fetch: ``TwilioRestException`` with ``.status`` and ``.code`` (no headers: the
  SDK drops them; a channel that honours Retry-After keeps the last response per thread, as
  ``HeaderKeepingClient`` below does). Twilio list: a non-200 page is a plain
  ``TwilioException("Unable to fetch page", response)``.
- SendGrid: ``python_http_client.exceptions.HTTPError`` subclasses with ``.status_code``,
  ``.headers`` and ``.body``.
- Timeouts: ``requests.exceptions.ReadTimeout`` (Twilio), ``TimeoutError`` (SendGrid, urllib).
- Dropped connections: ``requests.exceptions.ConnectionError`` (Twilio),
  ``http.client.RemoteDisconnected`` (SendGrid, urllib).
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from provider_sim import (
    SENDGRID,
    TWILIO,
    Faults,
    ProviderSim,
    RemoteProviderSim,
    sms_segments,
)

twilio_rest = pytest.importorskip("twilio.rest")
sendgrid = pytest.importorskip("sendgrid")

from python_http_client import exceptions as sg_errors  # noqa: E402
from sendgrid.helpers.mail import Mail  # noqa: E402
from twilio.base.exceptions import TwilioException, TwilioRestException  # noqa: E402
from twilio.http.http_client import TwilioHttpClient  # noqa: E402

FROM = "+15005550006"
SID_RE = re.compile(r"^SM[0-9a-f]{32}$")


def mail(to: str = "wang@example.com", subject: str = "Hello", **extra: Any) -> Mail:
    message = Mail(
        from_email="care@example.com",
        to_emails=to,
        subject=subject,
        plain_text_content="plain text",
        html_content="<p>html</p>",
    )
    for key, value in extra.items():
        setattr(message, key, value)
    return message


class HeaderKeepingClient(TwilioHttpClient):
    """Keeps the last response per thread, so Retry-After is readable after an exception."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.local = threading.local()

    def request(self, *args: Any, **kwargs: Any) -> Any:
        response = super().request(*args, **kwargs)
        self.local.response = response
        return response


# --- Twilio ----------------------------------------------------------------------------------


def test_twilio_create_answers_a_message_resource_and_records_it(provider_sim: ProviderSim):
    client = provider_sim.twilio_client()
    message = client.messages.create(
        to="+15551230001", from_=FROM, body="Happy birthday", status_callback="https://h/cb"
    )
    assert SID_RE.match(message.sid)
    assert (message.status, message.to, message.from_, message.body) == (
        "queued",
        "+15551230001",
        FROM,
        "Happy birthday",
    )
    assert message.num_segments == "1" and message.direction == "outbound-api"
    assert message.date_created.tzinfo is not None  # parsed from RFC 2822
    assert message.account_sid == provider_sim.twilio_account_sid
    [recorded] = provider_sim.accepted(TWILIO)
    assert (recorded.id, recorded.to, recorded.body) == (
        message.sid,
        "+15551230001",
        "Happy birthday",
    )
    assert recorded.status_callback == "https://h/cb" and recorded.seq == 1
    assert provider_sim.request_counts(TWILIO)["accepted"] == 1


def test_twilio_messaging_service_instead_of_from(provider_sim: ProviderSim):
    client = provider_sim.twilio_client()
    service = "MG" + "1" * 32
    message = client.messages.create(to="+15551230002", messaging_service_sid=service, body="x")
    assert message.from_ is None and message.messaging_service_sid == service


def test_twilio_fetch_by_sid_and_unknown_sid(provider_sim: ProviderSim):
    client = provider_sim.twilio_client()
    sid = client.messages.create(to="+15551230003", from_=FROM, body="fetch me").sid
    provider_sim.set_message_status(sid, "delivered")
    fetched = client.messages(sid).fetch()
    assert (fetched.sid, fetched.body, fetched.status) == (sid, "fetch me", "delivered")
    with pytest.raises(TwilioRestException) as err:
        client.messages("SM" + "0" * 32).fetch()
    assert (err.value.status, err.value.code) == (404, 20404)


def test_twilio_list_filters_by_to_from_and_date(provider_sim: ProviderSim):
    days = iter([dt.datetime(2026, 11, d, 9, 30, tzinfo=dt.UTC) for d in (21, 22, 23, 23, 23)])
    sim = ProviderSim(clock=lambda: next(days))
    with sim:
        client = sim.twilio_client()
        sent = [
            client.messages.create(to=to, from_=frm, body=body)
            for to, frm, body in [
                ("+15550000001", FROM, "a"),
                ("+15550000001", FROM, "b"),
                ("+15550000001", FROM, "c"),
                ("+15550000002", FROM, "d"),
                ("+15550000001", "+15009999999", "e"),
            ]
        ]
        by_to = client.messages.list(to="+15550000001")
        assert [m.body for m in by_to] == ["e", "c", "b", "a"]  # newest first
        assert [m.body for m in client.messages.list(from_="+15009999999")] == ["e"]
        on_day = client.messages.list(to="+15550000001", date_sent=dt.date(2026, 11, 23))
        assert [m.body for m in on_day] == ["e", "c"]
        after = client.messages.list(date_sent_after=dt.datetime(2026, 11, 22, tzinfo=dt.UTC))
        assert [m.body for m in after] == ["e", "d", "c", "b"]
        before = client.messages.list(date_sent_before=dt.datetime(2026, 11, 22, 23, tzinfo=dt.UTC))
        assert [m.body for m in before] == ["b", "a"]
        # the crash-reconciliation lookup: To + day + body finds exactly the one message
        found = [
            m.sid
            for m in client.messages.list(to="+15550000001", date_sent=dt.date(2026, 11, 22))
            if m.body == "b"
        ]
        assert found == [sent[1].sid]


def test_twilio_list_pages_with_next_page_uri(provider_sim: ProviderSim):
    client = provider_sim.twilio_client()
    sids = [
        client.messages.create(to="+15551239999", from_=FROM, body=f"m{i}").sid for i in range(7)
    ]
    page = client.messages.page(to="+15551239999", page_size=3)
    pages = []
    while page is not None:
        pages.append([m.sid for m in page])
        page = page.next_page()
    assert pages == [sids[6:3:-1], sids[3:0:-1], sids[0:1]]
    # stream() follows the same links; limit stops early
    assert [m.sid for m in client.messages.stream(page_size=2, limit=5)] == sids[::-1][:5]
    # a page request counts as a read, not a send
    counts = provider_sim.request_counts(TWILIO)
    assert counts["sends"] == 7 and counts["reads"] == 3 + 3


def test_twilio_bad_credentials_get_401_in_twilio_shape(provider_sim: ProviderSim):
    client = twilio_rest.Client(provider_sim.twilio_account_sid, "wrong-token")
    client.api.base_url = provider_sim.url
    with pytest.raises(TwilioRestException) as err:
        client.messages.create(to="+15551230004", from_=FROM, body="x")
    assert (err.value.status, err.value.code) == (401, 20003)
    raw = requests.post(
        f"{provider_sim.url}/2010-04-01/Accounts/{provider_sim.twilio_account_sid}/Messages.json",
        data={"To": "+15551230004", "From": FROM, "Body": "x"},
        auth=(provider_sim.twilio_account_sid, "wrong-token"),
        timeout=5,
    )
    assert raw.status_code == 401
    assert raw.json() == {
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }
    assert provider_sim.accepted() == []
    assert provider_sim.request_counts(TWILIO)["unauthorized"] == 2


@pytest.mark.parametrize("code", [21211, 21610, 21614])
def test_twilio_configured_recipient_errors(code: int):
    with ProviderSim(twilio_recipient_errors={"+15557770000": code}) as sim:
        client = sim.twilio_client()
        with pytest.raises(TwilioRestException) as err:
            client.messages.create(to="+15557770000", from_=FROM, body="x")
        assert (err.value.status, err.value.code) == (400, code)
        client.messages.create(to="+15557770001", from_=FROM, body="x")  # others still go
        assert [m.to for m in sim.accepted()] == ["+15557770001"]
        assert sim.request_counts(TWILIO)["rejected"] == 1
        sim.set_twilio_recipient_error("+15557770000", None)
        client.messages.create(to="+15557770000", from_=FROM, body="x")
        assert len(sim.accepted()) == 2


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"to": "12345", "from_": FROM, "body": "x"}, 21211),
        ({"to": "+15551230005", "from_": FROM, "body": "x" * 1601}, 21617),
        ({"to": "+15551230005", "from_": FROM, "body": ""}, 21602),
    ],
)
def test_twilio_validation_errors(provider_sim: ProviderSim, params: dict[str, str], code: int):
    with pytest.raises(TwilioRestException) as err:
        provider_sim.twilio_client().messages.create(**params)
    assert (err.value.status, err.value.code) == (400, code)
    assert provider_sim.accepted() == []


@pytest.mark.parametrize(
    ("body", "segments"),
    [
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),  # extension characters count two
        ("€" * 81, 2),
        ("你" * 70, 1),
        ("你" * 71, 2),
        ("👍" * 35, 1),  # outside the BMP: two UTF-16 units each
        ("👍" * 36, 2),
    ],
)
def test_sms_segments(body: str, segments: int):
    assert sms_segments(body) == segments


def test_twilio_long_body_reports_segments(provider_sim: ProviderSim):
    message = provider_sim.twilio_client().messages.create(
        to="+15551230006", from_=FROM, body="你好" * 50
    )
    assert message.num_segments == "2"
    assert provider_sim.accepted()[0].num_segments == 2


# --- SendGrid --------------------------------------------------------------------------------


def test_sendgrid_send_answers_202_with_message_id_and_records(provider_sim: ProviderSim):
    message = mail(to=["wang@example.com", "li@example.com"])
    message.header = sendgrid.helpers.mail.Header("List-Unsubscribe", "<https://u/1>")
    message.custom_arg = sendgrid.helpers.mail.CustomArg("touch_key", "birthday|C1|2026-11-23")
    response = provider_sim.sendgrid_client().send(message)
    assert response.status_code == 202 and response.body == b""
    message_id = response.headers["X-Message-Id"]
    assert re.match(r"^[A-Za-z0-9_-]{22}$", message_id)
    recorded = provider_sim.accepted(SENDGRID)
    assert [m.to for m in recorded] == ["wang@example.com", "li@example.com"]
    first = recorded[0]
    assert (first.id, first.from_, first.subject) == (message_id, "care@example.com", "Hello")
    assert (first.text, first.html, first.body) == ("plain text", "<p>html</p>", "plain text")
    assert first.headers == {"List-Unsubscribe": "<https://u/1>"}
    assert first.custom_args == {"touch_key": "birthday|C1|2026-11-23"}
    assert provider_sim.count_by_recipient(SENDGRID) == {"wang@example.com": 1, "li@example.com": 1}


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        (
            {"from": {"email": "a@example.com"}, "subject": "s", "content": [{"type": "text/plain", "value": "t"}]},
            ["personalizations"],
        ),
        (
            {"personalizations": [{"to": [{"name": "x"}]}], "from": {"email": "a@example.com"},
             "subject": "s", "content": [{"type": "text/plain", "value": "t"}]},
            ["personalizations.0.to.0.email"],
        ),
        (
            {"personalizations": [{"to": [{"email": "b@example.com"}]}], "subject": "s",
             "content": [{"type": "text/plain", "value": "t"}]},
            ["from.email"],
        ),
        (
            {"personalizations": [{"to": [{"email": "b@example.com"}]}],
             "from": {"email": "a@example.com"}, "subject": "s"},
            ["content"],
        ),
        ({}, ["personalizations", "from.email", "subject", "content"]),
    ],
)  # fmt: skip
def test_sendgrid_rejects_incomplete_bodies_with_400(
    provider_sim: ProviderSim, body: dict[str, Any], fields: list[str]
):
    client = provider_sim.sendgrid_client()
    with pytest.raises(sg_errors.BadRequestsError) as err:
        client.client.mail.send.post(request_body=body)
    assert err.value.status_code == 400
    errors = err.value.to_dict["errors"]
    assert [e["field"] for e in errors] == fields
    assert all(e["message"] and "help" in e for e in errors)
    assert provider_sim.accepted() == []
    assert provider_sim.request_counts(SENDGRID)["rejected"] == 1


def test_sendgrid_configured_invalid_recipient(provider_sim: ProviderSim):
    provider_sim.set_sendgrid_invalid_recipient("bounce@example.com")
    with pytest.raises(sg_errors.BadRequestsError) as err:
        provider_sim.sendgrid_client().send(mail(to="bounce@example.com"))
    assert err.value.to_dict["errors"][0]["field"] == "personalizations.0.to.0.email"
    assert provider_sim.accepted() == []


def test_sendgrid_bad_key_gets_401(provider_sim: ProviderSim):
    client = sendgrid.SendGridAPIClient("SG.wrong", host=provider_sim.url)
    with pytest.raises(sg_errors.UnauthorizedError) as err:
        client.send(mail())
    assert err.value.status_code == 401
    assert err.value.to_dict["errors"][0]["message"].startswith("The provided authorization")
    assert provider_sim.accepted() == []
    assert provider_sim.request_counts(SENDGRID)["unauthorized"] == 1


# --- faults, as each SDK sees them ---------------------------------------------------------------


def twilio_send(sim: ProviderSim, timeout: float | None = None, to: str = "+15558880000") -> Any:
    return sim.twilio_client(timeout=timeout).messages.create(to=to, from_=FROM, body="fault")


def sendgrid_send(sim: ProviderSim, timeout: float | None = None) -> Any:
    client = sim.sendgrid_client()
    return client.client.mail.send.post(request_body=mail().get(), timeout=timeout)


@pytest.mark.parametrize(
    ("knobs", "status", "kind"),
    [
        ({"rate_429": 1.0, "retry_after_s": 7}, 429, "fault_429"),
        ({"rate_503": 1.0}, 503, "fault_503"),
        ({"rate_500": 1.0}, 500, "fault_500"),
    ],
)
def test_http_faults_twilio(
    provider_sim: ProviderSim, knobs: dict[str, Any], status: int, kind: str
):
    provider_sim.set_faults(**knobs)
    http_client = HeaderKeepingClient()
    client = twilio_rest.Client(
        provider_sim.twilio_account_sid, provider_sim.twilio_auth_token, http_client=http_client
    )
    client.api.base_url = provider_sim.url
    with pytest.raises(TwilioRestException) as err:
        client.messages.create(to="+15558880001", from_=FROM, body="x")
    assert (err.value.status, err.value.code) == (status, 20000 + status)
    if status == 429:
        assert http_client.local.response.headers["Retry-After"] == "7"
    assert provider_sim.accepted() == []
    assert provider_sim.request_counts(TWILIO)[kind] == 1
    # reads are spared unless fault_reads is set; then a list page raises TwilioException
    assert client.messages.list() == []
    provider_sim.set_faults(fault_reads=True)
    with pytest.raises(TwilioException, match="Unable to fetch page"):
        client.messages.list()


@pytest.mark.parametrize(
    ("knobs", "error", "kind"),
    [
        ({"rate_429": 1.0, "retry_after_s": 3}, sg_errors.TooManyRequestsError, "fault_429"),
        ({"rate_503": 1.0}, sg_errors.ServiceUnavailableError, "fault_503"),
        ({"rate_500": 1.0}, sg_errors.InternalServerError, "fault_500"),
    ],
)
def test_http_faults_sendgrid(
    provider_sim: ProviderSim, knobs: dict[str, Any], error: type, kind: str
):
    provider_sim.set_faults(**knobs)
    with pytest.raises(error) as err:
        sendgrid_send(provider_sim)
    if error is sg_errors.TooManyRequestsError:
        assert err.value.headers["Retry-After"] == "3"
    assert err.value.to_dict["errors"][0]["message"]
    assert provider_sim.accepted() == []
    assert provider_sim.request_counts(SENDGRID)[kind] == 1


# How each provider's SDK reports a lost answer: the exception it raises, and its send.
LOST_ANSWER = {
    TWILIO: (twilio_send, requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError),
    SENDGRID: (sendgrid_send, TimeoutError, http.client.RemoteDisconnected),
}


@pytest.mark.parametrize("provider", list(LOST_ANSWER))
@pytest.mark.parametrize("after_accept", [False, True])
def test_timeout(provider_sim: ProviderSim, provider: str, after_accept: bool):
    send, timed_out, _ = LOST_ANSWER[provider]
    provider_sim.set_faults(rate_timeout=1.0, timeout_hold_s=3, timeout_after_accept=after_accept)
    with pytest.raises(timed_out):
        send(provider_sim, timeout=0.3)
    assert len(provider_sim.accepted()) == (1 if after_accept else 0)
    counts = provider_sim.request_counts(provider)
    assert counts["fault_timeout"] == 1
    assert counts["fault_timeout_accepted"] == (1 if after_accept else 0)


def test_timeout_hold_shorter_than_client_timeout_is_just_slow(provider_sim: ProviderSim):
    provider_sim.set_faults(rate_timeout=1.0, timeout_hold_s=0.2, timeout_after_accept=True)
    message = twilio_send(provider_sim, timeout=10)
    assert message.status == "queued"
    provider_sim.set_faults(timeout_after_accept=False)
    with pytest.raises(TwilioRestException) as err:
        twilio_send(provider_sim, timeout=10)
    assert err.value.status == 504
    assert len(provider_sim.accepted()) == 1


@pytest.mark.parametrize("provider", list(LOST_ANSWER))
@pytest.mark.parametrize("after_accept", [False, True])
def test_dropped_connection(provider_sim: ProviderSim, provider: str, after_accept: bool):
    send, _, dropped = LOST_ANSWER[provider]
    provider_sim.set_faults(rate_drop=1.0, drop_after_accept=after_accept)
    with pytest.raises(dropped):
        send(provider_sim)
    assert len(provider_sim.accepted()) == (1 if after_accept else 0)
    counts = provider_sim.request_counts(provider)
    assert (counts["fault_drop"], counts["fault_drop_accepted"]) == (1, int(after_accept))


def test_latency_delays_without_changing_the_answer(provider_sim: ProviderSim):
    # No wall-clock assertion (house rule): latency must not change what is answered.
    provider_sim.set_faults(latency_ms=150, jitter_ms=50)
    twilio_send(provider_sim)
    assert len(provider_sim.accepted()) == 1


def test_server_rate_limit_answers_429_with_retry_after():
    # 0.2 message/s: no token comes back while the burst is being used up
    with ProviderSim(rate_limit_per_sec=0.2, rate_limit_burst=3) as sim:
        outcomes = []
        for i in range(5):
            try:
                twilio_send(sim, to=f"+1555888100{i}")
                outcomes.append("ok")
            except TwilioRestException as err:
                outcomes.append(err.status)
        assert outcomes == ["ok", "ok", "ok", 429, 429]
        with pytest.raises(sg_errors.TooManyRequestsError) as err:
            for _ in range(4):
                sendgrid_send(sim)
        assert int(err.value.headers["Retry-After"]) >= 1
        assert sim.request_counts(TWILIO)["rate_limited"] == 2
        assert sim.request_counts(SENDGRID)["rate_limited"] == 1
        assert len(sim.accepted(TWILIO)) == 3 and len(sim.accepted(SENDGRID)) == 3
        sim.set_faults(rate_limit_per_sec=None)  # lifted at run time
        twilio_send(sim, to="+15558881009")


def test_seeded_faults_are_reproducible():
    def run(seed: int) -> tuple[list[str], dict[str, int]]:
        seen = []
        with ProviderSim(seed=seed, rate_503=0.2, rate_500=0.1, rate_429=0.1) as sim:
            client = sim.twilio_client()
            for i in range(60):
                try:
                    client.messages.create(to=f"+1555999{i:04d}", from_=FROM, body="s")
                    seen.append("ok")
                except TwilioRestException as err:
                    seen.append(str(err.status))
            return seen, dict(sim.request_counts(TWILIO))

    first, again, other = run(1), run(1), run(2)
    assert first == again and first != other
    outcomes, counts = first
    assert counts["accepted"] == outcomes.count("ok")
    assert counts["fault_503"] == outcomes.count("503") > 0
    assert counts["fault_500"] + counts["fault_429"] == outcomes.count("500") + outcomes.count(
        "429"
    )


def test_faults_rejected_when_out_of_range(provider_sim: ProviderSim):
    with pytest.raises(ValueError):
        provider_sim.set_faults(rate_503=1.5)
    with pytest.raises(ValueError):
        provider_sim.set_faults(rate_503=0.6, rate_500=0.6)
    with pytest.raises(TypeError):
        provider_sim.set_faults(rate_418=0.1)
    assert provider_sim.faults == Faults()


# --- the recorder under concurrency ----------------------------------------------------------


def test_concurrent_sends_are_all_recorded_once(provider_sim: ProviderSim):
    provider_sim.set_faults(latency_ms=5, jitter_ms=5)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        client = provider_sim.twilio_client()
        try:
            for i in range(20):
                client.messages.create(to=f"+1555{n:03d}{i:04d}", from_=FROM, body="c")
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    accepted = provider_sim.accepted(TWILIO)
    assert len(accepted) == 160 and len({m.id for m in accepted}) == 160
    assert sorted(m.seq for m in accepted) == list(range(1, 161))
    assert provider_sim.duplicates(TWILIO) == {}


def test_duplicates_finds_a_message_sent_twice(provider_sim: ProviderSim):
    client = provider_sim.twilio_client()
    for _ in range(2):
        client.messages.create(to="+15551110000", from_=FROM, body="twice")
    client.messages.create(to="+15551110001", from_=FROM, body="once")
    assert provider_sim.duplicates(TWILIO) == {("+15551110000", "twice"): 2}
    assert provider_sim.count_by_recipient(TWILIO) == {"+15551110000": 2, "+15551110001": 1}
    provider_sim.reset()
    assert provider_sim.accepted() == [] and provider_sim.request_counts() == {}


def test_stop_releases_held_answers():
    sim = ProviderSim(rate_timeout=1.0, timeout_hold_s=600, timeout_after_accept=True).start()
    errors: list[BaseException] = []

    def call() -> None:
        try:
            twilio_send(sim, timeout=30)
        except BaseException as exc:  # the answer is lost when the server stops
            errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    while sim.request_counts(TWILIO)["accepted"] == 0:
        time.sleep(0.01)
    sim.stop()
    caller.join(timeout=20)
    assert not caller.is_alive()
    assert len(errors) == 1


def test_remote_simulator_in_a_child_process():
    with RemoteProviderSim(seed=3, twilio_recipient_errors={"+15552220000": 21610}) as sim:
        client = sim.twilio_client()
        sid = client.messages.create(to="+15552220001", from_=FROM, body="remote").sid
        with pytest.raises(TwilioRestException) as err:
            client.messages.create(to="+15552220000", from_=FROM, body="remote")
        assert err.value.code == 21610
        sim.set_faults(rate_503=1.0)
        assert sim.faults().rate_503 == 1.0
        with pytest.raises(TwilioRestException):
            client.messages.create(to="+15552220002", from_=FROM, body="remote")
        [message] = sim.accepted(TWILIO)
        assert (message.id, message.body) == (sid, "remote")
        counts = sim.request_counts(TWILIO)
        assert (counts["accepted"], counts["rejected"], counts["fault_503"]) == (1, 1, 1)
        with pytest.raises(TypeError):
            sim.set_faults(rate_418=0.5)
        sim.clear_faults()
        assert sim.sendgrid_client().send(mail()).status_code == 202
        assert sim.count_by_recipient(SENDGRID) == {"wang@example.com": 1}


def test_lost_answers_make_duplicates_visible_and_a_list_lookup_avoids_them():
    """10 % faults, every drop and half of the timeouts after acceptance: a client that retries
    blindly sends some messages twice; one that first looks the message up does not."""
    knobs = {
        "rate_503": 0.03,
        "rate_429": 0.02,
        "rate_timeout": 0.025,
        "rate_drop": 0.025,
        "timeout_after_accept": 0.5,
        "drop_after_accept": 1.0,
        "timeout_hold_s": 0.8,
        "retry_after_s": 0,
    }
    recipients = [f"+1555444{i:04d}" for i in range(150)]

    def run(look_up_first: bool) -> ProviderSim:
        sim = ProviderSim(seed=11, **knobs)
        with sim:
            client = sim.twilio_client(timeout=0.5)
            for to in recipients:
                body = f"exactly once to {to}"
                while True:
                    try:
                        client.messages.create(to=to, from_=FROM, body=body)
                        break
                    except TwilioRestException as err:
                        assert err.status in (429, 503, 504)
                    except requests.exceptions.RequestException:  # timeout, dropped
                        if look_up_first and any(
                            m.body == body for m in client.messages.list(to=to)
                        ):
                            break
        return sim

    blind, careful = run(look_up_first=False), run(look_up_first=True)
    assert blind.duplicates(TWILIO) != {}
    lost = blind.request_counts(TWILIO)
    assert (
        len(blind.duplicates(TWILIO))
        <= lost["fault_timeout_accepted"] + lost["fault_drop_accepted"]
    )
    assert careful.duplicates(TWILIO) == {}
    assert careful.count_by_recipient(TWILIO) == dict.fromkeys(recipients, 1)
    counts = careful.request_counts(TWILIO)
    assert counts["fault_timeout_accepted"] + counts["fault_drop_accepted"] > 0


# --- the answers follow the providers' published OpenAPI descriptions ------------------------

CONTRACTS = Path(__file__).resolve().parents[1] / "provider_contracts"


def openapi_validator(
    spec_file: str, pointer: str, patch: Callable[[Any], None] | None = None
) -> Any:
    """A jsonschema validator for one schema of an OpenAPI 3.0 file (``nullable`` honoured).

    ``patch`` may amend the converted spec where the live API is known to differ from it.
    """
    import jsonschema

    path = CONTRACTS / spec_file
    if not path.exists():
        reason = f"provider contracts not found at {CONTRACTS}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    spec = json.loads(path.read_text())

    def to_json_schema(node: Any) -> Any:
        if isinstance(node, list):
            return [to_json_schema(n) for n in node]
        if not isinstance(node, dict):
            return node
        out = {k: to_json_schema(v) for k, v in node.items() if k != "nullable"}
        if node.get("nullable") and "type" in out:
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        return out

    schema = {"$ref": pointer, "components": to_json_schema(spec["components"])}
    schema["paths"] = to_json_schema(spec["paths"])
    if patch is not None:
        patch(schema)
    return jsonschema.Draft202012Validator(schema)


def assert_valid(validator: Any, instance: Any) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(instance)]
    assert errors == []


def test_twilio_answers_match_the_published_schema(provider_sim: ProviderSim):
    message = openapi_validator(
        "twilio_messages.json", "#/components/schemas/api.v2010.account.message"
    )
    listing = openapi_validator(
        "twilio_messages.json",
        "#/paths/~12010-04-01~1Accounts~1{AccountSid}~1Messages.json/get/responses/200"
        "/content/application~1json/schema",
    )
    base = f"{provider_sim.url}/2010-04-01/Accounts/{provider_sim.twilio_account_sid}/Messages"
    auth = (provider_sim.twilio_account_sid, provider_sim.twilio_auth_token)
    for i in range(3):
        created = requests.post(
            f"{base}.json",
            data={"To": f"+1555666000{i}", "From": FROM, "Body": "schema ✓"},
            auth=auth,
            timeout=5,
        )
        assert created.status_code == 201
        assert_valid(message, created.json())
    fetched = requests.get(f"{base}/{created.json()['sid']}.json", auth=auth, timeout=5)
    assert_valid(message, fetched.json())
    page = requests.get(f"{base}.json", params={"PageSize": 2}, auth=auth, timeout=5).json()
    assert_valid(listing, page)
    assert page["next_page_uri"] and len(page["messages"]) == 2


def test_sendgrid_errors_match_the_published_schema(provider_sim: ProviderSim):
    def live_help(schema: dict[str, Any]) -> None:
        # The published schema types "help" as an object; the live API sends a documentation
        # URL (a string) or null, and the simulator does what the live API does.
        item = schema["components"]["schemas"]["ErrorResponse"]["properties"]["errors"]["items"]
        item["properties"]["help"]["type"] = ["object", "string", "null"]

    error = openapi_validator(
        "sendgrid_mail_send.json", "#/components/schemas/ErrorResponse", live_help
    )
    url = f"{provider_sim.url}/v3/mail/send"
    bad_request = requests.post(
        url,
        json={},
        headers={"Authorization": f"Bearer {provider_sim.sendgrid_api_key}"},
        timeout=5,
    )
    unauthorized = requests.post(url, json={}, headers={"Authorization": "Bearer x"}, timeout=5)
    assert (bad_request.status_code, unauthorized.status_code) == (400, 401)
    for answer in (bad_request, unauthorized):
        assert_valid(error, answer.json())
