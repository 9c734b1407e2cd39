"""Export: the touches matching a search as CSV, neutralised against formula injection."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

from ...store.db import Store
from .search import Filters, touches

EXPORT_COLUMNS = (
    "touch_id",
    "touch_key",
    "rule_id",
    "rule_hash",
    "customer_id",
    "policy_id",
    "event_id",
    "occurrence",
    "channel",
    "status",
    "reason",
    "recipient",
    "template_id",
    "variant",
    "template_hash",
    "content_hash",
    "locale",
    "sent_at",
    "run_id",
    "test",  # True: a test send (care send-test), never a contact of the customer
)
# A spreadsheet runs a cell starting with one of these as a formula (OWASP, CSV injection),
# a masked phone number "+86 138****8000" included; the full-width forms too, which
# spreadsheets in CJK locales may take for the ASCII ones.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def csv_cell(value: Any) -> str:
    """One CSV cell, neutralised: a leading apostrophe keeps a would-be formula as text."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


class CsvExport:
    """The touches matching ``filters`` as CSV (``EXPORT_COLUMNS``, a header even when
    nothing matches, CRLF lines, cells neutralised by ``csv_cell``), in chunks of about
    64 KB: ``touches`` reads the ledger page by page, so memory stays constant. ``rows``
    counts the touches written so far. ``care audit export`` and the web view's export.
    """

    def __init__(self, store: Store, filters: Filters) -> None:
        self.store = store
        self.filters = filters
        self.rows = 0

    def __iter__(self) -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(EXPORT_COLUMNS)
        for row in touches(self.store, self.filters):
            writer.writerow([csv_cell(row.get(column)) for column in EXPORT_COLUMNS])
            self.rows += 1
            if buffer.tell() > 65536:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()
