"""Twilio's webhooks, once verified: status callbacks and inbound SMS (STOP/START words).

They know nothing of HTTP: ``caretouch.web.webhook_routes`` checks the signature
(``webhooks.verify``) and calls these.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import CareError
from ..ledger import Ledger, ProviderEvent
from ..mask import mask_recipient
from ..store.consent import Purpose, withdrawn_consents
from ..store.db import Store
from ..vocab import Channel, Provider, TouchStatus
from .keywords import keyword, mentions_opt_out
from .recording import (
    Received,
    attempt_id_of,
    change_consent,
    customers_by_phone,
    masked,
    matched,
    record,
    refuse_nul,
)
from .replies import DEFAULT_REPLY_WINDOW, ReplyIntake, hear_reply

log = logging.getLogger("caretouch.webhooks")

# Twilio: the message was not sent because the recipient had replied STOP.
TWILIO_OPTED_OUT = "21610"
TWILIO_STATUS = {
    "delivered": TouchStatus.DELIVERED,
    "undelivered": TouchStatus.UNDELIVERED,
    "failed": TouchStatus.FAILED,
}


@dataclass(frozen=True)
class StatusCallback:
    """One verified status callback: its form, the ``?attempt=`` of its URL, when it reached
    us, and its ``callback_intake`` row once accepted (``webhooks.intake``)."""

    params: Mapping[str, str]
    attempt: str | None
    received_at: dt.datetime
    intake_id: int | None = None


def check_status(params: Mapping[str, str]) -> None:
    """Refuse (``CareError``, answered 400) a status callback that cannot be recorded: a NUL
    anywhere, no ``MessageSid`` or no ``MessageStatus``. Checked before it is accepted, so
    that only recordable callbacks enter the intake."""
    refuse_nul(params, "the Twilio status callback's")
    if not _sid(params) or not _status(params):
        raise CareError("a Twilio status callback without MessageSid or MessageStatus")


def _sid(params: Mapping[str, str]) -> str:
    return params.get("MessageSid") or params.get("SmsSid") or ""


def _status(params: Mapping[str, str]) -> str:
    return (params.get("MessageStatus") or params.get("SmsStatus") or "").lower()


def twilio_status(
    store: Store, params: Mapping[str, str], *, attempt: str | None, now: dt.datetime
) -> Received:
    """A Twilio status callback (``?attempt=<touch_attempts.id>`` in its URL), recorded now,
    without the intake (the routes accept into ``webhooks.intake`` and record in batches)."""
    check_status(params)
    return record_status_callbacks(store, [StatusCallback(params, attempt, now)], now=now)


def record_status_callbacks(
    store: Store,
    callbacks: Sequence[StatusCallback],
    *,
    now: dt.datetime,
    settled: set[int] | None = None,
) -> Received:
    """Record status callbacks, any number, in one ledger transaction (matched in a few
    queries). Callbacks from the intake are recorded only if this transaction takes their
    intake rows (``Ledger.record_provider_events``); the rows it took are added to
    ``settled``."""
    for callback in callbacks:
        check_status(callback.params)
    received = Received(events=len(callbacks))
    ledger = Ledger(store)
    # The same event accepted more than once (a retry while the first was pending) is one
    # event, whose intake rows are all settled by recording it.
    first: dict[str, StatusCallback] = {}
    intake: dict[str, tuple[int, ...]] = {}
    for callback in callbacks:
        event_id = f"{_sid(callback.params)}:{_status(callback.params)}"
        first.setdefault(event_id, callback)
        if callback.intake_id is not None:
            intake[event_id] = (*intake.get(event_id, ()), callback.intake_id)
    matches = ledger.match_messages(
        Channel.SMS.value,
        [(attempt_id_of(c.attempt), [_sid(c.params)]) for c in first.values()],
    )
    opted_out = [e for e, c in first.items() if c.params.get("ErrorCode") == TWILIO_OPTED_OUT]
    # Replays are set aside before consent is touched (recording.py).
    known = ledger.known_provider_events(Provider.TWILIO.value, opted_out) if opted_out else set()
    events = []
    for (event_id, callback), match in zip(first.items(), matches, strict=True):
        params = callback.params
        sid, status = _sid(params), _status(params)
        error = params.get("ErrorCode") or None
        events.append(
            matched(
                ProviderEvent(
                    provider=Provider.TWILIO.value,
                    provider_event_id=event_id,
                    kind="status",
                    payload=masked(params),
                    provider_status=status,
                    provider_message_id=sid,
                    status=TWILIO_STATUS.get(status),
                    detail={"error_code": error} if error else None,
                    received_at=callback.received_at,
                    intake_ids=intake.get(event_id, ()),
                ),
                match,
            )
        )
        if error == TWILIO_OPTED_OUT and event_id not in known:
            # The customer had replied STOP to our number; the SPEC treats it as an opt-out.
            owners = (
                [match.customer_id] if match else customers_by_phone(store, params.get("To", ""))
            )
            change_consent(
                store,
                owners,
                Purpose.SMS,
                False,
                source="twilio-21610",
                note=f"twilio {event_id}",
                now=now,
                received=received,
            )
    record(ledger, events, received, now, settled=settled)
    return received


def twilio_inbound(
    store: Store,
    params: Mapping[str, str],
    *,
    now: dt.datetime,
    replies: ReplyIntake | None = None,
) -> Received:
    """An inbound SMS: STOP words withdraw SMS consent, START words give it back; any other
    message is a reply (``webhooks.replies``): matched to the latest SMS touch sent to that
    number within the reply window, read as a satisfaction score or a message, and, with
    ``replies``, turned into business events submitted to the inbox before it is recorded."""
    refuse_nul(params, "the inbound message's")
    received = Received(events=1)
    sid = params.get("MessageSid") or params.get("SmsSid") or ""
    if not sid:
        raise CareError("an inbound Twilio message without MessageSid")
    ledger = Ledger(store)
    if ledger.known_provider_events(Provider.TWILIO.value, [sid]):
        return received
    # Twilio's Advanced Opt-Out names the keyword it recognised; else our own list.
    opt = (params.get("OptOutType") or "").upper() or None
    word = opt if opt in ("STOP", "START") else keyword(params.get("Body"))
    sender = params.get("From", "")
    owners = customers_by_phone(store, sender)
    if word == "STOP":
        change_consent(
            store,
            owners,
            Purpose.SMS,
            False,
            source="twilio-inbound",
            note=f"STOP twilio {sid}",
            now=now,
            received=received,
        )
    elif word == "START":
        # START gives back what an opt-out took away; it does not grant consent that was
        # never given (a customer replying "yes" to a reminder is not signing up).
        withdrawn = withdrawn_consents(store, owners)
        change_consent(
            store,
            [c for c in owners if Purpose.SMS.value in withdrawn.get(c, set())],
            Purpose.SMS,
            True,
            source="twilio-inbound",
            note=f"START twilio {sid}",
            now=now,
            received=received,
        )
    payload = masked(params)
    customer_id = owners[0] if len(owners) == 1 else None
    touch = None
    if word is None:
        possible_stop = mentions_opt_out(params.get("Body"))
        if possible_stop:
            # Not a keyword, so consent is left alone; but someone should read it and, if it
            # asks to stop, record it (``care consent set``). It goes to the agent as well.
            log.warning(
                "webhook: inbound SMS %s from %s mentions an opt-out word but is not a "
                "keyword: consent unchanged, review it",
                sid,
                mask_recipient(sender),
            )
        heard = hear_reply(
            store,
            provider=Provider.TWILIO.value,
            message_id=sid,
            channel=Channel.SMS.value,
            address=sender,
            owners=owners,
            body=params.get("Body"),
            now=now,
            window=replies.window if replies is not None else DEFAULT_REPLY_WINDOW,
            status="possible-stop" if possible_stop else None,
        )
        if replies is not None and heard.events:
            replies.submit(heard.events, now)
        status = heard.read.status
        payload.update(heard.detail)
        customer_id = heard.customer_id
        touch = heard.touch
    else:
        status = word.lower()
    event = ProviderEvent(
        provider=Provider.TWILIO.value,
        provider_event_id=sid,
        kind="inbound",
        payload=payload,
        provider_status=status,
        provider_message_id=sid,
        customer_id=customer_id,
        touch_id=touch.touch_id if touch is not None else None,
        attempt_id=touch.attempt_id if touch is not None else None,
    )
    if not owners:
        log.info("webhook: inbound SMS from an unknown number %s", mask_recipient(sender))
    record(ledger, [event], received, now)
    return received
