"""What a verified webhook does: normalise it, change consent, record it in the ledger.

The web layer (``caretouch.web.webhook_routes``) checks signatures and calls these functions; they
know nothing of HTTP. Each event is recorded once (``Ledger.record_provider_events``): a
provider retrying or replaying a webhook changes nothing the second time.

Order of work for each batch: events already recorded are set aside first; consent changes of
the new ones are applied (``record_consent`` records only real changes, so doing it twice is
harmless); then the events are recorded. A crash in between leaves the event unrecorded, the
provider retries, and the retry completes it. Checking first is what keeps a replay of an
old ``STOP`` from undoing a later ``START``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from ..errors import CareError
from ..ledger import Ledger, MessageMatch, ProviderEvent
from ..ledger.consent import record_consent
from ..mask import mask_recipient, scrub
from ..nul import NUL, find_nul, nul_reason
from ..render.unsubscribe import read_token
from ..store.consent import Purpose, withdrawn_consents
from ..store.db import Store
from ..store.models import Customer
from ..vocab import Channel, Provider, TouchStatus

log = logging.getLogger("caretouch.webhooks")

# Opt-out words: Twilio's Advanced Opt-Out defaults; what our own templates advertise ("回T退订":
# T); and what subscribers in China, Hong Kong and Taiwan send (TD, 退订 / 退訂, 取消, 取消订阅 /
# 取消訂閱). tests/webhooks/test_optout_words.py fails when a template advertises a word that is
# not here. Compared after normalising (``normalise_keyword``): ＴＤ, td and "T.D." are TD.
STOP_WORDS = frozenset(
    w.casefold()
    for w in (
        {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
        | {"T", "TD", "退订", "退訂", "取消", "取消订阅", "取消訂閱"}
    )
)
START_WORDS = frozenset(w.casefold() for w in ("START", "UNSTOP", "YES"))
# Twilio: the message was not sent because the recipient had replied STOP.
TWILIO_OPTED_OUT = "21610"
TWILIO_STATUS = {
    "delivered": TouchStatus.DELIVERED,
    "undelivered": TouchStatus.UNDELIVERED,
    "failed": TouchStatus.FAILED,
}
SENDGRID_STATUS = {
    "delivered": TouchStatus.DELIVERED,
    "bounce": TouchStatus.BOUNCED,
    "dropped": TouchStatus.FAILED,
}
# SendGrid events after which the address may not be emailed again until consent is given.
SENDGRID_OPT_OUT = frozenset({"bounce", "unsubscribe", "group_unsubscribe", "spamreport"})
# Reasons of a ``dropped`` event that say the address itself is unusable or refused us.
SENDGRID_DROP_OPT_OUT = ("bounced address", "invalid", "unsubscribed address", "spam reporting")
# Payload fields kept out of the ledger: locations and network addresses of customers.
DROPPED_FIELDS = frozenset(
    {"FromCity", "FromState", "FromZip", "ToCity", "ToState", "ToZip", "ip", "useragent"}
)
ADDRESS_FIELDS = frozenset({"To", "From", "email", "ChannelToAddress"})


@dataclass
class Received:
    """What one webhook request did."""

    events: int = 0  # events in the request
    new: int = 0  # of which recorded now (the rest were replays)
    matched: int = 0  # new events matched to a touch
    status_changes: int = 0  # new events that appended a touch status
    consent_changes: list[tuple[str, str, bool]] = field(default_factory=list)


def masked(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A provider's payload fit for the ledger: addresses masked, free text scrubbed,
    location and network fields left out."""
    out: dict[str, Any] = {}
    for key, value in payload.items():
        if key in DROPPED_FIELDS:
            continue
        if key in ADDRESS_FIELDS and isinstance(value, str):
            out[key] = mask_recipient(value)
        elif isinstance(value, str):
            out[key] = scrub(value)
        elif isinstance(value, Mapping):
            out[key] = masked(value)
        elif isinstance(value, list):
            out[key] = [
                masked(v) if isinstance(v, Mapping) else scrub(v) if isinstance(v, str) else v
                for v in value
            ]
        else:
            out[key] = value
    return out


def _is_separator(ch: str) -> bool:
    # Punctuation, spaces, symbols (emoji included) and control characters.
    return unicodedata.category(ch)[0] in "PZSC"


def _words(text: str) -> list[str]:
    """``text`` cut at separators and where Latin letters or digits meet other scripts:
    ``"t退订"`` -> ``["t", "退订"]``."""
    squashed = "".join(" " if _is_separator(ch) else ch for ch in text)
    return re.findall(r"[a-z0-9]+|[^a-z0-9 ]+", squashed)


def normalise_keyword(body: str | None) -> str:
    """The message as keywords are compared: Unicode NFKC (full-width ``ＳＴＯＰ`` and ``Ｔ`` become
    ``STOP`` and ``T``), case-folded, every separator removed (``"Stop."``, ``"T.D."``,
    ``"opt-out"``, ``"STOP ALL"`` are ``stop``, ``td``, ``optout``, ``stopall``)."""
    text = unicodedata.normalize("NFKC", body or "").casefold()
    return "".join(ch for ch in text if not _is_separator(ch))


def keyword(body: str | None) -> str | None:
    """``"STOP"`` / ``"START"`` when an inbound SMS is an opt-out or opt-in keyword.

    As Twilio does, the whole message must be the keyword (normalised, see
    ``normalise_keyword``); a message made only of opt-out words (``"T 退订"``, ``"TD退订"``) is
    an opt-out too. Anything more ("stop please", "请退订") is not: see ``mentions_opt_out``.
    """
    word = normalise_keyword(body)
    if word in STOP_WORDS:
        return "STOP"
    if word in START_WORDS:
        return "START"
    parts = _words(unicodedata.normalize("NFKC", body or "").casefold())
    if parts and all(p in STOP_WORDS for p in parts):
        return "STOP"
    return None


def mentions_opt_out(body: str | None) -> bool:
    """True when a message that is not a keyword still contains an opt-out word of two or more
    letters ("stop please", "请退订", "退订谢谢"): kept for a person to review, consent unchanged."""
    text = unicodedata.normalize("NFKC", body or "").casefold()
    parts = _words(text)
    squashed = normalise_keyword(body)
    return any(
        len(word) > 1 and (word in parts if word.isascii() else word in squashed)
        for word in STOP_WORDS
    )


def customers_by_phone(store: Store, phone: str) -> list[str]:
    if not phone:
        return []
    with store.read_session() as session:
        return list(
            session.scalars(
                select(Customer.customer_id)
                .where(Customer.phone == phone)
                .order_by(Customer.customer_id)
            )
        )


def customers_by_email(store: Store, email: str) -> list[str]:
    if not email:
        return []
    with store.read_session() as session:
        return list(
            session.scalars(
                select(Customer.customer_id)
                .where(func.lower(Customer.email) == email.strip().lower())
                .order_by(Customer.customer_id)
            )
        )


def _attempt_id(value: Any) -> int | None:
    text = str(value or "").strip()
    return int(text) if text.isdigit() and len(text) < 19 else None


def _change_consent(
    store: Store,
    customer_ids: Iterable[str],
    purpose: Purpose,
    granted: bool,
    *,
    source: str,
    note: str,
    now: dt.datetime,
    received: Received,
) -> None:
    for customer_id in customer_ids:
        try:
            changed = record_consent(
                store, customer_id, {purpose: granted}, source=source, at=now, note=note[:500]
            )
        except CareError:  # the customer was deleted since: nothing to change
            log.info("webhook: customer %s no longer in the store", customer_id)
            continue
        if changed:
            received.consent_changes.append((customer_id, purpose.value, granted))
            log.info(
                "webhook: %s consent of %s %s (%s)",
                purpose.value,
                customer_id,
                "given" if granted else "withdrawn",
                source,
            )


def _matched(event: ProviderEvent, match: MessageMatch | None) -> ProviderEvent:
    if match is None:
        return event
    return dataclasses.replace(
        event,
        touch_id=match.touch_id,
        attempt_id=match.attempt_id,
        customer_id=match.customer_id,
    )


def _record(
    ledger: Ledger, events: Sequence[ProviderEvent], received: Received, now: dt.datetime
) -> None:
    new = ledger.record_provider_events(events, now=now)
    received.new += len(new)
    received.matched += sum(1 for e in new if e.touch_id is not None)
    received.status_changes += sum(1 for e in new if e.touch_id is not None and e.status)
    for e in new:
        log.info(
            "webhook: %s %s %s -> %s (touch %s)",
            e.provider,
            e.kind,
            e.provider_status,
            e.status.value if e.status else "-",
            e.touch_id if e.touch_id is not None else "unmatched",
        )


def _refuse_nul(params: Mapping[str, str], what: str) -> None:
    """A request holding a NUL cannot be recorded (nul.py): refused whole, naming the field."""
    where = find_nul(params)
    if where:
        raise CareError(nul_reason(f"{what} field {where}"))


# -- Twilio ------------------------------------------------------------------------------------


def twilio_status(
    store: Store, params: Mapping[str, str], *, attempt: str | None, now: dt.datetime
) -> Received:
    """A Twilio status callback (``?attempt=<touch_attempts.id>`` in its URL)."""
    _refuse_nul(params, "the Twilio status callback's")
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
        Channel.SMS.value, attempt_id=_attempt_id(attempt), message_ids=[sid]
    )
    event = _matched(
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
        _change_consent(
            store,
            owners,
            Purpose.SMS,
            False,
            source="twilio-21610",
            note=f"twilio {event_id}",
            now=now,
            received=received,
        )
    _record(ledger, [event], received, now)
    return received


def twilio_inbound(store: Store, params: Mapping[str, str], *, now: dt.datetime) -> Received:
    """An inbound SMS: STOP words withdraw SMS consent, START words give it back."""
    _refuse_nul(params, "the inbound message's")
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
        _change_consent(
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
        _change_consent(
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
    _record(ledger, [event], received, now)
    return received


# -- SendGrid ----------------------------------------------------------------------------------


def _sendgrid_event_id(event: Mapping[str, Any]) -> str:
    found = event.get("sg_event_id")
    if isinstance(found, str) and found and NUL not in found:
        return found
    # Without an event id (very old accounts), the event's canonical content identifies it.
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _sendgrid_message_ids(sg_message_id: str) -> list[str]:
    """The ids we may have recorded for it: ``sg_message_id`` is our ``X-Message-Id``
    followed by ``.filter…`` / ``.`` suffixes."""
    if not sg_message_id:
        return []
    return list(
        dict.fromkeys(
            [sg_message_id, sg_message_id.split(".filter")[0], sg_message_id.split(".")[0]]
        )
    )


def _sendgrid_opts_out(event: Mapping[str, Any]) -> bool:
    kind = str(event.get("event") or "")
    if kind == "bounce":
        # "blocked" is the receiving server refusing this message (reputation, content),
        # not the address: recorded, but not an opt-out.
        return str(event.get("type") or "bounce") != "blocked"
    if kind == "dropped":
        reason = str(event.get("reason") or "").lower()
        return reason.startswith(SENDGRID_DROP_OPT_OUT)
    return kind in SENDGRID_OPT_OUT


def _occurred(value: Any) -> dt.datetime | None:
    if isinstance(value, (int, float)) and 0 < value < 1e11:
        return dt.datetime.fromtimestamp(value, tz=dt.timezone.utc)
    return None


_WORD_RX = re.compile(r"[a-z_]{1,32}")


def sendgrid_events(store: Store, events: Sequence[Any], *, now: dt.datetime) -> Received:
    """A batch of SendGrid Event Webhook events (the JSON array SendGrid posts)."""
    items = [e for e in events if isinstance(e, Mapping)]
    if len(items) != len(events):
        raise CareError("a SendGrid event batch with entries that are not objects")
    received = Received(events=len(items))
    ledger = Ledger(store)
    ids = [_sendgrid_event_id(e) for e in items]
    known = ledger.known_provider_events(Provider.SENDGRID.value, ids)
    todo: list[ProviderEvent] = []
    fresh: dict[str, Mapping[str, Any]] = {}
    for event_id, item in zip(ids, items, strict=True):
        if event_id not in known:
            fresh.setdefault(event_id, item)
    # An event holding a NUL is recorded as refused, with the reason, and the rest of the batch
    # goes on: refusing the batch would make SendGrid retry it, poison and all, for a day.
    refused = {event_id: where for event_id, item in fresh.items() if (where := find_nul(item))}
    for event_id, where in refused.items():
        fresh.pop(event_id)
        log.warning("webhook: SendGrid event %s refused: %s", event_id, nul_reason(where))
        todo.append(
            ProviderEvent(
                provider=Provider.SENDGRID.value,
                provider_event_id=event_id,
                kind="refused",
                payload={"refused": nul_reason(where)},
                provider_status="refused",
            )
        )
    matches = ledger.match_messages(
        Channel.EMAIL.value,
        [
            (
                _attempt_id(item.get("care_attempt")),
                _sendgrid_message_ids(str(item.get("sg_message_id") or "")),
            )
            for item in fresh.values()
        ],
    )
    for (event_id, item), match in zip(fresh.items(), matches, strict=True):
        kind = str(item.get("event") or "").lower()
        kind = kind if _WORD_RX.fullmatch(kind) else "unknown"
        sg_message_id = str(item.get("sg_message_id") or "")
        status = SENDGRID_STATUS.get(kind)
        if kind == "bounce" and str(item.get("type") or "") == "blocked":
            status = TouchStatus.UNDELIVERED
        detail = {
            k: scrub(str(item[k]))[:500]
            for k in ("reason", "type", "status", "bounce_classification")
            if item.get(k) not in (None, "")
        }
        if _sendgrid_opts_out(item):
            owners = (
                [match.customer_id]
                if match
                else customers_by_email(store, str(item.get("email") or ""))
            )
            _change_consent(
                store,
                owners,
                Purpose.EMAIL,
                False,
                source=f"sendgrid-{kind}",
                note=f"sendgrid {event_id}",
                now=now,
                received=received,
            )
        todo.append(
            _matched(
                ProviderEvent(
                    provider=Provider.SENDGRID.value,
                    provider_event_id=event_id,
                    kind=kind,
                    payload=masked(item),
                    provider_status=kind,
                    provider_message_id=sg_message_id or None,
                    status=status,
                    detail=detail or None,
                    occurred_at=_occurred(item.get("timestamp")),
                ),
                match,
            )
        )
    _record(ledger, todo, received, now)
    return received


# -- unsubscribe links -------------------------------------------------------------------------


@dataclass(frozen=True)
class Unsubscribed:
    customer_id: str
    purpose: str
    locale: str  # the customer's, for the confirmation page (zh-CN when unknown)
    changed: bool


def read_unsubscribe(store: Store, token: str, key: bytes) -> Unsubscribed:
    """Check an unsubscribe token (``CareError`` when forged) and say whom it names."""
    customer_id, purpose = read_token(token, key)
    with store.read_session() as session:
        locale = session.scalar(select(Customer.locale).where(Customer.customer_id == customer_id))
    return Unsubscribed(customer_id, purpose, locale or "zh-CN", changed=False)


def unsubscribe(store: Store, token: str, key: bytes, *, now: dt.datetime) -> Unsubscribed:
    """Withdraw the consent an unsubscribe link names (email, or marketing only)."""
    found = read_unsubscribe(store, token, key)
    purpose = Purpose.EMAIL if found.purpose == "email" else Purpose.MARKETING
    try:
        changed = record_consent(
            store, found.customer_id, {purpose: False}, source="unsubscribe-link", at=now
        )
    except CareError:  # a valid link of a customer since deleted
        changed = {}
    if changed:
        log.info("webhook: %s consent of %s withdrawn (link)", purpose.value, found.customer_id)
    return Unsubscribed(found.customer_id, found.purpose, found.locale, bool(changed))
