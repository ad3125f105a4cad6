"""The database: its engine, schema migrations (alembic, on start), and the unit of work."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, create_engine

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(connection: Connection | None = None) -> AlembicConfig:
    """Alembic's configuration for our migrations, bound to `connection` if given."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema to `revision` (on start: an empty database gets every table), in one
    transaction: a migration that fails leaves the schema and its revision as they were."""
    from alembic import command

    with transactional_ddl(engine) as conn:
        command.upgrade(alembic_config(conn), revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Downgrade the schema to `revision`, in one transaction (before running older code on it)."""
    from alembic import command

    with transactional_ddl(engine) as conn:
        command.downgrade(alembic_config(conn), revision)


@contextmanager
def transactional_ddl(engine: Engine) -> Iterator[Connection]:
    """A connection whose schema changes commit together or not at all. PostgreSQL's DDL is
    transactional as it is; Python's sqlite3 driver runs DDL outside any transaction, so on SQLite
    the transaction is driven by hand (a migration failing halfway would otherwise leave a
    half-changed schema that no later start could migrate)."""
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            yield conn
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("BEGIN")
        try:
            yield conn
        except BaseException:
            conn.exec_driver_sql("ROLLBACK")
            raise
        conn.exec_driver_sql("COMMIT")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def _private_sqlite_file(engine: Engine) -> None:
    """Make a SQLite database file that does not exist yet readable by its owner only.

    SQLite gives its `-wal` and `-shm` files the database file's mode, so they follow."""
    name = engine.url.database
    if not name or name == ":memory:" or name.startswith("file:"):
        return
    path = Path(name)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def create_db_engine(url: str) -> Engine:
    """An engine for `url`: SQLite in WAL mode (the embedded default) or PostgreSQL (HA).

    A SQLite file made here is 0600: it holds hashed tokens and sealed secrets."""
    is_sqlite = url.startswith("sqlite")
    # A file's connections do not go stale: no ping per checkout on SQLite (it cost a tenth of the
    # async path's time), but on a server's.
    # A SQLite connection is a file handle: the pool keeps one per thread that may want one (the
    # control plane's executor has 32), as past its size every unit of work opened a connection and
    # set its pragmas again.
    engine = create_engine(url, connect_args={"check_same_thread": False} if is_sqlite else {},
                           pool_pre_ping=not is_sqlite, **({"pool_size": 32} if is_sqlite else {}))
    if is_sqlite:
        _private_sqlite_file(engine)
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


class Database:
    """An engine on a migrated schema, and its units of work."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = create_db_engine(url)
        migrate(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: what the block does commits at its end, or rolls back on error."""
        with Session(self.engine, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def connection(self) -> AbstractContextManager[Connection]:
        """A unit of work of SQL statements (Core), for the hot paths where an ORM session is most
        of the cost (the async path's statements: 50 us each on SQLite, 430 us through a session):
        commits at the block's end, or rolls back on error."""
        return self.engine.begin()
