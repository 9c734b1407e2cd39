"""SendGrid's Event Webhook, once verified: delivery events, bounces, unsubscribes.

Knows nothing of HTTP: ``caretouch.web.webhook_routes`` checks the signature and bounds the
batch (``webhooks.verify``) and calls ``sendgrid_events``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import CareError
from ..ledger import Ledger, ProviderEvent
from ..mask import scrub
from ..nul import NUL, find_nul, nul_reason
from ..store.consent import Purpose
from ..store.db import Store
from ..vocab import Channel, Provider, TouchStatus
from .recording import (
    Received,
    attempt_id_of,
    change_consent,
    customers_by_email,
    masked,
    matched,
    record,
)

log = logging.getLogger("caretouch.webhooks")

SENDGRID_STATUS = {
    "delivered": TouchStatus.DELIVERED,
    "bounce": TouchStatus.BOUNCED,
    "dropped": TouchStatus.FAILED,
}
# SendGrid events after which the address may not be emailed again until consent is given.
SENDGRID_OPT_OUT = frozenset({"bounce", "unsubscribe", "group_unsubscribe", "spamreport"})
# Reasons of a ``dropped`` event that say the address itself is unusable or refused us.
SENDGRID_DROP_OPT_OUT = ("bounced address", "invalid", "unsubscribed address", "spam reporting")


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
                attempt_id_of(item.get("care_attempt")),
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
            change_consent(
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
            matched(
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
    record(ledger, todo, received, now)
    return received
