"""Structured values in JSON columns: a version's settings (`config_json` -> `config`), a
provision's machine ids (comma-separated `provider_ids` -> a JSON list), and a member's unplaced
demand (`pending_json` -> `pending`). Every row's value is converted into the new column, then the
old text column is dropped (the downgrade converts back). A member's demand that does not parse is
dropped: it is republished every lease tick.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _convert(table: str, key: str, old: str, new: str, parse: Callable[[Any], Any]) -> None:
    """Replace column `old` (text) by the JSON column `new`, converting each row with `parse`."""
    conn = op.get_bind()
    rows = conn.execute(sa.text(f"SELECT {key}, {old} FROM {table}")).all()
    with op.batch_alter_table(table) as batch:
        batch.add_column(sa.Column(new, sa.JSON(), nullable=True))
    update = sa.table(table, sa.column(key, sa.String()), sa.column(new, sa.JSON()))
    for row_key, value in rows:
        conn.execute(update.update().where(update.c[key] == row_key)
                     .values({new: parse(value)}))
    with op.batch_alter_table(table) as batch:
        batch.drop_column(old)
        batch.alter_column(new, existing_type=sa.JSON(), nullable=False)


def _split_ids(value: str | None) -> list[str]:
    return [i for i in (value or "").split(",") if i]


def _demand(value: str | None) -> Any:
    try:
        return json.loads(value or "[]")
    except ValueError:
        return []


def upgrade() -> None:
    _convert("functionversion", "id", "config_json", "config", lambda v: json.loads(v or "{}"))
    _convert("providerintent", "request_id", "provider_ids", "provider_ids_list", _split_ids)
    with op.batch_alter_table("providerintent") as batch:
        batch.alter_column("provider_ids_list", new_column_name="provider_ids",
                           existing_type=sa.JSON(), existing_nullable=False)
    _convert("controlplanemember", "id", "pending_json", "pending", _demand)


def downgrade() -> None:
    def back(table: str, key: str, new: str, old: str, render: Callable[[Any], str]) -> None:
        conn = op.get_bind()
        rows = conn.execute(sa.text(f"SELECT {key}, {new} FROM {table}")).all()
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column(old, sa.String(), nullable=True))
        update = sa.table(table, sa.column(key, sa.String()), sa.column(old, sa.String()))
        for row_key, value in rows:
            if isinstance(value, str):  # some drivers hand JSON back as text
                value = json.loads(value)
            conn.execute(update.update().where(update.c[key] == row_key)
                         .values({old: render(value)}))
        with op.batch_alter_table(table) as batch:
            batch.drop_column(new)
            batch.alter_column(old, existing_type=sa.String(), nullable=False)

    back("controlplanemember", "id", "pending", "pending_json", json.dumps)
    with op.batch_alter_table("providerintent") as batch:
        batch.alter_column("provider_ids", new_column_name="provider_ids_list",
                           existing_type=sa.JSON(), existing_nullable=False)
    back("providerintent", "request_id", "provider_ids_list", "provider_ids", ",".join)
    back("functionversion", "id", "config", "config_json", json.dumps)
