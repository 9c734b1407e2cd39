"""Premiums kept in force: on ``policies`` the next premium's due date (``premium_due_date``,
indexed: reminders are planned by it), the payment frequency and the day the policy is paid
through (``paid_through``). See ``store.models.InsurancePolicy`` and docs/store.md.

A column that exists is left alone, and a name a deployment maps through a view
(docs/store.md) is never touched: such a deployment adds the columns to its view.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if "policies" in set(inspector.get_view_names()):
        return
    present = {c["name"] for c in inspector.get_columns("policies")}
    with op.batch_alter_table("policies") as batch:
        if "premium_due_date" not in present:
            batch.add_column(sa.Column("premium_due_date", sa.Date(), nullable=True))
        if "payment_frequency" not in present:
            batch.add_column(sa.Column("payment_frequency", sa.String(length=16), nullable=True))
        if "paid_through" not in present:
            batch.add_column(sa.Column("paid_through", sa.Date(), nullable=True))
    indexes = {i["name"] for i in inspector.get_indexes("policies")}
    if "ix_policies_premium_due_date" not in indexes:
        op.create_index(
            "ix_policies_premium_due_date", "policies", ["premium_due_date"], unique=False
        )


def downgrade() -> None:
    op.drop_index("ix_policies_premium_due_date", table_name="policies")
    with op.batch_alter_table("policies") as batch:
        batch.drop_column("paid_through")
        batch.drop_column("payment_frequency")
        batch.drop_column("premium_due_date")
