"""`cumulus workflow deploy|start|describe|history|executions|ls|rm`: state machines in Amazon
States Language (JSON or YAML) and their executions."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.markup import escape
from rich.table import Table

from control_plane.cli.late import call as _call
from control_plane.cli.late import client as _client
from control_plane.cli.late import fail as _fail
from control_plane.cli.late import out as _out

workflow = typer.Typer(help="Workflows: state machines (Amazon States Language) that run functions.",
                       no_args_is_help=True)

Name = Annotated[str, typer.Argument(help="the workflow: NAME or TENANT/NAME")]
Execution = Annotated[str, typer.Argument(help="an execution's id")]


def _path(name: str, suffix: str = "") -> str:
    return f"/v1/workflows/{quote(name, safe='/')}{suffix}"


def _when(ts: float | None) -> str:
    return "" if ts is None else dt.datetime.fromtimestamp(ts).isoformat(timespec="seconds")


@workflow.command("deploy")
def deploy(name: Name,
           definition: Annotated[Path, typer.Argument(help="the state machine, JSON or YAML")]) -> None:
    """Deploy a workflow (running executions keep the definition they started with)."""
    try:
        text = definition.read_text()
    except OSError as exc:
        _fail(f"cannot read {definition}: {exc}")
    row = _call(_client().post, "/v1/workflows", {"name": name, "definition": text})
    _out().print(f"deployed workflow [bold]{escape(row['key'])}[/]")


@workflow.command("start")
def start(name: Name, input: Annotated[str, typer.Option("--input", "-i", help="its input, JSON")] = "{}",
          execution_name: Annotated[str | None, typer.Option("--name", help="the execution's name")] = None,
          ) -> None:
    """Start an execution; print its id."""
    try:
        value = json.loads(input)
    except ValueError as exc:
        _fail(f"--input is not valid JSON: {exc}")
    body: dict[str, Any] = {"input": value}
    if execution_name is not None:
        body["name"] = execution_name
    row = _call(_client().post, _path(name, "/executions"), body)
    _out().print(row["id"], highlight=False)


@workflow.command("describe")
def describe(execution: Execution) -> None:
    """An execution's status, and its output or error (JSON)."""
    resp = _call(_client().request, "GET", f"/v1/executions/{quote(execution)}")
    _out().print_json(resp.text)


@workflow.command("history")
def history(execution: Execution,
            as_json: Annotated[bool, typer.Option("--json", help="print the API's JSON")] = False) -> None:
    """An execution's history: states entered and exited, tasks, their results and errors."""
    resp = _call(_client().request, "GET", f"/v1/executions/{quote(execution)}/history")
    if as_json:
        _out().print_json(resp.text)
        return
    table = Table("#", "at", "event", "state", "details")
    for e in resp.json():
        details = json.dumps(e["details"])
        table.add_row(str(e["seq"]), _when(e["timestamp"]), e["type"], escape(e["state_name"] or ""),
                      escape(details if len(details) <= 80 else details[:77] + "..."))
    _out().print(table)


@workflow.command("executions")
def executions(name: Name, limit: Annotated[int, typer.Option(help="how many, newest first")] = 20) -> None:
    """A workflow's executions."""
    resp = _call(_client().request, "GET", _path(name, "/executions"), params={"limit": str(limit)})
    table = Table("id", "name", "status", "started", "ended", "error")
    for x in resp.json():
        table.add_row(x["id"], escape(x["name"]), x["status"], _when(x["started_at"]),
                      _when(x["ended_at"]), escape(x["error"] or ""))
    _out().print(table)


@workflow.command("ls")
def ls() -> None:
    """Your tenant's workflows."""
    resp = _call(_client().request, "GET", "/v1/workflows")
    table = Table("workflow", "states", "updated")
    for w in resp.json():
        table.add_row(escape(w["key"]), str(len(w["definition"].get("States", {}))), _when(w["updated_at"]))
    _out().print(table)


@workflow.command("rm")
def rm(name: Name) -> None:
    """Delete a workflow (running executions go on)."""
    _call(_client().delete, _path(name))
    _out().print(f"deleted workflow {escape(name)}")


def register_workflows(app: typer.Typer) -> None:
    app.add_typer(workflow, name="workflow")
