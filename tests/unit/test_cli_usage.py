"""`cumulus usage` and `cumulus bill` end to end against a real control plane served by uvicorn on
loopback (no node), its usage records stored through the store as ingest stores them: the figures
of the tables, the grouping by day, the CSV export (the server's own, its total the JSON's), bad
input as one readable line and a non-zero exit, and the server's Forbidden for another tenant."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
import typer
import uvicorn
from typer.testing import CliRunner

from control_plane.cli import usage as usage_cli
from control_plane.cli.app import app
from control_plane.core import FileConfig, Settings
from control_plane.metering import GROUPINGS
from control_plane.store import Store, instance_row, invocation_row
from provisioners.net import free_port

runner = CliRunner()
# Prices that make every line of the bill count (the defaults give amounts of a millionth).
PRICES = {"currency": "EUR", "per_gb_second": "0.5", "per_million_requests": "1000",
          "per_keepalive_instance_hour": "0.1"}


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the real ~/.config, ~/.cumulus or the caller's variables."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("CUMULUS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("CUMULUS_URL", raising=False)
    monkeypatch.delenv("CUMULUS_TOKEN", raising=False)


def _run(*args: str) -> Any:
    return runner.invoke(app, list(args), env={"COLUMNS": "250"}, prog_name="cumulus")


# -- without a control plane -------------------------------------------------------------------------------
def test_the_groupings_mirror_metering() -> None:
    assert [g.value for g in usage_cli.Grouping] == list(GROUPINGS)


@pytest.mark.parametrize(("value", "places", "shown"), [
    ("2E-7", None, "0.0000002"), ("9.765625E-7", None, "0.0000009765625"), ("0.000000", None, "0.000000"),
    ("3", None, "3"), ("1E+2", None, "100"), ("15.17494388888888888888888889", 6, "15.174944"),
    ("0.050375", 6, "0.050375"), ("3", 6, "3"), ("100", 6, "100"), ("0", 6, "0"),
])
def test_decimals_are_shown_in_plain_notation(value: str, places: int | None, shown: str) -> None:
    assert usage_cli.decimal_text(value, places) == shown


def test_usage_and_bill_describe_their_options() -> None:
    root = typer.main.get_command(app)
    commands: dict[str, Any] = getattr(root, "commands")  # noqa: B009 (typer vendors click: no isinstance)
    assert {"usage", "bill"} <= set(commands)
    missing = [f"{name} {p.name}" for name in ("usage", "bill") for p in commands[name].params
               if not getattr(p, "help", None)]
    assert not missing, missing


def test_a_choice_that_is_not_one_is_refused_before_any_request() -> None:
    result = _run("--url", f"http://127.0.0.1:{free_port()}", "--token", "t", "usage", "--by", "week")
    assert result.exit_code == 2 and "'week' is not one of 'function', 'day'" in result.output
    result = _run("--url", f"http://127.0.0.1:{free_port()}", "--token", "t", "bill", "--format", "xml")
    assert result.exit_code == 2 and "'xml' is not one of 'table', 'json', 'csv'" in result.output


# -- against a real control plane -------------------------------------------------------------------------
@dataclass
class Plane:
    """A control plane on loopback, its store and its admin token."""

    url: str
    token: str
    store: Store

    def run(self, *args: str, token: str | None = None) -> Any:
        """A command with this plane's URL and `token` (the admin's by default), as it ran."""
        return _run("--url", self.url, "--token", token or self.token, *args)

    def ok(self, *args: str, token: str | None = None) -> Any:
        result = self.run(*args, token=token)
        assert result.exit_code == 0, (args, result.output)
        return result

    def secret(self, user: str) -> str:
        """A new token of `user` (its secret is stdout's one line)."""
        return str(self.ok("token", "create", "--user", user).stdout.strip())


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    from control_plane.api import build_asgi
    from control_plane.platform import Platform

    port = free_port()
    settings = Settings(data_dir=tmp_path_factory.mktemp("plane"), host="127.0.0.1", port=port,
                        provider="local", min_nodes=0, max_nodes=0, reconcile_interval_s=0.2,
                        queue_timeout_s=1)
    platform = Platform(settings, file=FileConfig(billing=PRICES), use_provider=False)
    server = uvicorn.Server(uvicorn.Config(build_asgi(platform), host="127.0.0.1", port=port, loop="asyncio",
                                           log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the control plane did not start"
        time.sleep(0.02)
    try:
        yield Plane(settings.url, platform.admin_token_path.read_text().strip(), platform.store)
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def _at(day: int, hour: int = 0, minute: int = 0, second: int = 0, month: int = 11) -> float:
    return dt.datetime(2026, month, day, hour, minute, second, tzinfo=dt.UTC).timestamp()


def _call(function: str, request_id: str, started_at: float, duration_us: int, memory_mib: int, *,
          init_ms: float = 0.0, outcome: str = "ok") -> dict[str, Any]:
    tenant = function.partition("/")[0]
    return invocation_row(tenant, "node-1", {
        "request_id": request_id, "function": function, "version": 1, "instance_id": f"{function}-i1",
        "started_at": started_at, "duration_us": duration_us, "memory_mib": memory_mib, "init_ms": init_ms,
        "outcome": outcome})


def _instance(function: str, suffix: str, started_at: float, ended_at: float, busy_ms: float,
              memory_mib: int) -> dict[str, Any]:
    tenant = function.partition("/")[0]
    return instance_row(tenant, "node-1", {
        "instance_id": f"{function}-{suffix}", "function": function, "version": 1, "memory_mib": memory_mib,
        "started_at": started_at, "ended_at": ended_at, "busy_ms": busy_ms, "init_ms": 250.2})


@pytest.fixture(scope="module")
def acme(plane: Plane) -> Plane:
    """Tenants acme and beta, and November's records (with some of December's and of beta's, which
    no figure of acme's November may include)."""
    plane.ok("tenant", "create", "acme")
    plane.ok("tenant", "create", "beta")
    calls = [
        # 120.4 ms -> 121 billed, * 256 MiB = 30,976 MiB·ms; a cold start of 250.2 -> 251 ms
        _call("acme/resize", "r1", _at(3, 10), 120_400, 256, init_ms=250.2),
        _call("acme/resize", "r2", _at(3, 10, 1), 80_000, 256, outcome="error"),  # 80 ms, 20,480
        _call("acme/thumb", "t1", _at(4, 9), 1_000, 128),  # 1 ms, 128 MiB·ms
        _call("acme/resize", "r3", _at(1, 0, 0, 0, month=12), 5_000_000, 1024),  # December
        _call("beta/x", "b1", _at(3, 12), 9_000_000, 2048),  # another tenant
    ]
    instances = [
        _instance("acme/resize", "i1", _at(3, 10), _at(3, 10, 10), 201, 256),  # 600 s, 599.799 idle
        _instance("acme/thumb", "i1", _at(4, 9), _at(5, 0, 0, 30), 1, 128),  # ends on the 5th: 54,030 s
        _instance("beta/x", "i1", _at(3, 12), _at(3, 13), 9000, 2048),
    ]
    assert plane.store.add_usage(calls, instances) == len(calls) + len(instances)
    assert plane.store.add_usage(calls, instances) == 0  # as ingest stores them: once
    return plane


def _rows(stdout: str) -> dict[str, list[str]]:
    """A rich table's rows by their first cell."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.replace("┃", "│").split("│")[1:-1]]  # the header's are heavy
        if cells and cells[0]:
            rows[cells[0]] = cells[1:]
    return rows


NOVEMBER = ("--tenant", "acme", "--since", "2026-11-01", "--until", "2026-12-01")
#                 invocations errors billed_ms GB·s cold_starts init_ms instances instance_s idle_s
RESIZE = ["2", "1", "201", "0.05025", "1", "251", "1", "600.000", "599.799"]
THUMB = ["1", "0", "1", "0.000125", "0", "0", "1", "54030.000", "54029.999"]
TOTAL = ["3", "1", "202", "0.050375", "1", "251", "2", "54630.000", "54629.798"]


def test_usage_per_function_with_its_totals(acme: Plane) -> None:
    rows = _rows(acme.ok("usage", *NOVEMBER).stdout)
    assert rows["function"] == ["invocations", "errors", "billed ms", "GB·s", "cold starts", "init ms",
                                "instances", "instance s", "idle s"]
    assert rows["acme/resize"] == RESIZE
    assert rows["acme/thumb"] == THUMB
    assert rows["total"] == TOTAL
    assert set(rows) == {"function", "acme/resize", "acme/thumb", "total"}  # no December, no beta

    december = _rows(acme.ok("usage", "--tenant", "acme", "--since", "2026-12-01",
                             "--until", "2027-01-01").stdout)
    assert december["acme/resize"][:4] == ["1", "0", "5000", "5"]  # 5,000 ms * 1 GiB
    nothing = _rows(acme.ok("usage", "--tenant", "acme", "--since", "2025-01-01", "--until",
                            "2025-02-01").stdout)
    assert nothing["total"] == ["0", "0", "0", "0", "0", "0", "0", "0.000", "0.000"]


def test_usage_per_day(acme: Plane) -> None:
    rows = _rows(acme.ok("usage", *NOVEMBER, "--by", "day").stdout)
    assert rows["day"][0] == "invocations"
    # Calls count on the day they started, instances on the day they ended.
    assert rows["2026-11-03"] == RESIZE
    assert rows["2026-11-04"] == ["1", "0", "1", "0.000125", "0", "0", "0", "0.000", "0.000"]
    assert rows["2026-11-05"] == ["0", "0", "0", "0", "0", "0", "1", "54030.000", "54029.999"]
    assert rows["total"] == TOTAL
    assert set(rows) == {"day", "2026-11-03", "2026-11-04", "2026-11-05", "total"}


def test_usage_as_json_is_the_apis(acme: Plane) -> None:
    shown = json.loads(acme.ok("usage", *NOVEMBER, "--by", "day", "--json").stdout)
    served = requests.get(f"{acme.url}/v1/usage", params={"tenant": "acme", "since": "2026-11-01",
                                                          "until": "2026-12-01", "by": "day"},
                          headers={"Authorization": f"Bearer {acme.token}"}, timeout=10).json()
    assert shown == served
    assert [r["day"] for r in shown] == ["2026-11-03", "2026-11-04", "2026-11-05"]
    assert shown[0]["gb_s"] == "0.05025" and shown[2]["idle_s"] == 54029.999


def test_the_callers_tenant_is_the_default(acme: Plane) -> None:
    acme.ok("user", "create", "alice", "--tenant", "acme", "--role", "developer")
    alice = acme.secret("alice")
    rows = _rows(acme.ok("usage", "--since", "2026-11-01", "--until", "2026-12-01", token=alice).stdout)
    assert rows["total"] == TOTAL
    assert "acme" in acme.ok("bill", "--month", "2026-11", token=alice).stdout


def test_a_grant_on_one_function_shows_that_ones_usage_and_no_bill(acme: Plane, tmp_path: Path) -> None:
    from control_plane.cli.client import Client
    from control_plane.functions import zip_folder

    acme.ok("user", "create", "carol", "--tenant", "acme", "--role", "developer")
    (tmp_path / "main.py").write_text("def handler(event, context):\n    return 1\n")
    Client(acme.url, acme.secret("carol")).deploy(zip_folder(tmp_path), {"name": "resize"})
    acme.ok("user", "create", "bob", "--tenant", "acme", "--role", "invoker")
    acme.ok("grant", "bob", "usage", "acme/resize")
    bob = acme.secret("bob")
    rows = _rows(acme.ok("usage", *NOVEMBER, token=bob).stdout)
    assert set(rows) == {"function", "acme/resize", "total"}
    assert rows["acme/resize"] == rows["total"] == RESIZE
    result = acme.run("bill", "--tenant", "acme", "--month", "2026-11", token=bob)
    assert result.exit_code == 1 and "Forbidden" in result.stderr and "which a bill needs" in result.stderr


# requests 3 * 0.001; compute 0.050375 GB-s * 0.5; start-ups 251 ms * 256 MiB = 0.06275 GB-s * 0.5;
# keep-alive 54,629,798 ms idle = 15.17494388... h * 0.1
LINES = {"requests": ["3", "requests", "0.001", "0.003000 EUR"],
         "compute": ["0.050375", "GB-s", "0.5", "0.025188 EUR"],
         "start-up (invocation)": ["0.06275", "GB-s", "0.5", "0.031375 EUR"],
         "keep-alive": ["15.174944", "instance-hours", "0.1", "1.517494 EUR"]}
BILL_TOTAL = "1.577057"


def test_the_bill_as_a_table(acme: Plane) -> None:
    out = acme.ok("bill", "--tenant", "acme", "--month", "2026-11").stdout
    assert "bill of acme for 2026-11 (start-ups billed: invocation)" in out
    rows = _rows(out)
    assert rows["description"] == ["quantity", "unit", "unit price", "amount"]
    for item, cells in LINES.items():
        assert rows[item] == cells, item
    assert rows["total"] == ["", "", "", f"{BILL_TOTAL} EUR"]
    assert rows == {**rows, **_rows(acme.ok("bill", "--tenant", "acme", "--month", "2026-11",
                                            "--format", "table").stdout)}


def test_the_bill_as_json_and_csv_agree(acme: Plane) -> None:
    bill = json.loads(acme.ok("bill", "--tenant", "acme", "--month", "2026-11", "--format", "json").stdout)
    assert (bill["tenant"], bill["month"], bill["currency"]) == ("acme", "2026-11", "EUR")
    assert Decimal(bill["total"]) == Decimal(BILL_TOTAL)
    assert Decimal(bill["total"]) == sum((Decimal(line["amount"]) for line in bill["lines"]), Decimal(0))

    exported = acme.ok("bill", "--tenant", "acme", "--month", "2026-11", "--format", "csv").stdout_bytes
    served = requests.get(f"{acme.url}/v1/bill", params={"tenant": "acme", "month": "2026-11",
                                                         "format": "csv"},
                          headers={"Authorization": f"Bearer {acme.token}"}, timeout=10)
    assert exported == served.content  # the export is the server's, byte for byte (its CRLFs too)
    rows = list(csv.DictReader(io.StringIO(exported.decode(), newline="")))
    assert [r["item"] for r in rows] == [line["item"] for line in bill["lines"]] + ["total"]
    assert Decimal(rows[-1]["amount"]) == Decimal(bill["total"])
    assert sum((Decimal(r["amount"]) for r in rows[:-1]), Decimal(0)) == Decimal(bill["total"])
    assert {r["currency"] for r in rows} == {"EUR"} and {r["tenant"] for r in rows} == {"acme"}

    other = json.loads(acme.ok("bill", "--tenant", "acme", "--month", "2026-12", "--format", "json").stdout)
    assert Decimal(other["total"]) != Decimal(bill["total"])  # December's call is December's


@pytest.mark.parametrize(("args", "said"), [
    (("bill", "--tenant", "acme", "--month", "2026-13"),
     "error: InvalidConfig: month must be YYYY-MM, not '2026-13' (HTTP 422)"),
    (("bill", "--tenant", "acme", "--month", "2026-13", "--format", "csv"),
     "error: InvalidConfig: month must be YYYY-MM, not '2026-13' (HTTP 422)"),
    (("usage", "--tenant", "acme", "--since", "notadate"),
     "error: InvalidConfig: dates must be YYYY-MM-DD (or ISO 8601), not 'notadate' (HTTP 422)"),
    (("usage", "--tenant", "acme", "--until", "2026-11-31", "--json"),
     "error: InvalidConfig: dates must be YYYY-MM-DD (or ISO 8601), not '2026-11-31' (HTTP 422)"),
])
def test_bad_input_is_one_readable_line(acme: Plane, args: tuple[str, ...], said: str) -> None:
    result = acme.run(*args)
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == said and result.stdout == ""


def test_another_tenants_invoker_gets_the_servers_forbidden(acme: Plane) -> None:
    acme.ok("user", "create", "eve", "--tenant", "beta", "--role", "invoker")
    eve = acme.secret("eve")
    result = acme.run("usage", *NOVEMBER, token=eve)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.strip() == ("error: Forbidden: eve lacks permission 'usage' on the functions of "
                                     "tenant acme (HTTP 403)")
    for fmt in ("table", "csv"):
        result = acme.run("bill", "--tenant", "acme", "--month", "2026-11", "--format", fmt, token=eve)
        assert result.exit_code == 1 and result.stdout == ""
        assert result.stderr.startswith("error: Forbidden: eve lacks permission 'usage' on every function "
                                        "of tenant acme") and "(HTTP 403)" in result.stderr
    result = acme.run("usage", "--tenant", "nosuch", token=eve)
    assert result.exit_code == 1 and "Forbidden: no access to tenant nosuch" in result.stderr
