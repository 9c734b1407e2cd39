"""The ledger's one writer: every row that enters the ledger goes through ``write``.

``write`` opens a transaction on the store, takes the chain lock (``chain.lock``), hands the
session to the caller, then brings ``touch_current`` up to date (``projection``) and chains
the rows the transaction inserted (``chain.seal``) before it commits. Touches, attempts,
status events, provider events, consent changes (``ledger.consent``), anchors
(``ledger.anchors``) and the retention erasure (``ledger.erase``) are all written through
it; a row inserted any other way is never chained, and ``care audit verify`` reports it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session

from ..store.db import Store
from . import chain
from .projection import refresh_current


@contextmanager
def write(store: Store, now: dt.datetime) -> Iterator[Session]:
    """A write transaction whose new ledger rows are chained (stamped ``now``) before it
    commits."""
    with store.session() as session:
        mark = chain.lock(session)
        yield session
        refresh_current(session)
        chain.seal(session, now, mark)
