"""Schedules: cron or rate firings of async calls.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("schedule",
                    sa.Column("key", sa.String(), nullable=False),
                    sa.Column("tenant", sa.String(), nullable=False),
                    sa.Column("name", sa.String(), nullable=False),
                    sa.Column("function", sa.String(), nullable=False),
                    sa.Column("cron", sa.String(), nullable=True),
                    sa.Column("rate_s", sa.Float(), nullable=True),
                    sa.Column("tz", sa.String(), nullable=False),
                    sa.Column("anchor", sa.Float(), nullable=False),
                    sa.Column("data", sa.String(), nullable=False),
                    sa.Column("catch_up", sa.Boolean(), nullable=False),
                    sa.Column("next_fire_at", sa.Float(), nullable=False),
                    sa.Column("last_fired_at", sa.Float(), nullable=True),
                    sa.Column("fired", sa.Integer(), nullable=False),
                    sa.Column("created_at", sa.Float(), nullable=False),
                    sa.PrimaryKeyConstraint("key"))
    for column in ("tenant", "function", "next_fire_at"):
        op.create_index(f"ix_schedule_{column}", "schedule", [column])


def downgrade() -> None:
    for column in ("tenant", "function", "next_fire_at"):
        op.drop_index(f"ix_schedule_{column}", "schedule")
    op.drop_table("schedule")
