"""`cumulus invocations NAME` (a function's async calls and where they stand) and `cumulus dlq
ls|redrive NAME` (its dead letters, and queueing them again). `cumulus invoke --async` sends one."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from control_plane.cli.client import function_path
from control_plane.cli.late import call as _call
from control_plane.cli.late import client as _client
from control_plane.cli.late import out as _out


class State(enum.StrEnum):
    """Where an async call stands (`control_plane.jobs.async_calls.STATES`)."""

    queued = "queued"
    running = "running"
    retrying = "retrying"
    succeeded = "succeeded"
    failed = "failed"
    dead_lettered = "dead_lettered"


def _when(ts: float | None) -> str:
    return "" if ts is None else dt.datetime.fromtimestamp(ts).isoformat(timespec="seconds")


def _error(error: dict[str, Any] | None) -> str:
    return "" if not error else f"{error.get('type', '')}: {error.get('message', '')}"[:120]


Name = Annotated[str, typer.Argument(help="the function: NAME or TENANT/NAME")]
AsJson = Annotated[bool, typer.Option("--json", help="print the API's JSON")]


StateOption = Annotated[list[State] | None, typer.Option(help="only calls in this state, repeatable")]


def invocations(name: Name, state: StateOption = None,
                limit: Annotated[int, typer.Option(help="how many calls, newest first")] = 50,
                as_json: AsJson = False) -> None:
    """Show a function's async calls: state, attempts, the last error."""
    params: list[tuple[str, str]] = [("limit", str(limit)), *(("state", s.value) for s in state or [])]
    resp = _call(_client().request, "GET", function_path(name, "/invocations"), params=params)
    if as_json:
        _out().print_json(resp.text)
        return
    table = Table("request id", "state", "attempts", "enqueued", "next attempt", "source", "error")
    for c in resp.json():
        dup = f" (+{c['duplicates']} dup)" if c["duplicates"] else ""
        table.add_row(c["request_id"], c["state"], f"{c['attempts']}{dup}", _when(c["enqueued_at"]),
                      _when(c["next_attempt_at"]), escape(c["source"]), escape(_error(c["error"])))
    _out().print(table)


dlq = typer.Typer(help="A function's dead-letter queue: async calls out of retries (or of age).",
                  no_args_is_help=True)


@dlq.command("ls")
def dlq_ls(name: Name, limit: Annotated[int, typer.Option(help="how many, newest first")] = 50,
           as_json: AsJson = False) -> None:
    """Show a function's dead letters, with why and their events."""
    resp = _call(_client().request, "GET", function_path(name, "/dlq"), params={"limit": str(limit)})
    if as_json:
        _out().print_json(resp.text)
        return
    table = Table("request id", "reason", "attempts", "dead since", "error", "event")
    for d in resp.json():
        event = d["event"] if len(d["event"]) <= 60 else d["event"][:57] + "..."
        table.add_row(d["request_id"], d["reason"], str(d["attempts"]), _when(d["dead_at"]),
                      escape(_error(d["error"])), escape(event))
    _out().print(table)


@dlq.command("redrive")
def dlq_redrive(name: Name, request_id: Annotated[list[str] | None, typer.Option(
        "--id", help="only this dead letter, repeatable [all of the function's]")] = None) -> None:
    """Queue dead letters again, as calls from their first attempt."""
    answer = _call(_client().post, function_path(name, "/dlq/redrive"), {"request_ids": request_id or []})
    done = answer["redriven"]
    _out().print(f"queued {len(done)} dead letter(s) of {escape(name)} again")


def register_async(app: typer.Typer) -> None:
    """Add the async calls' commands to the `cumulus` app."""
    app.command("invocations")(invocations)
    app.add_typer(dlq, name="dlq")
