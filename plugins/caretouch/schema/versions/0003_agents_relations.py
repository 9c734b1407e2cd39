"""Agents and relations: the agency's agents (``agents``), customers' family members
(``relations``), and on ``customers`` the customer's agent (``agent_id``) and segment.

A table or column that exists is left alone, and a name a deployment maps through a view
(docs/store.md) is never touched: such a deployment adds the columns to its view.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    views = set(inspector.get_view_names())
    tables = set(inspector.get_table_names())
    if "customers" not in views:
        present = {c["name"] for c in inspector.get_columns("customers")}
        with op.batch_alter_table("customers") as batch:
            if "agent_id" not in present:
                batch.add_column(sa.Column("agent_id", sa.String(length=64), nullable=True))
            if "segment" not in present:
                batch.add_column(sa.Column("segment", sa.String(length=32), nullable=True))
        if "ix_customers_agent_id" not in {i["name"] for i in inspector.get_indexes("customers")}:
            op.create_index("ix_customers_agent_id", "customers", ["agent_id"], unique=False)
    if "agents" not in tables | views:
        op.create_table(
            "agents",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("agent_id", sa.String(length=64), nullable=False),
            sa.Column("name", sa.String(length=200), nullable=False),
            sa.Column("phone", sa.String(length=32), nullable=True),
            sa.Column("email", sa.String(length=320), nullable=True),
            sa.Column("timezone", sa.String(length=64), nullable=True),
            sa.Column("manager_id", sa.String(length=64), nullable=True),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("agent_id"),
        )
    if "relations" not in tables | views:
        op.create_table(
            "relations",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("relation_id", sa.String(length=64), nullable=False),
            sa.Column("customer_id", sa.String(length=64), nullable=False),
            sa.Column("kind", sa.String(length=16), nullable=False),
            sa.Column("name", sa.String(length=200), nullable=False),
            sa.Column("birth_date", sa.Date(), nullable=True),
            sa.Column("birthday_calendar", sa.String(length=16), nullable=False),
            sa.Column("birth_md", sa.Integer(), nullable=True),
            sa.Column("birth_lunar_md", sa.Integer(), nullable=True),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("relation_id"),
        )
        for column in ("customer_id", "birth_md", "birth_lunar_md"):
            op.create_index(f"ix_relations_{column}", "relations", [column], unique=False)


def downgrade() -> None:
    op.drop_table("relations")
    op.drop_table("agents")
    op.drop_index("ix_customers_agent_id", table_name="customers")
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("segment")
        batch.drop_column("agent_id")
