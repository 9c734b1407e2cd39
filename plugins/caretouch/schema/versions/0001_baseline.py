"""Baseline: the schema as Caretouch created it before migrations (store and ledger tables,
their indexes, and on PostgreSQL the ledger's append-only triggers).

Idempotent, so that it also adopts a store created by the older ``store.init()``: a table
or index that exists is left alone, and a name a deployment maps through a view
(docs/store.md) is never created. Later revisions are ordinary Alembic migrations.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from caretouch.errors import ConfigurationError
from caretouch.schema import protection

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


class _Catalogue:
    """What the store holds, read once: the baseline creates only what is missing."""

    def __init__(self) -> None:
        self.inspector = sa.inspect(op.get_bind())
        self.views = set(self.inspector.get_view_names())
        self.present = set(self.inspector.get_table_names()) | self.views
        self.created: set[str] = set()


# The catalogue of the store being migrated (one migration at a time per process).
_current: list[_Catalogue] = []


def _table(name: str, *elements: Any) -> None:
    catalogue = _current[-1]
    if name not in catalogue.present:
        op.create_table(name, *elements)
        catalogue.created.add(name)


def _index(name: str, table: str, columns: list[str], **kw: Any) -> None:
    catalogue = _current[-1]
    if table in catalogue.views:
        return
    if table not in catalogue.created and name in {
        i["name"] for i in catalogue.inspector.get_indexes(table)
    }:
        return
    op.create_index(name, table, columns, **kw)


def upgrade() -> None:
    _current[:] = [_Catalogue()]
    _table(
        "consent_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=120), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    _index(
        "ix_consent_events_customer",
        "consent_events",
        ["customer_id", "purpose", "id"],
        unique=False,
    )
    _table(
        "customers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("birth_date", sa.Date(), nullable=True),
        sa.Column("birthday_calendar", sa.String(length=16), nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("locale", sa.String(length=8), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("tier", sa.String(length=1), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("consent_sms", sa.Boolean(), nullable=False),
        sa.Column("consent_email", sa.Boolean(), nullable=False),
        sa.Column("consent_marketing", sa.Boolean(), nullable=False),
        sa.Column("birth_md", sa.Integer(), nullable=True),
        sa.Column("birth_lunar_md", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("customer_id"),
    )
    _index("ix_customers_birth_lunar_md", "customers", ["birth_lunar_md"], unique=False)
    _index("ix_customers_birth_md", "customers", ["birth_md"], unique=False)
    _index("ix_customers_email", "customers", ["email"], unique=False)
    _index("ix_customers_phone", "customers", ["phone"], unique=False)
    _table(
        "event_dead_letters",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("ref", sa.String(length=300), nullable=True),
        sa.Column("event_id", sa.String(length=128), nullable=True),
        sa.Column("reason", sa.String(length=1000), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    _index("ix_event_dead_letters_event_id", "event_dead_letters", ["event_id"], unique=False)
    _table(
        "event_receipts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("ref", sa.String(length=300), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("planned_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
    )
    _index("ix_event_receipts_unplanned", "event_receipts", ["planned_at", "id"], unique=False)
    _table(
        "events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("policy_id", sa.String(length=64), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.JSON(none_as_null=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
    )
    _index("ix_events_customer_id", "events", ["customer_id"], unique=False)
    _index("ix_events_type_occurred_at", "events", ["type", "occurred_at"], unique=False)
    _table(
        "ledger_anchors",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("chain_hash", sa.String(length=64), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("anchor_hash", sa.String(length=64), nullable=False),
        sa.Column("hmac", sa.String(length=64), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(length=250), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("number"),
    )
    _table(
        "ledger_chain",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("table_name", sa.String(length=32), nullable=False),
        sa.Column("row_id", sa.Integer(), nullable=False),
        sa.Column("row_hash", sa.String(length=64), nullable=False),
        sa.Column("chain_hash", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    _index("ix_ledger_chain_table_row", "ledger_chain", ["table_name", "row_id"], unique=True)
    _table(
        "policies",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("policy_id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("product", sa.String(length=200), nullable=False),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("renewal_date", sa.Date(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("premium", sa.Numeric(precision=14, scale=2), nullable=True),
        sa.Column("start_md", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("policy_id"),
    )
    _index("ix_policies_customer_id", "policies", ["customer_id"], unique=False)
    _index("ix_policies_renewal_date", "policies", ["renewal_date"], unique=False)
    _index("ix_policies_start_date", "policies", ["start_date"], unique=False)
    _index("ix_policies_start_md", "policies", ["start_md"], unique=False)
    _table(
        "touches",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("touch_key", sa.String(length=300), nullable=False),
        sa.Column("rule_id", sa.String(length=64), nullable=False),
        sa.Column("rule_hash", sa.String(length=64), nullable=False),
        sa.Column("category", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("subject_kind", sa.String(length=16), nullable=False),
        sa.Column("subject_id", sa.String(length=128), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("policy_id", sa.String(length=64), nullable=True),
        sa.Column("event_id", sa.String(length=128), nullable=True),
        sa.Column("occurrence", sa.Date(), nullable=False),
        sa.Column("send_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("locale", sa.String(length=8), nullable=False),
        sa.Column("tier", sa.String(length=1), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=True),
        sa.Column("template_id", sa.String(length=64), nullable=False),
        sa.Column("context", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(length=250), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("touch_key"),
    )
    _index("ix_touches_customer_occurrence", "touches", ["customer_id", "occurrence"], unique=False)
    _index("ix_touches_occurrence", "touches", ["occurrence"], unique=False)
    _index("ix_touches_rule_occurrence", "touches", ["rule_id", "occurrence"], unique=False)
    _table(
        "touch_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("touch_id", sa.Integer(), nullable=False),
        sa.Column("attempt_no", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("transport", sa.String(length=32), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("template_id", sa.String(length=64), nullable=False),
        sa.Column("template_hash", sa.String(length=64), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(length=250), nullable=False),
        sa.ForeignKeyConstraint(
            ["touch_id"],
            ["touches.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("touch_id", "attempt_no", name="uq_attempt_touch_no"),
    )
    _table(
        "touch_current",
        sa.Column("touch_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("send_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=True),
        sa.Column("final", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["touch_id"],
            ["touches.id"],
        ),
        sa.PrimaryKeyConstraint("touch_id"),
    )
    _index(
        "ix_touch_current_deferred",
        "touch_current",
        ["touch_id", "event_id", "status"],
        unique=False,
        sqlite_where=sa.text("reason = 'deferred'"),
        postgresql_where=sa.text("reason = 'deferred'"),
    )
    _index("ix_touch_current_event", "touch_current", ["event_id"], unique=False)
    _index("ix_touch_current_status", "touch_current", ["status", "touch_id"], unique=False)
    _table(
        "provider_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("provider_event_id", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("provider_status", sa.String(length=64), nullable=True),
        sa.Column("provider_message_id", sa.String(length=200), nullable=True),
        sa.Column("touch_id", sa.Integer(), nullable=True),
        sa.Column("attempt_id", sa.Integer(), nullable=True),
        sa.Column("customer_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["attempt_id"],
            ["touch_attempts.id"],
        ),
        sa.ForeignKeyConstraint(
            ["touch_id"],
            ["touches.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("provider", "provider_event_id", name="uq_provider_event"),
    )
    _index("ix_provider_events_touch", "provider_events", ["touch_id"], unique=False)
    _table(
        "touch_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("touch_id", sa.Integer(), nullable=False),
        sa.Column("attempt_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("provider_message_id", sa.String(length=128), nullable=True),
        sa.Column("detail", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("send_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(length=250), nullable=False),
        sa.ForeignKeyConstraint(
            ["attempt_id"],
            ["touch_attempts.id"],
        ),
        sa.ForeignKeyConstraint(
            ["touch_id"],
            ["touches.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    _index(
        "ix_touch_events_provider_message_id", "touch_events", ["provider_message_id"], unique=False
    )
    _index("ix_touch_events_run_id", "touch_events", ["run_id", "status"], unique=False)
    _index("ix_touch_events_touch_id_id", "touch_events", ["touch_id", "id"], unique=False)
    protection.install(op.get_bind())


def downgrade() -> None:
    raise ConfigurationError("the baseline is not undone: drop the store's tables instead")
