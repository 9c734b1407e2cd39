"""The audit view in a real browser: headless Chromium (Debian's package) driven by Playwright.

The app is served by uvicorn on 127.0.0.1, mounted under /care as Airflow mounts it. Without
Chromium or Playwright the test is skipped with the reason, except under CI=true, where it
fails: CI must prove the browser path. ``$CARE_CHROMIUM`` names another Chromium binary. A screenshot of each page lands in
tests/web/.artifacts/ (gitignored).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from test_audit_web import HOSTILE_NAME, TOKEN, TOKENS, Ledger, fill_ledger, raw_pii

from caretouch.ledger.audit import Filters, touches
from caretouch.web.app import create_audit_app
from conftest import in_ci

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).with_name(".artifacts")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium (never `playwright install`: nothing can be downloaded here)."""
    found = os.environ.get("CARE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    reason = None
    if not Path(found).exists():
        reason = "Chromium not found (apt-get install chromium, or set CARE_CHROMIUM)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "Playwright for Python is not installed (pip install -e '.[dev]')"
    if reason is not None:
        if in_ci():
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    return found


class Server:
    """uvicorn in a background thread on a free port of 127.0.0.1."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.socket.close()


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Ledger]]:
    monkeypatch.setenv("CARE_AUDIT_TOKENS", TOKENS)
    monkeypatch.setenv("CARE_ANCHOR_KEY", "web-test-anchor-key-not-a-secret")
    ledger = fill_ledger(tmp_path)
    # Mounted under /care, as Airflow's api-server mounts the plugin's app.
    outer = FastAPI()
    outer.mount("/care", create_audit_app(ledger.url, ledger.anchors))
    with Server(outer) as base:
        yield base, ledger
    ledger.store.dispose()


def test_auditor_logs_in_searches_and_reads_a_touch(
    chromium: str, served: tuple[str, Ledger]
) -> None:
    from playwright.sync_api import sync_playwright

    base, ledger = served
    ARTIFACTS.mkdir(exist_ok=True)
    sent = [r for r in touches(ledger.store, Filters(customer_id="C6")) if r["status"] == "sent"]
    assert sent

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            # Without logging in: 401, with a way to log in.
            anonymous = browser.new_context()
            page = anonymous.new_page()
            answer = page.goto(f"{base}/care/audit/verify")
            assert answer is not None and answer.status == 401
            assert page.get_by_text("Authentication required").first.is_visible()
            assert page.goto(f"{base}/care/audit/export.csv").status == 401  # type: ignore[union-attr]
            anonymous.close()

            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            pages: dict[str, str] = {}
            page.goto(f"{base}/care/audit?customer=C6")
            page.click("a.login")
            assert page.url.startswith(f"{base}/care/audit/login")
            page.fill("input[name=token]", "not-the-token-at-all")
            page.click("button[type=submit]")
            assert page.get_by_text("That token is not recognised.").is_visible()
            page.fill("input[name=token]", TOKEN)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/care/audit?customer=C6")
            [cookie] = context.cookies()
            assert cookie["httpOnly"] and cookie["path"] == "/care/audit"
            assert TOKEN not in cookie["value"]
            pages["after-login"] = page.content()

            # Search a customer through the form.
            page.fill("input[name=customer]", "C1")
            page.select_option("select[name=status]", "sent")
            page.click("form.filters button[type=submit]")
            page.wait_for_url("**/care/audit?customer=C1&*status=sent*")
            rows = page.locator("table tbody tr")
            assert rows.count() == 1
            assert rows.first.locator("td").nth(3).inner_text() == "C1"
            pages["search"] = page.content()
            page.screenshot(path=str(ARTIFACTS / "audit-search.png"), full_page=True)

            # The customer's timeline, then a touch of the hostile-named customer.
            page.click("table tbody tr >> nth=0 >> td >> nth=3 >> a")
            page.wait_for_url("**/care/audit/customers/C1")
            assert page.locator("table tbody tr").count() == 2
            pages["timeline"] = page.content()
            page.goto(f"{base}/care/audit?customer=C6")
            page.click(f"a[href='/care/audit/touches/{sent[0]['touch_id']}']")
            page.wait_for_url(f"**/care/audit/touches/{sent[0]['touch_id']}")
            message = page.locator("pre.message").first.inner_text()
            assert HOSTILE_NAME in message  # shown as text, not run
            assert page.evaluate("document.scripts.length") == 0
            history = page.locator("table.history tbody tr")
            assert [history.nth(i).locator(".status").inner_text() for i in range(3)] == [
                "planned",
                "sending",
                "sent",
            ]
            assert page.get_by_text("+86 139****0006").first.is_visible()
            pages["touch"] = page.content()
            page.screenshot(path=str(ARTIFACTS / "audit-touch.png"), full_page=True)

            # An email: the HTML part renders inside the sandboxed iframe.
            [email] = [r for r in touches(ledger.store, Filters(customer_id="C5"))]
            page.goto(f"{base}/care/audit/touches/{email['touch_id']}")
            frame = page.frame_locator("iframe.email")
            assert "Caretouch Insurance" in frame.locator("body").inner_text()
            assert page.locator("iframe.email").get_attribute("sandbox") == ""
            pages["email"] = page.content()
            page.screenshot(path=str(ARTIFACTS / "audit-email.png"), full_page=True)
            # Full-page shots leave the sandboxed (out-of-process) frame blank: shoot it alone.
            page.locator("iframe.email").screenshot(path=str(ARTIFACTS / "audit-email-html.png"))

            page.click("text=Verify")
            assert page.get_by_text("The ledger verifies.").is_visible()
            pages["verify"] = page.content()

            for name, html in pages.items():
                assert not raw_pii(html), (name, raw_pii(html))
            context.close()
        finally:
            browser.close()
