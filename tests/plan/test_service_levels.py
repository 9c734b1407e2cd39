"""Service levels in the contact policy (issue 15): tiers mapped to levels, each level's own
caps (per day, 7 days, 30 days, per category) replacing the top-level ones for its tiers,
explanations that name the level's clause, and the cadence trigger that plans a check-in when
a level's cadence runs out. Planned with the ledger as history, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text
from test_contact_policy import (
    DAY,
    Clause,
    assert_mentions,
    assert_sent,
    assert_suppressed,
    at_11_shanghai,
    engine_for,
    explain,
    make_rules,
    plan,
    the,
)

from caretouch.errors import ValidationFailed
from caretouch.plan.cadence import EPOCH, is_due, phase
from caretouch.render.templates import TemplateStore
from caretouch.rules.contact_policy import load_policy
from caretouch.rules.loader import load_rules
from caretouch.run.day import run_day
from caretouch.store.db import Store
from caretouch.vocab import Category, Channel, SuppressionReason
from conftest import TEMPLATES_DIR, customer_row, load_rows, policy_row

D = dt.date

LEVELS = """\
version: 1
caps:
  per_day: 1
  per_7_days: 3
  categories:
    marketing:
      per_7_days: 1
levels:
  premium:
    tiers: [A]
    cadence_days: 30
    caps:
      per_day: 2
      per_30_days: 4
  value_added:
    tiers: [B]
    cadence_days: 90
  basic:
    tiers: [C, D]
    caps:
      categories:
        marketing:
          per_7_days: 0
"""


# --- the policy file ----------------------------------------------------------------------


def test_levels_are_read_with_their_clauses(tmp_path: Path) -> None:
    rules = make_rules(tmp_path, LEVELS)
    policy = load_policy(rules / "policy.yaml")
    premium = policy.level_of("A")
    assert premium is not None and premium.name == "premium"
    assert (premium.tiers, premium.cadence_days) == (("A",), 30)
    assert policy.level_of("B").cadence_days == 90  # type: ignore[union-attr]
    assert policy.level_of("D").name == "basic"  # type: ignore[union-attr]
    shown = policy.clause("levels.premium.caps.per_day", 2)
    assert shown in Clause(rules, "levels.premium.caps.per_day", 2).forms()


def test_caps_for_replaces_only_what_the_level_gives(tmp_path: Path) -> None:
    policy = load_policy(make_rules(tmp_path, LEVELS) / "policy.yaml")

    def limits(tier: str, category: Category) -> dict[str, int]:
        return {
            f"{cap.name}.{name}": value
            for cap in policy.caps_for(tier, category, Channel.SMS)
            for name, value, _ in cap.limits()
        }

    # Premium: its own per_day and per_30_days; the top-level per_7_days still holds.
    assert limits("A", Category.CARE) == {
        "caps.per_7_days": 3,
        "levels.premium.caps.per_day": 2,
        "levels.premium.caps.per_30_days": 4,
    }
    assert limits("A", Category.MARKETING) == {
        "caps.per_7_days": 3,
        "caps.categories.marketing.per_7_days": 1,
        "levels.premium.caps.per_day": 2,
        "levels.premium.caps.per_30_days": 4,
    }
    # Basic: the top-level caps, and its own marketing cap instead of the top-level one.
    assert limits("C", Category.MARKETING) == {
        "caps.per_day": 1,
        "caps.per_7_days": 3,
        "levels.basic.caps.categories.marketing.per_7_days": 0,
    }
    # A tier in no level: the top-level caps.
    assert limits("B", Category.CARE) == {"caps.per_day": 1, "caps.per_7_days": 3}
    assert policy.longest_cap_days == 30


def test_a_tier_in_two_levels_is_an_error_at_its_line(tmp_path: Path) -> None:
    text = LEVELS.replace("    tiers: [B]\n", "    tiers: [B, A]\n")
    rules = make_rules(tmp_path, text)
    with pytest.raises(ValidationFailed) as failed:
        load_policy(rules / "policy.yaml")
    line = text.splitlines().index("    tiers: [B, A]") + 1
    col = "    tiers: [B, A]".index("A") + 1
    assert [str(e) for e in failed.value.errors] == [
        f"{rules / 'policy.yaml'}:{line}:{col}: tier A is in levels premium and value_added: a tier "
        "belongs to one service level"
    ]


@pytest.mark.parametrize(
    ("fragment", "problem"),
    [
        ("    tiers: [E]\n", "'E' is not one of A, B, C, D"),
        ("    cadence_days: 0\n", "0 is less than the minimum of 1"),
        ("    caps:\n      per_31_days: 2\n", "per_31_days"),
        ("    colour: gold\n", "colour"),
    ],
)
def test_a_malformed_level_is_refused_at_its_line(
    tmp_path: Path, fragment: str, problem: str
) -> None:
    head = "version: 1\nlevels:\n  premium:\n" + ("" if "tiers" in fragment else "    tiers: [A]\n")
    rules = make_rules(tmp_path, head + fragment)
    with pytest.raises(ValidationFailed) as failed:
        load_policy(rules / "policy.yaml")
    shown = "\n".join(str(e) for e in failed.value.errors)
    line = head.count("\n") + fragment.count("\n")  # the fragment's last line
    assert f"{rules / 'policy.yaml'}:{line}:" in shown and problem in shown, shown


# --- planning under a level's caps -------------------------------------------------------------


def _two_due(store: Store, tier: str) -> None:
    """C1 has a birthday and a renewal reminder on DAY."""
    load_rows(
        store,
        customers=[customer_row("C1", tier=tier)],
        policies=[policy_row("P1", "C1", renewal_date="2026-11-30")],  # 7 days before: DAY
    )


def test_a_premium_customer_gets_what_the_level_allows(store: Store, tmp_path: Path) -> None:
    _two_due(store, "A")
    rules = make_rules(tmp_path, LEVELS)
    touches = plan(store, rules, DAY)
    for rule_id in ("renewal-reminder", "birthday"):
        touch = the(touches, rule_id)
        assert_sent(touch)
        assert_mentions(explain(touch), "tier A: service level ", Clause(rules, "levels.premium"))


def test_a_basic_customer_is_held_to_the_top_level_cap(store: Store, tmp_path: Path) -> None:
    _two_due(store, "C")
    rules = make_rules(tmp_path, LEVELS)
    touches = plan(store, rules, DAY)
    assert_sent(the(touches, "renewal-reminder"))
    assert_suppressed(
        the(touches, "birthday"),
        SuppressionReason.FREQUENCY_CAP,
        Clause(rules, "caps.per_day", 1),
        Clause(rules, "levels.basic"),
    )


def test_a_level_cap_is_named_in_the_explanation(store: Store, tmp_path: Path) -> None:
    _two_due(store, "A")
    rules = make_rules(tmp_path, LEVELS.replace("      per_day: 2\n", "      per_day: 1\n"))
    assert_suppressed(
        the(plan(store, rules, DAY), "birthday"),
        SuppressionReason.FREQUENCY_CAP,
        Clause(rules, "levels.premium.caps.per_day", 1),
        "renewal-reminder (2026-11-23) on 2026-11-23",
    )


def test_per_30_days_counts_contacts_weeks_before(store: Store, tmp_path: Path) -> None:
    """Two touches sent 20 and 12 days before fill a per_30_days cap of 2: the birthday is
    held back although no 7-day window holds anything."""
    load_rows(
        store,
        customers=[customer_row("C1", tier="A")],
        # Renewal reminders 7 and 1 day(s) before 2026-11-10: sent on 11-03 and 11-09.
        policies=[policy_row("P1", "C1", renewal_date="2026-11-10")],
    )
    text = LEVELS.replace("      per_30_days: 4\n", "      per_30_days: 2\n")
    rules = make_rules(tmp_path, text)
    engine = engine_for(store, rules, tmp_path)
    for day in (D(2026, 11, 3), D(2026, 11, 9)):
        assert run_day(engine, day, run_id=f"r-{day}", now=at_11_shanghai(day)).sent == 1
    assert_suppressed(
        the(plan(store, rules, DAY), "birthday"),
        SuppressionReason.FREQUENCY_CAP,
        Clause(rules, "levels.premium.caps.per_30_days", 2),
        "2 touch(es) already",
        "in 2026-10-25..2026-11-23",
    )
    # A customer in another level is not held by premium's 30-day cap.
    load_rows(store, customers=[customer_row("C1", tier="B")])
    assert_sent(the(plan(store, rules, DAY), "birthday"))


# --- the cadence trigger ------------------------------------------------------------------------


@given(
    cadence=st.integers(1, 400),
    last=st.dates(D(2000, 1, 1), D(2030, 1, 1)),
    start=st.integers(0, 2000),
)
def test_one_due_day_per_cycle(cadence: int, last: dt.date, start: int) -> None:
    """Over any run of ``cadence`` days after the first cycle, exactly one is due; never
    within the cadence after the last contact."""
    assert not any(is_due(last + dt.timedelta(days=n), cadence, last, "C1") for n in range(cadence))
    first = last + dt.timedelta(days=cadence + start)
    due = [n for n in range(cadence) if is_due(first + dt.timedelta(days=n), cadence, last, "C1")]
    assert len(due) == 1


@given(cadence=st.integers(1, 400), start=st.dates(D(2000, 1, 1), D(2030, 1, 1)))
def test_never_contacted_is_due_once_per_cycle(cadence: int, start: dt.date) -> None:
    days = [start + dt.timedelta(days=n) for n in range(cadence)]
    due = [d for d in days if is_due(d, cadence, None, "C000123")]
    assert len(due) == 1
    assert (due[0] - EPOCH).days % cadence == phase("C000123", cadence)


def test_never_contacted_customers_are_spread_over_the_cycle() -> None:
    counts = [0] * 30
    for n in range(3000):
        counts[phase(f"C{n:06d}", 30)] += 1
    assert min(counts) > 50 and max(counts) < 150  # about 100 each, not all on one day


CADENCE_RULE = """\
version: 1
rules:
  - id: check-in
    description: a check-in when the level's cadence runs out
    trigger:
      kind: cadence
    audience:
      customer.status: active
    channels: [sms]
    template: check_in
    category: care
    priority: 10
    send_time: "10:00"
"""


def _due_day(customer_id: str, cadence: int, after: dt.date) -> dt.date:
    """The first day from ``after`` on which a never-contacted customer is due."""
    day = after
    while not is_due(day, cadence, None, customer_id):
        day += dt.timedelta(days=1)
    return day


def test_cadence_plans_a_check_in_when_the_cadence_runs_out(store: Store, tmp_path: Path) -> None:
    load_rows(
        store,
        customers=[
            customer_row("C1", tier="A", birth_date="1990-06-15"),
            customer_row("C2", tier="C", birth_date="1990-06-15"),  # basic: no cadence
        ],
    )
    rules = make_rules(tmp_path, LEVELS, {"check-in.yaml": CADENCE_RULE}, shipped=())
    first = _due_day("C1", 30, D(2026, 10, 1))
    touches = plan(store, rules, first)
    assert [t.customer_id for t in touches] == ["C1"]
    touch = touches[0]
    assert_sent(touch)
    assert_mentions(
        explain(touch),
        "cadence: never contacted",
        Clause(rules, "levels.premium.cadence_days", 30),
    )
    assert touch.template_context()["cadence_days"] == 30
    assert touch.template_context()["last_contact"] is None
    # Not due the day before or after.
    for other in (first - dt.timedelta(days=1), first + dt.timedelta(days=1)):
        assert plan(store, rules, other) == []
    # Sent: the next check-in is due a cadence after it, not at the old phase.
    engine = engine_for(store, rules, tmp_path)
    assert run_day(engine, first, run_id="r1", now=at_11_shanghai(first)).sent == 1
    after = first + dt.timedelta(days=30)
    assert [t.customer_id for t in plan(store, rules, after)] == ["C1"]
    again = plan(store, rules, after)[0]
    assert again.template_context()["last_contact"] == first
    assert_mentions(explain(again), f"cadence: last contact {first}")
    assert all(plan(store, rules, after - dt.timedelta(days=n)) == [] for n in (1, 10, 29))


def test_any_message_that_went_out_counts_as_contact(store: Store, tmp_path: Path) -> None:
    """A renewal reminder sent resets the premium customer's cadence."""
    load_rows(
        store,
        customers=[customer_row("C1", tier="A", birth_date="1990-06-15")],
        policies=[policy_row("P1", "C1", renewal_date="2026-11-30")],  # reminder on 11-23
    )
    rules = make_rules(
        tmp_path, LEVELS, {"check-in.yaml": CADENCE_RULE}, shipped=("renewal-reminder",)
    )
    engine = engine_for(store, rules, tmp_path)
    assert run_day(engine, DAY, run_id="r1", now=at_11_shanghai(DAY)).sent == 1
    due = DAY + dt.timedelta(days=30)
    # The reminder of 1 day before (11-29) went out too, when run; here only 11-23 was run.
    touches = [t for t in plan(store, rules, due) if t.rule.id == "check-in"]
    assert [t.customer_id for t in touches] == ["C1"]
    assert touches[0].template_context()["last_contact"] == DAY


def test_a_cadence_rule_without_a_level_cadence_is_warned_about(tmp_path: Path) -> None:
    """The rule is right; the policy gives it nothing to do: a warning at the rule, not an
    error (removing the levels must not stop the other rules)."""
    rules = make_rules(tmp_path, "version: 1\n", {"check-in.yaml": CADENCE_RULE}, shipped=())
    ruleset = load_rules(rules, TemplateStore(TEMPLATES_DIR))
    assert ruleset.errors == []
    shown = [str(w) for w in ruleset.warnings]
    line = CADENCE_RULE.splitlines().index("  - id: check-in") + 1
    assert len(shown) == 1, shown
    assert shown[0].startswith(f"{rules / 'check-in.yaml'}:{line}:")
    assert "no level of any tier has one in the contact policy" in shown[0]
    # Tiers that have none: named.
    only_c = CADENCE_RULE.replace(
        '    send_time: "10:00"\n', '    send_time: "10:00"\n    tiers: [C, D]\n'
    )
    rules = make_rules(tmp_path, LEVELS, {"check-in.yaml": only_c}, shipped=(), name="rules2")
    ruleset = load_rules(rules, TemplateStore(TEMPLATES_DIR))
    shown = [str(w) for w in ruleset.warnings]
    assert ruleset.errors == [] and len(shown) == 1, shown
    assert "no level of tiers C, D has one" in shown[0] and "(tiers with one: A, B)" in shown[0]
    # With a level of a cadence among its tiers: no warning.
    rules = make_rules(tmp_path, LEVELS, {"check-in.yaml": CADENCE_RULE}, shipped=(), name="r3")
    assert load_rules(rules, TemplateStore(TEMPLATES_DIR)).warnings == []


# --- the shipped check-in: a call task, and a task done counts as contact ----------------------


def test_the_shipped_check_in_is_a_call_and_a_task_done_is_contact(
    store: Store, tmp_path: Path
) -> None:
    """Tier A with an agent: the shipped check-in rule assigns a call; the agent records it
    done five days later, and the next check-in is due 30 days after that day."""
    from agent_tasks import add_agents

    from caretouch.run.tasks import complete_task
    from caretouch.vocab import TaskOutcome

    add_agents(store, "A1")
    load_rows(store, customers=[customer_row("C1", tier="A", birth_date="1990-06-15")])
    with store.session() as session:
        session.execute(text("UPDATE customers SET agent_id = 'A1' WHERE customer_id = 'C1'"))
    rules = make_rules(tmp_path, shipped=("check-in",))
    first = _due_day("C1", 30, D(2026, 10, 1))
    touch = the(plan(store, rules, first), "check-in")
    assert_sent(touch)
    assert touch.channel is Channel.AGENT_TASK
    engine = engine_for(store, rules, tmp_path)
    run_day(engine, first, run_id="r1", now=at_11_shanghai(first))
    done_day = first + dt.timedelta(days=5)
    complete_task(
        store,
        touch.key,
        TaskOutcome.REACHED,
        by="A1",
        run_id="done-1",
        now=at_11_shanghai(done_day),
    )
    # Due 30 days after the call was done, not 30 days after it was assigned.
    assert plan(store, rules, first + dt.timedelta(days=30)) == []
    again = the(plan(store, rules, done_day + dt.timedelta(days=30)), "check-in")
    assert again.template_context()["last_contact"] == done_day


def test_the_shipped_check_in_without_an_agent_is_a_message(store: Store, tmp_path: Path) -> None:
    load_rows(store, customers=[customer_row("C1", tier="B", birth_date="1990-06-15")])
    rules = make_rules(tmp_path, shipped=("check-in",))
    day = _due_day("C1", 90, D(2026, 10, 1))
    touch = the(plan(store, rules, day), "check-in")
    assert_sent(touch)
    assert touch.channel is Channel.SMS
    assert_mentions(explain(touch), "channel sms: first usable of agent_task, sms, email")
