"""Accounts: tenants, users, grants and tokens with a lifecycle.

Every function moves to the `default` tenant (its name, the key it is known by, stays as it was, so
its invoke URL keeps working). The tenant `default` and its admin user `admin` are made, and every
existing token becomes one of `admin`'s (the admin token, which makes its holder the cluster's
admin, as before), with a public id to list and revoke it by.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import secrets
import time

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    now = time.time()
    op.create_table("tenant",
                    sa.Column("name", sa.String(), nullable=False),
                    sa.Column("quotas", sa.JSON(), nullable=False),
                    sa.Column("budget", sa.Float(), nullable=True),
                    sa.Column("budget_action", sa.String(), nullable=False),
                    sa.Column("created_at", sa.Float(), nullable=False),
                    sa.PrimaryKeyConstraint("name"))
    op.create_table("useraccount",
                    sa.Column("name", sa.String(), nullable=False),
                    sa.Column("tenant", sa.String(), nullable=False),
                    sa.Column("role", sa.String(), nullable=False),
                    sa.Column("created_at", sa.Float(), nullable=False),
                    sa.PrimaryKeyConstraint("name"))
    op.create_index("ix_useraccount_tenant", "useraccount", ["tenant"])
    op.create_table("accessgrant",
                    sa.Column("id", sa.Integer(), nullable=False),
                    sa.Column("username", sa.String(), nullable=False),
                    sa.Column("permission", sa.String(), nullable=False),
                    sa.Column("tenant", sa.String(), nullable=False),
                    sa.Column("pattern", sa.String(), nullable=False),
                    sa.Column("created_at", sa.Float(), nullable=False),
                    sa.PrimaryKeyConstraint("id"),
                    sa.UniqueConstraint("username", "permission", "tenant", "pattern"))
    op.create_index("ix_accessgrant_username", "accessgrant", ["username"])
    op.create_index("ix_accessgrant_tenant", "accessgrant", ["tenant"])
    op.create_table("generation",
                    sa.Column("name", sa.String(), nullable=False),
                    sa.Column("value", sa.Integer(), nullable=False),
                    sa.PrimaryKeyConstraint("name"))

    with op.batch_alter_table("function") as batch:
        batch.add_column(sa.Column("tenant", sa.String(), nullable=False, server_default="default"))
        batch.create_index("ix_function_tenant", ["tenant"])

    conn = op.get_bind()
    ids = [row[0] for row in conn.execute(sa.text("SELECT id FROM apitoken")).all()]
    with op.batch_alter_table("apitoken") as batch:
        batch.add_column(sa.Column("public_id", sa.String(), nullable=True))
        batch.add_column(sa.Column("username", sa.String(), nullable=True))
        batch.add_column(sa.Column("scopes", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("expires_at", sa.Float(), nullable=True))
        batch.add_column(sa.Column("revoked_at", sa.Float(), nullable=True))
        batch.add_column(sa.Column("rotated_to", sa.String(), nullable=True))
    tokens = sa.table("apitoken", sa.column("id", sa.Integer()), sa.column("public_id", sa.String()),
                      sa.column("username", sa.String()))
    for token_id in ids:
        conn.execute(tokens.update().where(tokens.c.id == token_id)
                     .values(public_id="tok_" + secrets.token_hex(8), username="admin"))
    with op.batch_alter_table("apitoken") as batch:
        batch.alter_column("public_id", existing_type=sa.String(), nullable=False)
        batch.alter_column("username", existing_type=sa.String(), nullable=False)
        batch.create_index("ix_apitoken_public_id", ["public_id"], unique=True)
        batch.create_index("ix_apitoken_username", ["username"])
        batch.drop_column("is_admin")

    conn.execute(sa.text("INSERT INTO tenant (name, quotas, budget_action, created_at) "
                         "VALUES ('default', '{}', 'throttle', :now)"), {"now": now})
    conn.execute(sa.text("INSERT INTO useraccount (name, tenant, role, created_at) "
                         "VALUES ('admin', 'default', 'admin', :now)"), {"now": now})


def downgrade() -> None:
    with op.batch_alter_table("apitoken") as batch:
        batch.add_column(sa.Column("is_admin", sa.Boolean(), nullable=False, server_default=sa.false()))
    # Only the admin's tokens stay (they were the only ones before); live ones stay admin tokens.
    op.get_bind().execute(sa.text("DELETE FROM apitoken WHERE username <> 'admin' OR revoked_at IS NOT NULL"))
    op.get_bind().execute(sa.text("UPDATE apitoken SET is_admin = true"))
    with op.batch_alter_table("apitoken") as batch:
        batch.drop_index("ix_apitoken_username")
        batch.drop_index("ix_apitoken_public_id")
        for column in ("rotated_to", "revoked_at", "expires_at", "scopes", "username", "public_id"):
            batch.drop_column(column)
    with op.batch_alter_table("function") as batch:
        batch.drop_index("ix_function_tenant")
        batch.drop_column("tenant")
    op.drop_table("generation")
    op.drop_index("ix_accessgrant_tenant", "accessgrant")
    op.drop_index("ix_accessgrant_username", "accessgrant")
    op.drop_table("accessgrant")
    op.drop_index("ix_useraccount_tenant", "useraccount")
    op.drop_table("useraccount")
    op.drop_table("tenant")
