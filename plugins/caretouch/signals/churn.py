"""Early warning of leaving (客户流失预警): a churn-risk signal per customer from the store and
the ledger (read only; ``events.churn`` raises the events that ask their agent to call).

Signals (``vocab.ChurnSignal``) and their weights:

- ``premium_overdue`` (3): an active policy's premium is past its due date and not paid
  (``paid_through`` before ``premium_due_date``, or none);
- ``open_complaint`` (3): a complaint received or reopened in the last ``COMPLAINT_DAYS`` whose
  case has no later ``complaint_resolved`` or ``complaint_closed``;
- ``unsatisfied`` (2): a ``reply_unsatisfied`` in the last ``RECENT_DAYS``;
- ``opted_out`` (2): a consent withdrawn in the last ``RECENT_DAYS``;
- ``out_of_cadence`` (1): no completed contact within the cadence of the customer's service
  level (customers of a level without a cadence never have it).

The score is the sum; 4 or more is ``high``, 2-3 ``medium``, 1 ``low``. Only the first four
signals make a customer a candidate when the whole store is assessed (each is an index or a
bounded read), so a quiet store costs little; ``out_of_cadence`` is added to the candidates
(and shown for one customer), never enough alone to be more than ``low``.

``events.churn`` raises a ``churn_risk_high`` event for each customer at high risk; the
report (``reports``) and ``care customer`` read the same figures. Nothing here reads the clock.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select

from ..ledger import Ledger
from ..plan.cases import case_of
from ..rules.contact_policy import ContactPolicy
from ..rules.sql import premium_unpaid
from ..store.db import Store, among
from ..store.models import ConsentEvent, Customer, Event, InsurancePolicy
from ..vocab import ChurnSignal, CustomerStatus, PolicyStatus, RiskLevel

log = logging.getLogger("caretouch.signals")

WEIGHTS: dict[ChurnSignal, int] = {
    ChurnSignal.PREMIUM_OVERDUE: 3,
    ChurnSignal.OPEN_COMPLAINT: 3,
    ChurnSignal.UNSATISFIED: 2,
    ChurnSignal.OPTED_OUT: 2,
    ChurnSignal.OUT_OF_CADENCE: 1,
}
HIGH = 4
MEDIUM = 2
# How far back a complaint may still be open, and how long a reply or an opt-out counts.
COMPLAINT_DAYS = 365
RECENT_DAYS = 90
OPENING = ("complaint_received", "complaint_reopened")
CLOSING = ("complaint_resolved", "complaint_closed")
UNSATISFIED_TYPE = "reply_unsatisfied"
CHUNK = 500


def level_of(score: int) -> RiskLevel:
    if score >= HIGH:
        return RiskLevel.HIGH
    if score >= MEDIUM:
        return RiskLevel.MEDIUM
    return RiskLevel.LOW if score > 0 else RiskLevel.NONE


@dataclass
class Risk:
    """One customer's churn risk on a day: the signals found, each with what it rests on."""

    customer_id: str
    agent_id: str | None = None
    tier: str | None = None
    signals: dict[ChurnSignal, str] = field(default_factory=dict)

    @property
    def score(self) -> int:
        return sum(WEIGHTS[s] for s in self.signals)

    @property
    def level(self) -> RiskLevel:
        return level_of(self.score)

    def as_dict(self) -> dict[str, object]:
        return {
            "customer_id": self.customer_id,
            "agent_id": self.agent_id,
            "tier": self.tier,
            "score": self.score,
            "level": self.level.value,
            "signals": {s.value: why for s, why in self.signals.items()},
        }


def _day_end(day: dt.date) -> dt.datetime:
    """The end of ``day`` in UTC (events are stored in UTC; a day's precision is enough)."""
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.timezone.utc)


def _overdue_premiums(
    store: Store, day: dt.date, customer_ids: Sequence[str] | None
) -> dict[str, str]:
    """Customer -> the overdue premium (the oldest due date of an active, unpaid policy)."""
    query = select(
        InsurancePolicy.customer_id, InsurancePolicy.policy_id, InsurancePolicy.premium_due_date
    ).where(
        InsurancePolicy.premium_due_date < day,
        InsurancePolicy.status == PolicyStatus.ACTIVE.value,
        premium_unpaid(),
    )
    found: dict[str, tuple[dt.date, str]] = {}
    with store.read_session() as session:
        for chunk in _chunks(customer_ids):
            q = (
                query
                if chunk is None
                else query.where(among(session, InsurancePolicy.customer_id, chunk))
            )
            for customer_id, policy_id, due in session.execute(q):
                assert due is not None  # the WHERE compares it
                if customer_id not in found or due < found[customer_id][0]:
                    found[customer_id] = (due, policy_id)
    return {
        c: f"policy {p}: premium due {due.isoformat()}, {(day - due).days} day(s) unpaid"
        for c, (due, p) in found.items()
    }


def _events(
    store: Store,
    types: Sequence[str],
    since: dt.datetime,
    until: dt.datetime,
    customer_ids: Sequence[str] | None,
) -> list[tuple[str, str, dt.datetime, dict[str, object] | None]]:
    query = (
        select(Event.customer_id, Event.type, Event.occurred_at, Event.payload)
        .where(Event.type.in_(types), Event.occurred_at >= since, Event.occurred_at < until)
        .order_by(Event.occurred_at, Event.id)
    )
    rows: list[tuple[str, str, dt.datetime, dict[str, object] | None]] = []
    with store.read_session() as session:
        for chunk in _chunks(customer_ids):
            q = query if chunk is None else query.where(among(session, Event.customer_id, chunk))
            rows.extend((c, t, at, p) for c, t, at, p in session.execute(q))
    return rows


def open_complaints(
    store: Store, day: dt.date, customer_ids: Sequence[str] | None = None
) -> dict[str, list[str]]:
    """Customer -> the case numbers received or reopened in the last ``COMPLAINT_DAYS`` and
    not resolved or closed since (by the end of ``day``)."""
    end = _day_end(day)
    rows = _events(
        store, OPENING + CLOSING, end - dt.timedelta(days=COMPLAINT_DAYS), end, customer_ids
    )
    state: dict[tuple[str, str], bool] = {}
    for customer_id, type_, _at, payload in rows:  # in time order: the last word counts
        case = case_of(payload)
        if case:
            state[(customer_id, case)] = type_ in OPENING
    found: dict[str, list[str]] = defaultdict(list)
    for (customer_id, case), is_open in sorted(state.items()):
        if is_open:
            found[customer_id].append(case)
    return dict(found)


def _unsatisfied(store: Store, day: dt.date, customer_ids: Sequence[str] | None) -> dict[str, str]:
    end = _day_end(day)
    counts: dict[str, int] = defaultdict(int)
    for customer_id, _t, _at, _p in _events(
        store, (UNSATISFIED_TYPE,), end - dt.timedelta(days=RECENT_DAYS), end, customer_ids
    ):
        counts[customer_id] += 1
    return {c: f"{n} unsatisfied answer(s) in {RECENT_DAYS} days" for c, n in counts.items()}


def _opted_out(store: Store, day: dt.date, customer_ids: Sequence[str] | None) -> dict[str, str]:
    end = _day_end(day)
    query = select(ConsentEvent.customer_id, ConsentEvent.purpose).where(
        ConsentEvent.granted.is_(False),
        ConsentEvent.at >= end - dt.timedelta(days=RECENT_DAYS),
        ConsentEvent.at < end,
    )
    found: dict[str, set[str]] = defaultdict(set)
    with store.read_session() as session:
        for chunk in _chunks(customer_ids):
            q = (
                query
                if chunk is None
                else query.where(among(session, ConsentEvent.customer_id, chunk))
            )
            for customer_id, purpose in session.execute(q):
                found[customer_id].add(purpose)
    return {
        c: f"withdrew {', '.join(sorted(p))} consent in {RECENT_DAYS} days"
        for c, p in found.items()
    }


def _chunks(ids: Sequence[str] | None) -> Iterable[list[str] | None]:
    if ids is None:
        yield None
        return
    for start in range(0, len(ids), CHUNK):
        yield list(ids[start : start + CHUNK])


def assess(
    store: Store,
    policy: ContactPolicy,
    day: dt.date,
    customer_ids: Iterable[str] | None = None,
) -> dict[str, Risk]:
    """The churn risk on ``day`` of ``customer_ids`` (every one of them, signals or not), or
    of the whole store's active customers with at least one of the four strong signals."""
    wanted = None if customer_ids is None else sorted(set(customer_ids))
    found: dict[str, dict[ChurnSignal, str]] = defaultdict(dict)
    for signal, by_customer in (
        (ChurnSignal.PREMIUM_OVERDUE, _overdue_premiums(store, day, wanted)),
        (
            ChurnSignal.OPEN_COMPLAINT,
            {
                c: f"open case(s) {', '.join(cases)}"
                for c, cases in open_complaints(store, day, wanted).items()
            },
        ),
        (ChurnSignal.UNSATISFIED, _unsatisfied(store, day, wanted)),
        (ChurnSignal.OPTED_OUT, _opted_out(store, day, wanted)),
    ):
        for customer_id, why in by_customer.items():
            found[customer_id][signal] = why
    candidates = wanted if wanted is not None else sorted(found)
    risks: dict[str, Risk] = {}
    with store.read_session() as session:
        for chunk in _chunks(candidates):
            assert chunk is not None
            for customer_id, agent_id, tier, status in session.execute(
                select(
                    Customer.customer_id, Customer.agent_id, Customer.tier, Customer.status
                ).where(among(session, Customer.customer_id, chunk))
            ):
                if wanted is None and status != CustomerStatus.ACTIVE.value:
                    continue
                risks[customer_id] = Risk(customer_id, agent_id, tier, dict(found[customer_id]))
    _add_cadence(store, policy, day, risks)
    return risks


def _add_cadence(store: Store, policy: ContactPolicy, day: dt.date, risks: dict[str, Risk]) -> None:
    """``out_of_cadence`` for the customers whose level has a cadence and whose last completed
    contact is older than it (or who were never contacted)."""
    with_cadence = {
        c: level
        for c, r in risks.items()
        if (level := policy.level_of(r.tier)) is not None and level.cadence_days
    }
    if not with_cadence:
        return
    last = Ledger(store).last_contacts(with_cadence, day)
    for customer_id, level in with_cadence.items():
        cadence = level.cadence_days
        assert cadence is not None
        contacted = last.get(customer_id)
        if contacted is None:
            why = f"never contacted (level {level.name}: every {cadence} days)"
        elif (day - contacted).days > cadence:
            why = (
                f"last contact {contacted.isoformat()}, {(day - contacted).days} days ago "
                f"(level {level.name}: every {cadence} days)"
            )
        else:
            continue
        risks[customer_id].signals[ChurnSignal.OUT_OF_CADENCE] = why


def by_agent(risks: Iterable[Risk]) -> dict[str, list[Risk]]:
    """Risks grouped by agent ("" for customers without one), highest score first."""
    grouped: dict[str, list[Risk]] = defaultdict(list)
    for risk in risks:
        grouped[risk.agent_id or ""].append(risk)
    return {
        agent: sorted(rs, key=lambda r: (-r.score, r.customer_id))
        for agent, rs in sorted(grouped.items())
    }
