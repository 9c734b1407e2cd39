"""Retention: erase the message content of old attempts; their hashes stay, so the chain
still verifies. Written through the ledger's writer, like every change to the ledger."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import update

from ...store.db import Store
from ..models import Attempt
from ..writer import write


def erase_content(store: Store, before: dt.datetime) -> int:
    """Retention: erase message content of attempts made before ``before``; hashes stay, so
    the chain still verifies. Returns how many attempts were erased."""
    with write(store, before) as session:
        result = session.execute(
            update(Attempt)
            .where(Attempt.created_at < before, Attempt.body.is_not(None))
            .values(subject=None, body=None, html=None)
        )
        return int(result.rowcount or 0)
