"""Status changes: the events the sender and recovery append (sent, failed, suppressed at
send time, planned again, ...), in one transaction each batch."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from ..store.db import Store
from .models import TouchEvent
from .records import StatusChange
from .writer import write


def append_many(
    store: Store, changes: Sequence[StatusChange], *, run_id: str, now: dt.datetime
) -> None:
    """Append status events in one transaction."""
    if not changes:
        return
    rows = [
        {
            "touch_id": c.touch_id,
            "attempt_id": c.attempt_id,
            "status": c.status.value,
            "reason": c.reason,
            "provider_message_id": c.provider_message_id,
            "detail": c.detail,
            "at": now,
            "run_id": run_id,
        }
        for c in changes
    ]
    with write(store, now) as session:
        session.execute(TouchEvent.__table__.insert(), rows)
