"""Premium reminders whose premium was paid (``run.stops``). Filled in by issue 16's premium
work."""

from __future__ import annotations

from collections.abc import Sequence

from ..ledger import TouchState
from .engine import CareEngine


def paid_touches(engine: CareEngine, states: Sequence[TouchState]) -> dict[int, str]:
    """The planned premium reminders among ``states`` whose premium is paid: touch id -> why."""
    return {}
