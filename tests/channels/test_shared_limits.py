"""One provider account's rate budget shared by every sending process (``shared_limits``),
against the real Redis (db 5 unless ``CARE_TEST_RATE_LIMIT_URL``), never a mock of it.

Skipped, saying why, when that Redis is unreachable, except under CI=true, where they fail.
Every test writes under a key prefix of its own and deletes what is under it afterwards.

Several OS processes (spawned, not threads) take slots of one account; each reports the
epoch time at which it got each slot, and the tests count the slots in every window: never
more than the limit. They do not time themselves. A slot's report comes a moment after the
library stamped it (a Redis round trip, a scheduler's delay), so the windows counted are a
little shorter than the limiter's: ``SLACK`` absorbs that delay, nothing else.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from limiter_processes import (
    acquire_slots,
    most_in_window,
    pause_then_signal,
    run_processes,
)
from provider_sim import ProviderSim
from redis_env import require_redis
from sim_channels import SMS_FROM, sms, twilio_credentials, twilio_transport

from caretouch.channels.base import Transport
from caretouch.channels.limits import Backoff, TokenBucket
from caretouch.channels.registry import build_transports, shared_limiter, transports_from_env
from caretouch.channels.shared_limits import (
    DEFAULT_PREFIX,
    SharedRateLimiter,
    account_key,
    window_for,
)
from caretouch.config import CareConfig
from caretouch.errors import CareError, RateLimiterUnavailable
from caretouch.vocab import Channel, Outcome

URL = os.environ.get("CARE_TEST_RATE_LIMIT_URL", "redis://127.0.0.1:6379/5")
# Nothing listens on port 1: the connection is refused at once.
UNREACHABLE = "redis://:hunter2-not-shown@127.0.0.1:1/5"
SLACK = 0.1  # seconds between the library's stamp of a slot and the child's report of it


@pytest.fixture
def redis_client() -> Iterator[Any]:
    client = require_redis(URL, decode_responses=False)
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client: Any) -> Iterator[str]:
    """A key prefix of this test's own; what is under it is deleted afterwards."""
    mine = f"care-test-ratelimit:{uuid.uuid4().hex[:12]}"
    yield mine
    for key in redis_client.scan_iter(f"{mine}:*"):
        redis_client.delete(key)


class Sleeps:
    """A real ``sleep`` that also records each wait asked for."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        time.sleep(seconds)


# -- the window a rate becomes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "amount", "seconds"),
    [(10, 10, 1), (50, 50, 1), (10.4, 10, 1), (1.5, 3, 2), (0.3, 2, 7), (0.05, 1, 20)],
)
def test_a_rate_becomes_a_window_that_never_allows_more(
    rate: float, amount: int, seconds: int
) -> None:
    window = window_for(rate)
    assert (window.amount, window.get_expiry()) == (amount, seconds)
    assert window.amount / window.get_expiry() <= rate


def test_an_account_s_key_shows_no_identifier() -> None:
    key = account_key("twilio", "AC0123456789abcdef0123456789abcdef", "+15005550006")
    assert key.startswith("twilio-") and "AC01" not in key and "5550006" not in key
    assert key == account_key("twilio", "AC0123456789abcdef0123456789abcdef", "+15005550006")
    assert key != account_key("twilio", "AC0123456789abcdef0123456789abcdef", "MG1")


def test_sendgrid_keys_of_one_id_share_a_budget(provider_sim: ProviderSim) -> None:
    from sim_channels import sendgrid_transport

    one = sendgrid_transport(provider_sim, api_key="SG.keyid123.secret-one")
    same_id = sendgrid_transport(provider_sim, api_key="SG.keyid123.secret-two")
    other = sendgrid_transport(provider_sim, api_key="SG.keyid456.secret-one")
    assert one.account() == same_id.account() != other.account()
    assert "keyid" not in one.account() and "secret" not in one.account()


# -- several processes, one account ----------------------------------------------------------


@pytest.mark.slow
def test_processes_sharing_an_account_never_exceed_its_limit(
    prefix: str, redis_client: Any
) -> None:
    limit, processes, each = 20, 4, 15
    account = account_key("twilio", "AC-processes", SMS_FROM)
    args = [(URL, prefix, account, float(limit), each)] * processes
    # Meanwhile, the stamps the library itself keeps in the window (a list of the latest
    # ``limit``, each there about a second at this rate: a look every 50 ms sees them).
    window = f"{prefix}:{window_for(limit).key_for(account)}"
    kept: set[float] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            kept.update(float(v) for v in redis_client.lrange(window, 0, -1))
            stop.wait(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        results, codes = run_processes(acquire_slots, args)
    finally:
        stop.set()
        watcher.join()
    assert codes == [0] * processes
    assert len(results) == processes and all(len(s) == each for s in results.values())
    stamps = [t for s in results.values() for t in s]
    # In no window of the limiter's second (less the reporting delay) more than the limit,
    # though the four together asked for three times as much at once: the budget was full.
    assert most_in_window(stamps, 1.0 - SLACK) == limit
    # The library's own stamps, in windows of the whole second.
    assert 0 < len(kept) <= processes * each
    assert most_in_window(sorted(kept), 1.0) <= limit


@pytest.mark.slow
def test_two_accounts_do_not_share_a_budget(prefix: str) -> None:
    limit, each = 10, 10
    one = account_key("twilio", "AC-one", SMS_FROM)
    two = account_key("twilio", "AC-two", SMS_FROM)
    args = [(URL, prefix, one, float(limit), each), (URL, prefix, two, float(limit), each)]
    results, codes = run_processes(acquire_slots, args)
    assert codes == [0, 0]
    stamps = [t for s in results.values() for t in s]
    # Both accounts took their whole budget at once: twice the limit within one window.
    assert most_in_window(stamps, 1.0 - SLACK) == 2 * limit


def test_a_full_account_waits_and_another_does_not(prefix: str) -> None:
    waits = Sleeps()
    full = SharedRateLimiter(URL, account_key("t", "full"), 5, prefix=prefix, sleep=waits)
    for _ in range(5):
        full.acquire()
    assert waits.waits == []
    other = SharedRateLimiter(URL, account_key("t", "other"), 5, prefix=prefix, sleep=waits)
    for _ in range(5):
        other.acquire()
    assert waits.waits == []  # the other account's budget is its own
    full.acquire()  # the sixth in a second: waits for the first to leave the window
    assert waits.waits and 0 < sum(waits.waits) <= 1.0 + 0.01


@pytest.mark.slow
def test_a_pause_set_by_one_process_holds_up_the_others(prefix: str) -> None:
    account = account_key("twilio", "AC-pause", SMS_FROM)
    pause = 1.5
    results, codes = run_processes(pause_then_signal, [(URL, prefix, account, 50.0, pause)])
    assert codes == [0]
    (paused_at,) = results.values()
    # Other processes start after the pause was set, and each takes a slot.
    results, codes = run_processes(acquire_slots, [(URL, prefix, account, 50.0, 1)] * 3)
    assert codes == [0, 0, 0]
    slots = [t for s in results.values() for t in s]
    assert len(slots) == 3
    # None got its slot before the pause (set by the other process) was over.
    assert min(slots) >= paused_at + pause - 0.01


def test_a_longer_pause_is_not_shortened(prefix: str, redis_client: Any) -> None:
    limiter = SharedRateLimiter(URL, account_key("t", "pauses"), 5, prefix=prefix)
    limiter.pause(30)
    limiter.pause(2)
    assert 29 < limiter.paused_for() <= 30
    assert redis_client.pttl(limiter.pause_key) > 29_000


# -- Redis unreachable -----------------------------------------------------------------------


def test_an_unreachable_redis_raises_a_clear_error_without_the_password() -> None:
    limiter = SharedRateLimiter(UNREACHABLE, account_key("twilio", "AC-x"), 5, timeout=2)
    for attempt in (limiter.acquire, lambda: limiter.pause(1.0)):
        with pytest.raises(RateLimiterUnavailable) as caught:
            attempt()
        message = str(caught.value)
        assert isinstance(caught.value, CareError)
        assert "redis://:***@127.0.0.1:1/5" in message and "cannot be reached" in message
        assert "hunter2" not in message and "hunter2" not in repr(limiter)


def test_a_send_with_the_limiter_down_sends_nothing_and_says_why(
    provider_sim: ProviderSim,
) -> None:
    transport = twilio_transport(provider_sim, concurrency=4)
    transport.limit_with(SharedRateLimiter(UNREACHABLE, transport.account(), 10, timeout=2))
    results = transport.send_many([sms(f"+86138001380{i:02d}", n=i) for i in range(10)])
    assert provider_sim.request_counts("twilio")["sends"] == 0
    assert all(
        r.outcome is Outcome.RETRYABLE_FAILURE and r.stop_run and r.tries == 0 for r in results
    )
    assert all(isinstance(r.halt, RateLimiterUnavailable) for r in results)
    assert "hunter2" not in " ".join(r.detail for r in results)


# -- the transports use it when configured ---------------------------------------------------


def test_transports_take_the_shared_limiter_at_the_account_s_whole_rate(
    provider_sim: ProviderSim, tmp_path: Path, redis_client: Any
) -> None:
    twilio = twilio_credentials(provider_sim, rate_per_sec=40.0)
    local = build_transports(tmp_path, twilio=twilio, share=4)[Channel.SMS]
    assert isinstance(local.limiter, TokenBucket) and local.rate == 10.0  # 40 / 4 slots
    shared = build_transports(tmp_path, twilio=twilio, share=4, rate_limit_url=URL)[Channel.SMS]
    assert isinstance(shared.limiter, SharedRateLimiter)
    assert shared.rate == 40.0 and shared.limiter.window_amount == 40  # the one budget
    assert isinstance(
        build_transports(tmp_path, rate_limit_url=URL)[Channel.SMS].limiter, TokenBucket
    )


def _clear_account(redis_client: Any, transport: Transport) -> None:
    limiter = transport.limiter
    assert isinstance(limiter, SharedRateLimiter)
    redis_client.delete(
        f"{DEFAULT_PREFIX}:{limiter.item.key_for(limiter.account)}", limiter.pause_key
    )


def test_a_sender_configured_with_the_url_honours_another_process_s_pause(
    provider_sim: ProviderSim, tmp_path: Path, redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the real send path (the CLI's transports from the environment, the Twilio SDK,
    HTTP to the simulator): another sender's pause of the account holds these sends up, and
    the sends spend the account's budget in Redis."""
    for name, value in {
        "TWILIO_ACCOUNT_SID": provider_sim.twilio_account_sid,
        "TWILIO_AUTH_TOKEN": provider_sim.twilio_auth_token,
        "CARE_SMS_FROM": SMS_FROM,
        "CARE_TWILIO_API_BASE": provider_sim.url,
        "CARE_SMS_RATE": "5",
        "CARE_RATE_LIMIT_URL": URL,
    }.items():
        monkeypatch.setenv(name, value)
    transport = transports_from_env(tmp_path / "outbox", CareConfig.from_env())[Channel.SMS]
    assert transport.name == "twilio" and transport.shared_limiter
    _clear_account(redis_client, transport)
    try:
        # Another process (its own limiter object, the same Redis) was told to rest.
        other = shared_limiter(URL, transport)
        paused_at = dt.datetime.now(dt.timezone.utc)
        other.pause(1.0)
        results = transport.send_many([sms(f"+86138001380{i:02d}", n=i) for i in range(8)])
        assert [r.outcome for r in results] == [Outcome.SENT] * 8
        accepted = provider_sim.accepted("twilio")
        assert len(accepted) == 8
        # A message arrives after its slot (the first ones later still: each sending thread
        # builds its SDK client), so arrivals give lower bounds: none before the pause was
        # over, and at 5/s the sixth not before the first slot has left the window.
        arrivals = sorted(m.time for m in accepted)
        assert arrivals[0] >= paused_at + dt.timedelta(seconds=0.99)
        assert arrivals[5] >= paused_at + dt.timedelta(seconds=1.99)
    finally:
        _clear_account(redis_client, transport)


def test_a_429_pauses_the_account_for_every_sender(
    provider_sim: ProviderSim, redis_client: Any
) -> None:
    """One sender's 429 with a Retry-After pauses the account in Redis: another sender (a
    limiter of its own) waits it out too."""
    # A Retry-After longer than a send waits: the touch is left for the next run, and the
    # account rests for the longest wait allowed (3 s here) before anyone sends again.
    provider_sim.set_faults(rate_429=1.0, retry_after_s=600)
    backoff = Backoff(tries=4, max_retry_after=3.0)
    transport = twilio_transport(provider_sim, rate_per_sec=50.0, backoff=backoff)
    transport.limit_with(shared_limiter(URL, transport))
    _clear_account(redis_client, transport)
    try:
        result = transport.send(sms())
        assert (result.outcome, result.tries, result.retry_after) == (
            Outcome.RETRYABLE_FAILURE,
            1,
            600.0,
        )
        other = shared_limiter(URL, transport)  # another sender's limiter
        assert 2.0 < other.paused_for() <= 3.0
    finally:
        _clear_account(redis_client, transport)
