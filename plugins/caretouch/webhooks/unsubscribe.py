"""Our own unsubscribe links, once their token verifies: say whom a link names, withdraw
the consent it names (email, or marketing only).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import select

from ..errors import CareError
from ..ledger.consent import record_consent
from ..render.unsubscribe import read_token
from ..store.consent import Purpose
from ..store.db import Store
from ..store.models import Customer

log = logging.getLogger("caretouch.webhooks")


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
