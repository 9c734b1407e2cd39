"""Twilio's webhooks, once verified: status callbacks and inbound SMS (STOP/START words).

They know nothing of HTTP: ``caretouch.web.webhook_routes`` checks the signature
(``webhooks.verify``) and calls these.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping

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

log = logging.getLogger("caretouch.webhooks")

# Twilio: the message was not sent because the recipient had replied STOP.
TWILIO_OPTED_OUT = "21610"
TWILIO_STATUS = {
    "delivered": TouchStatus.DELIVERED,
    "undelivered": TouchStatus.UNDELIVERED,
    "failed": TouchStatus.FAILED,
}


def twilio_status(
    store: Store, params: Mapping[str, str], *, attempt: str | None, now: dt.datetime
) -> Received:
    """A Twilio status callback (``?attempt=<touch_attempts.id>`` in its URL)."""
    refuse_nul(params, "the Twilio status callback's")
    received = Received(events=1)
    sid = params.get("MessageSid") or params.get("SmsSid") or ""
    status = (params.get("MessageStatus") or params.get("SmsStatus") or "").lower()
    if not sid or not status:
        raise CareError("a Twilio status callback without MessageSid or MessageStatus")
    ledger = Ledger(store)
    event_id = f"{sid}:{status}"
    if ledger.known_provider_events(Provider.TWILIO.value, [event_id]):
        return received
    error = params.get("ErrorCode") or None
    match = ledger.match_message(
        Channel.SMS.value, attempt_id=attempt_id_of(attempt), message_ids=[sid]
    )
    event = matched(
        ProviderEvent(
            provider=Provider.TWILIO.value,
            provider_event_id=event_id,
            kind="status",
            payload=masked(params),
            provider_status=status,
            provider_message_id=sid,
            status=TWILIO_STATUS.get(status),
            detail={"error_code": error} if error else None,
        ),
        match,
    )
    if error == TWILIO_OPTED_OUT:
        # The customer had replied STOP to our number; the SPEC treats it as an opt-out.
        owners = [match.customer_id] if match else customers_by_phone(store, params.get("To", ""))
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
    record(ledger, [event], received, now)
    return received


def twilio_inbound(store: Store, params: Mapping[str, str], *, now: dt.datetime) -> Received:
    """An inbound SMS: STOP words withdraw SMS consent, START words give it back."""
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
    owners = customers_by_phone(store, params.get("From", ""))
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
    status = word.lower() if word else "message"
    if word is None and mentions_opt_out(params.get("Body")):
        # Not a keyword, so consent is left alone; but someone should read it and, if it asks
        # to stop, record it (``care consent set``).
        status = "possible-stop"
        log.warning(
            "webhook: inbound SMS %s from %s mentions an opt-out word but is not a keyword: "
            "consent unchanged, review it",
            sid,
            mask_recipient(params.get("From")),
        )
    event = ProviderEvent(
        provider=Provider.TWILIO.value,
        provider_event_id=sid,
        kind="inbound",
        payload=masked(params),
        provider_status=status,
        provider_message_id=sid,
        customer_id=owners[0] if len(owners) == 1 else None,
    )
    if not owners:
        log.info(
            "webhook: inbound SMS from an unknown number %s", mask_recipient(params.get("From"))
        )
    record(ledger, [event], received, now)
    return received
