"""Alembic's environment: migrations run on the connection ``migrate.upgrade`` passes in
(``config.attributes["connection"]``), inside its transaction. No alembic.ini, no URL here."""

from __future__ import annotations

from alembic import context

from caretouch.errors import ConfigurationError

connection = context.config.attributes.get("connection")
if connection is None:  # offline (--sql) mode is not offered: a store is always at hand
    raise ConfigurationError("migrations run through caretouch.schema.migrate.upgrade(store)")
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
