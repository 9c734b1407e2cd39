"""The rule author's workbench on ``touches``: the message variant a touch was given
(``variant``, a rule's ``variants:``; NULL for a rule without them) and the mark of a test
send (``test``, ``care send-test``: TRUE; NULL for every touch of a customer).

Both nullable and NULL on every row written before: the ledger's chain leaves NULL columns
out of a row's hash (``ledger.chain.canonical``), so the rows already chained verify as they
did. Plain ``ADD COLUMN`` on both databases (no table rebuild: the ledger is append-only).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if "touches" in set(inspector.get_view_names()):
        return
    present = {c["name"] for c in inspector.get_columns("touches")}
    if "variant" not in present:
        op.add_column("touches", sa.Column("variant", sa.String(length=64), nullable=True))
    if "test" not in present:
        op.add_column("touches", sa.Column("test", sa.Boolean(), nullable=True))


def downgrade() -> None:
    op.drop_column("touches", "test")
    op.drop_column("touches", "variant")
