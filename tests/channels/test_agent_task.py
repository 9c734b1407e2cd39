"""The ``agent_task`` channel: assigns in-process, never through the outbox or a provider."""

from __future__ import annotations

from pathlib import Path

from caretouch.channels.agent_task import AgentTaskTransport
from caretouch.channels.base import OutboundMessage
from caretouch.channels.registry import build_transports
from caretouch.vocab import Channel, Outcome


def task_message(body: str = "Call 王芳 today.") -> OutboundMessage:
    return OutboundMessage(
        touch_key="birthday-task|customer:C1|2026-11-23",
        attempt_no=1,
        channel=Channel.AGENT_TASK,
        recipient="A1",
        body=body,
        occurrence="2026-11-23",
    )


def test_sending_a_task_answers_sent_without_writing_anything(tmp_path: Path) -> None:
    transports = build_transports(tmp_path / "outbox")
    transport = transports[Channel.AGENT_TASK]
    assert isinstance(transport, AgentTaskTransport)
    assert {c: t.name for c, t in transports.items()} == {
        Channel.SMS: "outbox",
        Channel.EMAIL: "outbox",
        Channel.AGENT_TASK: "agent_task",
    }
    [result] = transport.send_many([task_message()])
    assert result.outcome is Outcome.SENT
    assert result.provider_message_id == "task:birthday-task|customer:C1|2026-11-23"
    assert not (tmp_path / "outbox").exists()


def test_a_brief_too_long_to_read_fails() -> None:
    result = AgentTaskTransport().send(task_message("x" * (AgentTaskTransport.max_body + 1)))
    assert result.outcome is Outcome.PERMANENT_FAILURE


def test_after_a_crash_a_task_is_not_assigned_and_may_be_again() -> None:
    # The assignment exists only as the ledger's ``assigned`` event: recovery puts a task
    # left in ``sending`` back to ``planned``.
    answer = AgentTaskTransport().reconcile(task_message())
    assert answer is not None and answer.outcome is Outcome.NOT_SENT
