"""Join tokens for new nodes, and fleet events.

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


def upgrade() -> None:
    op.create_table('fleetevent',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('kind', sa.String(), nullable=False),
    sa.Column('reason', sa.String(), nullable=False),
    sa.Column('node_id', sa.String(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('fleetevent', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_fleetevent_at'), ['at'], unique=False)

    op.create_table('jointoken',
    sa.Column('token_hash', sa.String(), nullable=False),
    sa.Column('request_id', sa.String(), nullable=False),
    sa.Column('provider', sa.String(), nullable=False),
    sa.Column('node_type', sa.String(), nullable=False),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.Column('used_at', sa.Float(), nullable=True),
    sa.Column('node_id', sa.String(), nullable=True),
    sa.PrimaryKeyConstraint('token_hash')
    )
    with op.batch_alter_table('jointoken', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_jointoken_request_id'), ['request_id'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('jointoken', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jointoken_request_id'))

    op.drop_table('jointoken')
    with op.batch_alter_table('fleetevent', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_fleetevent_at'))

    op.drop_table('fleetevent')
