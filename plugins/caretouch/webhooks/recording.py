"""What every provider's webhook shares once verified: masking its payload, finding the
customers it names, changing their consent, recording its events in the ledger.

Each event is recorded once (``Ledger.record_provider_events``): a provider retrying or replaying
a webhook changes nothing the second time. Order of work for each batch: events already recorded
are set aside first; consent changes of the new ones are applied (``record_consent`` records
only real changes, so doing it twice is harmless); then the events are recorded. A crash in
between leaves the event unrecorded, the provider retries, and the retry completes it. Checking
first is what keeps a replay of an old ``STOP`` from undoing a later ``START``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from ..errors import CareError
from ..ledger import Ledger, MessageMatch, ProviderEvent
from ..ledger.consent import record_consent
from ..mask import mask_recipient, scrub
from ..nul import find_nul, nul_reason
from ..store.consent import Purpose
from ..store.db import Store
from ..store.models import Customer

log = logging.getLogger("caretouch.webhooks")

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
    stale: int = 0  # new receipts whose touch was in no status a receipt may follow
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


def attempt_id_of(value: Any) -> int | None:
    text = str(value or "").strip()
    return int(text) if text.isdigit() and len(text) < 19 else None


def change_consent(
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


def matched(event: ProviderEvent, match: MessageMatch | None) -> ProviderEvent:
    if match is None:
        return event
    return dataclasses.replace(
        event,
        touch_id=match.touch_id,
        attempt_id=match.attempt_id,
        customer_id=match.customer_id,
    )


def record(
    ledger: Ledger,
    events: Sequence[ProviderEvent],
    received: Received,
    now: dt.datetime,
    *,
    settled: set[int] | None = None,
) -> None:
    new = ledger.record_provider_events(events, now=now, settled=settled)
    received.new += len(new)
    received.matched += sum(1 for e in new if e.touch_id is not None)
    received.status_changes += sum(
        1 for e in new if e.touch_id is not None and e.status and not e.stale
    )
    received.stale += sum(1 for e in new if e.stale)
    for e in new:
        log.info(
            "webhook: %s %s %s -> %s%s (touch %s)",
            e.provider,
            e.kind,
            e.provider_status,
            e.status.value if e.status else "-",
            " (stale: not applied)" if e.stale else "",
            e.touch_id if e.touch_id is not None else "unmatched",
        )


def refuse_nul(params: Mapping[str, str], what: str) -> None:
    """A request holding a NUL cannot be recorded (nul.py): refused whole, naming the field."""
    where = find_nul(params)
    if where:
        raise CareError(nul_reason(f"{what} field {where}"))
