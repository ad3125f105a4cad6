"""What every repository stands on: the unit of work that `Database` provides."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session


class Repository:
    """A repository's units of work come from `Database.session` (mixed into `Store`), or, on the
    hot paths, from `Database.connection`: SQL statements without the ORM."""

    engine: Engine
    session: Callable[[], AbstractContextManager[Session]]
    connection: Callable[[], AbstractContextManager[Connection]]
