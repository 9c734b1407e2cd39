"""The start-up check every CLI command, Airflow task and `care serve` makes: the store is
reachable and its schema is the version this Caretouch needs. Reads only: no DDL at start
(the application role may not change the schema, and concurrent starts must not race)."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from ..errors import ConfigurationError
from ..store.db import Store, check_reachable
from .version import CORE_TABLES, Shape, current_version, head, is_known, shape

log = logging.getLogger(__name__)


def require_current_schema(store: Store) -> None:
    """Raise ``ConfigurationError`` naming the command to run unless the store's schema is
    at ``head()``: `care store init` for a missing or empty store, `care store upgrade` for
    one made by an older Caretouch.

    A mistyped SQLite path would otherwise silently create an empty database and plan
    nothing.
    """
    _require_file(store)
    check_reachable(store)
    try:
        version = current_version(store)
    except DBAPIError as exc:
        raise ConfigurationError(
            f"cannot read the schema version of store {store.masked_url()} "
            f"({str(exc.orig).splitlines()[0]}): run `care store upgrade --app-role ROLE` as "
            "the schema's owner (docs/deploy.md)"
        ) from exc
    if version is None:
        if shape(store) is Shape.EMPTY:
            raise _empty(store)
        raise ConfigurationError(
            f"store {store.masked_url()} was created by an older Caretouch (no schema "
            "version): run `care store upgrade` as the schema's owner"
        )
    if version != head():
        if is_known(version):
            raise ConfigurationError(
                f"store {store.masked_url()} is at schema version {version}, this Caretouch "
                f"needs {head()}: run `care store upgrade` as the schema's owner"
            )
        raise ConfigurationError(
            f"store {store.masked_url()} is at schema version {version}, unknown to this "
            "Caretouch (made by a newer one?): upgrade Caretouch"
        )
    _warn_if_owner(store)


def require_existing_store(store: Store) -> None:
    """What `care store upgrade` needs: a reachable store with Caretouch tables in it (an
    empty one is made by `care store init`)."""
    _require_file(store)
    check_reachable(store)
    if shape(store) is Shape.EMPTY:
        raise _empty(store)


def _empty(store: Store) -> ConfigurationError:
    return ConfigurationError(
        f"store {store.masked_url()} has no {', '.join(sorted(CORE_TABLES))} table(s): "
        "run `care store init` (or check --store / $CARE_STORE_URL)"
    )


def _require_file(store: Store) -> None:
    # Connecting to a missing SQLite file would create it, empty.
    url = make_url(store.url)
    if (
        url.get_backend_name() == "sqlite"
        and url.database not in (None, "", ":memory:")
        and not Path(url.database).exists()
    ):
        raise ConfigurationError(
            f"store {store.masked_url()} does not exist: run `care store init` "
            "(or check --store / $CARE_STORE_URL)"
        )


_WARNED_OWNER: set[str] = set()


def _warn_if_owner(store: Store) -> None:
    """Say so, once per store, when the application connects as the owner of the ledger
    tables: that role can disable the append-only triggers."""
    if not store.is_postgres or store.url in _WARNED_OWNER:
        return
    _WARNED_OWNER.add(store.url)
    with store.engine.connect() as conn:
        owns = conn.execute(
            text(
                "SELECT pg_has_role(current_user, relowner, 'USAGE') FROM pg_class "
                "WHERE oid = to_regclass('touches')"
            )
        ).scalar()
    if owns:
        log.warning(
            "store %s: this role owns the ledger tables (or is a member of their owner, or a "
            "superuser), so it could disable their append-only triggers; connect the "
            "application as a role made with `care store init --app-role` (docs/deploy.md)",
            store.masked_url(),
        )
