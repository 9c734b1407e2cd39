"""The ledger's one writer: every row that enters the ledger goes through ``write``.

``write`` opens a transaction on the store, notes the newest row of every chained table
(``chain.watermark``), hands the session to the caller, then finds the rows the transaction
inserted (``chain.own_rows``), brings ``touch_current`` up to date from its own status
events (``projection.refresh_current``) and chains its rows (``chain.seal``) before it
commits. Writers do not wait for each other while they work: row hashes are computed
outside any lock, and the chain lock is taken only at the end, to link the hashes to the
chain's head and insert the entries; it is held until the commit (docs/ledger.md,
"Concurrent writers"). Touches, attempts, status events, provider events, consent changes
(``ledger.consent``), anchors (``ledger.anchors``) and the retention erasure
(``ledger.erase``) are all written through it; a row inserted any other way is never
chained, and ``care audit verify`` reports it.

A transaction that decides from what it read of the chain or from rows another writer may
change at the same time (numbering anchors, a customer's consent flags) asks for
``serial=True``: it takes the chain lock at its start, as every writer once did.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session

from ..store.db import Store
from . import chain
from .models import TouchEvent, TouchRow
from .projection import refresh_current


@contextmanager
def write(store: Store, now: dt.datetime, *, serial: bool = False) -> Iterator[Session]:
    """A write transaction whose new ledger rows are chained (stamped ``now``) before it
    commits; ``serial``: hold the chain lock from the start."""
    with store.session() as session:
        if serial:
            chain.lock(session)
        mark = chain.watermark(session)
        yield session
        own = chain.own_rows(session, mark)
        refresh_current(
            session,
            own.get(TouchEvent.__tablename__, []),
            new_touches={row["id"] for row in own.get(TouchRow.__tablename__, ())},
        )
        chain.seal(session, now, own)
