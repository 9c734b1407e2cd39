"""Agents' daily digests: one row per agent and day (``agent_digests``, UNIQUE (agent_id,
day)), the claim that makes a digest go out once however many runs or workers try, with
what came of it; and the tasks escalated to an agent's manager (``task_escalations``, one
row per task). See ``store.models.AgentDigest`` and docs/operations.md, "The agents' day".

Not ledger tables (staff mail, not touches of customers): no hash chain, no append-only
triggers. Created only when missing, as 0002 does, so that a store made with
``metadata.create_all`` is adopted; a name a deployment maps through a view is left alone.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    present = set(inspector.get_table_names()) | set(inspector.get_view_names())
    if "agent_digests" not in present:
        op.create_table(
            "agent_digests",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("agent_id", sa.String(length=64), nullable=False),
            sa.Column("day", sa.Date(), nullable=False),
            sa.Column("status", sa.String(length=16), nullable=False),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.Column("run_id", sa.String(length=128), nullable=False),
            sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("tasks", sa.Integer(), nullable=False),
            sa.Column("overdue", sa.Integer(), nullable=False),
            sa.Column("escalations", sa.Integer(), nullable=False),
            sa.Column("provider_message_id", sa.String(length=128), nullable=True),
            sa.Column("detail", sa.String(length=300), nullable=True),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("agent_id", "day", name="uq_agent_digest_day"),
        )
    if "task_escalations" not in present:
        op.create_table(
            "task_escalations",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("touch_id", sa.Integer(), nullable=False),
            sa.Column("agent_id", sa.String(length=64), nullable=False),
            sa.Column("manager_id", sa.String(length=64), nullable=False),
            sa.Column("day", sa.Date(), nullable=False),
            sa.Column("days_overdue", sa.Integer(), nullable=False),
            sa.Column("digest_id", sa.Integer(), nullable=False),
            sa.Column("run_id", sa.String(length=128), nullable=False),
            sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("touch_id"),
        )


def downgrade() -> None:
    op.drop_table("task_escalations")
    op.drop_table("agent_digests")
