"""The app's console and error helpers, for the command modules that `control_plane.cli.app` imports
to register their commands: each looks the app's helper up when a command runs (by then the app is
whole), whichever of the modules was imported first."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from rich.console import Console

from control_plane.cli.client import Client

T = TypeVar("T")


def out() -> Console:
    from control_plane.cli.app import out

    return out


def err() -> Console:
    from control_plane.cli.app import err

    return err


def fail(message: str, code: int = 1) -> NoReturn:
    from control_plane.cli.app import fail

    fail(message, code)


def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)`, a client call: its ClientError becomes the CLI's readable failure."""
    from control_plane.cli.app import call

    return call(fn, *args, **kwargs)  # type: ignore[no-any-return]


def client() -> Client:
    from control_plane.cli.app import client

    return client()
