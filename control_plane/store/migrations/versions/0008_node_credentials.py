"""Each node its own identity: a credential per joined node (its secret's hash and the URL it joined
with), instead of one token shared by every node; the shared token is dropped.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('nodecredential',
    sa.Column('node_id', sa.String(), nullable=False),
    sa.Column('secret_hash', sa.String(), nullable=False),
    sa.Column('url', sa.String(), nullable=False),
    sa.Column('joined_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('node_id')
    )
    op.execute("DELETE FROM clustersecret WHERE name = 'node_token'")


def downgrade() -> None:
    op.drop_table('nodecredential')  # nodes join again; a shared token is made on start
