"""How many requests per second the provider simulator (tests/provider_sim.py) serves.

Run: ``.venv/bin/python bench/provider_sim_capacity.py [--seconds 5] [--processes 4]
[--threads 8,32] [--latency-threads 64] [--limit 200] [--remote]``. The simulator runs in
this process, or with ``--remote`` in a child process (``RemoteProviderSim``). First, bare
keep-alive ``http.client`` clients in ``--processes`` other processes post Twilio creates as
fast as they can: the server's own capacity, with its CPU per request. Then the official SDK
clients (and a bare ``requests`` session) in threads of this process, as tests and benchmarks
use them (sharing the GIL with the simulator unless ``--remote``). Then the Twilio SDK with
50 ms simulated latency; then how closely the server-side token bucket admits its configured
rate when clients offer more. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import multiprocessing as mp
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from provider_sim import (
    SENDGRID_API_KEY,
    TWILIO_ACCOUNT_SID,
    TWILIO_AUTH_TOKEN,
    ProviderSim,
    RemoteProviderSim,
)

FROM = "+15005550006"


def say(message: str = "") -> None:
    print(message, flush=True)


def _raw_client(port: int, seconds: float, out: Any) -> None:
    """One process, one keep-alive connection, bare http.client: as little client CPU as can be."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    auth = base64.b64encode(f"{TWILIO_ACCOUNT_SID}:{TWILIO_AUTH_TOKEN}".encode()).decode()
    headers = {
        "Authorization": f"Basic {auth}",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    path = f"/2010-04-01/Accounts/{TWILIO_ACCOUNT_SID}/Messages.json"
    body = urlencode({"To": "+15551234567", "From": FROM, "Body": "capacity"})
    done, stop_at = 0, time.monotonic() + seconds
    while time.monotonic() < stop_at:
        conn.request("POST", path, body=body, headers=headers)
        conn.getresponse().read()
        done += 1
    out.put(done)


def server_capacity(sim: ProviderSim, processes: int, seconds: float) -> tuple[float, float]:
    """(requests/s, server CPU microseconds per request) with bare clients in other processes."""
    out: Any = mp.Queue()
    procs = [
        mp.Process(target=_raw_client, args=(sim.port, seconds, out)) for _ in range(processes)
    ]
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    for p in procs:
        p.start()
    total = sum(out.get() for _ in procs)
    for p in procs:
        p.join()
    elapsed, after = time.monotonic() - started, resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return total / elapsed, cpu / max(1, total) * 1e6


def twilio_sender(url: str) -> Callable[[int], None]:
    from twilio.rest import Client

    client = Client(TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN)
    client.api.base_url = url

    def send(i: int) -> None:
        # failures (rate limited) are counted by the simulator, not here
        with contextlib.suppress(Exception):
            client.messages.create(to=f"+1555{i:07d}", from_=FROM, body="capacity")

    return send


def sendgrid_sender(url: str) -> Callable[[int], None]:
    import sendgrid
    from sendgrid.helpers.mail import Mail

    client = sendgrid.SendGridAPIClient(SENDGRID_API_KEY, host=url)

    def send(i: int) -> None:
        message = Mail(
            from_email="care@example.com",
            to_emails=f"c{i}@example.com",
            subject="capacity",
            plain_text_content="text",
            html_content="<p>html</p>",
        )
        with contextlib.suppress(Exception):
            client.send(message)

    return send


def requests_sender(url: str) -> Callable[[int], None]:
    """A bare keep-alive session: the cheapest client, closest to the server's own limit."""
    import requests

    session = requests.Session()
    session.auth = (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN)
    target = f"{url}/2010-04-01/Accounts/{TWILIO_ACCOUNT_SID}/Messages.json"

    def send(i: int) -> None:
        session.post(target, data={"To": f"+1555{i:07d}", "From": FROM, "Body": "capacity"})

    return send


def drive(
    make: Callable[[str], Callable[[int], None]], url: str, threads: int, seconds: float
) -> float:
    """Requests per second over ``seconds`` with ``threads`` senders."""
    stop_at = time.monotonic() + seconds
    done = [0] * threads

    def worker(n: int) -> None:
        send = make(url)
        i = n * 1_000_000
        while time.monotonic() < stop_at:
            send(i)
            i += 1
            done[n] += 1

    started = time.monotonic()
    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(done) / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--processes", type=int, default=4, help="bare client processes")
    parser.add_argument("--threads", default="8,32", help="SDK client threads, comma-separated")
    parser.add_argument("--latency-threads", type=int, default=64)
    parser.add_argument("--limit", type=float, default=200.0, help="token bucket rate, msg/s")
    parser.add_argument(
        "--remote", action="store_true", help="run the simulator in a child process"
    )
    args = parser.parse_args()
    thread_counts = [int(t) for t in args.threads.split(",")]
    rows: list[tuple[str, int, str, str, float]] = []

    with RemoteProviderSim() if args.remote else ProviderSim() as sim:
        url = sim.url
        where = "a child process" if args.remote else "this process"
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        say(f"simulator at {url} in {where}; {args.seconds:g} s per run; load average {load}")

        rate, cpu_us = server_capacity(sim, args.processes, args.seconds)
        rows.append((f"bare x{args.processes} proc", args.processes, "0", "-", rate))
        cpu = "n/a" if args.remote else f"{cpu_us:.0f} us"
        say(f"  server capacity: {rate:.0f} req/s with {args.processes} bare client processes, "
            f"{cpu} of server CPU per request")  # fmt: skip

        for name, make in (
            ("requests", requests_sender),
            ("twilio SDK", twilio_sender),
            ("sendgrid SDK", sendgrid_sender),
        ):
            for threads in thread_counts:
                sim.reset()
                rate = drive(make, url, threads, args.seconds)
                rows.append((name, threads, "0", "-", rate))
                say(f"  {name:13} threads={threads:3}  {rate:8.0f} req/s (client threads)")

        sim.set_faults(latency_ms=50)
        n = args.latency_threads
        rate = drive(twilio_sender, url, n, args.seconds)
        rows.append(("twilio SDK", n, "50 ms", "-", rate))
        say(f"  twilio SDK    threads={n:3}  latency 50 ms: {rate:8.0f} req/s "
            f"(latency-bound ceiling {n / 0.050:.0f})")  # fmt: skip

        sim.set_faults(latency_ms=0, rate_limit_per_sec=args.limit, rate_limit_burst=10)
        sim.reset()
        started = time.monotonic()
        offered = drive(twilio_sender, url, 8, args.seconds)
        elapsed = time.monotonic() - started
        counts = sim.request_counts()
        admitted = counts["accepted"] / elapsed
        rows.append(("rate limit", 8, "0", f"{args.limit:g}/s", admitted))
        say(f"  rate limit {args.limit:g}/s burst 10: offered {offered:.0f} req/s, "
            f"admitted {admitted:.1f} msg/s ({admitted / args.limit:.1%} of the limit), "
            f"rate_limited {counts['rate_limited']}")  # fmt: skip

    say()
    say(f"{'client':16} {'threads':>7} {'latency':>8} {'limit':>7} {'per s':>8}")
    for name, threads, latency, limit, rate in rows:
        say(f"{name:16} {threads:7} {latency:>8} {limit:>7} {rate:8.0f}")


if __name__ == "__main__":
    main()
