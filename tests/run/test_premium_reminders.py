"""The shipped premium rules on a day: reminders only for unpaid premiums, a payment stops
the reminders already planned (suppressed ``paid``, never sent), the lapse warning is a task
for the agent or, without one, a message."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from caretouch.config import CareConfig
from caretouch.events.inbox import Incoming, submit
from caretouch.ledger import Ledger
from caretouch.run.day import pending_ids, plan_and_record
from caretouch.run.engine import CareEngine, open_engine
from caretouch.run.send import send_touches
from caretouch.store.db import Store
from caretouch.vocab import TouchStatus
from conftest import (
    RULES_DIR,
    TEMPLATES_DIR,
    customer_row,
    insert_agents_and_relations,
    load_rows,
    policy_row,
    utc,
)

DAY = dt.date(2026, 11, 23)
NOON = utc(2026, 11, 23, 4, 0)  # 12:00 in Shanghai: after every send time
PREMIUM_RULES = {"premium-due-reminder", "premium-grace-reminder", "premium-lapse-warning"}


def engine_for(store: Store, tmp_path: Path) -> CareEngine:
    return open_engine(
        CareConfig(store.url, RULES_DIR, TEMPLATES_DIR, tmp_path / "outbox"), store=store
    )


def customer(customer_id: str, **overrides: str) -> dict[str, str]:
    """Tier C, no birthday today: nothing but the premium rules is due for them."""
    return customer_row(customer_id, birth_date="1985-05-05", tier="C", **overrides)


def life_policy(policy_id: str, customer_id: str, due_in: int, **overrides: str) -> dict[str, str]:
    """A whole-life policy whose premium is due ``due_in`` days from DAY (negative: overdue),
    paid up to the day before."""
    due = DAY + dt.timedelta(days=due_in)
    values = {
        "product": "平安福终身寿险",
        "start_date": due.replace(year=due.year - 3).isoformat(),
        "premium": "5200.00",
        "premium_due_date": due.isoformat(),
        "payment_frequency": "annual",
        "paid_through": (due - dt.timedelta(days=1)).isoformat(),
    }
    return policy_row(policy_id, customer_id, **{**values, **overrides})


def premium_touches(store: Store) -> dict[str, tuple[str, TouchStatus, str | None, str | None]]:
    """By customer: (rule, status, reason, channel) of the day's premium touches."""
    return {
        s.row.customer_id: (s.row.rule_id, s.status, s.reason, s.channel)
        for s in Ledger(store).states_for_day(DAY)
        if s.row.rule_id in PREMIUM_RULES
    }


def outbox_texts(tmp_path: Path) -> str:
    return "\n".join(p.read_text("utf-8") for p in sorted((tmp_path / "outbox").rglob("*.json")))


def test_reminders_plan_only_unpaid_premiums(sqlite_store: Store, tmp_path: Path) -> None:
    load_rows(
        sqlite_store,
        customers=[customer(f"C{i}") for i in range(1, 7)],
        policies=[
            life_policy("P1", "C1", 30),
            life_policy("P2", "C2", 7),
            life_policy("P3", "C3", -7),
            life_policy("P4", "C4", -30),
            # Paid already through the due date: nothing to remind of.
            life_policy("P5", "C5", 30, paid_through=(DAY + dt.timedelta(days=400)).isoformat()),
            # Not on a reminder day.
            life_policy("P6", "C6", 29),
        ],
    )
    engine = engine_for(sqlite_store, tmp_path)
    plan_and_record(engine, DAY, run_id="t1", now=NOON)
    touches = premium_touches(sqlite_store)
    assert {c: t[0] for c, t in touches.items()} == {
        "C1": "premium-due-reminder",
        "C2": "premium-due-reminder",
        "C3": "premium-grace-reminder",
        "C4": "premium-grace-reminder",
    }
    assert all(t[1] is TouchStatus.PLANNED for t in touches.values())


def test_a_payment_after_planning_stops_the_reminder_at_send_time(
    store: Store, tmp_path: Path
) -> None:
    load_rows(
        store,
        customers=[customer("C1"), customer("C2"), customer("C3")],
        policies=[
            life_policy("P1", "C1", 30),
            life_policy("P2", "C2", -7),
            life_policy("P3", "C3", 7),
        ],
    )
    engine = engine_for(store, tmp_path)
    plan_and_record(engine, DAY, run_id="t1", now=NOON)
    assert {t[1] for t in premium_touches(store).values()} == {TouchStatus.PLANNED}

    # C1 pays the coming premium, C2 the overdue one; C3 pays something that does not
    # reach the due date (a partial arrear): still owed.
    payments = [
        ("PAY1", "C1", "P1", DAY + dt.timedelta(days=30 + 364)),
        ("PAY2", "C2", "P2", DAY + dt.timedelta(days=-7 + 364)),
        ("PAY3", "C3", "P3", DAY),
    ]
    report = submit(
        store,
        [
            Incoming(
                {
                    "event_id": event_id,
                    "type": "premium_paid",
                    "customer_id": customer_id,
                    "policy_id": policy_id,
                    "occurred_at": "2026-11-23T09:00:00+08:00",
                    "payload": {"paid_through": through.isoformat(), "amount": "5200.00"},
                }
            )
            for event_id, customer_id, policy_id, through in payments
        ],
        source="api",
        now=NOON,
        event_types=engine.ruleset.event_types,
    )
    assert report.accepted == ["PAY1", "PAY2", "PAY3"]

    sent = send_touches(engine, pending_ids(engine, DAY), run_id="t2", now=NOON)
    touches = premium_touches(store)
    assert touches["C1"][1:3] == (TouchStatus.SUPPRESSED, "paid")
    assert touches["C2"][1:3] == (TouchStatus.SUPPRESSED, "paid")
    assert touches["C3"][1] is TouchStatus.SENT
    assert (sent.sent, sent.suppressed) == (1, 2)
    # Never sent: only C3's reminder reached the outbox.
    assert outbox_texts(tmp_path).count("P3") >= 1
    assert "P1" not in outbox_texts(tmp_path) and "P2" not in outbox_texts(tmp_path)
    # The suppression explains itself, and is final: a rerun of the day sends nothing more.
    (state,) = [s for s in Ledger(store).states_for_day(DAY) if s.row.customer_id == "C1"]
    explain = json.dumps([e.detail for e in Ledger(store).history(state.id)], default=str)
    assert "paid through" in explain and "2026-12-23" in explain
    plan_and_record(engine, DAY, run_id="t3", now=NOON)
    again = send_touches(engine, pending_ids(engine, DAY), run_id="t4", now=NOON)
    assert again.sent == 0
    assert premium_touches(store)["C1"][1:3] == (TouchStatus.SUPPRESSED, "paid")


def test_the_lapse_warning_is_a_task_for_the_agent_or_a_message_without_one(
    sqlite_store: Store, tmp_path: Path
) -> None:
    insert_agents_and_relations(
        sqlite_store, agents=[{"agent_id": "A1", "name": "李娜", "phone": "+8613900001111"}]
    )
    load_rows(
        sqlite_store,
        customers=[customer("C1", agent_id="A1"), customer("C2")],
        policies=[life_policy("P1", "C1", -45), life_policy("P2", "C2", -45)],
    )
    engine = engine_for(sqlite_store, tmp_path)
    plan_and_record(engine, DAY, run_id="t1", now=NOON)
    send_touches(engine, pending_ids(engine, DAY), run_id="t2", now=NOON)
    touches = premium_touches(sqlite_store)
    assert touches["C1"][0] == touches["C2"][0] == "premium-lapse-warning"
    assert (touches["C1"][1], touches["C1"][3]) == (TouchStatus.ASSIGNED, "agent_task")
    assert (touches["C2"][1], touches["C2"][3]) == (TouchStatus.SENT, "sms")
    texts = outbox_texts(tmp_path)
    assert "P2" in texts and "尚未缴纳" in json.loads(json.dumps(texts))


def test_the_grace_reminder_names_the_agents_phone(sqlite_store: Store, tmp_path: Path) -> None:
    insert_agents_and_relations(
        sqlite_store, agents=[{"agent_id": "A1", "name": "李娜", "phone": "+8613900001111"}]
    )
    load_rows(
        sqlite_store,
        customers=[customer("C1", agent_id="A1")],
        policies=[life_policy("P1", "C1", -30)],
    )
    engine = engine_for(sqlite_store, tmp_path)
    plan_and_record(engine, DAY, run_id="t1", now=NOON)
    report = send_touches(engine, pending_ids(engine, DAY), run_id="t2", now=NOON)
    assert report.sent == 1
    text = outbox_texts(tmp_path)
    assert "+8613900001111" in text and "5,200.00" in text and "2026年10月24日" in text


# (due date from DAY, paid through before planning (from the due date), paid through by the
# send step (None: no payment), the touch's rule, its status after the send step, reason)
PAID_STOP_ROWS = [
    (30, -1, 0, "premium-due-reminder", TouchStatus.SUPPRESSED, "paid"),
    (30, -1, None, "premium-due-reminder", TouchStatus.SENT, None),
    (7, -1, 364, "premium-due-reminder", TouchStatus.SUPPRESSED, "paid"),
    (-7, -1, 0, "premium-grace-reminder", TouchStatus.SUPPRESSED, "paid"),
    (-7, -1, None, "premium-grace-reminder", TouchStatus.SENT, None),
    # An arrear paid in part: the premium the reminder is about is still unpaid.
    (-30, -100, -1, "premium-grace-reminder", TouchStatus.SENT, None),
    (-45, -1, 364, "premium-lapse-warning", TouchStatus.SUPPRESSED, "paid"),
    (-45, -1, None, "premium-lapse-warning", TouchStatus.ASSIGNED, None),
]


def test_the_paid_stop_table(sqlite_store: Store, tmp_path: Path) -> None:
    """Planned reminders, payments recorded between planning and sending, and what the send
    step decides: suppressed ``paid`` exactly when the payment reached the due date."""
    from caretouch.store.payments import apply_payment

    insert_agents_and_relations(
        sqlite_store, agents=[{"agent_id": "A1", "name": "李娜", "phone": "+8613900001111"}]
    )
    customers, policies = [], []
    for i, (due_in, before, _, _, _, _) in enumerate(PAID_STOP_ROWS):
        due = DAY + dt.timedelta(days=due_in)
        customers.append(customer(f"C{i}", agent_id="A1", phone=f"+86138{i:08d}"))
        through = (due + dt.timedelta(days=before)).isoformat()
        policies.append(life_policy(f"P{i}", f"C{i}", due_in, paid_through=through))
    load_rows(sqlite_store, customers=customers, policies=policies)
    engine = engine_for(sqlite_store, tmp_path)
    plan_and_record(engine, DAY, run_id="t1", now=NOON)
    planned = premium_touches(sqlite_store)
    assert {c: t[1] for c, t in planned.items()} == {
        f"C{i}": TouchStatus.PLANNED for i in range(len(PAID_STOP_ROWS))
    }
    with sqlite_store.session() as session:
        for i, (due_in, _, after, _, _, _) in enumerate(PAID_STOP_ROWS):
            if after is not None:
                due = DAY + dt.timedelta(days=due_in)
                apply_payment(session, f"P{i}", due + dt.timedelta(days=after))
    send_touches(engine, pending_ids(engine, DAY), run_id="t2", now=NOON)
    touches = premium_touches(sqlite_store)
    for i, (_, _, _, rule, status, reason) in enumerate(PAID_STOP_ROWS):
        assert touches[f"C{i}"][:3] == (rule, status, reason), PAID_STOP_ROWS[i]


def test_a_deferred_reminder_whose_premium_was_paid_is_not_planned_again(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """Held back by the day's cap (a renewal reminder of higher priority), the premium
    reminder is deferred; paid the same day, the next day's plan suppresses it ``paid``
    instead of planning it again."""
    from caretouch.store.payments import apply_payment

    load_rows(
        sqlite_store,
        customers=[customer("C1"), customer("C2")],
        policies=[
            life_policy("P1", "C1", 30),
            policy_row("T1", "C1", start_date="2025-11-30", renewal_date="2026-11-30"),
            life_policy("P2", "C2", 30),
            policy_row("T2", "C2", start_date="2025-11-30", renewal_date="2026-11-30"),
        ],
    )
    engine = engine_for(sqlite_store, tmp_path)
    plan_and_record(engine, DAY, run_id="t1", now=NOON)
    first = premium_touches(sqlite_store)
    assert {c: t[1:3] for c, t in first.items()} == {
        "C1": (TouchStatus.SUPPRESSED, "deferred"),
        "C2": (TouchStatus.SUPPRESSED, "deferred"),
    }
    with sqlite_store.session() as session:
        apply_payment(session, "P1", DAY + dt.timedelta(days=30 + 364))
    next_day = DAY + dt.timedelta(days=1)
    plan_and_record(engine, next_day, run_id="t2", now=NOON + dt.timedelta(days=1))
    after = premium_touches(sqlite_store)
    assert after["C1"][1:3] == (TouchStatus.SUPPRESSED, "paid")
    assert after["C2"][1] is TouchStatus.PLANNED  # unpaid: it competes again and goes
