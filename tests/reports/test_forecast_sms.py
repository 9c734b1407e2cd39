"""SMS cost before sending: ``sms_cost`` from the policy's ``sms.cost_per_segment``, `care
preview`'s estimate, and `care forecast`'s SMS segments (and cost) per day."""

from __future__ import annotations

import csv
import datetime as dt
import io
import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from caretouch.errors import ValidationFailed
from caretouch.ledger import Ledger
from caretouch.plan import plan_day
from caretouch.render.templates import TemplateStore
from caretouch.reports.forecast import forecast, sms_rows, to_html
from caretouch.rules.contact_policy import load_policy
from caretouch.rules.loader import load_rules
from caretouch.schema.migrate import upgrade
from caretouch.sms import SmsPricing, describe, sms_cost, sms_size
from caretouch.store.db import Store, open_store
from caretouch.vocab import Channel, Decision
from conftest import RULES_DIR, TEMPLATES_DIR, Care, customer_row, load_rows

PRICE = SmsPricing(Decimal("0.0079"), "USD")


@pytest.mark.parametrize(
    ("text", "segments", "cost"),
    [
        ("", 0, Decimal("0")),
        ("a" * 160, 1, Decimal("0.0079")),
        ("a" * 161, 2, Decimal("0.0158")),
        ("你" * 70, 1, Decimal("0.0079")),
        ("你" * 140, 3, Decimal("0.0237")),  # 67 per part once split
    ],
)
def test_sms_cost_is_segments_times_the_price(text: str, segments: int, cost: Decimal) -> None:
    size = sms_size(text)
    assert size.segments == segments
    assert sms_cost(size, PRICE) == cost
    assert sms_cost(size, None) is None


def test_describe_adds_the_cost_only_when_priced() -> None:
    size = sms_size("你" * 140)
    assert describe(size, None) == "3 segment(s), 140 UTF-16 units in UCS-2"
    assert describe(size, PRICE) == "3 segment(s), 140 UTF-16 units in UCS-2, est. cost 0.0237 USD"


def _policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\n" + text, encoding="utf-8")
    return path


def test_policy_reads_the_price_exactly_and_the_test_recipients(tmp_path: Path) -> None:
    policy = load_policy(
        _policy(
            tmp_path,
            "sms:\n  cost_per_segment: 0.0079\n  currency: EUR\n"
            'test_recipients: ["+8613900001234", "qa@example.com"]\n',
        )
    )
    assert policy.sms_pricing == SmsPricing(Decimal("0.0079"), "EUR")
    assert policy.test_recipients == ("+8613900001234", "qa@example.com")
    assert load_policy(_policy(tmp_path, "")).sms_pricing is None


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        (
            "sms:\n  cost_per_segment: 0.01\n",
            ":3:3:",
            "'cost_per_segment' needs 'currency' beside it",
        ),
        ("sms:\n  cost_per_segment: 0.01\n  currency: usd\n", ":4:13:", "has the wrong form"),
        ("sms:\n  cost_per_segment: -1\n  currency: USD\n", ":3:21:", "minimum"),
        ('test_recipients: ["+86 139", "qa@example.com"]\n', ":2:19:", "neither a phone"),
    ],
)
def test_bad_keys_are_errors_at_their_place(
    tmp_path: Path, text: str, where: str, message: str
) -> None:
    with pytest.raises(ValidationFailed) as failed:
        load_policy(_policy(tmp_path, text))
    (error,) = failed.value.errors
    assert where in str(error) and message in str(error), str(error)


def priced_rules(tmp_path: Path) -> Path:
    rules = tmp_path / "priced-rules"
    shutil.copytree(RULES_DIR, rules)
    policy = rules / "policy.yaml"
    policy.write_text(
        policy.read_text(encoding="utf-8")
        + "\nsms:\n  cost_per_segment: 0.0079\n  currency: USD\n",
        encoding="utf-8",
    )
    return rules


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    store = open_store(f"sqlite:///{tmp_path / 'care.db'}")
    upgrade(store)
    load_rows(
        store,
        customers=[
            customer_row("C1"),  # born 23 November: a birthday SMS in Chinese
            customer_row("C2", birth_date="1990-11-24", locale="en", name="Anne-Marie Jones"),
            customer_row("C3", birth_date="1990-11-24", name="李" * 60),  # a long name
            customer_row("E1", birth_date="1990-11-24", phone="", email="e1@example.com"),
        ],
    )
    store.dispose()
    return tmp_path


def test_preview_prints_the_estimated_cost(care: Care, filled: Path) -> None:
    plain = care("preview", "birthday", "--customer", "C3", "--date", "2026-11-24")
    assert plain.exit_code == 0, plain.output
    assert "sms: " in plain.output and "est. cost" not in plain.output
    priced = care(
        "preview",
        "birthday",
        "--customer",
        "C3",
        "--date",
        "2026-11-24",
        rules=priced_rules(filled),
    )
    assert priced.exit_code == 0, priced.output
    body = priced.output.split("\n\n", 1)[1].rstrip("\n")
    size = sms_size(body)
    assert size.segments >= 2  # the long name
    cost = Decimal("0.0079") * size.segments
    assert f"sms: {size}, est. cost {cost.normalize():f} USD\n" in priced.output


def expected_segments(store: Store, rules: Path, day: dt.date) -> tuple[int, int]:
    """The SMS planned to send on ``day`` and their segments, rendered one by one here."""
    templates = TemplateStore(TEMPLATES_DIR)
    ruleset = load_rules(rules, templates)
    sms = [
        t
        for t in plan_day(store, ruleset, day, history=Ledger(store))
        if t.decision is Decision.SEND and t.channel is Channel.SMS
    ]
    segments = sum(
        sms_size(
            templates.render(
                t.template, Channel.SMS, t.customer["locale"], t.template_context()
            ).body
        ).segments
        for t in sms
    )
    return len(sms), segments


def test_forecast_totals_segments_per_day(care: Care, filled: Path) -> None:
    rules = priced_rules(filled)
    store = open_store(f"sqlite:///{filled / 'care.db'}")
    days = [dt.date(2026, 11, 23), dt.date(2026, 11, 24)]
    expected = {d: expected_segments(store, rules, d) for d in days}
    assert expected[days[0]][0] == 1 and expected[days[1]][0] == 2  # E1 gets an email
    assert expected[days[1]][1] >= 3  # C3's long SMS takes two segments or more
    result = care(
        "forecast",
        "--from",
        "2026-11-23",
        "--days",
        "2",
        "--format",
        "csv",
        "--by",
        "sms",
        rules=rules,
    )
    assert result.exit_code == 0, result.output
    rows = {r["day"]: r for r in csv.DictReader(io.StringIO(result.stdout))}
    for day in days:
        sms, segments = expected[day]
        row = rows[day.isoformat()]
        assert (int(row["sms"]), int(row["segments"])) == (sms, segments)
        assert Decimal(row["est_cost"]) == Decimal("0.0079") * segments
        assert row["currency"] == "USD"
    table = care("forecast", "--from", "2026-11-23", "--days", "2", rules=rules)
    assert table.exit_code == 0, table.output
    assert "SMS segments per day" in table.output and "est. cost (USD)" in table.output
    total = sum(s for _, s in expected.values())
    assert any(
        line.split()[:3] == ["total", "3", str(total)] for line in table.output.splitlines()
    ), table.output
    # The CSV by rule carries them per rule and day.
    by_rule = care("forecast", "--from", "2026-11-23", "--days", "2", "--format", "csv")
    birthday = [
        r for r in csv.DictReader(io.StringIO(by_rule.stdout)) if r["rule_id"] == "birthday"
    ]
    assert sum(int(r["sms_segments"]) for r in birthday) == total


def test_forecast_without_templates_or_price(filled: Path) -> None:
    store = open_store(f"sqlite:///{filled / 'care.db'}")
    ruleset = load_rules(RULES_DIR, TemplateStore(TEMPLATES_DIR))
    first = dt.date(2026, 11, 24)
    bare = forecast(store, ruleset, first, 1, history=Ledger(store))
    assert not bare.sms_counted and bare.total("sms_segments") == 0
    counted = forecast(
        store, ruleset, first, 1, history=Ledger(store), templates=TemplateStore(TEMPLATES_DIR)
    )
    assert counted.sms_counted and counted.pricing is None
    header, body = sms_rows(counted)
    assert header == ["day", "sms", "segments"]  # no cost column without a price
    assert body[0][:2] == ["2026-11-24", 2] and body[0][2] >= 3
    assert 'id="sms-per-day"' in to_html(counted) and 'id="sms-per-day"' not in to_html(bare)
