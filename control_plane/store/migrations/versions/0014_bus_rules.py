"""The event bus's rules.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("busrule",
                    sa.Column("key", sa.String(), nullable=False),
                    sa.Column("tenant", sa.String(), nullable=False),
                    sa.Column("name", sa.String(), nullable=False),
                    sa.Column("pattern", sa.String(), nullable=False),
                    sa.Column("target", sa.String(), nullable=False),
                    sa.Column("input_paths", sa.JSON(), nullable=True),
                    sa.Column("input_template", sa.String(), nullable=True),
                    sa.Column("created_at", sa.Float(), nullable=False),
                    sa.PrimaryKeyConstraint("key"))
    op.create_index("ix_busrule_tenant", "busrule", ["tenant"])


def downgrade() -> None:
    op.drop_index("ix_busrule_tenant", "busrule")
    op.drop_table("busrule")
