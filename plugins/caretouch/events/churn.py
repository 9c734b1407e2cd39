"""The ``churn_risk_high`` events (客户流失预警): each day's run asks ``signals.churn`` which
customers are at high risk of leaving and submits an event for each to the inbox; the shipped
rule ``retention-call`` turns it into a call for the customer's agent (docs/operations.md,
"Customers at risk of leaving").

The ``event_id`` names the customer and the 30-day period (``churn_risk_high:C1:<period>``): at
most one per customer per period, whatever the number of runs or hosts (the inbox keeps one
event per id, and an id raised already is not submitted again). Nothing here reads the clock.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from ..errors import CareError
from ..plan.cadence import EPOCH
from ..rules.contact_policy import ContactPolicy
from ..rules.event_types import EventTypes
from ..run.engine import CareEngine
from ..signals.churn import Risk, assess
from ..store.db import Store, among
from ..store.models import Event
from ..vocab import RiskLevel
from .inbox import Incoming, IntakeReport, submit

log = logging.getLogger("caretouch.events")

# One churn_risk_high event per customer per this many days.
RETENTION_PERIOD_DAYS = 30
EVENT_TYPE = "churn_risk_high"
CHUNK = 500


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
        raised: set[str] = set()
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
