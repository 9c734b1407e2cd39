"""What the ledger's statuses mean to its readers and writers: handled, counted, receipts.

A closed set of facts about ``vocab.TouchStatus`` as the ledger records it: which statuses
a rerun leaves alone, which count against the contact policy's caps, which a provider's
delivery receipt sets. Every ledger module reads them from here.
"""

from __future__ import annotations

from ..vocab import SendReason, TouchStatus

# ``Ledger.run_counts``: what a run recorded, in the order summaries print it.
RUN_COUNTS = (
    "planned",
    "suppressed",
    "sent",
    "assigned",
    "failed",
    "unknown",
    "retry",
    "in_flight",
)
# Statuses after which a rerun leaves the touch alone: it was (or may have been) sent.
HANDLED = frozenset(
    {
        TouchStatus.SENDING,
        TouchStatus.SENT,
        TouchStatus.DELIVERED,
        TouchStatus.UNDELIVERED,
        TouchStatus.BOUNCED,
        TouchStatus.FAILED,
        TouchStatus.UNKNOWN,
    }
)
# An ``agent_task`` touch once assigned to the agent, and the statuses that close it: handled
# (a rerun leaves it alone) and counted against the caps like a message sent.
TASK_OPEN = TouchStatus.ASSIGNED
TASK_CLOSED = frozenset(
    {TouchStatus.DONE, TouchStatus.DECLINED, TouchStatus.NO_ANSWER, TouchStatus.EXPIRED}
)
HANDLED = HANDLED | {TASK_OPEN} | TASK_CLOSED


# Touches that count against the contact policy's caps: sent or about to be.
COUNTED = HANDLED - {TouchStatus.FAILED} | {TouchStatus.PLANNED}
# Touches that completed a contact, for a service level's cadence: a message that went out,
# or an agent's task done (``TASK_DONE``, counted on the day it was recorded done).
TASK_DONE = TouchStatus.DONE
CONTACT_MADE = frozenset({TouchStatus.SENT, TouchStatus.DELIVERED, TASK_DONE})
# The longest deferral a rule may ask for (rules.schema: defer_days maximum).
MAX_DEFER_DAYS = 14


# In a deferral's ``detail``: the local date from whose plan on the touch competes again
# (set when the send step defers a service obligation that missed its planned day).
WAIT_UNTIL = "wait_until"


# Failures that happened before anything reached a provider: a rerun may try again.
RETRYABLE_BY_RERUN = frozenset({SendReason.RENDER_ERROR.value})
# Statuses a provider's delivery receipt sets (webhooks); ``failed`` only with this reason.
RECEIPTS = frozenset(
    {TouchStatus.DELIVERED, TouchStatus.UNDELIVERED, TouchStatus.BOUNCED, TouchStatus.FAILED}
)
DELIVERY_FAILED = SendReason.DELIVERY_FAILED.value
# The statuses a provider's delivery receipt may follow (compare-and-set, ``matching``): the
# attempt is being sent (the receipt came before the sender recorded ``sent``), was sent, its
# fate is unknown (a crash: the provider now tells), or an earlier receipt (a later one
# replaces it: delivered, then bounced); or any status recorded about the receipt's own
# attempt (``matching.receipt_applies``). A receipt for a touch in any other status (planned
# again by a plan or a person, suppressed, failed before reaching the provider) is stale:
# kept as a provider event only.
RECEIPT_FROM = frozenset({TouchStatus.SENDING, TouchStatus.SENT, TouchStatus.UNKNOWN} | RECEIPTS)


def is_receipt(status: str, reason: str | None) -> bool:
    """True for a status event that records a provider's delivery receipt."""
    if status == TouchStatus.FAILED.value:
        return reason == DELIVERY_FAILED
    return status in (
        TouchStatus.DELIVERED.value,
        TouchStatus.UNDELIVERED.value,
        TouchStatus.BOUNCED.value,
    )


def is_handled(status: str, reason: str | None, final: bool = False) -> bool:
    """True when a rerun must leave the touch alone: it was, or may have been, sent, or its
    fate was sealed when it was due to go (``final``: suppressed at send time)."""
    if final:
        return True
    if status == TouchStatus.FAILED.value and reason in RETRYABLE_BY_RERUN:
        return False
    return TouchStatus(status) in HANDLED
