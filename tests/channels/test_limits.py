"""The token bucket and the backoff, on a fake clock: waits are computed, never measured."""

from __future__ import annotations

import random
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sim_channels import FakeTime

from caretouch.channels.limits import Backoff, TokenBucket, parse_retry_after


def bucket(rate: float, burst: float, time: FakeTime) -> TokenBucket:
    return TokenBucket(rate, burst, clock=time.clock, sleep=time.sleep)


@pytest.mark.parametrize(
    ("n", "rate", "burst"),
    [(1, 10.0, 1.0), (100, 10.0, 1.0), (100, 10.0, 5.0), (1000, 200.0, 20.0), (7, 0.5, 3.0)],
)
def test_n_acquires_take_n_minus_burst_over_rate(n: int, rate: float, burst: float) -> None:
    time = FakeTime()
    limiter = bucket(rate, burst, time)
    start = time.clock()
    for _ in range(n):
        limiter.acquire()
    assert time.clock() - start == pytest.approx(max(0.0, n - burst) / rate)


@given(
    n=st.integers(1, 300),
    rate=st.floats(0.1, 1000.0),
    burst=st.floats(1.0, 50.0),
    idle=st.floats(0.0, 100.0),
)
def test_an_idle_bucket_refills_to_its_burst_only(
    n: int, rate: float, burst: float, idle: float
) -> None:
    time = FakeTime()
    limiter = bucket(rate, burst, time)
    for _ in range(int(burst)):
        limiter.acquire()  # empty it
    time.sleep(idle)  # however long it rested, it holds at most ``burst`` tokens
    start = time.clock()
    for _ in range(n):
        limiter.acquire()
    refilled = min(burst, burst - int(burst) + idle * rate)
    assert time.clock() - start == pytest.approx(max(0.0, n - refilled) / rate, abs=1e-6)


def test_threads_share_one_rate() -> None:
    """Eight threads take 200 tokens at 50/s, burst 10, all at the same instant (the clock
    does not move): the first 10 go at once, then each caller waits its place in one queue."""
    time = FakeTime()
    limiter = TokenBucket(50.0, 10.0, clock=time.clock, sleep=lambda _s: None)
    waits: list[float] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(25):
            wait = limiter.acquire()
            with lock:
                waits.append(wait)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = [0.0] * 10 + [k / 50.0 for k in range(1, 191)]
    assert sorted(waits) == pytest.approx(expected)


def test_pause_holds_every_token_for_its_duration() -> None:
    time = FakeTime()
    limiter = bucket(10.0, 5.0, time)
    limiter.pause(3.0)
    assert limiter.acquire() == pytest.approx(3.0 + 0.1)
    # After the pause the rate resumes, without a burst: the bucket was emptied.
    assert limiter.acquire() == pytest.approx(0.1)


def test_pause_does_not_shorten_a_longer_queue() -> None:
    time = FakeTime()
    # A sleep that does not move the clock: ten callers queue up at once, 1 s apart.
    limiter = TokenBucket(1.0, 1.0, clock=time.clock, sleep=lambda _s: None)
    assert [limiter.acquire() for _ in range(11)] == pytest.approx([float(i) for i in range(11)])
    limiter.pause(2.0)  # shorter than the queue already waiting: changes nothing
    assert limiter.acquire() == pytest.approx(11.0)


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(0)


@given(tries=st.integers(1, 30), base=st.floats(0.001, 5.0), cap=st.floats(0.001, 60.0))
def test_backoff_is_full_jitter_under_its_cap(tries: int, base: float, cap: float) -> None:
    backoff = Backoff(base=base, cap=cap, rng=random.Random(tries))
    for _ in range(20):
        wait = backoff.delay(tries)
        assert 0.0 <= wait <= min(cap, base * 2 ** (tries - 1))


def test_backoff_grows_then_stops_at_the_cap() -> None:
    backoff = Backoff(base=0.5, cap=8.0, rng=random.Random(1))
    highest = [max(backoff.delay(n) for _ in range(2000)) for n in range(1, 8)]
    assert highest == pytest.approx([0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0], rel=0.02)


@pytest.mark.parametrize(
    ("retry_after", "expected"), [(0.0, 0.0), (2.0, 2.0), (59.5, 59.5), (600.0, 60.0), (-3, 0.0)]
)
def test_retry_after_is_honoured_up_to_its_cap(retry_after: float, expected: float) -> None:
    backoff = Backoff(max_retry_after=60.0)
    assert backoff.delay(1, retry_after) == expected
    assert backoff.delay(9, retry_after) == expected  # no jitter, whatever the try


@pytest.mark.parametrize(
    ("header", "now", "expected"),
    [
        (None, None, None),
        ("", None, None),
        ("3", None, 3.0),
        (" 1.5 ", None, 1.5),
        ("-4", None, 0.0),
        ("Mon, 23 Nov 2026 12:00:30 GMT", 1795435200.0, 30.0),  # an HTTP date
        ("1795435245", 1795435200.0, 45.0),  # an epoch reset time (X-RateLimit-Reset)
        ("1795435100", 1795435200.0, 0.0),  # already past
        ("soon", None, None),
    ],
)
def test_parse_retry_after(header: str | None, now: float | None, expected: float | None) -> None:
    assert parse_retry_after(header, now_epoch=now) == expected
