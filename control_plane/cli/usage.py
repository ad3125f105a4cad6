"""`cumulus usage` and `cumulus bill`: what a tenant used (`GET /v1/usage`) and what it owes
(`GET /v1/bill`), from the same metered records.

The control plane checks the dates and the month (one parser for the API and the command line);
the groupings mirror `control_plane.metering.GROUPINGS` (a test holds them equal) so that the
command line does not load the store to print its help. Figures are shown as the API gives them:
exact decimals, never floats, and the CSV export is the server's own, byte for byte.
"""

from __future__ import annotations

import enum
from decimal import Decimal
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from control_plane.cli.late import call as _call
from control_plane.cli.late import client as _client
from control_plane.cli.late import out as _out


class Grouping(enum.StrEnum):
    """One row of `cumulus usage` per function or per day (`control_plane.metering.GROUPINGS`)."""

    function = "function"
    day = "day"


class BillFormat(enum.StrEnum):
    """How `cumulus bill` prints: a table, the API's JSON, or the API's CSV export."""

    table = "table"
    json = "json"
    csv = "csv"


# -- showing ---------------------------------------------------------------------------------------------
def decimal_text(value: Decimal | str, places: int | None = None) -> str:
    """A decimal in plain notation (`0.0000002`, never `2E-7`), rounded to `places` decimals when
    given (trailing zeros then dropped)."""
    number = Decimal(value)
    if places is not None:
        number = number.quantize(Decimal(1).scaleb(-places)).normalize()
    return format(number, "f")


def _seconds(ms: int) -> str:
    return f"{ms / 1000:.3f}"


USAGE_COLUMNS = ("invocations", "errors", "billed ms", "GB·s", "cold starts", "init ms", "instances",
                 "instance s", "idle s")
_COUNTS = ("invocations", "errors", "billed_ms", "cold_starts", "init_ms", "instances")


def usage_table(rows: list[dict[str, Any]], by: Grouping) -> Table:
    """One row per function or day, as `GET /v1/usage` gives them, and a row of their totals."""
    table = Table(by.value, *USAGE_COLUMNS)
    for column in table.columns[1:]:
        column.justify = "right"
    counts = dict.fromkeys(_COUNTS, 0)
    gb_s = Decimal(0)
    instance_ms = idle_ms = 0
    for row in rows:
        for key in _COUNTS:
            counts[key] += int(row[key])
        gb_s += Decimal(row["gb_s"])
        # Seconds come as floats of whole milliseconds: summed as milliseconds, they stay exact.
        row_instance_ms, row_idle_ms = round(row["instance_s"] * 1000), round(row["idle_s"] * 1000)
        instance_ms += row_instance_ms
        idle_ms += row_idle_ms
        table.add_row(escape(str(row[by.value])), *(str(row[k]) for k in _COUNTS[:3]),
                      decimal_text(row["gb_s"]), *(str(row[k]) for k in _COUNTS[3:]),
                      _seconds(row_instance_ms), _seconds(row_idle_ms))
    table.add_section()
    table.add_row("total", *(str(counts[k]) for k in _COUNTS[:3]), decimal_text(gb_s),
                  *(str(counts[k]) for k in _COUNTS[3:]), _seconds(instance_ms), _seconds(idle_ms),
                  style="bold")
    return table


def bill_table(bill: dict[str, Any]) -> Table:
    """A bill's line items (quantities to 6 decimals; prices and amounts exact) and its total."""
    table = Table("description", "quantity", "unit", "unit price", "amount",
                  title=f"bill of {escape(bill['tenant'])} for {escape(bill['month'])} "
                        f"(start-ups billed: {escape(bill['cold_start_policy'])})")
    for column in (table.columns[1], table.columns[3], table.columns[4]):
        column.justify = "right"
    currency = escape(bill["currency"])
    for line in bill["lines"]:
        table.add_row(escape(line["item"]), decimal_text(line["quantity"], 6), escape(line["unit"]),
                      decimal_text(line["unit_price"]), f"{decimal_text(line['amount'])} {currency}")
    table.add_section()
    table.add_row("total", "", "", "", f"{decimal_text(bill['total'])} {currency}", style="bold")
    return table


# -- the commands ----------------------------------------------------------------------------------------
Tenant = Annotated[str | None, typer.Option(help="whose usage [your tenant's]")]


def usage(tenant: Tenant = None,
          since: Annotated[str | None, typer.Option(
              help="from this day on, YYYY-MM-DD (UTC) or ISO 8601 [the first of this month]")] = None,
          until: Annotated[str | None, typer.Option(
              help="up to this day, excluded, YYYY-MM-DD (UTC) or ISO 8601 [now]")] = None,
          by: Annotated[Grouping, typer.Option(
              help="one row per function, or per day (calls by the day they started, instances by the "
                   "day they ended)")] = Grouping.function,
          as_json: Annotated[bool, typer.Option("--json", help="print the API's JSON")] = False) -> None:
    """Show a tenant's usage: invocations, errors, billed time, GB·s, cold starts and instances."""
    params = {k: v for k, v in (("tenant", tenant), ("since", since), ("until", until)) if v is not None}
    resp = _call(_client().request, "GET", "/v1/usage", params={**params, "by": by.value})
    if as_json:
        _out().print_json(resp.text)
        return
    _out().print(usage_table(resp.json(), by), highlight=False)


def bill(tenant: Annotated[str | None, typer.Option(help="whose bill [your tenant's]")] = None,
         month: Annotated[str | None, typer.Option(help="YYYY-MM (UTC) [this month so far]")] = None,
         fmt: Annotated[BillFormat, typer.Option(
             "--format", help="a table, the API's JSON, or its CSV export (for a spreadsheet)",
         )] = BillFormat.table,
         ) -> None:
    """Show a tenant's bill for a month: line items at the price sheet's prices, and the total."""
    params = {k: v for k, v in (("tenant", tenant), ("month", month)) if v is not None}
    api_format = "csv" if fmt is BillFormat.csv else "json"
    resp = _call(_client().request, "GET", "/v1/bill", params={**params, "format": api_format})
    if fmt is BillFormat.csv:
        typer.echo(resp.text, nl=False)  # the server's export as it is: no markup, no wrapping
    elif fmt is BillFormat.json:
        _out().print_json(resp.text)
    else:
        _out().print(bill_table(resp.json()), highlight=False)


def register(app: typer.Typer) -> None:
    """Add `usage` and `bill` to the `cumulus` app."""
    app.command("usage")(usage)
    app.command("bill")(bill)
