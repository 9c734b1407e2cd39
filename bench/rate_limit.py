"""Several sender processes, one provider account: does the shared rate limiter hold the
account to its limit?

Run: ``.venv/bin/python bench/rate_limit.py [--processes 4] [--rate 50] [--seconds 10]
[--url redis://127.0.0.1:6379/5] [--mode limiter|transport|both] [--latency-ms 20]
[--unshared]``.

``--processes`` OS processes (spawned) start together and send for one account for
``--seconds`` each:

- ``limiter``: each takes slots from ``SharedRateLimiter`` (``CARE_RATE_LIMIT_URL`` = ``--url``)
  as fast as it is given them, and notes the epoch time of each;
- ``transport``: each sends SMS through the real Twilio transport and SDK (``send_many``, 8
  requests in flight per process) with the shared limiter, to the provider simulator in a
  child process (``RemoteProviderSim``, ``--latency-ms`` per request, its own token bucket at
  ``--rate`` with a burst of ``--rate``, answering 429 beyond it); the times are the
  simulator's arrivals.

For each it prints the aggregate rate (slots over the span from the first to the last), the
most slots in any 1-second window (and in any 0.9-second window), each process's share, and,
for ``transport``, the 429s the provider answered. ``--unshared`` adds, for comparison, the
same ``transport`` run with each process on a token bucket of its own at the full rate (what
two senders without ``CARE_RATE_LIMIT_URL`` do, e.g. ``care dispatch`` from cron beside the
Airflow tasks). Keys are written under a prefix of the run's own in ``--url`` and deleted at
the end. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "channels"))

from _common import say
from limiter_processes import acquire_for, most_in_window, run_processes

from caretouch.channels.shared_limits import account_key

ACCOUNT = account_key("twilio", "AC-bench-rate-limit", "+15005550006")


def send_for(
    sim: dict[str, Any],
    url: str | None,
    prefix: str,
    rate: float,
    seconds: float,
    first: int,
    go: Any,
    out: Any,
) -> None:
    """One sender: SMS through the Twilio transport for ``seconds``, 8 requests in flight,
    limited by the shared limiter (``url``) or by its own token bucket (``url`` None)."""
    from types import SimpleNamespace

    from sim_channels import sms, twilio_transport

    from caretouch.channels.shared_limits import SharedRateLimiter

    transport = twilio_transport(
        SimpleNamespace(**sim), timeout=20.0, rate_per_sec=rate, concurrency=8
    )
    if url is not None:
        transport.limit_with(SharedRateLimiter(url, ACCOUNT, rate, prefix=prefix))
    # Each sending thread builds its SDK client before the start (a few hundred ms on a busy
    # machine): otherwise the first window's requests arrive late, on top of the second's.
    ready = threading.Barrier(transport.workers)

    def build_client() -> None:
        ready.wait(60)
        transport.client()

    for f in [transport._senders().submit(build_client) for _ in range(transport.workers)]:
        f.result()
    go.wait(120)
    sent, n = 0, first
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        batch = [sms(f"+8613{n + i:09d}", n=n + i) for i in range(16)]
        n += len(batch)
        sent += sum(r.tries > 0 for r in transport.send_many(batch))
    transport.close()
    out.put((os.getpid(), sent))


def report(name: str, stamps_by_process: dict[int, Sequence[float]], rate: float) -> None:
    stamps = sorted(t for s in stamps_by_process.values() for t in s)
    if len(stamps) < 2:
        say(f"{name}: fewer than 2 slots")
        return
    total = len(stamps)
    # Whole seconds from the first slot: a moving window lets a second's worth go at once at
    # the start of each, so the rate is counted over whole seconds, not from first to last.
    seconds = int(stamps[-1] - stamps[0])
    per_second = [0] * (seconds + 1)
    for t in stamps:
        per_second[int(t - stamps[0])] += 1
    whole = per_second[:seconds]
    aggregate = sum(whole) / len(whole) if whole else float(total)
    say(
        f"{name}: {total} in all; {aggregate:.1f}/s over the {len(whole)} whole seconds "
        f"({100 * aggregate / rate:.1f} % of {rate:g}/s; per second {whole}); most in any "
        f"1 s window: {most_in_window(stamps, 1.0)}, in any 0.9 s window: "
        f"{most_in_window(stamps, 0.9)} (limit {int(rate)})"
    )
    shares = ", ".join(
        f"{len(s)} ({100 * len(s) / total:.1f} %)" for s in stamps_by_process.values()
    )
    say(f"  per process: {shares}")


def watch_window(url: str, key: str, stop: threading.Event, seen: set[float]) -> None:
    """Collect the stamps the library keeps in the account's window (a Redis list of the
    latest ``limit`` entries, each there until ``limit`` newer ones came: about a second at
    the limit, so a look every 50 ms sees every one)."""
    import redis

    client = redis.Redis.from_url(url)
    while not stop.is_set():
        seen.update(float(v) for v in client.lrange(key, 0, -1))
        stop.wait(0.05)
    seen.update(float(v) for v in client.lrange(key, 0, -1))
    client.close()


def limiter_run(args: argparse.Namespace, prefix: str) -> None:
    from caretouch.channels.shared_limits import SharedRateLimiter

    item = SharedRateLimiter(args.url, ACCOUNT, args.rate, prefix=prefix).item
    seen: set[float] = set()
    stop = threading.Event()
    watcher = threading.Thread(
        target=watch_window, args=(args.url, f"{prefix}:{item.key_for(ACCOUNT)}", stop, seen)
    )
    watcher.start()
    job = (args.url, prefix, ACCOUNT, args.rate, args.seconds)
    try:
        results, codes = run_processes(acquire_for, [job] * args.processes, wait=args.seconds + 120)
    finally:
        stop.set()
        watcher.join()
    if codes != [0] * args.processes:
        say(f"limiter: exit codes {codes}")
    report(f"limiter, {args.processes} processes, times noted by each process", results, args.rate)
    say(
        f"  the library's own stamps (read from Redis): {len(seen)} seen; most in any 1 s "
        f"window: {most_in_window(sorted(seen), 1.0)} (limit {item.amount} per "
        f"{item.get_expiry()} s)"
    )


def transport_run(args: argparse.Namespace, prefix: str, shared: bool) -> None:
    from provider_sim import RemoteProviderSim

    with RemoteProviderSim(
        latency_ms=args.latency_ms,
        rate_limit_per_sec=args.rate,
        rate_limit_burst=max(1, int(args.rate)),
    ) as sim:
        job = {
            "url": sim.url,
            "twilio_account_sid": sim.twilio_account_sid,
            "twilio_auth_token": sim.twilio_auth_token,
            "sendgrid_api_key": sim.sendgrid_api_key,
        }
        url = args.url if shared else None
        jobs = [
            (job, url, prefix, args.rate, args.seconds, 1_000_000 * (i + 1))
            for i in range(args.processes)
        ]
        _sent, codes = run_processes(send_for, jobs, wait=args.seconds + 120)
        accepted = sim.accepted("twilio")
        counts = sim.request_counts("twilio")
    if codes != [0] * args.processes:
        say(f"transport: exit codes {codes}")
    by_process: dict[int, list[float]] = {}
    for m in accepted:
        by_process.setdefault(int(m.to[5:]) // 1_000_000, []).append(m.time.timestamp())
    how = "shared limiter" if shared else "a token bucket each at the full rate (unshared)"
    report(f"transport, {args.processes} processes, {how}", by_process, args.rate)
    say(
        f"  provider: {counts['sends']} requests, {counts['accepted']} accepted, "
        f"{counts['rate_limited']} answered 429 by its own limit"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--url", default="redis://127.0.0.1:6379/5")
    parser.add_argument("--mode", choices=["limiter", "transport", "both"], default="both")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--unshared", action="store_true")
    args = parser.parse_args()
    prefix = f"bench-rate-limit:{uuid.uuid4().hex[:8]}"
    load = os.getloadavg()
    say(
        f"{args.processes} processes, one account at {args.rate:g}/s, {args.seconds:g} s each; "
        f"Redis {args.url}; load average {load[0]:.1f}"
    )
    import redis

    client = redis.Redis.from_url(args.url)
    try:
        if args.mode in ("limiter", "both"):
            limiter_run(args, prefix)
        if args.mode in ("transport", "both"):
            transport_run(args, prefix, shared=True)
            if args.unshared:
                transport_run(args, prefix, shared=False)
    finally:
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)
        client.close()
    say(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
