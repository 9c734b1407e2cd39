"""What a run did, counted by outcome (``SendReport``): the day, the send step and recovery
add to one."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..ledger.statuses import RUN_COUNTS
from ..vocab import TouchStatus

# The counter a status change is counted in when it is made (``planned`` again: a retry).
_COUNTED_AS = {
    TouchStatus.SENT: "sent",
    TouchStatus.ASSIGNED: "assigned",
    TouchStatus.FAILED: "failed",
    TouchStatus.SUPPRESSED: "suppressed",
    TouchStatus.UNKNOWN: "unknown",
    TouchStatus.PLANNED: "retry",
}


@dataclass
class SendReport:
    """What a run did, by outcome.

    ``planned`` and ``suppressed`` include the decisions recorded by the plan of the run
    (``day.plan_and_record`` with this report), so they match the ledger. Recorded in the ledger:
    planned, sent, assigned, failed, suppressed, unknown, retry (back to ``planned`` after a retryable
    failure) and in_flight (left ``sending``: the provider's answer was unclear). Not
    recorded (the touch is left as it was): waiting (its time has not come), held (its rule
    is not loaded) and skipped (handled by someone else meanwhile, including a change that
    was stale when written: ``stale``).
    """

    sent: int = 0
    assigned: int = 0  # agent tasks assigned to the customer's agent (``channels.agent_task``)
    failed: int = 0
    suppressed: int = 0
    waiting: int = 0
    skipped: int = 0
    unknown: int = 0
    retry: int = 0
    planned: int = 0
    held: int = 0
    in_flight: int = 0
    failures: list[str] = field(default_factory=list)

    # The ledger's run counts, then what only a send run tells.
    COUNTS = (*RUN_COUNTS, "waiting", "held", "skipped")

    def stale(self, status: TouchStatus, key: str) -> None:
        """A change counted as ``status`` turned out stale (compare-and-set: the touch moved
        on before it was written, ``ledger.changes``): nothing was recorded for it, so it
        is counted as skipped, not as what it meant, and its failure line is dropped."""
        name = _COUNTED_AS[status]
        setattr(self, name, getattr(self, name) - 1)
        self.skipped += 1
        if status is TouchStatus.FAILED:
            self.failures = [f for f in self.failures if not f.startswith(f"{key}: ")]

    def merge(self, other: SendReport) -> SendReport:
        for name in self.COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failures.extend(other.failures)
        return self

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.COUNTS}
