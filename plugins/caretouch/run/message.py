"""The message a channel is given for one attempt of a touch (``OutboundMessage``), built
from the ledger's record of the attempt: the send step and recovery send or look up the same."""

from __future__ import annotations

from ..channels.base import OutboundMessage
from ..dates import aware_utc
from ..ledger import ClaimedAttempt, TouchState
from ..ledger.models import Attempt
from ..render.templates import RenderedMessage
from ..render.unsubscribe import UnsubscribeLinks
from ..rules.loader import RuleSet
from ..vocab import Channel


def outbound_message(
    state: TouchState,
    attempt: Attempt | ClaimedAttempt,
    rendered: RenderedMessage,
    *,
    may_resend: bool = False,
    unsubscribe: UnsubscribeLinks | None = None,
) -> OutboundMessage:
    """The message a channel sends; ``unsubscribe`` puts the link (and its headers) in the
    rendered content of a care or marketing email."""
    if unsubscribe is not None:
        rendered = unsubscribe.add_to(
            rendered,
            customer_id=state.row.customer_id,
            category=state.row.category,
            locale=state.row.locale,
        )
    return OutboundMessage(
        touch_key=state.row.touch_key,
        attempt_no=attempt.attempt_no,
        channel=Channel(attempt.channel),
        recipient=attempt.recipient,
        body=rendered.body,
        subject=rendered.subject,
        html=rendered.html,
        occurrence=state.row.occurrence.isoformat(),
        metadata={
            "rule_id": state.row.rule_id,
            "customer_id": state.row.customer_id,
            "category": state.row.category,
            "locale": state.row.locale,
        },
        attempt_id=attempt.id,
        created_at=aware_utc(attempt.created_at),
        may_resend=may_resend,
        headers=dict(rendered.headers),
    )


def may_resend(ruleset: RuleSet, rule_id: str) -> bool:
    """The rule allows sending again a message whose fate is unknown (``resend_unknown``)."""
    try:
        return ruleset.by_id(rule_id).resend_unknown
    except KeyError:
        return False
