"""Schema migrations: from an empty database and from the previous revision, on SQLite and on a
real PostgreSQL server."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text
from sqlmodel import SQLModel

from control_plane.models import FunctionConfig
from control_plane.store import Store, migrate


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite'}"
    return str(request.getfixturevalue("postgres_db"))


def test_empty_database_gets_the_models_schema(db_url: str) -> None:
    store = Store(db_url)
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(ctx, SQLModel.metadata) == []
        assert ctx.get_current_revision() == "0006"
    Store(db_url)  # a second start is a no-op


def test_upgrade_from_the_previous_revision_keeps_data(db_url: str) -> None:
    engine = create_engine(db_url)
    migrate(engine, "0001")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO function (name, latest_version, created_at, updated_at) "
                          "VALUES ('kept', 1, 0, 0)"))
        conn.execute(text("INSERT INTO functionversion (function, version, config_json, code_digest, "
                          "code_size, created_at) VALUES ('kept', 1, :cfg, 'd', 1, 0)"),
                     {"cfg": FunctionConfig(name="kept").model_dump_json()})
    engine.dispose()
    store = Store(db_url)
    fn, ver = store.get_function("kept")
    assert (fn.latest_version, ver.code_digest) == (1, "d")
    token = store.issue_join_token("req", "local", "small", ttl_s=60)  # a table of revision 0002
    assert store.redeem_join_token(token, "node-1").request_id == "req"
