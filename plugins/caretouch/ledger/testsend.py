"""Test touches: a rule's message sent by ``care send-test`` to an internal address.

A test touch is a ``touches`` row like any other (its attempt holds the rendered content and
the address it went to; its status events follow it as for any touch) with ``test`` TRUE and
a key of its own (``TEST_KEY_PREFIX`` + the real touch's key + a unique suffix), so it never
stands in the real touch's place. Every reader that counts contacts (caps, cadence, occasions,
the reports' figures) and the send queue leave it out (``REAL_TOUCH``); ``test`` is NULL on
every customer touch.
"""

from __future__ import annotations

import datetime as dt

from ..store.db import Store
from ..vocab import TouchStatus
from .chain import insert_rows
from .models import REAL_TOUCH, TouchEvent, TouchRow
from .reconcile import touch_row
from .records import PlannedTouch
from .writer import write

# Every test touch's key starts with this; a plan's keys start with a rule id
# (``rule|kind:subject|date``), which holds no colon.
TEST_KEY_PREFIX = "test:"

__all__ = ["REAL_TOUCH", "TEST_KEY_PREFIX", "record_test_touch"]


def record_test_touch(store: Store, touch: PlannedTouch, *, run_id: str, now: dt.datetime) -> int:
    """Insert a test touch (``test`` TRUE) and its ``planned`` event; its id.

    ``touch.key`` must start with ``TEST_KEY_PREFIX``: a test touch never takes a customer
    touch's key, whose uniqueness is what makes a plan idempotent."""
    if not touch.key.startswith(TEST_KEY_PREFIX):
        raise ValueError(f"a test touch's key starts with {TEST_KEY_PREFIX!r}: {touch.key!r}")
    with write(store, now) as session:
        (touch_id,) = insert_rows(
            session,
            TouchRow,
            [{**touch_row(touch, run_id, now), "test": True}],
            string_keyed=("context",),
        )
        insert_rows(
            session,
            TouchEvent,
            [
                {
                    "touch_id": touch_id,
                    "status": TouchStatus.PLANNED.value,
                    "detail": {"test": True, "explain": list(touch.explain)},
                    "send_at": touch.send_at,
                    "channel": touch.channel.value if touch.channel else None,
                    "at": now,
                    "run_id": run_id,
                }
            ],
        )
    return touch_id
