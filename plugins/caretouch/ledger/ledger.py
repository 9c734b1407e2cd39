"""``Ledger``: the ledger's functions behind one object that holds the store.

Callers (the runner, the webhooks, the reports, the CLI) hold a ``Ledger``; each method is
one function of the module that does that job: ``reconcile`` (record a plan), ``claims``,
``changes`` (status events), ``matching`` (providers' webhook events), ``readers``,
``contacts`` (what the planner asks: ``plan.history.History``), ``summaries``, and
``projection`` (``touch_current``). Every write goes through ``writer.write``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy.orm import Session

from ..rules.variants import VariantOutcomes
from ..store.db import Store
from ..touch_history import DeferredTouch, PastContact
from ..vocab import TouchStatus
from . import chain, contacts, matching, projection, readers, reconcile, summaries, variants
from .changes import append_many
from .claims import claim_many
from .models import Attempt, TouchEvent
from .records import (
    Claim,
    ClaimedAttempt,
    MessageMatch,
    PlanGuard,
    PlannedTouch,
    PlanRecord,
    ProviderEvent,
    StatusChange,
    TouchState,
)


class Ledger:
    """The only writer of the ledger tables."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    def refresh_current(session: Session) -> int:
        """Bring ``touch_current`` up to date (``projection.refresh_current``)."""
        return projection.refresh_current(session)

    # -- touches -------------------------------------------------------------------------------

    def states(self, touch_ids: Iterable[int]) -> list[TouchState]:
        return readers.states(self.store, touch_ids)

    def states_for_day(self, occurrence: dt.date) -> list[TouchState]:
        return readers.states_for_day(self.store, occurrence)

    def touch_ids_in_status(
        self,
        statuses: set[TouchStatus],
        *,
        day: dt.date | None = None,
        shard: tuple[int, int] | None = None,
        rule_ids: Sequence[str] | None = None,
        tests: bool = False,
    ) -> list[int]:
        """Ids of touches whose latest status is one of ``statuses`` (``readers``); test
        sends only with ``tests``."""
        return readers.touch_ids_in_status(
            self.store, statuses, day=day, shard=shard, rule_ids=rule_ids, tests=tests
        )

    def final_keys(self, keys: list[str]) -> dict[str, str]:
        """The keys among ``keys`` whose fate is sealed (``readers.final_keys``)."""
        return readers.final_keys(self.store, keys)

    def attempts(self, touch_id: int) -> list[Attempt]:
        return readers.attempts(self.store, touch_id)

    def history(self, touch_id: int) -> list[TouchEvent]:
        return readers.history(self.store, touch_id)

    # -- what the planner asks (plan.history.History) ------------------------------------------

    def contacts(
        self, customer_ids: Iterable[str] | None, first: dt.date, last: dt.date
    ) -> list[PastContact]:
        return contacts.contacts(self.store, customer_ids, first, last)

    def last_contacts(self, customer_ids: Iterable[str], day: dt.date) -> dict[str, dt.date]:
        return contacts.last_contacts(self.store, customer_ids, day)

    def occasion_contacts(
        self, customer_ids: Iterable[str], rule_ids: Iterable[str], first: dt.date, last: dt.date
    ) -> list[PastContact]:
        return contacts.occasion_contacts(self.store, customer_ids, rule_ids, first, last)

    def variant_outcomes(
        self, rule_ids: Iterable[str], *, last: dt.date | None = None, opt_outs: bool = False
    ) -> list[VariantOutcomes]:
        """What each message variant of these rules came to (``ledger.variants``)."""
        return variants.variant_outcomes(self.store, rule_ids, last=last, opt_outs=opt_outs)

    def deferred(
        self,
        rule_ids: Iterable[str],
        first: dt.date,
        last: dt.date,
        customer_ids: Iterable[str] | None = None,
    ) -> list[DeferredTouch]:
        return contacts.deferred(self.store, rule_ids, first, last, customer_ids)

    # -- writing -------------------------------------------------------------------------------

    def record_plan(
        self,
        touches: Sequence[PlannedTouch],
        *,
        run_id: str,
        now: dt.datetime,
        retry_render_errors: bool = False,
        guard: PlanGuard | None = None,
    ) -> PlanRecord:
        """Record a day's plan idempotently (``reconcile.record_plan``)."""
        return reconcile.record_plan(
            self.store,
            touches,
            run_id=run_id,
            now=now,
            retry_render_errors=retry_render_errors,
            guard=guard,
        )

    def chain_position(self) -> int:
        """The chain's newest entry: a plan notes it before it reads its history
        (``PlanGuard.since``)."""
        with self.store.read_session() as session:
            return chain.head(session)[0]

    def append(
        self,
        touch_id: int,
        status: TouchStatus,
        *,
        expected: TouchStatus,
        run_id: str,
        now: dt.datetime,
        reason: str | None = None,
        attempt_id: int | None = None,
        provider_message_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> bool:
        """Append one status event if the touch is still ``expected``; False when stale."""
        change = StatusChange(
            touch_id, status, reason, attempt_id, provider_message_id, detail, expected=expected
        )
        return not self.append_many([change], run_id=run_id, now=now)

    def append_many(
        self, changes: Sequence[StatusChange], *, run_id: str, now: dt.datetime
    ) -> list[StatusChange]:
        """Append status events in one transaction, compare-and-set; returns the stale ones
        (``changes.append_many``)."""
        return append_many(self.store, changes, run_id=run_id, now=now)

    def claim_many(
        self, claims: Sequence[Claim[Any]], *, run_id: str, now: dt.datetime
    ) -> dict[int, ClaimedAttempt]:
        """Atomically claim touches for one delivery attempt each (``claims.claim_many``)."""
        return claim_many(self.store, claims, run_id=run_id, now=now)

    # -- provider webhooks ---------------------------------------------------------------------

    def match_message(
        self, channel: str, *, attempt_id: int | None, message_ids: Sequence[str]
    ) -> MessageMatch | None:
        """The attempt a provider's event is about (``matching.match_messages``)."""
        return self.match_messages(channel, [(attempt_id, message_ids)])[0]

    def match_messages(
        self, channel: str, wanted: Sequence[tuple[int | None, Sequence[str]]]
    ) -> list[MessageMatch | None]:
        return matching.match_messages(self.store, channel, wanted)

    def known_provider_events(self, provider: str, event_ids: Iterable[str]) -> set[str]:
        return matching.known_provider_events(self.store, provider, event_ids)

    def record_provider_events(
        self,
        events: Sequence[ProviderEvent],
        *,
        now: dt.datetime,
        settled: set[int] | None = None,
    ) -> list[ProviderEvent]:
        """Record webhook events once each; returns those that were new (intake rows taken:
        added to ``settled``, ``matching.record_provider_events``)."""
        return matching.record_provider_events(self.store, events, now=now, settled=settled)

    # -- summaries -----------------------------------------------------------------------------

    def run_counts(self, run_id: str | Sequence[str]) -> dict[str, int]:
        return summaries.run_counts(self.store, run_id)

    def counts_for_day(self, occurrence: dt.date) -> list[dict[str, Any]]:
        return summaries.counts_for_day(self.store, occurrence)

    def missed_obligations(self, run_id: str | Sequence[str]) -> list[dict[str, Any]]:
        return summaries.missed_obligations(self.store, run_id)
