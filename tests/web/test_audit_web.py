"""The auditor's web view: authentication on every page, search, pagination, a touch's detail,
verification, CSV export, and no unmasked phone number or email address anywhere.

The ledger is filled by a real run (as in tests/ledger/test_audit.py); the app is driven through
FastAPI's TestClient. The Airflow JWT path runs Airflow's own API app with the plugin mounted.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import Engine as SAEngine
from sqlalchemy import event, text

import airflow_env
from caretouch.config import CareConfig
from caretouch.errors import ConfigurationError
from caretouch.ledger.audit import EXPORT_COLUMNS, Filters, touches
from caretouch.run.day import run_day
from caretouch.run.engine import open_engine
from caretouch.schema.migrate import upgrade
from caretouch.store.db import Store, open_store
from caretouch.web.app import create_audit_app
from caretouch.web.auth import SESSION_COOKIE, AuditAuth, AuditTokens
from conftest import RULES_DIR, TEMPLATES_DIR, customer_row, event_row, load_rows, utc

ROOT = Path(__file__).resolve().parents[2]
DAY = dt.date(2026, 11, 23)
NOON = utc(2026, 11, 23, 12)
KEY = "web-test-anchor-key-not-a-secret"
TOKEN = "alice-audit-token-0123456789"
OTHER_TOKEN = "bob-audit-token-9876543210xyz"
TOKENS = f"alice:{TOKEN}, bob:{OTHER_TOKEN}"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
HOSTILE_NAME = "<script>alert('x')</script>李雷"
# A name holding an address: the body rendered from it must still show it masked.
ADDRESS_NAME = "Lee lee.contact@example.org"

PAGES = [
    "/audit",
    "/audit?customer=C1&channel=sms&status=sent&from=2026-11-01&to=2026-11-30",
    "/audit/customers/C1",
    "/audit/touches/1",
    "/audit/verify",
    "/audit/export.csv",
    "/audit/export.csv?customer=C1",
]

PHONE_RX = re.compile(r"\+\d{8,}")
EMAIL_RX = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")


def raw_pii(text: str) -> list[str]:
    """Unmasked phone numbers and email addresses in ``text``."""
    return PHONE_RX.findall(text) + [m for m in EMAIL_RX.findall(text) if "*" not in m]


def assert_no_raw_pii(text: str, where: str) -> None:
    found = raw_pii(text)
    assert not found, f"{where}: unmasked personal data {found}"


@dataclass
class Ledger:
    store: Store
    url: str
    anchors: Path


def fill_ledger(directory: Path) -> Ledger:
    """A store with a day run through it: SMS and email sends, suppressions, an anchor."""
    url = f"sqlite:///{directory / 'care.db'}"
    store = open_store(url)
    upgrade(store)
    customers = [
        customer_row(f"C{i}", phone=f"+86138{i:08d}", email=f"customer.{i}@example.com")
        for i in range(5)
    ]
    customers += [
        # Email only: its touch has an HTML part.
        customer_row("C5", consent_sms="false", email="mei.li@example.com", locale="en"),
        customer_row("C6", name=HOSTILE_NAME, phone="+8613900000006", locale="en"),
        customer_row("C7", name=ADDRESS_NAME, phone="+8613900000007", locale="en"),
        customer_row("NOPE", consent_sms="false", consent_email="false"),
    ]
    load_rows(store, customers=customers, events=[event_row("E1", "C1")])
    anchors = directory / "anchors.jsonl"
    config = CareConfig(url, RULES_DIR, TEMPLATES_DIR, directory / "outbox", anchors)
    engine = open_engine(config, store=store)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CARE_ANCHOR_KEY", KEY)
        run_day(engine, DAY, run_id="web-audit-test", now=NOON)  # writes an anchor at its end
    return Ledger(store, url, anchors)


@pytest.fixture(scope="module")
def env() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CARE_ANCHOR_KEY", KEY)
        mp.setenv("CARE_AUDIT_TOKENS", TOKENS)
        yield mp


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory, env: pytest.MonkeyPatch) -> Iterator[Ledger]:
    filled = fill_ledger(tmp_path_factory.mktemp("web-ledger"))
    yield filled
    filled.store.dispose()


@pytest.fixture(scope="module")
def client(ledger: Ledger) -> Iterator[TestClient]:
    # Default auth: tokens from $CARE_AUDIT_TOKENS (Airflow's login is the plugin's to add).
    with TestClient(create_audit_app(ledger.url, ledger.anchors)) as c:
        yield c


def all_rows(ledger: Ledger) -> list[dict[str, object]]:
    return list(touches(ledger.store, Filters()))


def touch_ids(html: str) -> list[int]:
    return [
        int(i) for i in re.findall(r'<td class="num"><a href="[^"]*/audit/touches/(\d+)"', html)
    ]


def touch_of(ledger: Ledger, customer_id: str, status: str = "sent") -> dict[str, object]:
    rows = list(touches(ledger.store, Filters(customer_id=customer_id, status=status)))
    assert rows, (customer_id, status)
    return rows[0]


# -- authentication --------------------------------------------------------------------------


def test_the_fixture_holds_raw_personal_data(ledger: Ledger) -> None:
    # Otherwise the scans below could not fail.
    with ledger.store.engine.connect() as conn:
        recipients = conn.execute(text("SELECT recipient FROM touch_attempts")).scalars().all()
        bodies = " ".join(conn.execute(text("SELECT body FROM touch_attempts")).scalars().all())
    assert "+8613800000002" in recipients and "mei.li@example.com" in recipients
    assert "lee.contact@example.org" in bodies and HOSTILE_NAME in bodies


@pytest.mark.parametrize("path", PAGES)
def test_every_page_needs_credentials(client: TestClient, path: str) -> None:
    answer = client.get(path)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert "/audit/login?next=" in answer.text  # a way in for a browser
    for headers in (
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": "Bearer aaa.bbb.ccc-not-a-real-jwt-at-all"},
        {"Authorization": f"Basic {TOKEN}"},
    ):
        assert client.get(path, headers=headers).status_code == 401, headers
    for cookies in ({SESSION_COOKIE: "alice.9999999999.forged"}, {"_token": "aaa.bbb.ccc"}):
        client.cookies.clear()
        client.cookies.update(cookies)
        assert client.get(path).status_code == 401, cookies
    client.cookies.clear()
    assert client.get(path, headers=BEARER).status_code == 200
    assert client.get(path, headers={"Authorization": f"Bearer {OTHER_TOKEN}"}).status_code == 200


def test_no_public_docs_and_only_reads(client: TestClient) -> None:
    app = client.app
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(path, headers=BEARER).status_code == 404
    routes = [r for r in app.routes if isinstance(r, APIRoute)]  # type: ignore[attr-defined]
    for route in routes:
        if route.path == "/audit/login" and route.methods == {"POST"}:
            continue
        assert route.methods <= {"GET", "HEAD"}, (route.path, route.methods)
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert client.request(method, "/audit", headers=BEARER).status_code == 405


def test_security_headers_on_pages_errors_and_export(client: TestClient) -> None:
    for answer in (
        client.get("/audit", headers=BEARER),
        client.get("/audit"),
        client.get("/audit/export.csv", headers=BEARER),
        client.get("/audit/touches/999999", headers=BEARER),
    ):
        assert "default-src 'none'" in answer.headers["content-security-policy"]
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["referrer-policy"] == "no-referrer"


def test_login_form_sets_an_httponly_session_cookie(ledger: Ledger) -> None:
    with TestClient(create_audit_app(ledger.url, ledger.anchors)) as c:
        form = c.get("/audit/login?next=/audit/verify")
        assert form.status_code == 200 and 'name="token"' in form.text
        refused = c.post(
            "/audit/login", data={"token": "not-the-token-000000"}, follow_redirects=False
        )
        assert refused.status_code == 401 and "set-cookie" not in refused.headers
        assert "not recognised" in refused.text
        answer = c.post(
            "/audit/login",
            data={"token": TOKEN, "next": "/audit/verify"},
            follow_redirects=False,
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/audit/verify"
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}=alice.")
        assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
        assert "Path=/audit" in cookie
        assert TOKEN not in cookie  # the cookie is an HMAC, not the token
        page = c.get("/audit/verify")
        assert page.status_code == 200 and "alice" in page.text and "Log out" in page.text
        c.get("/audit/logout")
        assert c.get("/audit/verify").status_code == 401


def test_login_never_redirects_off_the_view(client: TestClient) -> None:
    for target in ("https://evil.example/", "//evil.example/audit", "/other", "/audit\\@x"):
        answer = client.post(
            "/audit/login", data={"token": TOKEN, "next": target}, follow_redirects=False
        )
        assert answer.headers["location"] == "/audit", target
    client.cookies.clear()


def test_session_cookies_expire_and_die_with_their_token() -> None:
    tokens = AuditTokens.parse(TOKENS)
    now = dt.datetime(2026, 11, 23, 12, tzinfo=dt.timezone.utc)
    value = tokens.session_value("alice", now + dt.timedelta(hours=8))
    assert tokens.session_name(value, now) == "alice"
    assert tokens.session_name(value, now + dt.timedelta(hours=9)) is None
    assert tokens.session_name(value.replace("alice.", "bob.", 1), now) is None
    assert tokens.session_name(value[:-1] + "0", now) is None
    assert AuditTokens.parse(f"bob:{OTHER_TOKEN}").session_name(value, now) is None
    rotated = AuditTokens.parse("alice:a-brand-new-token-for-alice")
    assert rotated.session_name(value, now) is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("alice", "entry 1 is not name:token"),
        (f"alice:{TOKEN},:{OTHER_TOKEN}", "entry 2 is not name:token"),
        ("alice:short", "shorter than 16"),
        (f"alice:{TOKEN},alice:{OTHER_TOKEN}", "appears twice"),
        (f"a@example.com:{TOKEN}", "must be 1-64 of"),
    ],
)
def test_malformed_token_lists_are_refused_without_echoing_tokens(value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        AuditTokens.parse(value)
    assert TOKEN not in str(caught.value) and OTHER_TOKEN not in str(caught.value)


def test_misconfigured_tokens_answer_503_without_the_token(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARE_AUDIT_TOKENS", f"alice:{TOKEN},broken")
    with TestClient(create_audit_app(ledger.url, ledger.anchors)) as c:
        answer = c.get("/audit", headers=BEARER)
    assert answer.status_code == 503 and "entry 2 is not name:token" in answer.text
    assert TOKEN not in answer.text


def test_missing_store_is_503_and_not_created(tmp_path: Path) -> None:
    auth = AuditAuth(tokens=AuditTokens.parse(TOKENS))
    missing = tmp_path / "nowhere.db"
    with TestClient(create_audit_app(f"sqlite:///{missing}", auth=auth)) as c:
        answer = c.get("/audit", headers=BEARER)
    assert answer.status_code == 503 and "does not exist" in answer.text
    assert not missing.exists()


# -- search, pagination, timeline, detail ------------------------------------------------------


def test_search_by_customer_and_filters(client: TestClient, ledger: Ledger) -> None:
    everything = all_rows(ledger)
    page = client.get("/audit", headers=BEARER)
    assert touch_ids(page.text) == [r["touch_id"] for r in everything]
    by_customer = client.get("/audit?customer=C1", headers=BEARER)
    expected = [r["touch_id"] for r in everything if r["customer_id"] == "C1"]
    assert len(expected) == 2  # the birthday and the thank-you, one of them capped
    assert touch_ids(by_customer.text) == expected
    assert "/audit/customers/C2" not in by_customer.text
    suppressed = client.get("/audit?status=suppressed", headers=BEARER)
    assert touch_ids(suppressed.text) == [
        r["touch_id"] for r in everything if r["status"] == "suppressed"
    ]
    assert "no_contact" in suppressed.text and "/audit/customers/NOPE" in suppressed.text
    email = client.get("/audit?channel=email", headers=BEARER)
    assert touch_ids(email.text) == [r["touch_id"] for r in everything if r["channel"] == "email"]
    assert touch_ids(client.get("/audit?from=2026-11-24", headers=BEARER).text) == []
    assert touch_ids(client.get("/audit?rule=birthday&to=2026-11-23", headers=BEARER).text) == [
        r["touch_id"] for r in everything if r["rule_id"] == "birthday"
    ]


@pytest.mark.parametrize(
    "query",
    ["from=23.11.2026", "to=tomorrow", "channel=fax", "status=lost", "after=-1", "after=x",
     "from=2026-11-24&to=2026-11-23", "customer=" + "C" * 200],
)  # fmt: skip
def test_invalid_filters_are_422(client: TestClient, query: str) -> None:
    paths = ["/audit"] if query.startswith("after=") else ["/audit", "/audit/export.csv"]
    for path in paths:
        answer = client.get(f"{path}?{query}", headers=BEARER)
        assert answer.status_code == 422, (path, query, answer.text[:300])


def test_keyset_pagination_follows_next_links(ledger: Ledger) -> None:
    everything = [r["touch_id"] for r in all_rows(ledger)]
    statements: list[tuple[str, Any]] = []

    def record(*args: Any) -> None:  # conn, cursor, statement, parameters, context, many
        statements.append((args[2], args[3]))

    app = create_audit_app(
        ledger.url, ledger.anchors, AuditAuth(tokens=AuditTokens.parse(TOKENS)), page_size=3
    )
    event.listen(SAEngine, "before_cursor_execute", record)
    try:
        with TestClient(app) as c:
            seen: list[int] = []
            url: str | None = "/audit"
            pages = 0
            while url is not None:
                page = c.get(url, headers=BEARER)
                assert page.status_code == 200
                ids = touch_ids(page.text)
                assert 0 < len(ids) <= 3
                seen += ids
                pages += 1
                nxt = re.search(r'<a rel="next" class="next" href="([^"]+)"', page.text)
                if nxt is not None:
                    url = nxt.group(1).replace("&amp;", "&")
                    assert url.endswith(f"after={ids[-1]}")
                else:
                    url = None
            # With a filter the next link keeps it.
            filtered = c.get("/audit?status=sent", headers=BEARER)
            assert "status=sent&amp;after=" in filtered.text
    finally:
        event.remove(SAEngine, "before_cursor_execute", record)
    assert seen == everything and pages == -(-len(everything) // 3)
    # Keyset, never OFFSET: SQLite's dialect writes "LIMIT ? OFFSET ?" with every LIMIT,
    # so the offset bound must always be 0.
    paged = [(s, p) for s, p in statements if "LIMIT" in s]
    assert paged and all(s.rstrip().endswith("OFFSET ?") and p[-1] == 0 for s, p in paged)


def test_customer_timeline_is_newest_first_with_status(client: TestClient, ledger: Ledger) -> None:
    page = client.get("/audit/customers/C1", headers=BEARER)
    assert page.status_code == 200
    mine = [r for r in all_rows(ledger) if r["customer_id"] == "C1"]
    expected = sorted(mine, key=lambda r: (r["occurrence"], r["touch_id"]), reverse=True)
    assert touch_ids(page.text) == [r["touch_id"] for r in expected]
    assert {r["status"] for r in mine} == {"sent", "suppressed"}
    assert 'class="status sent"' in page.text and 'class="status suppressed"' in page.text
    assert "frequency_cap" in page.text
    empty = client.get("/audit/customers/NOBODY", headers=BEARER)
    assert empty.status_code == 200 and "No touches recorded" in empty.text


def test_touch_detail_shows_versions_message_and_history(
    client: TestClient, ledger: Ledger
) -> None:
    sms = touch_of(ledger, "C2")
    page = client.get(f"/audit/touches/{sms['touch_id']}", headers=BEARER)
    assert page.status_code == 200
    for value in (sms["rule_hash"], sms["template_hash"], sms["content_hash"], sms["touch_key"]):
        assert str(value) in page.text
    assert "王芳" in page.text and "+86 138****0002" in page.text
    history = page.text[page.text.index("Status history") :]
    positions = [history.index(f'class="status {s}"') for s in ("planned", "sending", "sent")]
    assert positions == sorted(positions)
    assert "web-audit-test" in page.text
    assert client.get("/audit/touches/999999", headers=BEARER).status_code == 404
    assert client.get("/audit/touches/abc", headers=BEARER).status_code == 422


def test_email_html_is_shown_sandboxed_and_escaped(client: TestClient, ledger: Ledger) -> None:
    email = touch_of(ledger, "C5")
    assert email["channel"] == "email"
    page = client.get(f"/audit/touches/{email['touch_id']}", headers=BEARER).text
    assert '<iframe class="email" sandbox="" srcdoc="&lt;!doctype html&gt;' in page
    assert page.lower().count("<html") == 1  # only the page's own
    assert "m***@example.com" in page and "Subject:" in page


def test_message_content_is_escaped(client: TestClient, ledger: Ledger) -> None:
    for customer_id in ("C6",):
        row = touch_of(ledger, customer_id)
        page = client.get(f"/audit/touches/{row['touch_id']}", headers=BEARER).text
        assert "&lt;script&gt;alert(" in page
        assert "<script" not in page.lower()


def test_addresses_inside_message_content_are_masked(client: TestClient, ledger: Ledger) -> None:
    row = touch_of(ledger, "C7")
    page = client.get(f"/audit/touches/{row['touch_id']}", headers=BEARER).text
    assert "Lee l***@example.org" in page
    assert "lee.contact@example.org" not in page


def test_no_raw_phone_or_email_in_any_page(client: TestClient, ledger: Ledger) -> None:
    rows = all_rows(ledger)
    paths = [*PAGES, "/audit/login", "/audit?status=sent", "/audit?channel=email"]
    paths += [f"/audit/customers/{c}" for c in sorted({str(r["customer_id"]) for r in rows})]
    paths += [f"/audit/touches/{r['touch_id']}" for r in rows]
    scanned = 0
    for path in paths:
        for headers in (BEARER, {}):
            answer = client.get(path, headers=headers)
            assert_no_raw_pii(answer.text, path)
            scanned += 1
    assert scanned == 2 * len(paths) and len(rows) == 10


# -- export and verify ------------------------------------------------------------------------


def test_csv_export_streams_masked_rows(client: TestClient, ledger: Ledger) -> None:
    everything = all_rows(ledger)
    with client.stream("GET", "/audit/export.csv", headers=BEARER) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/csv")
        assert "attachment" in answer.headers["content-disposition"]
        assert "content-length" not in answer.headers  # streamed, not built in memory
        body = b"".join(answer.iter_bytes()).decode("utf-8")
    assert_no_raw_pii(body, "export.csv")
    table = list(csv.reader(io.StringIO(body)))
    assert tuple(table[0]) == EXPORT_COLUMNS and set(EXPORT_COLUMNS) == set(everything[0])
    records = [dict(zip(table[0], line, strict=True)) for line in table[1:]]
    assert [int(r["touch_id"]) for r in records] == [r["touch_id"] for r in everything]
    phones = [r["recipient"] for r in records if r["channel"] == "sms" and r["recipient"]]
    # Masked, and kept as text for spreadsheets (a leading + would make a formula).
    assert phones and all(p.startswith("'+86 1") and "****" in p for p in phones)
    emails = [r["recipient"] for r in records if r["channel"] == "email" and r["recipient"]]
    assert emails and all("***@" in e for e in emails)
    only = client.get("/audit/export.csv?customer=C1&status=sent", headers=BEARER).text
    lines = list(csv.DictReader(io.StringIO(only)))
    assert [(r["customer_id"], r["status"]) for r in lines] == [("C1", "sent")]
    empty = client.get("/audit/export.csv?customer=NOBODY", headers=BEARER).text
    assert empty.strip() == ",".join(EXPORT_COLUMNS)


def test_verify_page_reports_intact_and_tampered(tmp_path: Path, env: pytest.MonkeyPatch) -> None:
    ledger = fill_ledger(tmp_path)
    with TestClient(create_audit_app(ledger.url, ledger.anchors)) as c:
        page = c.get("/audit/verify", headers=BEARER)
        assert page.status_code == 200
        assert "The ledger verifies." in page.text and "does NOT verify" not in page.text
        assert "1 anchor(s) match" in page.text
        with ledger.store.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE touch_events SET reason = 'edited' WHERE id = 3")
        page = c.get("/audit/verify", headers=BEARER)
        assert page.status_code == 200
        assert "The ledger does NOT verify." in page.text
        assert "touch_events row 3 (chain entry" in page.text
        assert "was changed after it was written" in page.text
    ledger.store.dispose()


def test_verify_page_warns_about_unsigned_anchors_and_a_missing_file(
    tmp_path: Path, env: pytest.MonkeyPatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = fill_ledger(tmp_path)
    monkeypatch.delenv("CARE_ANCHOR_KEY")
    with TestClient(create_audit_app(ledger.url, ledger.anchors)) as c:
        page = c.get("/audit/verify", headers=BEARER)
        assert "The ledger verifies." in page.text
        assert "CARE_ANCHOR_KEY is not set: anchors are NOT signed" in page.text
        ledger.anchors.unlink()
        page = c.get("/audit/verify", headers=BEARER)
        assert "The ledger does NOT verify." in page.text
        assert "but the ledger records 1 anchor(s)" in page.text
    ledger.store.dispose()


# -- Airflow: no import from the engine, no need for it with tokens, and its JWT accepted --------


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )


def test_importing_the_engine_and_the_app_does_not_import_airflow() -> None:
    proc = _python(
        """
        import sys
        import caretouch.ledger.audit, caretouch.cli.root, caretouch.web, caretouch.web.app
        caretouch.web.create_audit_app()
        loaded = sorted(m for m in sys.modules if m == "airflow" or m.startswith("airflow."))
        assert not loaded, loaded
        print("ok")
        """
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_tokens_work_where_airflow_cannot_be_imported(ledger: Ledger) -> None:
    proc = _python(
        f"""
        import sys, importlib.abc

        class NoAirflow(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "airflow" or name.startswith("airflow."):
                    raise ImportError("no Airflow here")
        sys.meta_path.insert(0, NoAirflow())

        from fastapi.testclient import TestClient
        from caretouch.web.app import create_audit_app
        with TestClient(create_audit_app({ledger.url!r}, {str(ledger.anchors)!r})) as c:
            ok = c.get("/audit", headers={{"Authorization": "Bearer {TOKEN}"}})
            jwt = c.get("/audit", headers={{"Authorization": "Bearer aaa.bbb.ccc-looks-like-a-jwt"}})
            cookie = c.get("/audit", cookies={{"_token": "aaa.bbb.ccc-looks-like-a-jwt"}})
        print(ok.status_code, jwt.status_code, cookie.status_code)
        """
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["200", "401", "401"]


class FakeHostLogin:
    """A host's login as the web app sees one (``caretouch.web.HostLogin``): no Airflow."""

    via = "airflow"
    cookie = "_token"

    def looks_like(self, credential: str) -> bool:
        return credential.startswith("host.")

    async def user(self, request: Any, bearer: str | None) -> str | None:
        presented = bearer or request.cookies.get(self.cookie)
        return "carol" if presented == "host.valid.credential" else None


def test_the_hosts_login_is_injected_not_imported(ledger: Ledger) -> None:
    auth = AuditAuth(tokens=AuditTokens.parse(TOKENS), host_login=FakeHostLogin())
    with TestClient(create_audit_app(ledger.url, ledger.anchors, auth)) as c:
        ok = c.get("/audit", headers={"Authorization": "Bearer host.valid.credential"})
        assert ok.status_code == 200 and "carol · Airflow user" in ok.text
        refused = c.get("/audit", headers={"Authorization": "Bearer host.forged.credential"})
        assert refused.status_code == 401
        c.cookies.set("_token", "host.valid.credential")
        assert c.get("/audit/verify").status_code == 200
        c.cookies.clear()
        assert c.get("/audit", headers=BEARER).status_code == 200  # API tokens still work
    # Without a host login (the default), the same credential is refused.
    with TestClient(create_audit_app(ledger.url, ledger.anchors)) as c:
        plain = c.get("/audit", headers={"Authorization": "Bearer host.valid.credential"})
        assert plain.status_code == 401


@pytest.mark.airflow
def test_airflow_jwt_is_accepted_by_the_mounted_plugin(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Airflow's own API app (``create_app(apps="core")``) loads plugins/care_plugin.py and
    mounts the view at /care; a JWT minted by Airflow's auth manager opens it."""
    airflow_env.migrate()
    monkeypatch.setenv("CARE_STORE_URL", ledger.url)
    monkeypatch.setenv("CARE_ANCHOR_FILE", str(ledger.anchors))
    from airflow.api_fastapi.app import create_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    with TestClient(create_app(apps="core")) as c:
        manager = get_auth_manager()
        jwt = manager.generate_jwt(SimpleAuthManagerUser(username="auditor1", role="viewer"))
        expired = manager.generate_jwt(
            SimpleAuthManagerUser(username="auditor1", role="viewer"),
            expiration_time_in_seconds=-60,
        )
        answer = c.get("/care/audit?customer=C1", headers={"Authorization": f"Bearer {jwt}"})
        assert answer.status_code == 200, answer.text[:500]
        assert "auditor1 · Airflow user" in answer.text
        # Links carry the mount prefix.
        assert 'href="/care/audit/touches/' in answer.text
        assert_no_raw_pii(answer.text, "/care/audit")
        c.cookies.set("_token", jwt)
        assert c.get("/care/audit/verify").status_code == 200
        c.cookies.clear()
        assert c.get("/care/audit").status_code == 401
        assert (
            c.get("/care/audit", headers={"Authorization": f"Bearer {expired}"}).status_code == 401
        )
        assert (
            c.get(
                "/care/audit", headers={"Authorization": "Bearer a.b.c-garbage-jwt-xx"}
            ).status_code
            == 401
        )
        assert c.get("/care/audit/export.csv", headers=BEARER).status_code == 200
        login = c.post("/care/audit/login", data={"token": TOKEN}, follow_redirects=False)
        assert login.headers["location"] == "/care/audit"
        assert "Path=/care/audit" in login.headers["set-cookie"]
        assert c.get("/care/audit/verify").status_code == 200
    body = json.dumps(dict(answer.headers))
    assert "content-security-policy" in body
