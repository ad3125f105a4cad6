"""A version's dependency layer: what its requirements.txt installed, stored once as its own artifact
and shared by the versions that install the same requirements for the same runtime.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("functionversion") as batch:
        batch.add_column(sa.Column("layer_digest", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("functionversion") as batch:
        batch.drop_column("layer_digest")
