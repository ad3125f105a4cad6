"""`cumulus bus put|test|rule`: the tenant's event bus — put EventBridge-shaped events, test a
pattern against an event, and manage the rules that route events to functions."""

from __future__ import annotations

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

bus = typer.Typer(help="The event bus: put events, test patterns, route them to functions with rules.",
                  no_args_is_help=True)
rule = typer.Typer(help="Rules: events matching a pattern go to a function (async).",
                   no_args_is_help=True)
bus.add_typer(rule, name="rule")


def _json(text: str, what: str) -> Any:
    """JSON from the command line (`@file` reads a file)."""
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            _fail(f"cannot read {text[1:]}: {exc}")
    try:
        return json.loads(text)
    except ValueError as exc:
        _fail(f"{what} is not valid JSON: {exc}")


@bus.command("put")
def put(source: Annotated[str, typer.Option(help="the event's source, as com.example.orders")],
        detail_type: Annotated[str, typer.Option(help="the event's detail-type")],
        detail: Annotated[str, typer.Option(help="the event's detail: JSON, or @file")] = "{}",
        tenant: Annotated[str | None, typer.Option(help="whose bus [yours]")] = None) -> None:
    """Put one event on the bus; print its id and the rules it matched."""
    body: dict[str, Any] = {"entries": [{"source": source, "detail-type": detail_type,
                                         "detail": _json(detail, "--detail")}]}
    if tenant is not None:
        body["tenant"] = tenant
    [entry] = _call(_client().post, "/v1/bus/events", body)["entries"]
    matched = ", ".join(entry["matched_rules"]) or "no rule"
    _out().print(f"{entry['id']}: {escape(matched)}", highlight=False)


@bus.command("test")
def test(pattern: Annotated[str, typer.Argument(help="the event pattern: JSON, or @file")],
         event: Annotated[str, typer.Argument(help="the event: JSON, or @file")]) -> None:
    """Whether the event matches the pattern (nothing is routed); exit code 1 if it does not."""
    answer = _call(_client().post, "/v1/bus/test-pattern",
                   {"EventPattern": _json(pattern, "the pattern"), "Event": _json(event, "the event")})
    _out().print("match" if answer["result"] else "no match")
    if not answer["result"]:
        raise typer.Exit(1)


@rule.command("add")
def rule_add(name: Annotated[str, typer.Argument(help="the rule: NAME or TENANT/NAME")],
             pattern: Annotated[str, typer.Option(help="the event pattern: JSON, or @file")],
             target: Annotated[str, typer.Option(help="the function each matching event calls (async)")],
             input_template: Annotated[str | None, typer.Option(
                 help="what the function gets instead of the event, with <name> placeholders")] = None,
             input_path: Annotated[list[str] | None, typer.Option(
                 help="NAME=$.path for the template, repeatable")] = None) -> None:
    """Add a rule."""
    paths = {}
    for item in input_path or []:
        key, sep, path = item.partition("=")
        if not sep:
            _fail(f"--input-path takes NAME=$.path, not {item!r}")
        paths[key] = path
    body = {"name": name, "pattern": _json(pattern, "--pattern"), "target": target,
            "input_paths": paths or None, "input_template": input_template}
    row = _call(_client().post, "/v1/bus/rules", body)
    _out().print(f"added rule [bold]{escape(row['key'])}[/] → {escape(row['target'])}")


@rule.command("ls")
def rule_ls(tenant: Annotated[str | None, typer.Option(help="whose rules [yours]")] = None) -> None:
    """Show the bus's rules."""
    params = {} if tenant is None else {"tenant": tenant}
    resp = _call(_client().request, "GET", "/v1/bus/rules", params=params)
    table = Table("rule", "pattern", "target", "transform")
    for r in resp.json():
        table.add_row(escape(r["key"]), escape(json.dumps(r["pattern"])), escape(r["target"]),
                      escape(r["input_template"] or ""))
    _out().print(table)


@rule.command("rm")
def rule_rm(name: Annotated[str, typer.Argument(help="the rule: NAME or TENANT/NAME")]) -> None:
    """Remove a rule."""
    _call(_client().delete, f"/v1/bus/rules/{quote(name, safe='/')}")
    _out().print(f"removed rule {escape(name)}")


def register_bus(app: typer.Typer) -> None:
    app.add_typer(bus, name="bus")
