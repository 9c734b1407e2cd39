"""Early warning of leaving (客户流失预警): a churn-risk signal per customer from the store and
the ledger, and the ``churn_risk_high`` events that ask their agent to call.

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

``raise_retention_events`` submits a ``churn_risk_high`` event to the inbox for each customer
at high risk, with an ``event_id`` naming the customer and the 30-day period
(``churn_risk:C1:<period>``): at most one per customer per period, whatever the number of
runs or hosts (the inbox keeps one event per id). The shipped rule ``retention-call`` turns it
into a task for the customer's agent. Nothing here reads the clock.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import or_, select
from sqlalchemy.exc import SQLAlchemyError

from ..errors import CareError
from ..ledger import Ledger
from ..plan.cadence import EPOCH
from ..rules.contact_policy import ContactPolicy
from ..rules.event_types import EventTypes
from ..run.engine import CareEngine
from ..store.db import Store, among
from ..store.models import ConsentEvent, Customer, Event, InsurancePolicy
from ..vocab import ChurnSignal, CustomerStatus, PolicyStatus, RiskLevel
from .inbox import Incoming, IntakeReport, submit

log = logging.getLogger("caretouch.events")

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
# One churn_risk_high event per customer per this many days.
RETENTION_PERIOD_DAYS = 30
EVENT_TYPE = "churn_risk_high"
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
        or_(
            InsurancePolicy.paid_through.is_(None),
            InsurancePolicy.paid_through < InsurancePolicy.premium_due_date,
        ),
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
            rows.extend(tuple(r) for r in session.execute(q))  # type: ignore[misc]
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
        case = str((payload or {}).get("case_id") or "")
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


def period_of(day: dt.date) -> int:
    """The 30-day period of ``day`` (``RETENTION_PERIOD_DAYS``), counted from ``cadence.EPOCH``."""
    return (day - EPOCH).days // RETENTION_PERIOD_DAYS


def retention_event(risk: Risk, day: dt.date, at: dt.datetime) -> dict[str, object]:
    """The ``churn_risk_high`` event raised for ``risk`` on ``day``, stamped ``at``."""
    return {
        "event_id": f"{EVENT_TYPE}:{risk.customer_id}:{period_of(day)}",
        "type": EVENT_TYPE,
        "customer_id": risk.customer_id,
        "occurred_at": at.isoformat(),
        "payload": {
            "score": risk.score,
            "signals": ",".join(s.value for s in risk.signals),
        },
    }


def raise_retention_events(
    store: Store,
    policy: ContactPolicy,
    event_types: EventTypes,
    day: dt.date,
    *,
    now: dt.datetime,
) -> IntakeReport:
    """Submit a ``churn_risk_high`` event for each active customer at high risk on ``day``
    (at most one per customer and 30-day period). Without the type declared in
    care_rules/events.yaml, nothing is raised (and this says so)."""
    if not event_types.available or EVENT_TYPE not in event_types.types:
        log.info("churn: %s is not declared in events.yaml: no retention events", EVENT_TYPE)
        return IntakeReport()
    # Stamped on the day assessed (noon in the policy's default time zone), so that a run of
    # an earlier day plans its retention calls on that day; never later than now.
    at = min(now, dt.datetime.combine(day, dt.time(12), policy.zone(None)))
    high = [r for r in assess(store, policy, day).values() if r.level is RiskLevel.HIGH]
    events = [retention_event(r, day, at) for r in high]
    # Raised already this period (by an earlier run, on any host): left as it is, since the
    # inbox never changes an event (its score may have moved since).
    with store.read_session() as session:
        ids = [str(e["event_id"]) for e in events]
        raised = set()
        for start in range(0, len(ids), CHUNK):
            raised.update(
                session.scalars(
                    select(Event.event_id).where(
                        among(session, Event.event_id, ids[start : start + CHUNK])
                    )
                )
            )
    items = [
        Incoming(e, ref=f"churn:{day.isoformat()}") for e in events if e["event_id"] not in raised
    ]
    report = submit(store, items, source="churn", now=now, event_types=event_types)
    log.info(
        "churn: %d customer(s) at high risk on %s; %d new retention event(s)",
        len(high),
        day,
        len(report.accepted),
    )
    return report


def raise_for_day(engine: CareEngine, day: dt.date, *, now: dt.datetime) -> IntakeReport:
    """``raise_retention_events`` with a run's engine (``care run``, ``care_daily``): before
    the day is planned, so that its retention calls are planned with it. A failure is logged
    and the run goes on (the day's other touches do not wait for it)."""
    try:
        return raise_retention_events(
            engine.store, engine.policy, engine.ruleset.event_types, day, now=now
        )
    except (CareError, SQLAlchemyError) as exc:
        log.error("churn: retention events not raised for %s (%s)", day, type(exc).__name__)
        return IntakeReport()


def by_agent(risks: Iterable[Risk]) -> dict[str, list[Risk]]:
    """Risks grouped by agent ("" for customers without one), highest score first."""
    grouped: dict[str, list[Risk]] = defaultdict(list)
    for risk in risks:
        grouped[risk.agent_id or ""].append(risk)
    return {
        agent: sorted(rs, key=lambda r: (-r.score, r.customer_id))
        for agent, rs in sorted(grouped.items())
    }
