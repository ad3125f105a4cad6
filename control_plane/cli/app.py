"""The `cumulus` command line (typer + rich).

Which control plane and token, each the first of: `--url` / `--token`, the `CUMULUS_URL` /
`CUMULUS_TOKEN` variables, what `cumulus login` stored (`$XDG_CONFIG_HOME/cumulus/credentials.json`,
default ~/.config; its token only ever goes to its URL), and what `cumulus up` wrote in the data
directory (`CUMULUS_DATA_DIR`, default ~/.cumulus). The account commands (tenant, user, token, grant,
whoami, login) are in `control_plane.cli.accounts`.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from control_plane.cli.accounts import register as register_accounts
from control_plane.cli.async_calls import register_async
from control_plane.cli.bus import register_bus
from control_plane.cli.client import DEFAULT_URL, Client, ClientError, function_path
from control_plane.cli.schedules import register_schedules
from control_plane.cli.simulate import register as register_simulate
from control_plane.cli.usage import register as register_usage
from control_plane.cli.workflows import register_workflows
from control_plane.core import DEFAULT_PORT, Settings, version

HELP = """Cumulus: self-hosted serverless functions.

The commands that talk to a control plane find it with --url and --token, else the CUMULUS_URL and
CUMULUS_TOKEN variables, else what `cumulus login` stored ($XDG_CONFIG_HOME/cumulus/credentials.json,
default ~/.config), else what `cumulus up` wrote in its data directory (CUMULUS_DATA_DIR, default
~/.cumulus)."""

app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
_target: dict[str, str | None] = {"url": None, "token": None}  # the global options, once parsed


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a readable error and exit."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def _show_version(value: bool) -> None:
    if value:
        out.print(f"cumulus {version()}", highlight=False)
        raise typer.Exit()


@app.callback()
def main_options(
    url: Annotated[str | None, typer.Option(
        "--url", envvar="CUMULUS_URL", show_envvar=True,
        help=f"the control plane's URL [`cumulus login`'s, else the data directory's endpoint, else "
             f"{DEFAULT_URL}]")] = None,
    token: Annotated[str | None, typer.Option(
        "--token", envvar="CUMULUS_TOKEN", show_envvar=True,
        help="API token [`cumulus login`'s, else the data directory's admin.token]")] = None,
    show_version: Annotated[bool, typer.Option(
        "--version", callback=_show_version, is_eager=True, help="print the version and exit")] = False,
) -> None:
    """Cumulus: self-hosted serverless functions."""
    _target.update(url=url, token=token)


def client() -> Client:
    """A client for the control plane the options, the variables, the credentials file or the data
    directory name."""
    try:
        return Client.from_env(url=_target["url"], token=_target["token"])
    except ClientError as exc:
        fail(exc.message)


def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a client call, turning API errors into readable messages."""
    try:
        return fn(*args, **kwargs)
    except ClientError as exc:
        fail(f"{exc.kind}: {exc.message}" + (f" (HTTP {exc.status})" if exc.status else ""))


@app.command()
def up(data_dir: Annotated[Path | None, typer.Option(
           envvar="CUMULUS_DATA_DIR", show_envvar=True, help="state directory [~/.cumulus]")] = None,
       port: Annotated[int | None, typer.Option(help=f"API port [{DEFAULT_PORT}]")] = None,
       host: Annotated[str | None, typer.Option(help="API address [127.0.0.1]")] = None,
       provider: Annotated[str | None, typer.Option(help="local | qemu | aws | libcloud [local]")] = None,
       min_nodes: Annotated[int | None, typer.Option(help="fewest nodes [1]")] = None,
       max_nodes: Annotated[int | None, typer.Option(help="most nodes; autoscaling in between [1]")] = None,
       db: Annotated[str | None, typer.Option(help="database URL [SQLite in the data dir]")] = None,
       queue_url: Annotated[str | None, typer.Option(
           help="the async calls' durable queue: a NATS JetStream server, nats://HOST:PORT [the "
                "database]")] = None,
       config: Annotated[Path | None, typer.Option(help="TOML file: settings, node types, provider")] = None,
       example: Annotated[bool, typer.Option(help="deploy examples/hello on start")] = True,
       keep_nodes: Annotated[bool, typer.Option(help="leave nodes running on exit")] = False,
       ) -> None:
    """Start the control plane and its nodes, and deploy the hello example."""
    import os

    from pydantic import ValidationError

    from control_plane.cli.up import UpError
    from control_plane.cli.up import up as run_up
    from control_plane.core import ConfigError, load_config

    try:
        file = load_config(config)
    except ConfigError as exc:
        fail(str(exc))
    values = {k: v for k, v in file.settings.items() if f"CUMULUS_{k.upper()}" not in os.environ}
    flags = {"data_dir": data_dir.resolve() if data_dir else None, "port": port, "host": host,
             "provider": provider, "min_nodes": min_nodes, "max_nodes": max_nodes, "db": db,
             "queue_url": queue_url}
    values.update({k: v for k, v in flags.items() if v is not None})
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        fail(f"invalid settings: {exc}")
    settings.max_nodes = max(settings.max_nodes, settings.min_nodes)
    try:
        run_up(settings, file, deploy_example=example, keep_nodes=keep_nodes)
    except UpError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass


def _parse_env(pairs: list[str], flag: str = "--env") -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"{flag} expects KEY=VALUE, got {pair!r}" if flag == "--env" else
                 f"{flag} expects KEY=VALUE (what was given is not repeated: it may be a secret)")
        env[key] = value
    return env


def _keep_alive(value: str | None) -> dict[str, object]:
    """`--keep-alive` as deploy settings: plain seconds stay `keep_alive_s` (as before)."""
    if value is None:
        return {}
    try:
        return {"keep_alive_s": float(value)}
    except ValueError:
        return {"keep_alive": value}  # fixed:SECONDS or adaptive; the control plane checks it


def _deploy_showing_progress(c: Client, name: str, code: bytes, config: dict[str, Any]) -> dict[str, Any]:
    """Deploy, showing the build's stages (read from the control plane while it builds) as they come."""
    import secrets
    import threading
    import time

    build_id = secrets.token_hex(12)
    done = threading.Event()
    started = time.monotonic()
    shown = [0]
    lock = threading.Lock()

    def show_new(status: Any = None) -> None:
        build = c.build(build_id)
        stages = build["stages"] if build else []
        with lock:
            for stage in stages[shown[0]:]:
                err.print(f"  {stage['message']}", highlight=False, markup=False)
            shown[0] = max(shown[0], len(stages))
        if status is not None:
            last = f": {stages[-1]['message']}" if stages else ""
            status.update(f"deploying {name} ({time.monotonic() - started:.0f} s){escape(last)}")

    with err.status(f"deploying {name}…") as status:
        def watch() -> None:
            while not done.wait(0.5):
                show_new(status)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            result: dict[str, Any] = call(c.deploy, code, config, build_id)
        finally:
            done.set()
            watcher.join(timeout=6)
    show_new()  # what the build did since the last look (all of it, for a quick one)
    return result


@app.command()
def deploy(path: Annotated[Path | None, typer.Argument(
               help="a folder or a .zip with the function's code (none with --image or "
                    "--image-archive)")] = None,
           *,
           name: Annotated[str, typer.Option(help="function name")],
           image_archive: Annotated[Path | None, typer.Option(
               help="an image function: a `docker save` tarball that nodes load (its process talks the "
                    "Lambda Runtime API)")] = None,
           image: Annotated[str | None, typer.Option(
               help="an image function: an image already on the nodes' engines (NAME[:TAG])")] = None,
           command: Annotated[list[str] | None, typer.Option(
               help="an image function's command instead of its CMD, one argument each, repeatable")] = None,
           handler: Annotated[str, typer.Option(help="module.function")] = "main.handler",
           memory: Annotated[int, typer.Option(help="memory limit, MB")] = 256,
           cpu: Annotated[int, typer.Option(help="CPU millicores (0: by memory)")] = 0,
           timeout: Annotated[float, typer.Option(help="timeout per call, s")] = 30.0,
           concurrency: Annotated[int, typer.Option(help="in-flight calls per instance")] = 1,
           min_instances: Annotated[int, typer.Option("--min", help="instances kept warm")] = 0,
           max_instances: Annotated[int, typer.Option("--max", help="most instances")] = 10,
           keep_alive: Annotated[str | None, typer.Option(
               help="keep-alive policy: adaptive (the default: windows learned from the function's idle "
                    "times), or SECONDS / fixed:SECONDS (the last instance stops after that idle "
                    "time)")] = None,
           runtime: Annotated[str | None, typer.Option(
               help="python3.11 (the default, Debian bookworm) or python3.13 (Debian trixie)")] = None,
           network: Annotated[str | None, typer.Option(
               help="egress (outbound only) or none (no network); default: the cluster's")] = None,
           env: Annotated[list[str] | None, typer.Option(help="KEY=VALUE, repeatable")] = None,
           secret_env: Annotated[list[str] | None, typer.Option(
               help="KEY=VALUE, repeatable: sealed in the database, never shown again")] = None,
           max_retries: Annotated[int, typer.Option(help="async calls: attempts after a failed one")] = 2,
           max_event_age: Annotated[float, typer.Option(
               help="async calls: seconds an event may wait before it is dead-lettered")] = 21600.0,
           on_success: Annotated[str | None, typer.Option(
               help="async calls: function:NAME gets a record of each success")] = None,
           on_failure: Annotated[str, typer.Option(
               help="async calls out of retries: dlq (the dead-letter queue), function:NAME, or "
                    "none")] = "dlq") -> None:
    """Deploy a new version of a function and print its endpoint."""
    from control_plane.core import InvalidCode
    from control_plane.functions import zip_folder

    image_fn = image_archive is not None or image is not None
    if image_archive is not None and image is not None:
        fail("give --image-archive FILE or --image REF, not both")
    if image_fn and path is not None:
        fail("an image function has no code folder: give --image-archive FILE or --image REF alone")
    if not image_fn and path is None:
        fail("give the function's code (a folder or a .zip), or --image-archive FILE / --image REF")
    if command and not image_fn:
        fail("--command is for image functions (--image-archive or --image)")
    source = image_archive if image_archive is not None else path
    if source is not None and not source.exists():
        fail(f"{source} does not exist")
    code = b""
    if path is not None:
        try:
            code = path.read_bytes() if path.is_file() else zip_folder(path)
        except (InvalidCode, OSError) as exc:
            fail(str(exc))
    config: dict[str, Any] = {"name": name, "handler": handler, "memory_mb": memory, "cpu_millis": cpu,
              "timeout_s": timeout, "concurrency": concurrency, "min_instances": min_instances,
              "max_instances": max_instances, **_keep_alive(keep_alive), "env": _parse_env(env or []),
              "secret_env": _parse_env(secret_env or [], "--secret-env"), "max_retries": max_retries,
              "max_event_age_s": max_event_age, "on_success": on_success,
              "on_failure": None if on_failure == "none" else on_failure}
    if runtime is not None:
        config["runtime"] = runtime
    if network is not None:
        config["network"] = network
    if image_fn:
        config.update({"package_type": "image", "image": image, "command": command or None})
        what = f"deploying {name} (uploading the image)…" if image_archive else f"deploying {name}…"
        with err.status(what):
            result = call(client().deploy_image, image_archive, config)
    else:
        result = _deploy_showing_progress(client(), name, code, config)
    out.print(f"deployed [bold]{result['name']}[/] version {result['version']}")
    out.print(result["url"], highlight=False)


@app.command()
def invoke(name: Annotated[str, typer.Argument(help="the function to call: NAME or TENANT/NAME")],
           data: Annotated[str, typer.Option("--data", "-d",
                                             help="event JSON, @file, or - for stdin")] = "{}",
           run_async: Annotated[bool, typer.Option(
               "--async", help="queue the call and print its request id at once (`cumulus invocations` "
                               "shows how it went)")] = False) -> None:
    """Invoke a function and print its JSON result (or, --async, queue the call)."""
    if data == "-":
        event = sys.stdin.buffer.read()
    elif data.startswith("@"):
        try:
            event = Path(data[1:]).read_bytes()
        except OSError as exc:
            fail(f"cannot read {data[1:]}: {exc}")
    else:
        event = data.encode()
    try:
        json.loads(event or b"null")
    except ValueError as exc:
        fail(f"the event is not valid JSON: {exc}")
    c = client()
    try:
        resp = c.invoke(name, event, invocation_type="Event" if run_async else None)
    except ClientError as exc:
        tb = exc.extra.get("traceback")
        if tb:
            err.print("".join(tb), end="", highlight=False, markup=False)
        fail(f"{exc.kind}: {exc.message}" + (f" (HTTP {exc.status})" if exc.status else ""))
    out.print_json(resp.text)


@app.command("ls")
def list_functions(tenant: Annotated[str | None, typer.Option(
        help="whose functions [your tenant's]; `*`: every tenant's (cluster admins)")] = None) -> None:
    """List functions."""
    rows = call(client().get, "/v1/functions", None if tenant is None else {"tenant": tenant})
    table = Table("tenant", "name", "version", "memory", "timeout", "concurrency", "min/max", "instances",
                  "url")
    for f in rows:
        cfg = f["config"]
        table.add_row(f.get("tenant", ""), f["name"], str(f["version"]), f"{cfg['memory_mb']} MB",
                      f"{cfg['timeout_s']:g}s", str(cfg["concurrency"]),
                      f"{cfg['min_instances']}/{cfg['max_instances']}", str(f["instances"]), f["url"])
    out.print(table)


@app.command("rm")
def remove(name: Annotated[str, typer.Argument(help="the function to delete: NAME or TENANT/NAME")]) -> None:
    """Delete a function and stop its instances."""
    call(client().delete, function_path(name))
    out.print(f"deleted {name}")


@app.command()
def logs(name: Annotated[str, typer.Argument(help="the function whose calls to show: NAME or TENANT/NAME")],
         limit: Annotated[int, typer.Option(help="how many invocations")] = 20) -> None:
    """Show a function's recent invocations and their output, newest last."""
    rows = call(client().get, function_path(name, "/logs"), {"limit": str(limit)})
    for r in rows:
        when = dt.datetime.fromtimestamp(r["started_at"]).isoformat(timespec="milliseconds")
        cold = " cold" if r["cold_start"] else ""
        out.print(f"[dim]{when}[/] {r['request_id']} v{r['version']} {r['outcome']} "
                  f"{r['duration_ms']:.1f}ms{cold}", highlight=False)
        if r["logs"]:
            out.print(r["logs"].rstrip("\n"), highlight=False, markup=False)


@app.command()
def nodes() -> None:
    """Show the fleet's nodes with capacity and use."""
    rows = call(client().get, "/v1/nodes")
    table = Table("id", "state", "provider", "type", "cpu used/cap", "memory used/cap", "util",
                  "instances", "age", "url")
    for n in rows:
        cap, use = n["capacity"], n["allocated"]
        table.add_row(n["id"], n["state"], n["provider"], n["node_type"],
                      f"{use['cpu_millis']}/{cap['cpu_millis']}m",
                      f"{use['memory_mib']}/{cap['memory_mib']} MiB", f"{n['utilization']:.0%}",
                      str(n["instances"]), f"{n['age_s']:.0f}s", n["url"])
    out.print(table)


@app.command()
def events(limit: Annotated[int, typer.Option(help="how many events")] = 50) -> None:
    """Show scaling decisions and fleet events with their reasons, newest last."""
    rows = call(client().get, f"/v1/events?limit={limit}")
    for e in rows:
        when = dt.datetime.fromtimestamp(e["at"]).isoformat(timespec="seconds")
        node = f" {e['node_id']}" if e["node_id"] else ""
        out.print(f"[dim]{when}[/] [bold]{e['kind']}[/]{node}: {e['reason']}", highlight=False)


@app.command("control-planes")
def control_planes() -> None:
    """Show the cluster's live control planes (HA) and which one leads the fleet loop."""
    rows = call(client().get, "/v1/control-planes")
    table = Table("id", "url", "role", "generation", "last seen")
    for m in rows:
        role = "leader" if m["leader"] else "follower"
        table.add_row(m["id"] + (" (this one)" if m["self"] else ""), m["url"], role,
                      "" if m["generation"] is None else str(m["generation"]), f"{m['last_seen_s']:.1f}s ago")
    out.print(table)


register_simulate(app)
register_accounts(app)
register_usage(app)
register_async(app)
register_schedules(app)
register_bus(app)
register_workflows(app)
