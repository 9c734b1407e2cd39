"""The report page is a Jinja template (autoescaped): it shows what the f-string page of
main showed, and whatever the ledger holds is printed as text, never as markup.

``report_page_before-*.html`` are the pages main's ``render_html`` made for the figures
below (charts replaced by ``IMG``); the template's page equals them but for the entity
Jinja's escaping writes for a quote (``&#39;`` for ``&#x27;``, ``&#34;`` for ``&quot;``).
The outcome labels in them were since reworded to say how a task counts (issue 16).
"""

from __future__ import annotations

import datetime as dt
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from caretouch.reports.figures import Figures, Obligation, Period
from caretouch.reports.service_report import Report, render_html

HERE = Path(__file__).parent
WEEK = Period.week("2026-W47")
GENERATED = dt.datetime(2026, 11, 23, 7, 5, tzinfo=dt.timezone.utc)
HOSTILE_RULE = "<script>alert('x')</script>"


def figures(period: Period, scale: int) -> Figures:
    """Figures touching every part of the page, with markup in every text from the ledger."""
    f = Figures(period)
    rules = ["birthday", "complaint-follow-up", HOSTILE_RULE, 'q"uote&amp']
    statuses = [
        ("sent", None),
        ("delivered", None),
        ("suppressed", "opted_out"),
        ("suppressed", "<b>bold</b>"),
        ("failed", None),
        ("unknown", None),
        ("planned", None),
        ("bounced", None),
    ]
    for i, r in enumerate(rules):
        for j, (s, why) in enumerate(statuses):
            for ch in ("sms", "email", None):
                for tier in ("A", "B", "<T>", None):
                    n = (i + j * 3 + len(str(ch)) + len(str(tier))) % 5 * scale
                    if n:
                        f.touches[(r, ch, tier, s, why)] += n
    for k in range(7):
        f.sent_per_day[period.first + dt.timedelta(days=k)] = (k * 7 * scale) % 11
    f.opt_outs[("sms", "webhook")] = 3 * scale
    f.opt_outs[("email", "<unsubscribe-link>")] = scale
    o = Obligation(
        "complaint-follow-up",
        "due 3 local day(s) after the <complaint_resolved> event's local date",
        True,
    )
    missed = 250 if scale == 1 else 2
    o.outcomes.update({"on_time": 5 * scale, "late": 1, "missed": missed, "waiting": 1})
    o.missed = [
        (
            f"complaint-follow-up|customer:C<{n}>&|2026-11-1{n % 10}",
            "2026-11-19",
            "never planned" if n % 2 else "obligation_missed",
        )
        for n in range(missed)
    ]
    o2 = Obligation("renewal'reminder", "due 30 day(s) before policy.renewal_date", False)
    o2.outcomes.update({"on_time": 2})
    f.obligations = [o, o2]
    return f


def page(with_obligations: bool) -> str:
    now, before = figures(WEEK, 1), figures(WEEK.previous(), 2)
    if not with_obligations:
        now.obligations, before.obligations = [], []
    return render_html(Report(WEEK, now, before), generated_at=GENERATED)


def _without_charts(html: str) -> str:
    return re.sub(r"base64,[A-Za-z0-9+/=]+", "base64,IMG", html)


def _without_service(html: str) -> str:
    """The page but for what issue 15 added (the service per tier and level, the group
    coverage line, and their style), which main's page did not have."""
    html = html.replace(".below { color: #b00020; font-weight: bold; }\n", "")
    return re.sub(
        r"<h2>Service per tier and level</h2>.*?</p>\n(?=<h2>)", "", html, count=1, flags=re.S
    )


@pytest.mark.parametrize(("with_obligations", "name"), [(True, "obligations"), (False, "no-rules")])
def test_the_page_is_the_one_main_made(with_obligations: bool, name: str) -> None:
    before = (HERE / f"report_page_before-{name}.html").read_text(encoding="utf-8")
    before = before.replace("&#x27;", "&#39;").replace("&quot;", "&#34;")
    assert _without_service(_without_charts(page(with_obligations))) == before


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_what_the_ledger_holds_is_escaped_not_markup() -> None:
    html = page(True)
    parsed = _Tags()
    parsed.feed(html)
    assert "script" not in parsed.tags and "b" not in parsed.tags and "t" not in parsed.tags
    text = "".join(parsed.text)
    # Shown as text: the rule id, the reason, the tier, the opt-out source, the touch key.
    for shown in (HOSTILE_RULE, "<b>bold</b>", "<T>", "<unsubscribe-link>", "C<3>&"):
        assert shown in text
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_the_customer_appears_only_by_id_in_touch_keys() -> None:
    """Names, phone numbers and addresses are not in the figures: the report shows a
    customer only as the id inside a missed touch's key (as main's page did)."""
    html = page(True)
    assert "customer:C&lt;0&gt;&amp;" in html
    assert "@" not in re.sub(r"base64,[A-Za-z0-9+/=]+", "", html)
    assert not re.search(r"\+\d{8,}", html)
