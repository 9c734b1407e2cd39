"""What the webhook routes need, each resolved on first use (no I/O at import): the store
they write to, the providers' secrets, and the clock.

Secrets come from the environment by default (``care serve``), from Airflow Connections when
the plugin passes its own ``WebhookSecrets`` (``caretouch.airflow.hooks``).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import inspect

from ..channels.credentials import (
    SendGridCredentials,
    TwilioCredentials,
    sendgrid_from_env,
    twilio_from_env,
)
from ..config import CareConfig
from ..errors import ConfigurationError
from ..events.inbox import Incoming, submit
from ..render.unsubscribe import unsubscribe_key
from ..rules.event_types import EventTypes, load_event_types
from ..store.db import Store, check_reachable, open_store
from ..webhooks.intake import GroupCommit
from ..webhooks.replies import ReplyIntake
from ..webhooks.verify import sendgrid_verifier

log = logging.getLogger("caretouch.webhooks")

# The shortest CARE_INBOUND_EMAIL_TOKEN taken: the URL's secret is all that guards the route.
MIN_INBOUND_TOKEN = 16

WEBHOOK_TABLES = (
    "customers",
    "consent_events",
    "touches",
    "touch_attempts",
    "touch_events",
    "provider_events",
    "ledger_chain",
    "ledger_anchors",  # sealing reads every chained table
    "callback_intake",  # status callbacks are accepted there, then recorded in batches
    # Customers' replies become business events in the inbox (webhooks.replies).
    "events",
    "event_receipts",
    "event_dead_letters",
)


def inbound_email_token_from_env() -> str | None:
    """``CARE_INBOUND_EMAIL_TOKEN``, or None."""
    token = CareConfig.from_env().inbound_email_token
    return token.get_secret_value() if token is not None else None


@dataclass(frozen=True)
class WebhookSecrets:
    """Where the webhooks' secrets come from, each called once, on first use."""

    twilio: Callable[[], TwilioCredentials | None] = twilio_from_env
    sendgrid: Callable[[], SendGridCredentials | None] = sendgrid_from_env
    unsubscribe_key: Callable[[], bytes] = unsubscribe_key
    inbound_email_token: Callable[[], str | None] = inbound_email_token_from_env


class WebhookContext:
    """The store and the secrets, each resolved on first use (no I/O at import)."""

    def __init__(
        self,
        store_url: str | None,
        store: Store | None,
        secrets: WebhookSecrets,
        clock: Callable[[], dt.datetime] | None,
    ) -> None:
        self._store_url = store_url
        self._store = store
        self.secrets = secrets
        self._clock = clock
        self._lock = threading.Lock()
        self._twilio: list[TwilioCredentials | None] = []
        self._verifier: list[Any] = []
        self._unsubscribe_key: list[bytes] = []
        self._inbound_token: list[str | None] = []
        self._callbacks: GroupCommit | None = None
        self._replies: ReplyIntake | None = None

    def now(self) -> dt.datetime:
        if self._clock is not None:
            return self._clock()
        return dt.datetime.now(dt.timezone.utc)  # clock: web request

    @property
    def store(self) -> Store:
        with self._lock:
            if self._store is None:
                self._store = open_webhook_store(
                    CareConfig.from_env(store=self._store_url).store_url
                )
            return self._store

    @property
    def callbacks(self) -> GroupCommit:
        """This process's group commit of status callbacks into the store's ledger."""
        store = self.store
        with self._lock:
            if self._callbacks is None:
                self._callbacks = GroupCommit(store, self.now)
            return self._callbacks

    def callbacks_ready(self) -> GroupCommit | None:
        """``callbacks`` if already made (no I/O: for the event loop), else None."""
        return self._callbacks

    def replies(self) -> ReplyIntake:
        """The reply window (``CARE_REPLY_WINDOW_DAYS``) and the inbox the replies' events go
        to, checked against ``events.yaml`` (``CARE_RULES_DIR``) as the API's are."""
        store = self.store
        with self._lock:
            if self._replies is None:
                config = CareConfig.from_env(store=self._store_url)
                declared, errors = load_event_types(config.rules_dir)
                for error in errors:
                    log.error("%s", error)
                types: EventTypes | None = declared if declared.available else None

                def to_inbox(events: Sequence[dict[str, Any]], now: dt.datetime) -> None:
                    submit(
                        store,
                        [Incoming(e, ref=f"webhook:{e['event_id']}"[:300]) for e in events],
                        source="webhook",
                        now=now,
                        event_types=types,
                    )

                self._replies = ReplyIntake(dt.timedelta(days=config.reply_window_days), to_inbox)
            return self._replies

    def inbound_email_token(self) -> str | None:
        """``CARE_INBOUND_EMAIL_TOKEN``, or None when unset or shorter than
        ``MIN_INBOUND_TOKEN`` (the inbound email route is then off: a guessable secret is
        no guard)."""
        with self._lock:
            if not self._inbound_token:
                token = self.secrets.inbound_email_token()
                if token is not None and len(token) < MIN_INBOUND_TOKEN:
                    log.error(
                        "CARE_INBOUND_EMAIL_TOKEN is shorter than %d characters: the inbound "
                        "email route is off",
                        MIN_INBOUND_TOKEN,
                    )
                    token = None
                self._inbound_token.append(token)
        return self._inbound_token[0]

    def twilio(self) -> TwilioCredentials:
        with self._lock:
            if not self._twilio:
                self._twilio.append(self.secrets.twilio())
        found = self._twilio[0]
        if found is None:
            raise ConfigurationError(
                "Twilio webhooks are not configured: set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN "
                "and CARE_SMS_FROM (or the care_twilio Connection)"
            )
        return found

    def sendgrid_verifier(self) -> Any:
        with self._lock:
            if not self._verifier:
                self._verifier.append(sendgrid_verifier(self.secrets.sendgrid()))
        return self._verifier[0]

    def unsubscribe_key(self) -> bytes:
        with self._lock:
            if not self._unsubscribe_key:
                self._unsubscribe_key.append(self.secrets.unsubscribe_key())
        return self._unsubscribe_key[0]


def open_webhook_store(url: str) -> Store:
    """Open the store the webhooks write to; its tables must exist (``care store init``)."""
    store = open_store(url)
    try:
        check_reachable(store)
        inspector = inspect(store.engine)
        # A deployment may map customers through a view (docs/store.md).
        found = set(inspector.get_table_names()) | set(inspector.get_view_names())
        missing = set(WEBHOOK_TABLES) - found
        if missing:
            raise ConfigurationError(
                f"store {store.masked_url()} has no {', '.join(sorted(missing))} table(s): "
                "run `care store init`"
            )
    except BaseException:
        store.dispose()
        raise
    return store
