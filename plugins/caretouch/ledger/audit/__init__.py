"""What auditors ask of the ledger: verification, search, export, a touch's history, and
retention.

Recipients are masked in everything this package returns. The CLI (``care audit``) and the
web view call these same functions:

- ``verify``: every row against the hash chain, the consent flags, the anchors;
- ``search``: filters checked by ``make_filters``, matching touches by ``touches``;
- ``export``: those touches as CSV (``CsvExport``);
- ``detail``: one touch with its attempts and history (``touch_detail``);
- ``erase``: retention's ``erase_content``, through the ledger's writer.
"""

from ..anchors import AnchorError, anchor_key
from .detail import decision_facts, touch_detail
from .erase import erase_content
from .export import EXPORT_COLUMNS, CsvExport, csv_cell
from .search import (
    PAGE,
    ROW_ID_MAX,
    Filters,
    InvalidFilter,
    find_touch_id,
    make_filters,
    rule_ids_in_ledger,
    touches,
)
from .verify import VerifyReport, verify

__all__ = [
    "EXPORT_COLUMNS",
    "PAGE",
    "ROW_ID_MAX",
    "AnchorError",
    "CsvExport",
    "Filters",
    "InvalidFilter",
    "VerifyReport",
    "anchor_key",
    "csv_cell",
    "decision_facts",
    "erase_content",
    "find_touch_id",
    "make_filters",
    "rule_ids_in_ledger",
    "touch_detail",
    "touches",
    "verify",
]
