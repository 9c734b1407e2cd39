"""Sender processes for tests/channels/test_shared_limits.py and bench/rate_limit.py.

Each runs in a spawned OS process (not a thread): it builds its own ``SharedRateLimiter``
on the same Redis, waits for the common start signal, takes slots and reports the epoch time
(``time.time()``, one clock for every process of the host) at which it got each one. They
start together: each waits at the barrier ``go`` once its limiter is built.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
from collections.abc import Callable, Sequence
from typing import Any


def _started(url: str, prefix: str, account: str, rate: float, go: Any) -> Any:
    """This process's limiter on the shared Redis, once every process is ready."""
    from caretouch.channels.shared_limits import SharedRateLimiter

    limiter = SharedRateLimiter(url, account, rate, prefix=prefix)
    go.wait(120)
    return limiter


def acquire_slots(
    url: str, prefix: str, account: str, rate: float, count: int, go: Any, out: Any
) -> None:
    """Take ``count`` slots of ``account``; report ``(pid, [epoch of each slot])``."""
    limiter = _started(url, prefix, account, rate, go)
    stamps: list[float] = []
    for _ in range(count):
        limiter.acquire()
        stamps.append(time.time())
    out.put((os.getpid(), stamps))


def acquire_for(
    url: str, prefix: str, account: str, rate: float, seconds: float, go: Any, out: Any
) -> None:
    """Take slots of ``account`` for ``seconds`` (a monotonic interval); report as above."""
    limiter = _started(url, prefix, account, rate, go)
    stamps: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        limiter.acquire()
        stamps.append(time.time())
    out.put((os.getpid(), stamps))


def pause_then_signal(
    url: str, prefix: str, account: str, rate: float, seconds: float, go: Any, out: Any
) -> None:
    """Pause ``account`` for ``seconds``; report ``(pid, epoch when the pause was set)``."""
    limiter = _started(url, prefix, account, rate, go)
    before = time.time()
    limiter.pause(seconds)
    out.put((os.getpid(), before))


def run_processes(
    target: Callable[..., None], args: Sequence[tuple[Any, ...]], wait: float = 120
) -> tuple[dict[int, Any], list[int | None]]:
    """``target(*a, go, out)`` for each ``a`` in spawned processes; ``go`` is a barrier that
    lets them all start together once each is ready (imported, connected). The values they
    report by pid, and their exit codes."""
    ctx = mp.get_context("spawn")
    go, out = ctx.Barrier(len(args) + 1), ctx.Queue()
    processes = [ctx.Process(target=target, args=(*a, go, out)) for a in args]
    for p in processes:
        p.start()
    go.wait(wait)
    results: dict[int, Any] = {}
    try:
        while len(results) < len(processes):
            pid, value = out.get(timeout=wait)
            results[pid] = value
    except queue.Empty:
        pass
    for p in processes:
        p.join(wait)
    return results, [p.exitcode for p in processes]


def most_in_window(stamps: Sequence[float], window: float) -> int:
    """The most stamps that fall in any interval ``[t, t + window)``."""
    ordered = sorted(stamps)
    most, start = 0, 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window:
            start += 1
        most = max(most, end - start + 1)
    return most
