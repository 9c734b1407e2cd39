"""A rule with message variants, end to end on SQLite and PostgreSQL: each customer's variant
in the plan (JSON and --explain) and the preview, on the touch row, rendered by the send step
from the variant's template, shown by the audit view; the ledger's outcomes per variant, the
report's "Message variants" section, and ``then: send_winner`` switching new touches to the
winner once the test has one."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import pytest
from sqlalchemy import select
from variants_env import variant_rules, variant_templates

from caretouch.config import CareConfig
from caretouch.ledger import Ledger, ProviderEvent
from caretouch.ledger.audit import touch_detail, touches
from caretouch.ledger.audit.search import Filters
from caretouch.ledger.consent import record_consent
from caretouch.ledger.models import TouchRow
from caretouch.plan import plan_day
from caretouch.reports.figures import Period
from caretouch.reports.service_report import build_report, tables
from caretouch.reports.variants import text_lines
from caretouch.rules.variants import SIGNIFICANCE
from caretouch.run.day import run_day
from caretouch.run.engine import CareEngine, open_engine
from caretouch.store.consent import Purpose
from caretouch.store.db import Store
from conftest import Care, cli_url, customer_row, load_rows, utc

DAY = dt.date(2026, 11, 23)
NOON = utc(2026, 11, 23, 12)
NEXT = dt.date(2026, 11, 24)
NEXT_NOON = utc(2026, 11, 24, 12)
SEND_WINNER = "    variant_test: {metric: clicked, min_sample: 40, then: send_winner}\n"


def born(day: dt.date, n: int, prefix: str = "C") -> list[dict[str, str]]:
    """``n`` customers born on ``day`` (tier C: no shipped check-in falls on their day)."""
    return [
        customer_row(
            f"{prefix}{i:04d}",
            birth_date=f"1990-{day.month:02d}-{day.day:02d}",
            phone=f"+86138{day.day:02d}{i:06d}",
            email=f"{prefix.lower()}{i}@example.com",
            tier="C",
            locale="en",
        )
        for i in range(n)
    ]


def engine_for(store: Store, tmp_path: Path, test: str = "") -> CareEngine:
    rules = variant_rules(tmp_path, test=test)
    return open_engine(_config(store, tmp_path, rules, variant_templates(tmp_path)), store=store)


def _config(store: Store, tmp_path: Path, rules: Path, templates: Path) -> CareConfig:
    return CareConfig(
        store.url, rules, templates, tmp_path / "outbox", anchor_file=tmp_path / "anchors.jsonl"
    )


def _rows(store: Store) -> list[TouchRow]:
    with store.read_session() as session:
        return list(session.scalars(select(TouchRow).order_by(TouchRow.customer_id)))


def test_plan_preview_send_and_audit_show_the_variant(store: Store, tmp_path: Path) -> None:
    load_rows(store, customers=born(DAY, 30))
    engine = engine_for(store, tmp_path)
    rule = engine.ruleset.by_id("birthday-ab")
    expected = {f"C{i:04d}": rule.variant_for(f"C{i:04d}") for i in range(30)}
    assert {v.id for v in expected.values() if v is not None} == {"warm", "short"}

    care = Care(
        tmp_path,
        store_url=cli_url(store),
        rules=tmp_path / "rules",
        templates=tmp_path / "templates",
    )
    plan = care("plan", "--date", DAY.isoformat(), "--format", "json", "--explain")
    assert plan.exit_code == 0, plan.output
    lines = [json.loads(x) for x in plan.output.splitlines() if x.startswith("{")]
    assert len(lines) == 30
    for line in lines:
        variant = expected[line["customer_id"]]
        assert variant is not None and line["variant"] == variant.id
        assert any(
            w.startswith(f"variant {variant.id} (weight 50 of 100): by a hash")
            for w in line["explain"]
        )

    short = next(c for c, v in expected.items() if v is not None and v.id == "short")
    warm = next(c for c, v in expected.items() if v is not None and v.id == "warm")
    table = care("plan", "--date", DAY.isoformat()).output.splitlines()
    assert table[0].split()[-1] == "variant"
    for customer, variant in ((short, "short"), (warm, "warm")):
        (line,) = [x for x in table if f" {customer} " in x]
        assert line.split()[-1] == variant
    shown = care("preview", "birthday-ab", "--customer", short, "--date", DAY.isoformat())
    assert shown.exit_code == 0, shown.output
    assert "variant: short (weight 50 of 100)" in shown.output.splitlines()
    assert "Happy birthday, 王芳! (short)" in shown.output
    shown = care("preview", "birthday-ab", "--customer", warm, "--date", DAY.isoformat())
    assert "variant: warm (weight 50 of 100)" in shown.output.splitlines()
    assert "(short)" not in shown.output

    result = run_day(engine, DAY, run_id="t1", now=NOON)
    assert result.sent == 30
    rows = _rows(store)
    assert {r.customer_id: r.variant for r in rows} == {c: v.id for c, v in expected.items() if v}
    assert {r.customer_id: r.template_id for r in rows} == {
        c: v.template for c, v in expected.items() if v
    }
    # The send step rendered each customer's variant.
    bodies = {}
    for f in (tmp_path / "outbox").rglob("*.json"):
        message = json.loads(f.read_text(encoding="utf-8"))
        bodies[message["metadata"]["customer_id"]] = message["body"]
    assert len(bodies) == 30
    for customer, variant in expected.items():
        assert variant is not None
        assert ("(short)" in bodies[customer]) == (variant.id == "short"), customer

    row = next(r for r in rows if r.customer_id == short)
    detail = touch_detail(store, row.id)
    assert detail is not None and detail["variant"] == "short"
    found = {t["customer_id"]: t["variant"] for t in touches(store, Filters())}
    assert found[short] == "short" and found[warm] == "warm"
    shown = care("audit", "show", str(row.id))
    assert f"{'variant':13} short" in shown.output.splitlines()


def test_a_rule_without_variants_says_nothing_of_them(store: Store, tmp_path: Path) -> None:
    load_rows(store, customers=born(DAY, 3))
    care = Care(tmp_path, store_url=cli_url(store))
    plan = care("plan", "--date", DAY.isoformat(), "--format", "json")
    lines = [json.loads(x) for x in plan.output.splitlines() if x.startswith("{")]
    assert lines and all("variant" not in line for line in lines)
    assert "variant" not in care("plan", "--date", DAY.isoformat()).output
    engine = open_engine(_config(store, tmp_path, care.rules, care.templates), store=store)
    run_day(engine, DAY, run_id="t1", now=NOON)
    rows = _rows(store)
    assert rows and all(r.variant is None for r in rows)
    assert touch_detail(store, rows[0].id)["variant"] is None  # type: ignore[index]


# -- outcomes, the report, the winner ---------------------------------------------------------


def _p_value(x1: int, n1: int, x2: int, n2: int) -> float:
    """The pooled two-proportion z-test's two-sided p-value, by the textbook formula."""
    pooled = (x1 + x2) / (n1 + n2)
    z = (x1 / n1 - x2 / n2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return math.erfc(abs(z) / math.sqrt(2))


def _wilson(x: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def _click(ledger: Ledger, rows: list[TouchRow]) -> None:
    ledger.record_provider_events(
        [
            ProviderEvent(
                provider="sendgrid",
                provider_event_id=f"click-{r.id}",
                kind="click",
                payload={"event": "click"},
                provider_status="click",
                touch_id=r.id,
                customer_id=r.customer_id,
            )
            for r in rows
        ],
        now=NOON + dt.timedelta(hours=1),
    )


def _reply(ledger: Ledger, rows: list[TouchRow]) -> None:
    ledger.record_provider_events(
        [
            ProviderEvent(
                provider="twilio",
                provider_event_id=f"reply-{r.id}",
                kind="inbound",
                payload={"reply": {"kind": "message"}},
                provider_status="message",
                touch_id=r.id,
                customer_id=r.customer_id,
            )
            for r in rows
        ],
        now=NOON + dt.timedelta(hours=2),
    )


def _seed(store: Store, tmp_path: Path, clicks: dict[str, int], test: str = SEND_WINNER):
    """Send DAY's birthdays (100 customers), then record ``clicks[variant]`` clicks on that
    variant's first touches, one reply on each variant's first touch and one opt-out."""
    load_rows(store, customers=born(DAY, 100))
    engine = engine_for(store, tmp_path, test)
    assert run_day(engine, DAY, run_id="t1", now=NOON).sent == 100
    rows = _rows(store)
    by_variant = {v: [r for r in rows if r.variant == v] for v in ("warm", "short")}
    ledger = Ledger(store)
    _click(ledger, [r for v, n in clicks.items() for r in by_variant[v][:n]])
    _reply(ledger, [by_variant["warm"][0], by_variant["short"][0]])
    record_consent(
        store,
        by_variant["short"][1].customer_id,
        {Purpose.EMAIL: False},
        source="test",
        at=NOON + dt.timedelta(days=2),
    )
    return engine, by_variant


def test_outcomes_per_variant_come_from_the_ledger(store: Store, tmp_path: Path) -> None:
    _, by_variant = _seed(store, tmp_path, {"warm": 7, "short": 3})
    found = {o.variant: o for o in Ledger(store).variant_outcomes(["birthday-ab"], opt_outs=True)}
    for variant, clicked in (("warm", 7), ("short", 3)):
        o = found[variant]
        assert o.sent == len(by_variant[variant])
        assert (o.clicked, o.replied) == (clicked, 1)
        assert o.opted_out == (1 if variant == "short" else 0)
    # Touches due after the day asked for are left out.
    assert Ledger(store).variant_outcomes(["birthday-ab"], last=DAY - dt.timedelta(days=1)) == []


def test_the_report_names_a_significant_winner(store: Store, tmp_path: Path) -> None:
    clicks = {"warm": 30, "short": 8}
    engine, by_variant = _seed(store, tmp_path, clicks, test="")
    n = {v: len(rows) for v, rows in by_variant.items()}
    # min_sample 100 by default: no winner yet whatever the rates.
    report = build_report(store, Period.month("2026-11"), engine.ruleset)
    (section,) = report.variants
    assert section.verdict.winner is None and "below min_sample 100" in section.verdict.why

    (tmp_path / "again").mkdir()
    rules = variant_rules(tmp_path / "again", test="    variant_test: {min_sample: 30}\n")
    engine = open_engine(_config(store, tmp_path, rules, tmp_path / "templates"), store=store)
    report = build_report(store, Period.month("2026-11"), engine.ruleset)
    (section,) = report.variants
    expected_p = _p_value(clicks["warm"], n["warm"], clicks["short"], n["short"])
    assert expected_p < SIGNIFICANCE
    assert section.verdict.p_values["short"] == pytest.approx(expected_p, rel=1e-9)
    assert section.verdict.winner == "warm"
    warm = next(line for line in section.lines if line.variant == "warm")
    low, high = _wilson(clicks["warm"], n["warm"])
    assert (warm.rates["clicked"].low, warm.rates["clicked"].high) == (
        pytest.approx(low, rel=1e-9),
        pytest.approx(high, rel=1e-9),
    )
    columns, rows = tables(report)["message-variants"]
    by = {row[columns.index("variant")]: dict(zip(columns, row, strict=True)) for row in rows}
    assert by["warm"]["clicked"] == 30 and by["short"]["clicked"] == 8
    assert by["short"]["opted_out"] == 1 and by["warm"]["opted_out"] == 0
    assert by["warm"]["winner"] == "warm" and by["warm"]["p_value_vs_best"] is None
    assert by["short"]["p_value_vs_best"] == pytest.approx(expected_p, abs=1e-6)
    page = report.html(generated_at=NOON)
    assert 'id="variants"' in page and "winner warm on clicked" in page
    assert text_lines(report.variants)[0].startswith(
        "variants of birthday-ab (metric clicked): winner warm on clicked"
    )


def test_no_winner_when_the_difference_is_not_significant(store: Store, tmp_path: Path) -> None:
    clicks = {"warm": 12, "short": 10}
    engine, by_variant = _seed(store, tmp_path, clicks)
    n = {v: len(rows) for v, rows in by_variant.items()}
    expected_p = _p_value(clicks["warm"], n["warm"], clicks["short"], n["short"])
    assert expected_p > SIGNIFICANCE
    report = build_report(store, Period.month("2026-11"), engine.ruleset)
    (section,) = report.variants
    assert section.verdict.winner is None
    assert section.verdict.p_values["short"] == pytest.approx(expected_p, rel=1e-9)
    assert "no significant difference" in section.verdict.why
    _, rows = tables(report)["message-variants"]
    assert all(row[-1] is None for row in rows)  # no winner column filled
    # The planner sees no winner either: the next day's customers are split by the hash.
    load_rows(store, customers=born(NEXT, 40, prefix="N"))
    planned = [
        t
        for t in plan_day(store, engine.ruleset, NEXT, history=Ledger(store))
        if t.customer_id.startswith("N")
    ]
    assert {t.variant.id for t in planned if t.variant} == {"warm", "short"}


def test_send_winner_gives_new_touches_the_winner(store: Store, tmp_path: Path) -> None:
    engine, _ = _seed(store, tmp_path, {"warm": 3, "short": 30})
    before = {r.customer_id: r.variant for r in _rows(store)}
    load_rows(store, customers=born(NEXT, 40, prefix="N"))
    planned = [
        t
        for t in plan_day(store, engine.ruleset, NEXT, history=Ledger(store))
        if t.customer_id.startswith("N")
    ]
    assert len(planned) == 40
    assert {t.variant.id for t in planned if t.variant} == {"short"}
    assert all(
        any(w.startswith("variant short: the test's winner, now sent to all") for w in t.explain)
        for t in planned
    )
    # Among them, customers the hash would have given warm: the winner overrides it.
    rule = engine.ruleset.by_id("birthday-ab")
    assert any(rule.variant_for(t.customer_id).id == "warm" for t in planned)  # type: ignore[union-attr]
    result = run_day(engine, NEXT, run_id="t2", now=NEXT_NOON)
    assert result.sent == 40
    after = {r.customer_id: r.variant for r in _rows(store)}
    # The earlier touches keep the variant they were given; the new ones are the winner's.
    assert {c: v for c, v in after.items() if c in before} == before
    assert {v for c, v in after.items() if c.startswith("N")} == {"short"}
    with store.read_session() as session:
        templates = set(
            session.scalars(select(TouchRow.template_id).where(TouchRow.customer_id.like("N%")))
        )
    assert templates == {"birthday_short"}


def test_send_winner_waits_for_the_sample(store: Store, tmp_path: Path) -> None:
    """min_sample 400: far from it, the split goes on, and --explain says why."""
    test = "    variant_test: {metric: clicked, min_sample: 400, then: send_winner}\n"
    engine, _ = _seed(store, tmp_path, {"warm": 3, "short": 30}, test=test)
    load_rows(store, customers=born(NEXT, 40, prefix="N"))
    planned = [
        t
        for t in plan_day(store, engine.ruleset, NEXT, history=Ledger(store))
        if t.customer_id.startswith("N")
    ]
    assert {t.variant.id for t in planned if t.variant} == {"warm", "short"}
    assert all(
        any(
            "send_winner: too few sent: warm, short below min_sample 400 sent" in w
            for w in t.explain
        )
        for t in planned
    )


def test_statuses_counted_as_sent_are_the_sent_events(store: Store, tmp_path: Path) -> None:
    """A touch that never went out (suppressed) is not in its variant's sent count."""
    load_rows(
        store,
        customers=[
            *born(DAY, 6),
            customer_row(
                "X1", birth_date="1990-11-23", consent_sms="false", consent_email="false", tier="C"
            ),
        ],
    )
    engine = engine_for(store, tmp_path)
    run_day(engine, DAY, run_id="t1", now=NOON)
    outcomes = Ledger(store).variant_outcomes(["birthday-ab"])
    assert sum(o.sent for o in outcomes) == 6
    rows = _rows(store)
    assert (
        next(r for r in rows if r.customer_id == "X1").variant is not None
    )  # recorded all the same


def test_a_deferred_touch_keeps_the_variant_it_was_given(store: Store, tmp_path: Path) -> None:
    """Held back by the day's cap (the shipped birthday greeting, same priority, goes first
    by rule id), the touch is deferred with its variant; planned again the next day after
    the weights changed, it keeps that variant, not the one the new weights would give."""
    customers = born(DAY, 20)
    load_rows(store, customers=customers)
    rules = variant_rules(tmp_path, only=False)
    path = rules / "birthday-ab.yaml"
    path.write_text(
        path.read_text(encoding="utf-8").replace("priority: 30", "priority: 10\n    defer_days: 2"),
        encoding="utf-8",
    )
    engine = open_engine(_config(store, tmp_path, rules, variant_templates(tmp_path)), store=store)
    run_day(engine, DAY, run_id="t1", now=NOON)
    deferred = {r.customer_id: r.variant for r in _rows(store) if r.rule_id == "birthday-ab"}
    assert len(deferred) == 20 and set(deferred.values()) == {"warm", "short"}
    path.write_text(
        path.read_text(encoding="utf-8").replace(
            "{id: warm, template: birthday, weight: 50}",
            "{id: warm, template: birthday, weight: 1}",
        ),
        encoding="utf-8",
    )
    engine = open_engine(_config(store, tmp_path, rules, tmp_path / "templates"), store=store)
    rule = engine.ruleset.by_id("birthday-ab")
    moved = [c for c, v in deferred.items() if v == "warm" and rule.variant_for(c).id == "short"]  # type: ignore[union-attr]
    assert moved  # the new weights would give them short
    again = {
        t.customer_id: t
        for t in plan_day(store, engine.ruleset, NEXT, history=Ledger(store))
        if t.rule.id == "birthday-ab"
    }
    for customer in moved:
        touch = again[customer]
        assert touch.variant is not None and touch.variant.id == "warm"
        assert "variant warm: given when first planned" in touch.explain


def test_event_planning_gives_event_touches_their_variant(store: Store, tmp_path: Path) -> None:
    """Events planned as they arrive (``plan_new_events``) ask the whole ledger about a
    send_winner test, as the daily plan does, and record the touch's variant."""
    from sqlalchemy import text

    from caretouch.events.planning import plan_new_events
    from conftest import event_row

    rules = variant_rules(tmp_path)
    (rules / "birthday-ab.yaml").unlink()
    (rules / "thanks-ab.yaml").write_text(
        "version: 1\nrules:\n  - id: thanks-ab\n    description: Thanks, two wordings.\n"
        "    trigger: {kind: event, type: policy_purchased, delay_days: 1}\n"
        "    channels: [email, sms]\n    variants:\n"
        "      - {id: long, template: thank_you, weight: 1}\n"
        "      - {id: short, template: birthday_short, weight: 1}\n"
        "    variant_test: {metric: clicked, min_sample: 10, then: send_winner}\n"
        "    category: care\n    priority: 70\n    send_time: '10:00'\n",
        encoding="utf-8",
    )
    engine = open_engine(_config(store, tmp_path, rules, variant_templates(tmp_path)), store=store)
    load_rows(
        store, customers=born(DAY, 4), events=[event_row(f"E{i}", f"C{i:04d}") for i in range(4)]
    )
    with store.session() as session:
        for i in range(4):
            session.execute(
                text(
                    "INSERT INTO event_receipts (event_id, source, received_at) "
                    "VALUES (:e, 'stream', :at)"
                ),
                {"e": f"E{i}", "at": dt.datetime(2026, 11, 22, 2, 1)},
            )
    report = plan_new_events(engine, run_id="t-events", now=utc(2026, 11, 22, 3))
    assert report.planned == 4
    rule = engine.ruleset.by_id("thanks-ab")
    rows = {r.customer_id: r for r in _rows(store)}
    for customer, row in rows.items():
        variant = rule.variant_for(customer)
        assert variant is not None and (row.variant, row.template_id) == (
            variant.id,
            variant.template,
        )
