"""What every repository stands on: the unit of work that `Database` provides."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

from sqlmodel import Session


class Repository:
    """A repository's units of work come from `Database.session` (mixed into `Store`)."""

    session: Callable[[], AbstractContextManager[Session]]
