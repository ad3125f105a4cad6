"""What every repository stands on: the unit of work that `Database` provides."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import ColumnElement, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session


class Repository:
    """A repository's units of work come from `Database.session` (mixed into `Store`), or, on the
    hot paths, from `Database.connection`: SQL statements without the ORM."""

    engine: Engine
    session: Callable[[], AbstractContextManager[Session]]
    connection: Callable[[], AbstractContextManager[Connection]]


def insert_new(table: Table, *returning: ColumnElement[Any]) -> dict[str, Any]:
    """By dialect name: an INSERT of `table`'s rows that skips those already there (by key),
    returning `returning` of the rows it inserted. Built once, run on `Database.connection`."""
    return {name: dialect.insert(table).on_conflict_do_nothing().returning(*returning)
            for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))}
