"""Schema migrations: from an empty database and from the previous revision, on SQLite and on a
real PostgreSQL server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlmodel import SQLModel

from control_plane.functions import FunctionCreate
from control_plane.store import Store, downgrade, hash_token, migrate

VERSIONS = Path(migrate.__code__.co_filename).parent / "migrations" / "versions"
HEAD = max(p.name[:4] for p in VERSIONS.glob("[0-9][0-9][0-9][0-9]_*.py"))  # the newest revision


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
        assert ctx.get_current_revision() == HEAD
    Store(db_url)  # a second start is a no-op


def test_upgrade_from_the_previous_revision_keeps_data(db_url: str) -> None:
    engine = create_engine(db_url)
    migrate(engine, "0001")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO function (name, latest_version, created_at, updated_at) "
                          "VALUES ('kept', 1, 0, 0)"))
        conn.execute(text("INSERT INTO functionversion (function, version, config_json, code_digest, "
                          "code_size, created_at) VALUES ('kept', 1, :cfg, 'd', 1, 0)"),
                     {"cfg": FunctionCreate(name="kept").model_dump_json()})
    engine.dispose()
    store = Store(db_url)
    fn, ver = store.get_function("kept")
    assert (fn.latest_version, ver.code_digest) == (1, "d")
    token = store.issue_join_token("req", "local", "small", ttl_s=60)  # a table of revision 0002
    assert store.redeem_join_token(token, "node-1", secret_hash="h", url="u").request_id == "req"


PENDING = [{"function": "f", "resources": {"cpu_millis": 250, "memory_mib": 256}, "count": 2}]


def test_json_columns_keep_their_values_across_0007_and_back(db_url: str) -> None:
    engine = create_engine(db_url)
    migrate(engine, "0006")
    cfg = FunctionCreate(name="kept", memory_mb=512).model_dump_json()
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO function (name, latest_version, created_at, updated_at) "
                          "VALUES ('kept', 1, 0, 0)"))
        conn.execute(text("INSERT INTO functionversion (function, version, config_json, code_digest, "
                          "code_size, created_at) VALUES ('kept', 1, :cfg, 'd', 1, 0)"), {"cfg": cfg})
        for rid, ids in (("two", "i-1,i-2"), ("none", "")):
            conn.execute(text("INSERT INTO providerintent (request_id, kind, provider, node_type, "
                              "provider_ids, state, created_at, updated_at) "
                              "VALUES (:r, 'create', 'aws', 'small', :ids, 'open', 0, 0)"),
                         {"r": rid, "ids": ids})
        conn.execute(text("INSERT INTO controlplanemember (id, url, started_at, last_seen, pending_json) "
                          "VALUES ('cp-1', 'http://cp', 0, 0, :p)"), {"p": json.dumps(PENDING)})
    migrate(engine, "0007")
    engine.dispose()
    store = Store(db_url)
    _, ver = store.get_function("kept")
    assert ver.config["memory_mb"] == 512 and ver.config["name"] == "kept"
    intents = {i.request_id: i.provider_ids for i in store.open_intents("aws")}
    assert intents == {"two": ["i-1", "i-2"], "none": []}
    [member] = store.members(-1)
    assert member.pending == PENDING
    store.engine.dispose()
    engine = create_engine(db_url)
    downgrade(engine, "0006")
    with engine.connect() as conn:
        ids = conn.execute(text("SELECT provider_ids FROM providerintent WHERE request_id = 'two'")).scalar()
        assert ids == "i-1,i-2"
        assert FunctionCreate.model_validate_json(
            conn.execute(text("SELECT config_json FROM functionversion")).scalar()).memory_mb == 512
    engine.dispose()


def test_a_migration_that_fails_halfway_changes_nothing_and_a_later_start_finishes_it(db_url: str) -> None:
    engine = create_engine(db_url)
    migrate(engine, "0006")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO functionversion (function, version, config_json, code_digest, "
                          "code_size, created_at) VALUES ('broken', 1, '{not json', 'd', 1, 0)"))
    with pytest.raises(ValueError):
        migrate(engine)  # 0007 has added the new column when it meets the row it cannot convert
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == "0006"
    columns = {c["name"] for c in inspect(engine).get_columns("functionversion")}
    assert "config_json" in columns and "config" not in columns
    with engine.begin() as conn:
        conn.execute(text("UPDATE functionversion SET config_json = '{}' WHERE function = 'broken'"))
    migrate(engine)
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == HEAD
    engine.dispose()


def test_0010_moves_functions_and_the_admin_token_into_the_default_tenant_and_back(db_url: str) -> None:
    """Accounts: every function becomes the default tenant's (its key and invoke URL unchanged), the
    admin token becomes the `admin` user's, and nothing is lost on the way down either."""
    engine = create_engine(db_url)
    migrate(engine, "0009")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO apitoken (token_hash, name, is_admin, created_at) "
                          "VALUES (:h, 'admin', true, 0)"), {"h": hash_token("cmls_old")})
        conn.execute(text("INSERT INTO function (name, latest_version, created_at, updated_at) "
                          "VALUES ('kept', 1, 0, 0)"))
        conn.execute(text("INSERT INTO functionversion (function, version, config, code_digest, "
                          "code_size, created_at) VALUES ('kept', 1, :cfg, 'd', 1, 0)"),
                     {"cfg": FunctionCreate(name="kept").model_dump_json()})
    engine.dispose()
    store = Store(db_url)
    assert store.ensure_admin_token() is None  # the old admin token is the admin's live token
    holder = store.token_holder(hash_token("cmls_old"))
    assert holder is not None and (holder.user.name, holder.user.tenant, holder.user.role) == (
        "admin", "default", "admin")
    assert holder.token.public_id.startswith("tok_") and holder.token.scopes is None
    fn, _ = store.get_function("kept")
    assert fn.tenant == "default"
    assert [f.name for f, _ in store.list_functions("default")] == ["kept"]
    store.engine.dispose()
    engine = create_engine(db_url)
    downgrade(engine, "0009")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT is_admin FROM apitoken WHERE token_hash = :h"),
                            {"h": hash_token("cmls_old")}).scalar()
        assert conn.execute(text("SELECT name FROM function")).scalar() == "kept"
    engine.dispose()


def test_the_admin_token_is_made_once_however_often_the_control_plane_starts(db_url: str) -> None:
    """(An unscoped token's `scopes` column holds JSON null, not SQL NULL: a restart used to miss
    the live admin token and mint another.)"""
    first = Store(db_url).ensure_admin_token()
    assert first is not None
    for _ in range(3):
        assert Store(db_url).ensure_admin_token() is None
    assert [t.name for t in Store(db_url).tokens(user="admin")] == ["admin"]


def test_0012_adds_the_job_queue_and_async_calls_and_takes_them_away(db_url: str) -> None:
    engine = create_engine(db_url)
    migrate(engine)
    tables = set(inspect(engine).get_table_names())
    assert {"queuedjob", "asyncinvocation", "deadletter"} <= tables
    downgrade(engine, "0011")
    assert not {"queuedjob", "asyncinvocation", "deadletter"} & set(inspect(engine).get_table_names())
    migrate(engine)
    assert {"queuedjob", "asyncinvocation", "deadletter"} <= set(inspect(engine).get_table_names())
    engine.dispose()


@pytest.mark.parametrize(("revision", "table"), [("0013", "schedule"), ("0014", "busrule"),
                                                 ("0015", "workflowexecution")])
def test_the_event_rooms_tables_come_and_go_with_their_revision(db_url: str, revision: str,
                                                               table: str) -> None:
    engine = create_engine(db_url)
    migrate(engine)
    assert table in inspect(engine).get_table_names()
    downgrade(engine, f"{int(revision) - 1:04d}")
    assert table not in inspect(engine).get_table_names()
    migrate(engine)
    assert table in inspect(engine).get_table_names()
    engine.dispose()
