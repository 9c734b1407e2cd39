"""The store's schema, and the only owner of DDL: Alembic migrations (versions/), run by
`care store init` and `care store upgrade` (``migrate.upgrade``); every start only checks
the version, reading (``require_current_schema``).

``migrate`` is not imported here: it brings the ledger's code (its catch-ups), which the
start-up check does not need."""

from .check import require_current_schema, require_existing_store
from .version import Shape, current_version, head, shape

__all__ = [
    "Shape",
    "current_version",
    "head",
    "require_current_schema",
    "require_existing_store",
    "shape",
]
