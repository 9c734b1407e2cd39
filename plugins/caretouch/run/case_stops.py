"""Complaint touches that wait for the case to stay open (``run.stops``). Filled in by issue
16's complaint work."""

from __future__ import annotations

from collections.abc import Sequence

from ..ledger import TouchState
from .engine import CareEngine


def closed_case_touches(engine: CareEngine, states: Sequence[TouchState]) -> dict[int, str]:
    """The planned touches among ``states`` whose complaint case is closed: touch id -> why."""
    return {}
