"""What each message variant of a rule came to, from the ledger (docs/rules.md, "Message
variants").

Per rule and variant, the touches whose message went out (a ``sent`` status event; test
sends, ``touches.test``, left out) and, of those, the ones delivered (a ``delivered``
receipt), clicked (a SendGrid ``click`` event matched to the touch: ``provider_events`` of
kind ``click``; SMS link clicks are not reported to us and not counted), replied to (a
reply matched to the touch, ``ledger.replies``) and, for the report, the ones followed by a
consent withdrawal of the customer (``consent_events``, ``granted`` false, any purpose)
within ``OPT_OUT_DAYS`` days of sending. One aggregate query answers for any number of
rules; the opt-outs are a second one, asked only by the report.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import ColumnElement, exists, func, select
from sqlalchemy.orm import Session, aliased

from ..dates import aware_utc
from ..rules.variants import VariantOutcomes
from ..store.db import Store, among
from ..store.models import ConsentEvent
from ..vocab import Provider, TouchStatus
from .models import REAL_TOUCH, ProviderEventRow, TouchEvent, TouchRow
from .replies import _REPLY_STATUSES, INBOUND
from .sql import CHUNK

# A consent withdrawal this many days after a touch was sent counts against its variant.
OPT_OUT_DAYS = 30
# The provider event that is a link click (SendGrid's event word, kept as the event's kind).
CLICK = "click"


def _status(status: TouchStatus) -> ColumnElement[bool]:
    return exists().where(TouchEvent.touch_id == TouchRow.id, TouchEvent.status == status.value)


def _counted(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.count().filter(condition)


def variant_outcomes(
    store: Store,
    rule_ids: Iterable[str],
    *,
    last: dt.date | None = None,
    opt_outs: bool = False,
) -> list[VariantOutcomes]:
    """Per (rule, variant) of ``rule_ids``, what its sent touches came to; ``last``: only
    touches with an occurrence up to that day; ``opt_outs``: count the withdrawals too."""
    ids = sorted(set(rule_ids))
    if not ids:
        return []
    clicked = exists().where(
        ProviderEventRow.touch_id == TouchRow.id,
        ProviderEventRow.provider == Provider.SENDGRID.value,
        ProviderEventRow.kind == CLICK,
    )
    replied = exists().where(
        ProviderEventRow.touch_id == TouchRow.id,
        ProviderEventRow.kind == INBOUND,
        ProviderEventRow.provider_status.in_(_REPLY_STATUSES),
    )
    found: list[VariantOutcomes] = []
    with store.read_session() as session:
        where = [
            among(session, TouchRow.rule_id, ids),
            TouchRow.variant.is_not(None),
            REAL_TOUCH,  # test sends left out
            _status(TouchStatus.SENT),
        ]
        if last is not None:
            where.append(TouchRow.occurrence <= last)
        rows = session.execute(
            select(
                TouchRow.rule_id,
                TouchRow.variant,
                func.count(),
                _counted(_status(TouchStatus.DELIVERED)),
                _counted(clicked),
                _counted(replied),
            )
            .where(*where)
            .group_by(TouchRow.rule_id, TouchRow.variant)
            .order_by(TouchRow.rule_id, TouchRow.variant)
        ).all()
        withdrawn = _opted_out(session, where) if opt_outs else {}
    for rule_id, variant, sent, delivered, clicks, replies in rows:
        found.append(
            VariantOutcomes(
                rule_id,
                str(variant),  # never NULL: the query asks for variants
                int(sent),
                int(delivered),
                int(clicks),
                int(replies),
                withdrawn.get((rule_id, str(variant)), 0),
            )
        )
    return found


def _opted_out(session: Session, where: list[ColumnElement[bool]]) -> dict[tuple[str, str], int]:
    """Per (rule, variant), the sent touches followed by a consent withdrawal of their
    customer within ``OPT_OUT_DAYS`` days of the touch's first ``sent`` event."""
    # An alias: ``where`` holds EXISTS subqueries on touch_events, correlated to touches only.
    event = aliased(TouchEvent)
    sent = session.execute(
        select(TouchRow.rule_id, TouchRow.variant, TouchRow.customer_id, func.min(event.at))
        .join(event, event.touch_id == TouchRow.id)
        .where(*where, event.status == TouchStatus.SENT.value)
        .group_by(TouchRow.id, TouchRow.rule_id, TouchRow.variant, TouchRow.customer_id)
    ).all()
    customers = sorted({row[2] for row in sent})
    withdrawals: dict[str, list[dt.datetime]] = {}
    for start in range(0, len(customers), CHUNK):
        for customer_id, at in session.execute(
            select(ConsentEvent.customer_id, ConsentEvent.at).where(
                among(session, ConsentEvent.customer_id, customers[start : start + CHUNK]),
                ConsentEvent.granted.is_(False),
            )
        ):
            withdrawals.setdefault(customer_id, []).append(aware_utc(at))
    window = dt.timedelta(days=OPT_OUT_DAYS)
    counts: dict[tuple[str, str], int] = {}
    for rule_id, variant, customer_id, sent_at in sent:
        began = aware_utc(sent_at)
        if any(began <= at <= began + window for at in withdrawals.get(customer_id, ())):
            key = (rule_id, str(variant))
            counts[key] = counts.get(key, 0) + 1
    return counts
