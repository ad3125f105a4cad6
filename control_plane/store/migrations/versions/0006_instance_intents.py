"""Instance intents: a start or stop of an instance is written down before the agent is asked.

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
    op.create_table('instanceintent',
    sa.Column('instance_id', sa.String(), nullable=False),
    sa.Column('owner', sa.String(), nullable=False),
    sa.Column('kind', sa.String(), nullable=False),
    sa.Column('function', sa.String(), nullable=False),
    sa.Column('node_id', sa.String(), nullable=False),
    sa.Column('node_url', sa.String(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('instance_id')
    )
    op.create_index(op.f('ix_instanceintent_owner'), 'instanceintent', ['owner'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_instanceintent_owner'), table_name='instanceintent')
    op.drop_table('instanceintent')
