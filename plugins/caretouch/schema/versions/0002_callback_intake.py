"""Callback intake: provider delivery callbacks accepted but not yet recorded in the ledger
(``store.models.CallbackIntake``, docs/webhooks.md "How callbacks are recorded").

Not a ledger table: no hash chain and no append-only triggers, since recording a callback
deletes its intake row in the same transaction. Created only when missing, as the baseline
does, so that a store made with ``metadata.create_all`` is adopted.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLE = "callback_intake"
INDEX = "ix_callback_intake_pending"


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if TABLE in inspector.get_view_names():  # mapped by the deployment: its own business
        return
    if TABLE not in inspector.get_table_names():
        op.create_table(
            TABLE,
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("provider", sa.String(length=16), nullable=False),
            sa.Column("kind", sa.String(length=16), nullable=False),
            sa.Column("ref", sa.String(length=32), nullable=True),
            sa.Column("params", sa.JSON(), nullable=False),
            sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("failures", sa.Integer(), nullable=False),
            sa.Column("error", sa.String(length=300), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index(INDEX, TABLE, ["failures", "id"], unique=False)
    elif INDEX not in {i["name"] for i in inspector.get_indexes(TABLE)}:
        op.create_index(INDEX, TABLE, ["failures", "id"], unique=False)


def downgrade() -> None:
    op.drop_index(INDEX, table_name=TABLE)
    op.drop_table(TABLE)
