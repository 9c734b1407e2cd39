"""Assembling the engine: everything a run needs, opened once from the configuration.

``open_engine`` is the one place that does it; the CLI (``cli.root``) and the Airflow glue
(``airflow.daily``) both call it and never change the engine afterwards.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from ..channels.agent_task import AgentTaskTransport
from ..channels.base import Transport
from ..channels.registry import transports_from_env
from ..config import CareConfig, is_local_url
from ..errors import ConfigurationError, ValidationFailed
from ..ledger import Ledger
from ..render.templates import TemplateStore
from ..render.unsubscribe import UnsubscribeLinks, unsubscribe_key
from ..rules.contact_policy import ContactPolicy
from ..rules.loader import RuleSet, load_rules
from ..schema import require_current_schema
from ..store.db import Store, open_store
from ..vocab import Channel


@dataclass(frozen=True)
class CareEngine:
    """Everything a run needs: the store, the rules, the templates and the channels."""

    config: CareConfig
    store: Store
    templates: TemplateStore
    ruleset: RuleSet
    transports: dict[Channel, Transport]
    # Where ledger timestamps come from. None: the ``now`` each call is given (tests, replays
    # with ``--now``); the CLI and the DAGs pass the real clock so each send is stamped when
    # it happens, not when the run started.
    clock: Callable[[], dt.datetime] | None = None
    # Signs the unsubscribe links of emails; None: ``$CARE_UNSUBSCRIBE_KEY`` (the config's).
    unsubscribe_key: bytes | None = None

    def unsubscribe_links(self) -> dict[Channel, UnsubscribeLinks]:
        """How to make the unsubscribe links of each channel whose provider wants them in
        its messages (SendGrid; not the outbox): where they point, and the key signing them."""
        bases = {
            ch: b
            for ch, t in self.transports.items()
            if (b := getattr(t, "unsubscribe_base", None))
        }
        if not bases:
            return {}
        key = self.unsubscribe_key or unsubscribe_key(self.config)
        return {ch: UnsubscribeLinks(base, key) for ch, base in bases.items()}

    def stamp(self, now: dt.datetime) -> dt.datetime:
        return self.clock() if self.clock is not None else now

    @property
    def ledger(self) -> Ledger:
        return Ledger(self.store)

    @property
    def policy(self) -> ContactPolicy:
        return self.ruleset.policy


def open_engine(
    config: CareConfig,
    *,
    transports: dict[Channel, Transport] | None = None,
    clock: Callable[[], dt.datetime] | None = None,
    store: Store | None = None,
    unsubscribe_key: bytes | None = None,
    workers: int = 1,
) -> CareEngine:
    """The engine of ``config``: its templates, rules, store and channels.

    Raises ``ConfigurationError`` when the rules directory is missing and ``ValidationFailed``
    when the contact policy has errors (nothing may be planned or sent without it); broken
    rules are left out (``ruleset.errors``) for the caller to report. ``transports``: the
    channels to send through (default: from the environment, ``channels.registry``).
    ``store``: a store already open on ``config.store_url`` (tests: a PostgreSQL schema of
    their own). The store must be initialised (``schema.require_current_schema``).
    ``unsubscribe_key``: signs emails' unsubscribe links (default ``$CARE_UNSUBSCRIBE_KEY``);
    a provider that needs one without it fails here, at start. ``workers``: how many
    machines the caller knows run tasks (the Airflow glue: 2 under an executor that spreads
    tasks, ``airflow.hooks.executor_workers``); with ``$CARE_WORKERS``, the outbox's rule
    (``check_outbox``) is checked here.
    """
    if not config.rules_dir.is_dir():
        raise ConfigurationError(f"rules directory not found: {config.rules_dir}")
    templates = TemplateStore(config.templates_dir)
    ruleset = load_rules(config.rules_dir, templates)
    if ruleset.policy_errors:
        raise ValidationFailed(ruleset.policy_errors)
    if store is None:
        store = open_store(config.store_url)
    if transports is None:
        transports = transports_from_env(config.outbox_dir)
    if Channel.AGENT_TASK not in transports:
        # Tasks are assigned in the ledger whatever sends the messages (tests' fakes too).
        transports = {**transports, Channel.AGENT_TASK: AgentTaskTransport()}
    check_outbox(config, transports, workers=workers)
    require_current_schema(store)
    engine = CareEngine(config, store, templates, ruleset, transports, clock, unsubscribe_key)
    engine.unsubscribe_links()
    return engine


def check_outbox(
    config: CareConfig, transports: dict[Channel, Transport], *, workers: int = 1
) -> None:
    """The outbox is a folder: crash recovery (``run.recover``) settles a message left in
    ``sending`` by looking for its file there, so a sender killed on one machine and
    recovered on another would find nothing in a folder of its own and send it again. With
    several workers (``workers`` or ``$CARE_WORKERS`` above 1), a channel sending to a local
    outbox folder therefore needs the operator's word that the folder is shared
    (``$CARE_OUTBOX_SHARED``); else ``ConfigurationError``, before anything is sent. An
    outbox behind a URL (``s3://…``) is the same for every worker."""
    several = max(workers, config.workers)
    outbox = sorted(ch.value for ch, t in transports.items() if t.name == "outbox")
    if several > 1 and outbox and is_local_url(config.outbox_dir) and not config.outbox_shared:
        raise ConfigurationError(
            f"CARE_OUTBOX_SHARED: the {'/'.join(outbox)} channel(s) write to the outbox "
            f"folder {config.outbox_dir}, and tasks run on several workers "
            f"({'CARE_WORKERS=' + str(config.workers) if config.workers > 1 else 'the executor spreads them'}): "
            "crash recovery on another worker would not find a message and send it again. "
            "Give CARE_OUTBOX_DIR a URL every worker reaches (s3://…), or put the folder on "
            "storage every worker shares and set CARE_OUTBOX_SHARED=true, or configure the "
            "providers (docs/deploy.md#the-outbox-with-several-workers)"
        )


def anchor(engine: CareEngine, *, run_id: str, now: dt.datetime) -> None:
    """Anchor the ledger's chain head at the end of a run (``ledger.anchors.anchor_run``)."""
    from ..ledger.anchors import anchor_run
    from ..storage import anchors

    config = engine.config
    anchor_run(engine.store, anchors(config), run_id=run_id, now=engine.stamp(now), config=config)
