"""Prism (``@stoplight/prism-cli``) serving the providers' own OpenAPI contracts.

Prism validates every request against the contract and logs each violation. ``make test``
installs it under ``.tools/prism`` (``make prism``); the contract tests skip with a reason
where npm is unavailable, and fail under ``CI=true``.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRISM = ROOT / ".tools" / "prism" / "node_modules" / ".bin" / "prism"
# The providers' own OpenAPI descriptions, kept in the repository (tests/provider_contracts/
# README.md says where they come from) so a clean clone anywhere has them.
CONTRACTS = Path(os.environ.get("CARE_PROVIDER_CONTRACTS", ROOT / "tests" / "provider_contracts"))
TWILIO_CONTRACT = CONTRACTS / "twilio_messages.json"
SENDGRID_CONTRACT = CONTRACTS / "sendgrid_mail_send.json"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrismServer:
    """One ``prism mock`` process; its log is read line by line into ``lines``."""

    def __init__(self, contract: Path) -> None:
        self.contract = contract
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 60.0) -> PrismServer:
        self.proc = subprocess.Popen(
            [str(PRISM), "mock", "-h", "127.0.0.1", "-p", str(self.port), str(self.contract)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"Prism did not start: {self.log()[-2000:]}")
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = _ANSI.sub("", raw.rstrip("\n"))
            with self._lock:
                self.lines.append(line)
            if "Prism is listening" in line:
                self._ready.set()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            self.proc.wait(timeout=10)

    def mark(self) -> int:
        """The log position now; ``violations(since=mark)`` reads what came after."""
        time.sleep(0.2)  # let the reader thread catch up with the previous request
        with self._lock:
            return len(self.lines)

    def requests(self, since: int = 0) -> list[str]:
        time.sleep(0.3)
        with self._lock:
            return [line for line in self.lines[since:] if "Request received" in line]

    def violations(self, since: int = 0) -> list[str]:
        """Every validation failure of a request Prism logged after ``since``."""
        time.sleep(0.3)
        with self._lock:
            chunk = self.lines[since:]
        # Only what we sent: Prism also checks its own (generated) answers, and the trimmed
        # contracts' examples do not always pass their own formats.
        return [
            line
            for line in chunk
            if "Violation: request" in line or "did not pass the validation rules" in line
        ]

    def log(self) -> str:
        with self._lock:
            return "\n".join(self.lines)
