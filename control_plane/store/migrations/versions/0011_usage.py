"""Usage metering and budgets: invocation and instance usage (one row per request id, per
instance), budget alerts, and the month a tenant went over its budget.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("invocationusage",
                    sa.Column("request_id", sa.String(), nullable=False),
                    sa.Column("tenant", sa.String(), nullable=False),
                    sa.Column("function", sa.String(), nullable=False),
                    sa.Column("version", sa.Integer(), nullable=False),
                    sa.Column("instance_id", sa.String(), nullable=False),
                    sa.Column("node_id", sa.String(), nullable=False),
                    sa.Column("started_at", sa.Float(), nullable=False),
                    sa.Column("day", sa.String(), nullable=False),
                    sa.Column("month", sa.String(), nullable=False),
                    sa.Column("duration_us", sa.BigInteger(), nullable=False),
                    sa.Column("billed_ms", sa.BigInteger(), nullable=False),
                    sa.Column("memory_mib", sa.Integer(), nullable=False),
                    sa.Column("mib_ms", sa.BigInteger(), nullable=False),
                    sa.Column("init_ms", sa.BigInteger(), nullable=False),
                    sa.Column("outcome", sa.String(), nullable=False),
                    sa.Column("recorded_at", sa.Float(), nullable=False),
                    sa.PrimaryKeyConstraint("request_id"))
    for column in ("tenant", "function", "day", "month"):
        op.create_index(f"ix_invocationusage_{column}", "invocationusage", [column])
    op.create_table("instanceusage",
                    sa.Column("instance_id", sa.String(), nullable=False),
                    sa.Column("tenant", sa.String(), nullable=False),
                    sa.Column("function", sa.String(), nullable=False),
                    sa.Column("version", sa.Integer(), nullable=False),
                    sa.Column("node_id", sa.String(), nullable=False),
                    sa.Column("memory_mib", sa.Integer(), nullable=False),
                    sa.Column("started_at", sa.Float(), nullable=False),
                    sa.Column("ended_at", sa.Float(), nullable=False),
                    sa.Column("day", sa.String(), nullable=False),
                    sa.Column("month", sa.String(), nullable=False),
                    sa.Column("lifetime_ms", sa.BigInteger(), nullable=False),
                    sa.Column("busy_ms", sa.BigInteger(), nullable=False),
                    sa.Column("idle_ms", sa.BigInteger(), nullable=False),
                    sa.Column("init_ms", sa.BigInteger(), nullable=False),
                    sa.Column("recorded_at", sa.Float(), nullable=False),
                    sa.PrimaryKeyConstraint("instance_id"))
    for column in ("tenant", "function", "day", "month"):
        op.create_index(f"ix_instanceusage_{column}", "instanceusage", [column])
    op.create_table("budgetalert",
                    sa.Column("tenant", sa.String(), nullable=False),
                    sa.Column("month", sa.String(), nullable=False),
                    sa.Column("level", sa.Integer(), nullable=False),
                    sa.Column("spent", sa.Float(), nullable=False),
                    sa.Column("budget", sa.Float(), nullable=False),
                    sa.Column("at", sa.Float(), nullable=False),
                    sa.PrimaryKeyConstraint("tenant", "month", "level"))
    with op.batch_alter_table("tenant") as batch:
        batch.add_column(sa.Column("over_budget_month", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenant") as batch:
        batch.drop_column("over_budget_month")
    op.drop_table("budgetalert")
    for table in ("instanceusage", "invocationusage"):
        for column in ("month", "day", "function", "tenant"):
            op.drop_index(f"ix_{table}_{column}", table)
        op.drop_table(table)
