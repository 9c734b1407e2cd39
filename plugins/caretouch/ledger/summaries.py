"""Summaries the reports read: what a run recorded, a day's touches, the service
obligations a run recorded as missed."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select

from ..dates import aware_utc
from ..store.db import Store
from ..vocab import SuppressionReason, TouchStatus
from .models import TouchCurrent, TouchEvent, TouchRow
from .readers import states_for_day
from .statuses import RUN_COUNTS


def run_counts(store: Store, run_id: str | Sequence[str]) -> dict[str, int]:
    """What one run recorded: its status events by status, so a run summary's counts are
    the ledger's own. ``planned``: touches planned (or planned again) by a decision;
    ``retry``: put back to ``planned`` after a retryable failure or a crash that did
    not reach the provider; ``in_flight``: claimed by the run and still ``sending`` (the
    provider's answer was unclear: recovery asks again)."""
    counts = dict.fromkeys(RUN_COUNTS, 0)
    # One run id, or the ids of every writer of one run (a DAG run's tasks).
    writers = [run_id] if isinstance(run_id, str) else list(run_id)
    ours = TouchEvent.run_id.in_(writers)
    has_reason = TouchEvent.reason.is_not(None)
    with store.read_session() as session:
        rows = session.execute(
            select(TouchEvent.status, has_reason, func.count())
            .where(ours)
            .group_by(TouchEvent.status, has_reason)
        )
        for status, reason, count in rows:
            key = "retry" if status == TouchStatus.PLANNED.value and reason else status
            if key in counts:
                counts[key] += count
        counts["in_flight"] = (
            session.scalar(
                select(func.count(func.distinct(TouchEvent.touch_id)))
                .join(TouchCurrent, TouchCurrent.touch_id == TouchEvent.touch_id)
                .where(
                    ours,
                    TouchEvent.status == TouchStatus.SENDING.value,
                    TouchCurrent.status == TouchStatus.SENDING.value,
                )
            )
            or 0
        )
    return counts


def counts_for_day(store: Store, occurrence: dt.date) -> list[dict[str, Any]]:
    """One dict per touch of the day: rule, channel, tier, status and reason."""
    out = []
    for state in states_for_day(store, occurrence):
        out.append(
            {
                "rule_id": state.row.rule_id,
                "channel": state.row.channel,
                "tier": state.row.tier,
                "status": state.status.value,
                "reason": state.reason,
                "send_at": aware_utc(state.row.send_at),
            }
        )
    return out


def missed_obligations(store: Store, run_id: str | Sequence[str]) -> list[dict[str, Any]]:
    """The service obligations run ``run_id`` (or the writers of one run, as in
    ``run_counts``) recorded as ``obligation_missed``: touch id and key, rule id,
    customer id and occurrence (the day it was due), oldest first."""
    missed = SuppressionReason.OBLIGATION_MISSED.value
    writers = [run_id] if isinstance(run_id, str) else list(run_id)
    with store.read_session() as session:
        rows = session.execute(
            select(
                TouchRow.id,
                TouchRow.touch_key,
                TouchRow.rule_id,
                TouchRow.customer_id,
                TouchRow.occurrence,
            )
            .join(TouchEvent, TouchEvent.touch_id == TouchRow.id)
            .where(TouchEvent.run_id.in_(writers), TouchEvent.reason == missed)
            .order_by(TouchEvent.id)
        ).all()
    return [
        {
            "touch_id": i,
            "touch_key": k,
            "rule_id": r,
            "customer_id": c,
            "occurrence": o.isoformat(),
        }
        for i, k, r, c, o in rows
    ]
