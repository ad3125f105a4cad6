"""Workflows: state machines, their executions and the executions' histories.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("workflow",
                    sa.Column("key", sa.String(), nullable=False),
                    sa.Column("tenant", sa.String(), nullable=False),
                    sa.Column("name", sa.String(), nullable=False),
                    sa.Column("definition", sa.String(), nullable=False),
                    sa.Column("created_at", sa.Float(), nullable=False),
                    sa.Column("updated_at", sa.Float(), nullable=False),
                    sa.PrimaryKeyConstraint("key"))
    op.create_index("ix_workflow_tenant", "workflow", ["tenant"])
    op.create_table("workflowexecution",
                    sa.Column("id", sa.String(), nullable=False),
                    sa.Column("workflow", sa.String(), nullable=False),
                    sa.Column("tenant", sa.String(), nullable=False),
                    sa.Column("name", sa.String(), nullable=False),
                    sa.Column("definition", sa.String(), nullable=False),
                    sa.Column("status", sa.String(), nullable=False),
                    sa.Column("state", sa.JSON(), nullable=False),
                    sa.Column("version", sa.Integer(), nullable=False),
                    sa.Column("input", sa.String(), nullable=False),
                    sa.Column("output", sa.String(), nullable=True),
                    sa.Column("error", sa.String(), nullable=True),
                    sa.Column("cause", sa.String(), nullable=True),
                    sa.Column("started_at", sa.Float(), nullable=False),
                    sa.Column("ended_at", sa.Float(), nullable=True),
                    sa.PrimaryKeyConstraint("id"))
    for column in ("workflow", "tenant", "status"):
        op.create_index(f"ix_workflowexecution_{column}", "workflowexecution", [column])
    op.create_table("workflowevent",
                    sa.Column("id", sa.Integer(), nullable=False),
                    sa.Column("execution", sa.String(), nullable=False),
                    sa.Column("seq", sa.Integer(), nullable=False),
                    sa.Column("type", sa.String(), nullable=False),
                    sa.Column("state_name", sa.String(), nullable=True),
                    sa.Column("timestamp", sa.Float(), nullable=False),
                    sa.Column("details", sa.JSON(), nullable=False),
                    sa.PrimaryKeyConstraint("id"),
                    sa.UniqueConstraint("execution", "seq"))
    op.create_index("ix_workflowevent_execution", "workflowevent", ["execution"])


def downgrade() -> None:
    op.drop_index("ix_workflowevent_execution", "workflowevent")
    op.drop_table("workflowevent")
    for column in ("workflow", "tenant", "status"):
        op.drop_index(f"ix_workflowexecution_{column}", "workflowexecution")
    op.drop_table("workflowexecution")
    op.drop_index("ix_workflow_tenant", "workflow")
    op.drop_table("workflow")
