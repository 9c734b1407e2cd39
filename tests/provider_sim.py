"""A Twilio and SendGrid simulator for tests and benchmarks: real HTTP, injected faults, a recorder.

One HTTP server on 127.0.0.1 (a free port) speaks enough of both providers' APIs for the
official SDKs to work against it unchanged:

- Twilio (``client.api.base_url = sim.url``): ``POST``/``GET
  /2010-04-01/Accounts/{AccountSid}/Messages.json`` (create; list with ``To``, ``From``,
  ``DateSent``, ``DateSent<``, ``DateSent>``, ``PageSize`` and ``next_page_uri`` paging, newest
  first) and ``GET .../Messages/{Sid}.json``, with basic auth ``AccountSid:AuthToken`` and errors
  in Twilio's ``{"code", "message", "more_info", "status"}`` shape;
- SendGrid (``SendGridAPIClient(key, host=sim.url)``): ``POST /v3/mail/send`` with Bearer auth,
  answering 202 with an ``X-Message-Id`` header, or SendGrid's ``{"errors": [...]}`` shape.

Faults (see ``Faults``) are drawn per request from a seeded RNG and can be changed while the
server runs. Every accepted message is recorded (``SimMessage``) so a test can assert "exactly
once" at the provider. The server is a ``ThreadingHTTPServer``: one thread per connection, so
latency and held responses never block other clients.

Usage::

    with ProviderSim(latency_ms=50, rate_503=0.05, seed=7) as sim:
        client = sim.twilio_client()
        ...
        assert sim.duplicates("twilio") == {}

Importable from tests and from ``bench/`` scripts that put ``tests/`` on ``sys.path``. The
pytest fixture ``provider_sim`` (tests/conftest.py) yields a started simulator.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import email.utils
import json
import math
import random
import re
import socket
import socketserver
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode

TWILIO = "twilio"
SENDGRID = "sendgrid"
PROVIDERS = (TWILIO, SENDGRID)

# Credentials the simulator accepts unless told otherwise (they look like the real ones).
TWILIO_ACCOUNT_SID = "AC" + "5" * 32
TWILIO_AUTH_TOKEN = "sim-twilio-auth-token"
SENDGRID_API_KEY = "SG.sim-sendgrid-key.0123456789"

# Twilio error codes the simulator knows how to word; others get a generic message.
TWILIO_ERRORS: dict[int, str] = {
    20003: "Authenticate",
    20404: "The requested resource {path} was not found",
    20429: "Too Many Requests",
    20500: "An internal server error has occurred",
    20503: "Service Unavailable",
    20504: "Gateway Timeout",
    21211: "The 'To' number {to} is not a valid phone number.",
    21408: "Permission to send an SMS has not been enabled for the region indicated by the "
    "'To' number: {to}.",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21610: "Attempt to send to unsubscribed recipient",
    21612: "The 'To' phone number: {to}, is not currently reachable using the 'From' phone "
    "number: {from_} via SMS.",
    21614: "'To' number is not a valid mobile number",
    21617: "The concatenated message body exceeds the 1600 character limit.",
}
TWILIO_MAX_BODY = 1600

_SENDGRID_HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_TWILIO_LIST = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Messages\.json$")
_TWILIO_ONE = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Messages/(?P<sid>[^/]+)\.json$")

# GSM 03.38: characters of the basic set count 1, of the extension table 2 (escape + char).
_GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXT = set("^{}\\[~]|€\f")


def sms_segments(body: str) -> int:
    """How many SMS segments ``body`` takes: GSM-7 160/153 per segment, else UCS-2 70/67."""
    if all(c in _GSM7_BASIC or c in _GSM7_EXT for c in body):
        units, single, multi = sum(2 if c in _GSM7_EXT else 1 for c in body), 160, 153
    else:
        # UCS-2 counts UTF-16 code units: characters outside the BMP (emoji) take two.
        units, single, multi = len(body.encode("utf-16-le")) // 2, 70, 67
    if units <= single:
        return 1
    return math.ceil(units / multi)


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Faults:
    """What the simulator does to requests. Rates are probabilities in [0, 1] per request.

    One uniform draw per request picks at most one of drop / timeout / 503 / 500 / 429 (so their
    rates must sum to at most 1). ``*_after_accept`` is the share (0..1, or a bool) of timeouts and
    drops that happen after the message was accepted and recorded: the provider has it, the
    client never hears so. Before acceptance nothing is recorded.
    """

    latency_ms: float = 0.0  # added to every request
    jitter_ms: float = 0.0  # plus uniform [0, jitter_ms)
    rate_429: float = 0.0  # 429 with Retry-After: retry_after_s
    retry_after_s: int = 1
    rate_503: float = 0.0
    rate_500: float = 0.0
    rate_timeout: float = 0.0  # hold the answer timeout_hold_s seconds
    timeout_hold_s: float = 5.0
    timeout_after_accept: float = 0.0  # after the hold: the real answer; before: 504, not recorded
    rate_drop: float = 0.0  # close the connection without an answer
    drop_after_accept: float = 0.0
    rate_limit_per_sec: float | None = None  # server-side token bucket per provider (sends only)
    rate_limit_burst: int | None = None  # bucket size; default max(1, rate_limit_per_sec)
    fault_reads: bool = False  # also inject faults into GETs (list, fetch); latency always applies

    def __post_init__(self) -> None:
        for name in ("rate_429", "rate_503", "rate_500", "rate_timeout", "rate_drop"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        for name in ("timeout_after_accept", "drop_after_accept"):
            value = float(getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a bool or in [0, 1], got {value!r}")
            object.__setattr__(self, name, value)
        total = self.rate_429 + self.rate_503 + self.rate_500 + self.rate_timeout + self.rate_drop
        if total > 1.0 + 1e-9:
            raise ValueError(f"fault rates sum to {total:.3f} > 1")
        if self.latency_ms < 0 or self.jitter_ms < 0 or self.timeout_hold_s < 0:
            raise ValueError("latency_ms, jitter_ms and timeout_hold_s must be >= 0")
        if self.retry_after_s < 0:
            raise ValueError("retry_after_s must be >= 0")
        if self.rate_limit_per_sec is not None and self.rate_limit_per_sec <= 0:
            raise ValueError("rate_limit_per_sec must be > 0 or None")
        if self.rate_limit_burst is not None and self.rate_limit_burst < 1:
            raise ValueError("rate_limit_burst must be >= 1 or None")


FAULT_KNOBS = frozenset(f.name for f in dataclasses.fields(Faults))


@dataclass
class SimMessage:
    """One accepted message, as the provider recorded it (one per email recipient)."""

    provider: str
    id: str  # Twilio sid ("SM..."); SendGrid X-Message-Id (shared by a request's recipients)
    to: str
    from_: str | None
    body: str | None = None  # SMS body; for email the text/plain part (also in .text)
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    custom_args: dict[str, str] = field(default_factory=dict)
    status_callback: str | None = None
    messaging_service_sid: str | None = None
    num_segments: int | None = None
    status: str = "queued"
    time: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    seq: int = 0  # order of acceptance, from 1
    raw: dict[str, Any] = field(default_factory=dict)  # the request's form fields or JSON


class _TokenBucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> float:
        """0.0 when a token was taken, else the seconds until one is available."""
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return 0.0
            return (1.0 - self.tokens) / self.rate


# --- the simulator ---------------------------------------------------------------------------


class ProviderSim:
    """A started-on-demand Twilio + SendGrid HTTP simulator. See the module docstring."""

    def __init__(
        self,
        *,
        faults: Faults | None = None,
        seed: int = 0,
        twilio_account_sid: str = TWILIO_ACCOUNT_SID,
        twilio_auth_token: str = TWILIO_AUTH_TOKEN,
        sendgrid_api_key: str = SENDGRID_API_KEY,
        twilio_recipient_errors: Mapping[str, int] | None = None,
        sendgrid_invalid_recipients: Iterable[str] = (),
        clock: Callable[[], dt.datetime] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        **fault_knobs: Any,
    ) -> None:
        unknown = set(fault_knobs) - FAULT_KNOBS
        if unknown:
            raise TypeError(f"unknown ProviderSim argument(s): {', '.join(sorted(unknown))}")
        self._faults = dataclasses.replace(faults or Faults(), **fault_knobs)
        self.twilio_account_sid = twilio_account_sid
        self.twilio_auth_token = twilio_auth_token
        self.sendgrid_api_key = sendgrid_api_key
        self._twilio_errors: dict[str, int] = dict(twilio_recipient_errors or {})
        self._sendgrid_invalid: set[str] = {e.lower() for e in sendgrid_invalid_recipients}
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._host, self._port = host, port
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._messages: list[SimMessage] = []
        self._twilio_by_sid: dict[str, SimMessage] = {}
        self._counts: dict[str, Counter[str]] = {p: Counter() for p in PROVIDERS}
        self._buckets: dict[str, _TokenBucket] = {}
        self._reset_buckets()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> ProviderSim:
        if self._server is not None:
            raise RuntimeError("ProviderSim already started")
        self._stopping.clear()
        self._server = _Server((self._host, self._port), _Handler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"provider-sim:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; held (timeout) answers are released and open connections closed."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_all_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ProviderSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("ProviderSim not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:40123``: Twilio's ``base_url``, SendGrid's ``host``."""
        return f"http://{self._host}:{self.port}"

    # SDK clients pointed at the simulator (imported lazily: the SDKs are test-only here)

    def twilio_client(self, timeout: float | None = None) -> Any:
        """A ``twilio.rest.Client`` with this simulator's credentials and ``api.base_url``."""
        from twilio.http.http_client import TwilioHttpClient
        from twilio.rest import Client

        client = Client(
            self.twilio_account_sid,
            self.twilio_auth_token,
            http_client=TwilioHttpClient(timeout=timeout),
        )
        client.api.base_url = self.url
        return client

    def sendgrid_client(self) -> Any:
        """A ``sendgrid.SendGridAPIClient`` with this simulator's key and host."""
        import sendgrid

        return sendgrid.SendGridAPIClient(self.sendgrid_api_key, host=self.url)

    # configuration at run time (thread-safe: requests take a snapshot when they arrive)

    @property
    def faults(self) -> Faults:
        return self._faults

    def set_faults(self, faults: Faults | None = None, **knobs: Any) -> Faults:
        """Replace the faults (``faults``) and/or change some knobs; returns the new settings."""
        unknown = set(knobs) - FAULT_KNOBS
        if unknown:
            raise TypeError(f"unknown fault knob(s): {', '.join(sorted(unknown))}")
        with self._lock:
            new = dataclasses.replace(faults or self._faults, **knobs)
            limits_changed = (new.rate_limit_per_sec, new.rate_limit_burst) != (
                self._faults.rate_limit_per_sec,
                self._faults.rate_limit_burst,
            )
            self._faults = new
            if limits_changed:
                self._reset_buckets()
        return new

    def clear_faults(self) -> Faults:
        """No faults, no latency, no rate limit."""
        return self.set_faults(Faults())

    def set_twilio_recipient_error(self, to: str, code: int | None) -> None:
        """Answer every create to ``to`` with Twilio error ``code`` (400); None removes it."""
        with self._lock:
            if code is None:
                self._twilio_errors.pop(to, None)
            else:
                self._twilio_errors[to] = code

    def set_sendgrid_invalid_recipient(self, email_address: str, invalid: bool = True) -> None:
        """Answer 400 "Does not contain a valid address." for requests that include it."""
        with self._lock:
            if invalid:
                self._sendgrid_invalid.add(email_address.lower())
            else:
                self._sendgrid_invalid.discard(email_address.lower())

    def set_message_status(self, sid: str, status: str) -> None:
        """Move a Twilio message on (``sent``, ``delivered``, ``failed``...) as list/fetch show it."""
        with self._lock:
            self._twilio_by_sid[sid].status = status

    def reset(self) -> None:
        """Forget recorded messages and request counts (faults and settings stay)."""
        with self._lock:
            self._messages.clear()
            self._twilio_by_sid.clear()
            for counter in self._counts.values():
                counter.clear()
            self._reset_buckets()

    # the recorder

    def accepted(self, provider: str | None = None) -> list[SimMessage]:
        """Copies of the accepted messages, in order of acceptance; one provider or both."""
        with self._lock:
            return [
                dataclasses.replace(m)
                for m in self._messages
                if provider is None or m.provider == provider
            ]

    def count_by(
        self, provider: str | None = None, fields: tuple[str, ...] = ("to",)
    ) -> Counter[tuple[Any, ...]]:
        """Accepted messages counted by the given fields, e.g. ``("to", "body")``."""
        return Counter(tuple(getattr(m, f) for f in fields) for m in self.accepted(provider))

    def count_by_recipient(self, provider: str | None = None) -> Counter[str]:
        """Accepted messages per recipient (phone number or email address)."""
        return Counter(m.to for m in self.accepted(provider))

    def duplicates(
        self, provider: str | None = None, fields: tuple[str, ...] = ("to", "body")
    ) -> dict[tuple[Any, ...], int]:
        """The keys (by ``fields``) accepted more than once, with their counts; {} if none.

        For email, ``body`` is the text part; use ``("to", "subject")`` or ``("to", "html")``
        as the case needs.
        """
        return {k: n for k, n in self.count_by(provider, fields).items() if n > 1}

    def request_counts(self, provider: str | None = None) -> Counter[str]:
        """Requests seen, by kind.

        Keys: ``requests`` (all), ``sends`` (create / mail send), ``reads`` (list / fetch),
        ``accepted`` (messages recorded; one per email recipient), ``rejected`` (4xx validation
        or recipient errors), ``unauthorized``, ``not_found``, ``rate_limited`` (token bucket),
        ``fault_429``, ``fault_503``, ``fault_500``, ``fault_timeout``, ``fault_drop``, and
        ``fault_timeout_accepted`` / ``fault_drop_accepted`` for those after acceptance.
        """
        with self._lock:
            if provider is not None:
                return Counter(self._counts[provider])
            total: Counter[str] = Counter()
            for counter in self._counts.values():
                total.update(counter)
            return total

    # internals used by the handler

    def _reset_buckets(self) -> None:
        rate, burst = self._faults.rate_limit_per_sec, self._faults.rate_limit_burst
        self._buckets = {}
        if rate is not None:
            size = burst if burst is not None else max(1, int(rate))
            self._buckets = {p: _TokenBucket(rate, size) for p in PROVIDERS}

    def _count(self, provider: str, *kinds: str) -> None:
        with self._lock:
            self._counts[provider].update(kinds)

    def _random(self) -> float:
        with self._lock:
            return self._rng.random()

    def _rate_limited(self, provider: str) -> float:
        bucket = self._buckets.get(provider)
        return bucket.take() if bucket is not None else 0.0

    def _new_twilio_sid(self) -> str:
        with self._lock:
            return "SM" + f"{self._rng.getrandbits(128):032x}"

    def _new_sendgrid_id(self) -> str:
        with self._lock:
            raw = self._rng.getrandbits(128).to_bytes(16, "big")
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    def _record(self, messages: list[SimMessage]) -> None:
        with self._lock:
            for m in messages:
                m.seq = len(self._messages) + 1
                self._messages.append(m)
                if m.provider == TWILIO:
                    self._twilio_by_sid[m.id] = m
            self._counts[messages[0].provider]["accepted"] += len(messages)

    def _twilio_error_for(self, to: str) -> int | None:
        with self._lock:
            return self._twilio_errors.get(to)

    def _sendgrid_is_invalid(self, address: str) -> bool:
        with self._lock:
            return address.lower() in self._sendgrid_invalid

    def _twilio_newest_first(
        self, keep: Callable[[SimMessage], bool], limit: int
    ) -> list[SimMessage]:
        """Copies of up to ``limit`` Twilio messages that ``keep`` accepts, newest first."""
        found: list[SimMessage] = []
        with self._lock:
            for m in reversed(self._messages):
                if m.provider == TWILIO and keep(m):
                    found.append(dataclasses.replace(m))
                    if len(found) == limit:
                        break
        return found

    def _twilio_get(self, sid: str) -> SimMessage | None:
        with self._lock:
            m = self._twilio_by_sid.get(sid)
            return dataclasses.replace(m) if m is not None else None


# --- in a child process ----------------------------------------------------------------------

_REMOTE_CALLS = frozenset(
    {
        "set_faults",
        "clear_faults",
        "set_twilio_recipient_error",
        "set_sendgrid_invalid_recipient",
        "set_message_status",
        "reset",
        "accepted",
        "count_by",
        "count_by_recipient",
        "duplicates",
        "request_counts",
    }
)


class RemoteProviderSim:
    """The same simulator in a child process, driven through a pipe; same methods and knobs.

    For benchmarks: a simulator in the measuring process shares its GIL with the client, which
    then costs the client about half its throughput. Constructor arguments are those of
    ``ProviderSim`` and must pickle (so no ``clock``). ``faults`` is a method here.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self.twilio_account_sid = kwargs.get("twilio_account_sid", TWILIO_ACCOUNT_SID)
        self.twilio_auth_token = kwargs.get("twilio_auth_token", TWILIO_AUTH_TOKEN)
        self.sendgrid_api_key = kwargs.get("sendgrid_api_key", SENDGRID_API_KEY)
        self._conn: Any = None
        self._proc: Any = None
        self._lock = threading.Lock()
        self.url = ""
        self.port = 0

    def start(self) -> RemoteProviderSim:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # no fork of a threaded parent
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_remote_main, args=(child, self._kwargs), daemon=True)
        self._proc.start()
        child.close()
        ok, value = self._conn.recv()
        if not ok:
            self._proc.join(timeout=5)
            raise RuntimeError(f"provider simulator failed to start: {value}")
        self.url, self.port = value
        return self

    def stop(self) -> None:
        if self._proc is None:
            return
        with self._lock:
            try:
                self._conn.send(None)
                self._conn.recv()
            except (EOFError, OSError):
                pass
        self._proc.join(timeout=10)
        if self._proc.is_alive():
            self._proc.kill()
        self._proc = None

    def __enter__(self) -> RemoteProviderSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    twilio_client = ProviderSim.twilio_client
    sendgrid_client = ProviderSim.sendgrid_client

    def faults(self) -> Faults:
        return self._call("faults")

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name not in _REMOTE_CALLS:
            raise AttributeError(name)
        return lambda *args, **kwargs: self._call(name, *args, **kwargs)

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self._conn.send((name, args, kwargs))
            ok, value = self._conn.recv()
        if not ok:
            raise value
        return value


def _remote_main(conn: Any, kwargs: dict[str, Any]) -> None:
    try:
        sim = ProviderSim(**kwargs).start()
    except Exception as exc:  # reported to the parent, which raises
        conn.send((False, repr(exc)))
        return
    conn.send((True, (sim.url, sim.port)))
    try:
        while (request := conn.recv()) is not None:
            name, args, call_kwargs = request
            try:
                if name == "faults":
                    result: Any = sim.faults
                else:
                    result = getattr(sim, name)(*args, **call_kwargs)
                conn.send((True, result))
            except Exception as exc:  # sent back and raised in the parent
                conn.send((False, exc))
    except EOFError:  # the parent went away
        pass
    finally:
        sim.stop()
    with contextlib.suppress(OSError):
        conn.send((True, None))


# --- HTTP ------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type, sim: ProviderSim) -> None:
        self.sim = sim
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can stall on DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = host, port

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that gave up mid-answer is part of the job; anything else is a bug to print
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def track(self, conn: socket.socket, alive: bool) -> None:
        with self._conn_lock:
            (self._connections.add if alive else self._connections.discard)(conn)

    def close_all_connections(self) -> None:
        with self._conn_lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Drop(Exception):
    """Close the connection without an answer."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' sessions expect
    server_version = "provider-sim"
    sys_version = ""
    timeout = 60  # an idle keep-alive connection's thread ends after this
    wbufsize = 65536  # headers and body leave in one write, flushed after each request
    server: _Server

    def setup(self) -> None:
        super().setup()
        # without this, Nagle + delayed ACK add ~40 ms to every keep-alive answer
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    # dispatch

    def _handle(self, method: str) -> None:
        sim = self.server.sim
        faults = sim.faults  # one consistent snapshot for this request
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        raw_body = self.rfile.read(length) if length else b""
        try:
            route = self._route(method, path)
            if route is None:
                self._send_json(404, {"errors": [{"message": "not found", "field": None}]})
                return
            provider, action, match = route
            is_send = action in ("twilio_create", "sendgrid_send")
            sim._count(provider, "requests", "sends" if is_send else "reads")
            self._latency(faults)
            if not self._authorized(provider, match):
                sim._count(provider, "unauthorized")
                self._unauthorized(provider)
                return
            if is_send:
                wait = sim._rate_limited(provider)
                if wait > 0:
                    sim._count(provider, "rate_limited")
                    self._fail(provider, 429, 20429, retry_after=max(1, math.ceil(wait)))
                    return
            fault = self._draw_fault(faults) if (is_send or faults.fault_reads) else None
            after_accept = False
            if fault == "timeout":
                after_accept = sim._random() < faults.timeout_after_accept
            elif fault == "drop":
                after_accept = sim._random() < faults.drop_after_accept
            if fault is not None and not after_accept:
                sim._count(provider, f"fault_{fault}")
                self._before_accept_fault(provider, fault, faults)
                return
            answer = self._serve(provider, action, match, query, raw_body)
            if fault is not None:  # the provider did the work; the answer gets lost or late
                sim._count(provider, f"fault_{fault}", f"fault_{fault}_accepted")
                if fault == "drop":
                    raise _Drop
                if sim._stopping.wait(faults.timeout_hold_s):
                    raise _Drop  # stopped while holding: the answer is lost
            answer()
        except _Drop:
            self.close_connection = True
        except OSError:  # the client went away (gave up on a held answer, or stop())
            self.close_connection = True

    def _route(self, method: str, path: str) -> tuple[str, str, re.Match[str] | None] | None:
        if path == "/v3/mail/send" and method == "POST":
            return SENDGRID, "sendgrid_send", None
        m = _TWILIO_LIST.match(path)
        if m:
            if method in ("POST", "GET"):
                return TWILIO, "twilio_create" if method == "POST" else "twilio_list", m
            return None
        m = _TWILIO_ONE.match(path)
        if m and method == "GET":
            return TWILIO, "twilio_fetch", m
        return None

    def _latency(self, faults: Faults) -> None:
        delay = faults.latency_ms
        if faults.jitter_ms:
            delay += self.server.sim._random() * faults.jitter_ms
        if delay > 0:
            self.server.sim._stopping.wait(delay / 1000.0)

    def _draw_fault(self, faults: Faults) -> str | None:
        r = self.server.sim._random()
        for kind, rate in (
            ("drop", faults.rate_drop),
            ("timeout", faults.rate_timeout),
            ("503", faults.rate_503),
            ("500", faults.rate_500),
            ("429", faults.rate_429),
        ):
            if r < rate:
                return kind
            r -= rate
        return None

    def _before_accept_fault(self, provider: str, fault: str, faults: Faults) -> None:
        if fault == "drop":
            raise _Drop
        if fault == "timeout":
            if self.server.sim._stopping.wait(faults.timeout_hold_s):
                raise _Drop
            self._fail(provider, 504, 20504)
        elif fault == "429":
            self._fail(provider, 429, 20429, retry_after=faults.retry_after_s)
        else:
            status = int(fault)
            self._fail(provider, status, 20000 + status)

    def _serve(
        self, provider: str, action: str, match: re.Match[str] | None, query: str, body: bytes
    ) -> Callable[[], None]:
        """Do the provider's work now; return the function that writes the answer."""
        if action == "twilio_create":
            return self._twilio_create(match, body)
        if action == "twilio_list":
            return self._twilio_list(match, query)
        if action == "twilio_fetch":
            return self._twilio_fetch(match)
        return self._sendgrid_send(body)

    # auth

    def _authorized(self, provider: str, match: re.Match[str] | None) -> bool:
        sim = self.server.sim
        header = self.headers.get("Authorization") or ""
        if provider == SENDGRID:
            return header == f"Bearer {sim.sendgrid_api_key}"
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return (
            user == sim.twilio_account_sid
            and password == sim.twilio_auth_token
            and match is not None
            and match["account"] == sim.twilio_account_sid
        )

    def _unauthorized(self, provider: str) -> None:
        if provider == SENDGRID:
            self._send_json(
                401,
                {
                    "errors": [
                        {
                            "message": "The provided authorization grant is invalid, expired, "
                            "or revoked",
                            "field": None,
                            "help": None,
                        }
                    ]
                },
            )
        else:
            self._fail(
                TWILIO, 401, 20003, extra_headers={"WWW-Authenticate": 'Basic realm="Twilio API"'}
            )

    # Twilio

    def _twilio_create(self, match: re.Match[str] | None, body: bytes) -> Callable[[], None]:
        sim = self.server.sim
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()}
        to, from_ = form.get("To", ""), form.get("From") or None
        service = form.get("MessagingServiceSid") or None
        text = form.get("Body", "")
        code: int | None = None
        if not to:
            code = 21604
        elif from_ is None and service is None:
            code = 21603
        elif not text and not form.get("MediaUrl") and not form.get("ContentSid"):
            code = 21602
        elif len(text) > TWILIO_MAX_BODY:
            code = 21617
        elif not _E164.match(to.removeprefix("whatsapp:")):
            code = 21211
        else:
            code = sim._twilio_error_for(to)
        if code is not None:
            sim._count(TWILIO, "rejected")
            return lambda: self._fail(TWILIO, 400, code, to=to, from_=from_ or "")
        now = sim._clock()
        message = SimMessage(
            provider=TWILIO,
            id=sim._new_twilio_sid(),
            to=to,
            from_=from_,
            body=text,
            status_callback=form.get("StatusCallback") or None,
            messaging_service_sid=service,
            num_segments=sms_segments(text),
            status="queued",
            time=now,
            raw=form,
        )
        sim._record([message])
        resource = self._twilio_resource(message)
        return lambda: self._send_json(201, resource)

    def _twilio_fetch(self, match: re.Match[str] | None) -> Callable[[], None]:
        assert match is not None
        message = self.server.sim._twilio_get(match["sid"])
        if message is None:
            self.server.sim._count(TWILIO, "not_found")
            return lambda: self._fail(TWILIO, 404, 20404)
        resource = self._twilio_resource(message)
        return lambda: self._send_json(200, resource)

    def _twilio_list(self, match: re.Match[str] | None, query: str) -> Callable[[], None]:
        assert match is not None
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        try:
            page_size = max(1, min(1000, int(params.get("PageSize") or 50)))
            page = int(params.get("Page") or 0)
            token = params.get("PageToken") or ""
            before_seq = int(token[2:]) if token.startswith("PA") else None
            on = _parse_date_filter(params.get("DateSent"))
            upto = _parse_date_filter(params.get("DateSent<"))
            since = _parse_date_filter(params.get("DateSent>"))
        except ValueError:
            return lambda: self._fail(TWILIO, 400, 20001, message="Invalid list parameters")
        # Newest first, as Twilio lists; the page token is the position of the last one shown,
        # so pages stay stable while new messages arrive.
        candidates = self.server.sim._twilio_newest_first(
            lambda m: (
                (before_seq is None or m.seq < before_seq)
                and ("To" not in params or m.to == params["To"])
                and ("From" not in params or m.from_ == params["From"])
                and (on is None or _date_matches(m.time, on, "="))
                and (upto is None or _date_matches(m.time, upto, "<"))
                and (since is None or _date_matches(m.time, since, ">"))
            ),
            limit=page_size + 1,
        )
        shown = candidates[:page_size]
        filters = {
            k: params[k]
            for k in ("To", "From", "DateSent", "DateSent<", "DateSent>")
            if k in params
        }
        base = match.group(0)

        def uri(extra: dict[str, Any]) -> str:
            return base + "?" + urlencode({**filters, "PageSize": page_size, **extra})

        next_uri = None
        if len(candidates) > page_size:
            next_uri = uri({"Page": page + 1, "PageToken": f"PA{shown[-1].seq}"})
        payload = {
            "messages": [self._twilio_resource(m) for m in shown],
            "end": page * page_size + max(0, len(shown) - 1),
            "first_page_uri": uri({"Page": 0}),
            "next_page_uri": next_uri,
            "page": page,
            "page_size": page_size,
            "previous_page_uri": uri({"Page": page - 1}) if page > 0 else None,
            "start": page * page_size,
            "uri": base + ("?" + query if query else ""),
        }
        return lambda: self._send_json(200, payload)

    def _twilio_resource(self, m: SimMessage) -> dict[str, Any]:
        sim = self.server.sim
        uri = f"/2010-04-01/Accounts/{sim.twilio_account_sid}/Messages/{m.id}.json"
        stamp = email.utils.format_datetime(m.time.astimezone(dt.UTC))
        return {
            "account_sid": sim.twilio_account_sid,
            "api_version": "2010-04-01",
            "body": m.body,
            "date_created": stamp,
            "date_sent": stamp,
            "date_updated": stamp,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": m.from_,
            "messaging_service_sid": m.messaging_service_sid,
            "num_media": "0",
            "num_segments": str(m.num_segments or 1),
            "price": None,
            "price_unit": "USD",
            "sid": m.id,
            "status": m.status,
            "subresource_uris": {"media": uri.removesuffix(".json") + "/Media.json"},
            "to": m.to,
            "uri": uri,
        }

    # SendGrid

    def _sendgrid_send(self, body: bytes) -> Callable[[], None]:
        sim = self.server.sim
        try:
            mail = json.loads(body.decode("utf-8"))
            if not isinstance(mail, dict):
                raise ValueError
        except (ValueError, UnicodeDecodeError):
            sim._count(SENDGRID, "rejected")
            return lambda: self._sendgrid_errors([("Bad Request", None, None)])
        errors = _sendgrid_validate(mail)
        recipients: list[tuple[dict[str, Any], str]] = []
        if not errors:
            for i, p in enumerate(mail["personalizations"]):
                for j, to in enumerate(p["to"]):
                    if sim._sendgrid_is_invalid(to["email"]):
                        errors.append(
                            (
                                "Does not contain a valid address.",
                                f"personalizations.{i}.to.{j}.email",
                                f"{_SENDGRID_HELP}#message.personalizations.to",
                            )
                        )
                    recipients.append((p, to["email"]))
        if errors:
            sim._count(SENDGRID, "rejected")
            return lambda: self._sendgrid_errors(errors)
        message_id = sim._new_sendgrid_id()
        now = sim._clock()
        content = {c.get("type"): c.get("value") for c in mail.get("content") or []}
        records = [
            SimMessage(
                provider=SENDGRID,
                id=message_id,
                to=address,
                from_=(p.get("from") or mail["from"])["email"],
                body=content.get("text/plain"),
                subject=p.get("subject", mail.get("subject")),
                html=content.get("text/html"),
                text=content.get("text/plain"),
                headers={**(mail.get("headers") or {}), **(p.get("headers") or {})},
                custom_args={**(mail.get("custom_args") or {}), **(p.get("custom_args") or {})},
                status="accepted",
                time=now,
                raw=mail,
            )
            for p, address in recipients
        ]
        sim._record(records)
        return lambda: self._send(202, b"", {"X-Message-Id": message_id})

    def _sendgrid_errors(self, errors: list[tuple[str, str | None, str | None]]) -> None:
        self._send_json(
            400,
            {"errors": [{"message": m, "field": f, "help": h} for m, f, h in errors]},
        )

    # answers

    def _fail(
        self,
        provider: str,
        status: int,
        code: int,
        *,
        retry_after: int | None = None,
        message: str | None = None,
        extra_headers: dict[str, str] | None = None,
        **fmt: str,
    ) -> None:
        headers = dict(extra_headers or {})
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        if provider == SENDGRID:
            words = {
                429: "too many requests",
                500: "internal server error",
                503: "service unavailable",
                504: "gateway timeout",
            }.get(status, message or "error")
            self._send_json(
                status, {"errors": [{"message": words, "field": None, "help": None}]}, headers
            )
            return
        if message is None:
            template = TWILIO_ERRORS.get(code, f"Simulated Twilio error {code}")
            values = {"path": self.path.partition("?")[0], "to": "", "from_": "", **fmt}
            message = template.format(**values)
        self._send_json(
            status,
            {
                "code": code,
                "message": message,
                "more_info": f"https://www.twilio.com/docs/errors/{code}",
                "status": status,
            },
            headers,
        )

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode("utf-8")
        self._send(
            status, body, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        )

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)
        self.wfile.flush()  # here, so a client that went away is handled like one that timed out


def _sendgrid_validate(mail: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
    """SendGrid's 400 checks for the fields Caretouch sends: (message, field, help)."""
    errors: list[tuple[str, str | None, str | None]] = []
    personalizations = mail.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        errors.append(
            (
                "The personalizations field is required and must have at least one "
                "personalization.",
                "personalizations",
                f"{_SENDGRID_HELP}#-Personalizations-Errors",
            )
        )
        personalizations = []
    for i, p in enumerate(personalizations):
        to = p.get("to") if isinstance(p, dict) else None
        if not isinstance(to, list) or not to:
            errors.append(
                (
                    "The to array is required for all personalization objects, and must have at "
                    "least one email object with a valid email address.",
                    f"personalizations.{i}.to",
                    f"{_SENDGRID_HELP}#message.personalizations.to",
                )
            )
            continue
        for j, recipient in enumerate(to):
            address = recipient.get("email") if isinstance(recipient, dict) else None
            if not isinstance(address, str) or not _EMAIL.match(address):
                errors.append(
                    (
                        "Does not contain a valid address.",
                        f"personalizations.{i}.to.{j}.email",
                        f"{_SENDGRID_HELP}#message.personalizations.to",
                    )
                )
    sender = mail.get("from")
    if not isinstance(sender, dict) or not isinstance(sender.get("email"), str):
        errors.append(
            (
                "The from object must be provided for every email send. It is an object that "
                "requires the email parameter, but may also contain a name parameter.",
                "from.email",
                f"{_SENDGRID_HELP}#message.from",
            )
        )
    elif not _EMAIL.match(sender["email"]):
        errors.append(
            ("Does not contain a valid address.", "from.email", f"{_SENDGRID_HELP}#message.from")
        )
    has_template = bool(mail.get("template_id"))
    every_has_subject = bool(personalizations) and all(
        isinstance(p, dict) and p.get("subject") for p in personalizations
    )
    if not has_template and not mail.get("subject") and not every_has_subject:
        errors.append(
            (
                "The subject is required. You can get around this requirement if you use a "
                "template with a subject defined or if every personalization has a subject "
                "defined.",
                "subject",
                f"{_SENDGRID_HELP}#message.subject",
            )
        )
    content = mail.get("content")
    if not has_template and (not isinstance(content, list) or not content):
        errors.append(
            (
                "Unless a valid template_id is provided, the content parameter is required. "
                "There must be at least one defined content block. We typically suggest both "
                "text/plain and text/html blocks are included, but only one block is required.",
                "content",
                f"{_SENDGRID_HELP}#message.content",
            )
        )
    for k, block in enumerate(content if isinstance(content, list) else []):
        if not isinstance(block, dict) or not block.get("type") or not block.get("value"):
            errors.append(
                (
                    "The content value must be a string at least one character in length.",
                    f"content.{k}.value",
                    f"{_SENDGRID_HELP}#message.content.value",
                )
            )
    return errors


def _parse_date_filter(value: str | None) -> dt.date | dt.datetime | None:
    """Twilio's DateSent values: ``YYYY-MM-DD`` or, as the SDK sends datetimes, ISO 8601 UTC."""
    if value is None or value == "":
        return None
    if len(value) == 10:
        return dt.date.fromisoformat(value)
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _date_matches(sent: dt.datetime, bound: dt.date | dt.datetime, op: str) -> bool:
    """``=``: same UTC day; ``<``: on or before; ``>``: on or after (inclusive, as Twilio).

    A date bound compares days; a datetime bound compares instants (``=`` still compares days).
    """
    sent = sent.astimezone(dt.UTC)
    if isinstance(bound, dt.datetime) and op != "=":
        return sent <= bound if op == "<" else sent >= bound
    day = bound.astimezone(dt.UTC).date() if isinstance(bound, dt.datetime) else bound
    if op == "=":
        return sent.date() == day
    return sent.date() <= day if op == "<" else sent.date() >= day
