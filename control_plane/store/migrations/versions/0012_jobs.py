"""The durable queue's jobs (the store's implementation of `control_plane.jobs.JobQueue`), async
invocations and their dead letters.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("queuedjob",
                    sa.Column("id", sa.Integer(), nullable=False),
                    sa.Column("queue", sa.String(), nullable=False),
                    sa.Column("key", sa.String(), nullable=False),
                    sa.Column("body", sa.JSON(), nullable=False),
                    sa.Column("available_at", sa.Float(), nullable=False),
                    sa.Column("lease_token", sa.String(), nullable=True),
                    sa.Column("lease_until", sa.Float(), nullable=True),
                    sa.Column("deliveries", sa.Integer(), nullable=False),
                    sa.Column("done_at", sa.Float(), nullable=True),
                    sa.Column("created_at", sa.Float(), nullable=False),
                    sa.PrimaryKeyConstraint("id"),
                    sa.UniqueConstraint("queue", "key"))
    op.create_index("ix_queuedjob_ready", "queuedjob", ["queue", "done_at", "available_at"])
    op.create_table("asyncinvocation",
                    sa.Column("request_id", sa.String(), nullable=False),
                    sa.Column("tenant", sa.String(), nullable=False),
                    sa.Column("function", sa.String(), nullable=False),
                    sa.Column("state", sa.String(), nullable=False),
                    sa.Column("attempts", sa.Integer(), nullable=False),
                    sa.Column("enqueued_at", sa.Float(), nullable=False),
                    sa.Column("updated_at", sa.Float(), nullable=False),
                    sa.Column("next_attempt_at", sa.Float(), nullable=True),
                    sa.Column("source", sa.String(), nullable=False),
                    sa.Column("error", sa.JSON(), nullable=True),
                    sa.Column("duplicates", sa.Integer(), nullable=False),
                    sa.PrimaryKeyConstraint("request_id"))
    for column in ("tenant", "function", "state", "enqueued_at"):
        op.create_index(f"ix_asyncinvocation_{column}", "asyncinvocation", [column])
    op.create_table("deadletter",
                    sa.Column("request_id", sa.String(), nullable=False),
                    sa.Column("tenant", sa.String(), nullable=False),
                    sa.Column("function", sa.String(), nullable=False),
                    sa.Column("event", sa.LargeBinary(), nullable=False),
                    sa.Column("attempts", sa.Integer(), nullable=False),
                    sa.Column("reason", sa.String(), nullable=False),
                    sa.Column("error", sa.JSON(), nullable=True),
                    sa.Column("dead_at", sa.Float(), nullable=False),
                    sa.PrimaryKeyConstraint("request_id"))
    for column in ("tenant", "function", "dead_at"):
        op.create_index(f"ix_deadletter_{column}", "deadletter", [column])


def downgrade() -> None:
    for table, columns in (("deadletter", ("tenant", "function", "dead_at")),
                           ("asyncinvocation", ("tenant", "function", "state", "enqueued_at")),
                           ("queuedjob", ())):
        for column in columns:
            op.drop_index(f"ix_{table}_{column}", table)
        if table == "queuedjob":
            op.drop_index("ix_queuedjob_ready", table)
        op.drop_table(table)
