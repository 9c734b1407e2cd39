"""Campaign touches go through the same contact policy and ledger as rules (issue 6).

The shipped ``spring-festival-vip`` campaign (tiers A and B, care, priority 40) on Spring
Festival 2027 (2027-02-06), planned and run with the shipped rules and policy.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from caretouch.config import CareConfig
from caretouch.ledger import Ledger
from caretouch.ledger.consent import record_consent
from caretouch.plan import plan_day
from caretouch.render.templates import TemplateStore
from caretouch.rules.loader import load_rules
from caretouch.run.day import run_day
from caretouch.run.engine import open_engine
from caretouch.store.consent import Purpose
from caretouch.store.db import Store
from caretouch.vocab import Decision, SuppressionReason, TouchStatus
from conftest import RULES_DIR, TEMPLATES_DIR, customer_row, load_rows, utc

DAY = dt.date(2027, 2, 6)  # Spring Festival 2027
CAMPAIGN = "spring-festival-vip"


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    # The shipped policy, campaigns and the rules that compete with them on the day.
    d = tmp_path / "rules"
    shutil.copytree(RULES_DIR / "campaigns", d / "campaigns")
    for name in ("policy.yaml", "birthday.yaml", "holiday-greeting.yaml"):
        shutil.copy(RULES_DIR / name, d / name)
    return d


def customers(store: Store) -> None:
    load_rows(
        store,
        customers=[
            # Tier A, born on the festival: the campaign (40) outranks the birthday (30).
            customer_row("C1", tier="A", birth_date="1990-02-06", consent_marketing="true"),
            # Tier B without any channel consent.
            customer_row("C2", tier="B", consent_sms="false", consent_email="false"),
            # Tier C: not in the campaign's audience.
            customer_row("C3", tier="C"),
            # Tier A, reachable, who withdraws consent on both channels before the day.
            customer_row("C4", tier="A"),
            # Tier B, inactive.
            customer_row("C5", tier="B", status="inactive"),
            # Tier B, reachable by email only.
            customer_row("C6", tier="B", phone=""),
        ],
    )
    record_consent(
        store,
        "C4",
        {Purpose.SMS: False, Purpose.EMAIL: False},
        source="test",
        at=utc(2027, 1, 20, 8, 0),
    )


def test_campaign_touches_respect_caps_and_consent(store: Store, rules_dir: Path) -> None:
    customers(store)
    ruleset = load_rules(rules_dir, TemplateStore(TEMPLATES_DIR))
    assert ruleset.errors == []
    touches = plan_day(store, ruleset, DAY, history=Ledger(store))
    decided = {
        (t.rule.id, t.customer_id): (t.decision, t.reason, t.channel and t.channel.value)
        for t in touches
    }
    send, suppress = Decision.SEND, Decision.SUPPRESS
    R = SuppressionReason
    assert {k: v for k, v in decided.items() if k[0] == CAMPAIGN} == {
        (CAMPAIGN, "C1"): (send, None, "sms"),
        (CAMPAIGN, "C2"): (suppress, R.NO_CONTACT, None),
        (CAMPAIGN, "C4"): (suppress, R.OPTED_OUT, None),
        (CAMPAIGN, "C6"): (send, None, "email"),
    }
    # The per-day cap (1) arbitrates the campaign with the rules: C1's birthday gives way.
    # The marketing festival greeting is not merely deferred (defer_days 2) to greet the
    # festival again the next day: the campaign greets occasion spring_festival already.
    assert decided[("birthday", "C1")] == (suppress, R.FREQUENCY_CAP, "sms")
    assert decided[("holiday-greeting", "C1")] == (suppress, R.OCCASION_TAKEN, "sms")
    c1 = [t for t in touches if t.customer_id == "C1" and t.decision is send]
    assert [t.rule.id for t in c1] == [CAMPAIGN]
    campaign_touch = next(t for t in touches if t.rule.id == CAMPAIGN)
    assert campaign_touch.send_at == utc(2027, 2, 6, 2, 0)  # 10:00 in Shanghai


def test_campaign_touches_go_through_the_ledger_once(
    store: Store, rules_dir: Path, tmp_path: Path
) -> None:
    customers(store)
    config = CareConfig(
        store.url,
        rules_dir,
        TEMPLATES_DIR,
        tmp_path / "outbox",
        anchor_file=tmp_path / "anchors.jsonl",
    )
    engine = open_engine(config, store=store)
    now = utc(2027, 2, 6, 3, 0)  # 11:00 in Shanghai
    first = run_day(engine, DAY, run_id="t1", now=now)
    assert first.failed == 0
    states = {(s.row.rule_id, s.row.customer_id): s for s in Ledger(store).states_for_day(DAY)}
    assert states[(CAMPAIGN, "C1")].status is TouchStatus.SENT
    assert states[(CAMPAIGN, "C6")].status is TouchStatus.SENT
    assert states[(CAMPAIGN, "C2")].status is TouchStatus.SUPPRESSED
    assert states[("birthday", "C1")].status is TouchStatus.SUPPRESSED
    assert states[(CAMPAIGN, "C1")].row.rule_hash == engine.ruleset.by_id(CAMPAIGN).file_hash
    outbox = sorted((tmp_path / "outbox").rglob("*.json"))
    assert len(outbox) == 2
    second = run_day(engine, DAY, run_id="t2", now=now + dt.timedelta(minutes=5))
    assert second.sent == 0
    assert sorted((tmp_path / "outbox").rglob("*.json")) == outbox
