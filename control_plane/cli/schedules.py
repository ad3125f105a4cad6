"""`cumulus schedule add|ls|rm`: cron or rate schedules that fire async calls of a function."""

from __future__ import annotations

import json
from typing import Annotated
from urllib.parse import quote

import typer
from rich.markup import escape
from rich.table import Table

from control_plane.cli.late import call as _call
from control_plane.cli.late import client as _client
from control_plane.cli.late import fail as _fail
from control_plane.cli.late import out as _out

schedule = typer.Typer(help="Schedules: cron expressions (in a time zone) or rates that call a function.",
                       no_args_is_help=True)

Name = Annotated[str, typer.Argument(help="the schedule: NAME or TENANT/NAME")]


def _path(name: str) -> str:
    return f"/v1/schedules/{quote(name, safe='/')}"


@schedule.command("add")
def add(name: Name,
        function: Annotated[str, typer.Option(help="the function each firing calls (async)")],
        cron: Annotated[str | None, typer.Option(help="five fields: minute hour day month weekday")] = None,
        rate: Annotated[str | None, typer.Option(help="instead of --cron: 30s, 5m, 1h, 1d")] = None,
        tz: Annotated[str, typer.Option(help="the cron's time zone (IANA, as Europe/Berlin)")] = "UTC",
        data: Annotated[str, typer.Option(help="the event's detail, JSON")] = "{}",
        catch_up: Annotated[bool, typer.Option(
            help="a firing missed while no control plane ran: fired once on return, or "
                 "skipped")] = True) -> None:
    """Add a schedule; each firing is an async call with its scheduled time in the event."""
    if (cron is None) == (rate is None):
        _fail("give --cron EXPRESSION or --rate EVERY, one of them")
    try:
        detail = json.loads(data)
    except ValueError as exc:
        _fail(f"--data is not valid JSON: {exc}")
    body = {"name": name, "function": function, "cron": cron, "rate": rate, "tz": tz, "data": detail,
            "catch_up": catch_up}
    row = _call(_client().post, "/v1/schedules", body)
    _out().print(f"added [bold]{escape(row['key'])}[/]: next firing {row['next_fire']}")


@schedule.command("ls")
def ls(tenant: Annotated[str | None, typer.Option(help="whose schedules [your tenant's]")] = None,
       as_json: Annotated[bool, typer.Option("--json", help="print the API's JSON")] = False) -> None:
    """Show schedules with their next firing."""
    params = {} if tenant is None else {"tenant": tenant}
    resp = _call(_client().request, "GET", "/v1/schedules", params=params)
    if as_json:
        _out().print_json(resp.text)
        return
    table = Table("schedule", "function", "when", "next firing", "fired", "catch up")
    for s in resp.json():
        when = f"cron {s['cron']} ({s['tz']})" if s["cron"] else f"every {s['rate_s']:g}s"
        table.add_row(escape(s["key"]), escape(s["function"]), escape(when), s["next_fire"], str(s["fired"]),
                      "yes" if s["catch_up"] else "no")
    _out().print(table)


@schedule.command("rm")
def rm(name: Name) -> None:
    """Remove a schedule (firings already queued still run)."""
    _call(_client().delete, _path(name))
    _out().print(f"removed {escape(name)}")


def register_schedules(app: typer.Typer) -> None:
    app.add_typer(schedule, name="schedule")
