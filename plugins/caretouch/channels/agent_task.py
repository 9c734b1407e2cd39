"""The ``agent_task`` channel: a task for the customer's agent (a call, a visit, a gift).

Nothing leaves the process. "Sending" a task is assigning it to the agent, and the
assignment is the ledger's record of it: the attempt (the agent as recipient, the rendered
brief as body) and the ``assigned`` status event the send step records from this channel's
``sent`` answer (``run.tasks``). So the task goes through the same steps as any message (the
claim in ``sending`` before the channel is called, the compare-and-set status change after,
recovery after a crash) and lives in the one chained ledger, with no second store to keep
in step with it.

Why a transport at all, rather than a branch in the send step: the send step stays one
sequence for every channel (claim, deliver, record), the channel seam stays the only place
that knows how a touch "reaches" someone, and a task never falls back to the outbox or a
provider by accident (``registry.build_transports`` always serves ``agent_task`` with this).
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..vocab import Channel, Outcome
from .base import OutboundMessage, SendResult, Transport

# The prefix of the "provider message id" of an assigned task: the touch's key follows.
TASK_ID_PREFIX = "task:"


class AgentTaskTransport(Transport):
    """Assigns tasks to agents: answers ``sent`` without any request (see the module)."""

    name: ClassVar[str] = "agent_task"
    # A brief is read by a person before a call or a visit: a few screens at most.
    max_body: ClassVar[int] = 4000
    rate_per_sec: ClassVar[float] = 100_000.0
    concurrency: ClassVar[int] = 1

    def __init__(self) -> None:
        super().__init__(Channel.AGENT_TASK)

    def build_payload(self, message: OutboundMessage) -> dict[str, Any]:
        return {"touch_key": message.touch_key, "agent_id": message.recipient}

    def post(self, payload: dict[str, Any]) -> Any:
        return payload  # the assignment is recorded by the ledger, not here

    def parse_result(self, raw: Any) -> SendResult:
        return SendResult(Outcome.SENT, provider_message_id=TASK_ID_PREFIX + raw["touch_key"])

    def reconcile(self, message: OutboundMessage) -> SendResult | None:
        # A task exists only once the ledger records it ``assigned``: a crash before that
        # left nothing anywhere else, so it is certainly not assigned and may be again.
        return SendResult(Outcome.NOT_SENT, detail="a task is assigned only in the ledger")
