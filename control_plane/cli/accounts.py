"""`cumulus tenant|user|token ...`, `grant`, `revoke`, `grants`, `whoami`, `login` and `logout`: the
accounts API (`/v1/tenants`, `/v1/users`, `/v1/tokens`, `/v1/grants`, `/v1/whoami`) from the command line.

A function is `NAME` (in the caller's tenant) or `TENANT/NAME`; a grant's function may be a pattern
(`acme/*`, `img-?`). Durations are seconds or a number with a unit: `90s`, `15m`, `12h`, `30d`, `2w`.
The role, permission and quota names mirror `control_plane.identity` (a test holds them equal) so
that the command line does not load the store to print its help.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
import os
import re
import time
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.markup import escape
from rich.table import Table

from control_plane.cli.client import (
    DEFAULT_URL,
    Client,
    ClientError,
    check_url,
    credentials_path,
    delete_credentials,
    load_credentials,
    save_credentials,
)
from control_plane.cli.late import call as _call
from control_plane.cli.late import client as _client
from control_plane.cli.late import err as _err
from control_plane.cli.late import fail as _fail
from control_plane.cli.late import out as _out
from control_plane.core import default_data_dir


class Role(enum.StrEnum):
    """A user's role in their tenant (`control_plane.identity.Role`)."""

    admin = "admin"
    developer = "developer"
    invoker = "invoker"


class Permission(enum.StrEnum):
    """What a grant gives on functions (`control_plane.identity.Permission`)."""

    deploy = "deploy"
    invoke = "invoke"
    logs = "logs"
    usage = "usage"
    grant = "grant"


class BudgetAction(enum.StrEnum):
    """What happens when a tenant's month is over budget."""

    throttle = "throttle"
    warn = "warn"


# identity's QUOTAS
QUOTA_NAMES = ("functions", "concurrency", "memory_mib", "instances", "rps", "burst", "mail_per_min")


def _target(key: str) -> str | None:
    """The global `--url` / `--token` (or their variables), as parsed."""
    from control_plane.cli.app import _target as target

    return target[key]


# -- parsing and showing -------------------------------------------------------------------------------
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]?)\s*$", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """Seconds in `text`: plain seconds (`3600`) or a number with a unit, `s`, `m`, `h`, `d` or `w`
    (`90s`, `15m`, `12h`, `30d`, `2w`); typer.BadParameter otherwise."""
    match = _DURATION.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in UNITS:
        raise typer.BadParameter(f"{text[:40]!r} is not a duration: give seconds (3600) or a number with "
                                 "s, m, h, d or w (90s, 15m, 12h, 30d, 2w)")
    seconds = float(match.group(1)) * UNITS[unit]
    if not math.isfinite(seconds):
        raise typer.BadParameter(f"{text[:40]!r} is too long a duration")
    return seconds


def parse_lifetime(text: str) -> float:
    """A duration that must be more than nothing (a token's lifetime)."""
    seconds = parse_duration(text)
    if seconds <= 0:
        raise typer.BadParameter(f"{text[:40]!r}: a lifetime must be longer than 0 seconds")
    return seconds


def span(seconds: float) -> str:
    """`seconds` in the largest unit that keeps it whole-ish: `45s`, `12m`, `5h`, `3d`."""
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def when(ts: float | None, *, never: str = "never") -> str:
    """A timestamp as local time, with how far it is from now."""
    if ts is None:
        return never
    at = dt.datetime.fromtimestamp(ts).isoformat(timespec="seconds")
    delta = ts - time.time()
    return f"{at} (in {span(delta)})" if delta > 0 else f"{at} ({span(delta)} ago)"


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) else str(value)


def _quotas(quotas: dict[str, Any]) -> str:
    return " ".join(f"{k}={_number(v)}" for k, v in sorted(quotas.items())) or "none (unbounded)"


def _budget(tenant: dict[str, Any]) -> str:
    if tenant.get("budget") is None:
        return "none"
    return f"{_number(tenant['budget'])}/month ({tenant.get('budget_action', 'throttle')})"


def _seg(name: str) -> str:
    """One path segment (a user's or tenant's name, a token's id)."""
    return quote(name, safe="")


def _details(rows: list[tuple[str, str]]) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    return table


# -- the quota options, shared by `tenant create` and `tenant set` ------------------------------------
Functions = Annotated[int | None, typer.Option(min=0, help="quota: functions the tenant may have")]
Concurrency = Annotated[int | None, typer.Option(min=0, help="quota: calls running at once")]
MemoryMib = Annotated[int | None, typer.Option("--memory-mib", min=1,
                                              help="quota: memory of one instance, in MiB")]
Instances = Annotated[int | None, typer.Option(min=0, help="quota: instances at once")]
Rps = Annotated[float | None, typer.Option(min=0, help="quota: invocations per second")]
Burst = Annotated[int | None, typer.Option(min=1, help="quota: calls of credit above --rps [rps, at "
                                                       "least 1]")]
MailPerMin = Annotated[int | None, typer.Option("--mail-per-min", min=0,
                                               help="quota: messages its functions may send a minute")]
Budget = Annotated[float | None, typer.Option(min=0, help="spend per calendar month, in the price sheet's "
                                                         "currency")]


def _quota_values(**values: float | None) -> dict[str, float]:
    return {k: v for k, v in values.items() if v is not None}


# -- tenant ----------------------------------------------------------------------------------------------
tenant_app = typer.Typer(help="Tenants: their quotas and budgets (cluster admins).", no_args_is_help=True,
                         rich_markup_mode=None)


def _show_tenant(t: dict[str, Any]) -> None:
    _out().print(_details([("name", escape(t["name"])), ("functions", str(t["functions"])),
                           ("users", str(t["users"])), ("quotas", _quotas(t["quotas"])),
                           ("budget", _budget(t)), ("created", when(t["created_at"]))]), highlight=False)


@tenant_app.command("create")
def tenant_create(name: Annotated[str, typer.Argument(help="the tenant's name: lowercase letters, digits, "
                                                             "dashes")],
                  functions: Functions = None, concurrency: Concurrency = None, memory_mib: MemoryMib = None,
                  instances: Instances = None, rps: Rps = None, burst: Burst = None,
                  mail_per_min: MailPerMin = None, budget: Budget = None,
                  budget_action: Annotated[BudgetAction | None, typer.Option(
                      help="over budget: throttle its invocations, or only warn [throttle]")] = None) -> None:
    """Create a tenant with its quotas (a quota not given is unbounded) and budget."""
    body: dict[str, Any] = {"name": name, "quotas": _quota_values(
        functions=functions, concurrency=concurrency, memory_mib=memory_mib, instances=instances, rps=rps,
        burst=burst, mail_per_min=mail_per_min)}
    if budget is not None:
        body["budget"] = budget
    if budget_action is not None:
        body["budget_action"] = budget_action.value
    _show_tenant(_call(_client().post, "/v1/tenants", body))


@tenant_app.command("ls")
def tenant_ls() -> None:
    """List the tenants (cluster admins: every one; a tenant's admin: theirs)."""
    table = Table("name", "functions", "users", "quotas", "budget", "created")
    for t in _call(_client().get, "/v1/tenants"):
        table.add_row(escape(t["name"]), str(t["functions"]), str(t["users"]), _quotas(t["quotas"]),
                      _budget(t), when(t["created_at"]))
    _out().print(table, highlight=False)


@tenant_app.command("show")
def tenant_show(name: Annotated[str, typer.Argument(help="the tenant")]) -> None:
    """Show a tenant: its quotas, budget, functions and users."""
    _show_tenant(_call(_client().get, f"/v1/tenants/{_seg(name)}"))


@tenant_app.command("set")
def tenant_set(name: Annotated[str, typer.Argument(help="the tenant")],
               functions: Functions = None, concurrency: Concurrency = None, memory_mib: MemoryMib = None,
               instances: Instances = None, rps: Rps = None, burst: Burst = None,
               mail_per_min: MailPerMin = None,
               unset: Annotated[list[str] | None, typer.Option(
                   help=f"remove a quota (then unbounded), repeatable: {', '.join(QUOTA_NAMES)}")] = None,
               budget: Budget = None,
               no_budget: Annotated[bool, typer.Option("--no-budget", help="remove the budget")] = False,
               budget_action: Annotated[BudgetAction | None, typer.Option(
                   help="over budget: throttle its invocations, or only warn")] = None) -> None:
    """Change a tenant's quotas (the others stay as they are) or budget (cluster admins)."""
    quotas: dict[str, float | None] = dict(_quota_values(
        functions=functions, concurrency=concurrency, memory_mib=memory_mib, instances=instances, rps=rps,
        burst=burst, mail_per_min=mail_per_min))
    for quota in unset or []:
        if quota.replace("-", "_") not in QUOTA_NAMES:
            _fail(f"--unset {quota!r}: no such quota; quotas: {', '.join(QUOTA_NAMES)}")
        if quota.replace("-", "_") in quotas:
            _fail(f"--unset {quota} and a value for it: give one")
        quotas[quota.replace("-", "_")] = None
    if budget is not None and no_budget:
        _fail("--budget and --no-budget: give one")
    body: dict[str, Any] = {}
    if quotas:
        body["quotas"] = quotas
    if budget is not None:
        body["budget"] = budget
    if no_budget:
        body["clear_budget"] = True
    if budget_action is not None:
        body["budget_action"] = budget_action.value
    if not body:
        _fail("nothing to change: give a quota option, --unset, --budget, --no-budget or --budget-action")
    _show_tenant(_call(_client().patch, f"/v1/tenants/{_seg(name)}", body))


# -- user ------------------------------------------------------------------------------------------------
user_app = typer.Typer(help="Users of a tenant and their roles (the tenant's admins).", no_args_is_help=True,
                       rich_markup_mode=None)


@user_app.command("create")
def user_create(name: Annotated[str, typer.Argument(help="the user's name, unique in the cluster")],
                tenant: Annotated[str | None, typer.Option(help="their tenant [yours]")] = None,
                role: Annotated[Role, typer.Option(
                    help="admin: everything in the tenant; developer: deploy, invoke, logs and usage of its "
                         "functions; invoker: only what grants give")] = Role.developer) -> None:
    """Create a user; then `cumulus token create --user NAME` gives them a token."""
    body: dict[str, Any] = {"name": name, "role": role.value}
    if tenant is not None:
        body["tenant"] = tenant
    u = _call(_client().post, "/v1/users", body)
    _out().print(f"created user [bold]{escape(u['name'])}[/] ({u['role']} of {escape(u['tenant'])}); "
                 f"give them a token: cumulus token create --user {escape(u['name'])}", highlight=False)


@user_app.command("ls")
def user_ls(tenant: Annotated[str | None, typer.Option(
        help="whose users [your tenant's]; `*`: every tenant's (cluster admins)")] = None) -> None:
    """List a tenant's users."""
    rows = _call(_client().get, "/v1/users", None if tenant is None else {"tenant": tenant})
    table = Table("name", "tenant", "role", "created")
    for u in rows:
        table.add_row(escape(u["name"]), escape(u["tenant"]), u["role"], when(u["created_at"]))
    _out().print(table, highlight=False)


@user_app.command("role")
def user_role(name: Annotated[str, typer.Argument(help="the user")],
              role: Annotated[Role, typer.Argument(help="their new role: admin, developer or invoker")],
              ) -> None:
    """Change a user's role."""
    u = _call(_client().patch, f"/v1/users/{_seg(name)}", {"role": role.value})
    _out().print(f"{escape(u['name'])} is now {u['role']} of {escape(u['tenant'])}", highlight=False)


@user_app.command("rm")
def user_rm(name: Annotated[str, typer.Argument(help="the user to delete")]) -> None:
    """Delete a user, with their tokens and grants."""
    _call(_client().delete, f"/v1/users/{_seg(name)}")
    _out().print(f"deleted user {escape(name)} (their tokens and grants with them)", highlight=False)


# -- token -----------------------------------------------------------------------------------------------
token_app = typer.Typer(help="API tokens: create, list, revoke, rotate (secrets are shown once).",
                        no_args_is_help=True, rich_markup_mode=None)


def _print_secret(t: dict[str, Any], what: str) -> None:
    """The token's id and details on stderr, its secret alone on stdout (`TOKEN=$(cumulus token ...)`)."""
    err = _err()
    scopes = ", ".join(t["scopes"]) if t.get("scopes") is not None else "all its user may do"
    err.print(f"{what} token [bold]{escape(t['id'])}[/] for {escape(t['user'])}"
              + (f" ({escape(t['name'])})" if t.get("name") else "")
              + f"; scopes: {escape(scopes)}; expires: {when(t.get('expires_at'))}", highlight=False)
    err.print("[bold yellow]warning:[/] the secret below is shown this once and cannot be shown again: "
              "store it now", highlight=False)
    _out().print(t["token"], highlight=False, markup=False)


@token_app.command("create")
def token_create(user: Annotated[str | None, typer.Option(
                     help="whose token [yours]; another user's: their tenant's admins")] = None,
                 name: Annotated[str, typer.Option(help="what it is for (a laptop, a CI job)")] = "",
                 expires: Annotated[float | None, typer.Option(
                     parser=parse_lifetime, metavar="DURATION",
                     help="lifetime: 90s, 15m, 12h, 30d, 2w or seconds [until revoked]")] = None,
                 scope: Annotated[list[str] | None, typer.Option(
                     help="limit it to PERMISSION:FUNCTION (invoke:acme/resize, deploy:acme/*), repeatable "
                          "[all its user may do]")] = None) -> None:
    """Create a token and print its secret (shown this once)."""
    body: dict[str, Any] = {"name": name}
    if user is not None:
        body["user"] = user
    if expires is not None:
        body["expires_in_s"] = expires
    if scope:
        body["scopes"] = scope
    _print_secret(_call(_client().post, "/v1/tokens", body), "created")


@token_app.command("ls")
def token_ls(user: Annotated[str | None, typer.Option(help="a user's tokens [yours]")] = None,
             tenant: Annotated[str | None, typer.Option(help="the tokens of a tenant's users")] = None,
             ) -> None:
    """List tokens (never their secrets)."""
    params = {k: v for k, v in (("user", user), ("tenant", tenant)) if v is not None}
    rows = _call(_client().get, "/v1/tokens", params or None)
    table = Table("id", "user", "name", "scopes", "expires", "state")
    for t in rows:
        scopes = "all" if t["scopes"] is None else ", ".join(t["scopes"])
        state = t["state"] + (f" (rotated to {t['rotated_to']})" if t.get("rotated_to") else "")
        table.add_row(escape(t["id"]), escape(t["user"]), escape(t["name"]), escape(scopes),
                      when(t["expires_at"]), escape(state))
    _out().print(table, highlight=False)


TokenId = Annotated[str, typer.Argument(metavar="ID", help="the token's id (token ls)")]


@token_app.command("revoke")
def token_revoke(token_id: TokenId) -> None:
    """Revoke a token: every control plane refuses it within a second."""
    t = _call(_client().delete, f"/v1/tokens/{_seg(token_id)}")
    _out().print(f"revoked token {escape(t['id'])} of {escape(t['user'])}", highlight=False)


@token_app.command("rotate")
def token_rotate(token_id: TokenId,
                 overlap: Annotated[float | None, typer.Option(
                     parser=parse_duration, metavar="DURATION",
                     help="how long the old secret keeps working: 90s, 15m, 1h, 30d or seconds [1h]")] = None,
                 expires: Annotated[float | None, typer.Option(
                     parser=parse_lifetime, metavar="DURATION",
                     help="the new secret's lifetime: 12h, 30d, 2w or seconds [until revoked]")] = None,
                 ) -> None:
    """Give a token a new secret (printed this once); the old one keeps working for --overlap."""
    body: dict[str, Any] = {}
    if overlap is not None:
        body["overlap_s"] = overlap
    if expires is not None:
        body["expires_in_s"] = expires
    t = _call(_client().post, f"/v1/tokens/{_seg(token_id)}/rotate", body)
    _print_secret(t, f"rotated {escape(token_id)}: new")
    _err().print(f"the old secret keeps working for {span(3600 if overlap is None else overlap)}",
                 highlight=False)


# -- grants ----------------------------------------------------------------------------------------------
User = Annotated[str, typer.Argument(help="the user")]
Perm = Annotated[Permission, typer.Argument(
    help="deploy (and delete), invoke, logs, usage, or grant (give these to others)")]
Function = Annotated[str, typer.Argument(
    help="NAME or PATTERN (your tenant's functions) or TENANT/PATTERN; * and ? match: acme/*")]


def grant(user: User, permission: Perm, function: Function) -> None:
    """Give a user a permission on functions (whoever holds `grant` on them)."""
    g = _call(_client().post, "/v1/grants", {"user": user, "permission": permission.value,
                                             "function": function})
    _out().print(f"granted {escape(g['user'])} {g['permission']} on {escape(g['function'])}", highlight=False)


def revoke(user: User, permission: Perm, function: Function) -> None:
    """Take a grant back."""
    _call(_client().post, "/v1/grants/revoke", {"user": user, "permission": permission.value,
                                                "function": function})
    _out().print(f"revoked {escape(user)}'s {permission.value} on {escape(function)}", highlight=False)


def grants(user: Annotated[str | None, typer.Option(help="a user's grants [yours]")] = None,
           tenant: Annotated[str | None, typer.Option(
               help="the grants on a tenant's functions (its admins)")] = None) -> None:
    """List grants."""
    params = {k: v for k, v in (("user", user), ("tenant", tenant)) if v is not None}
    rows = _call(_client().get, "/v1/grants", params or None)
    table = Table("user", "permission", "function", "granted")
    for g in rows:
        table.add_row(escape(g["user"]), g["permission"], escape(g["function"]), when(g["created_at"]))
    _out().print(table, highlight=False)


# -- who and where -----------------------------------------------------------------------------------------
def whoami() -> None:
    """Show who the token makes you: user, tenant, role, scopes, expiry, and the control plane."""
    c = _client()
    me = _call(c.get, "/v1/whoami")
    scopes = "all its user may do" if me["scopes"] is None else ", ".join(me["scopes"])
    _out().print(_details([
        ("url", escape(c.url)), ("user", escape(me["user"])), ("tenant", escape(me["tenant"])),
        ("role", me["role"] + (" (cluster admin)" if me["cluster_admin"] else "")),
        ("token", escape(me["token_id"])), ("scopes", escape(scopes)),
        ("expires", when(me["expires_at"]))]), highlight=False)


def _login_url(url: str | None) -> str:
    """Login's URL: its --url, else the global one, else the stored one, else the data directory's."""
    url = url or _target("url")
    if url:
        return url
    try:
        creds = load_credentials()
    except ClientError:
        creds = None
    if creds is not None:
        return creds["url"]
    endpoint = default_data_dir() / "endpoint"
    return endpoint.read_text().strip() if endpoint.exists() else DEFAULT_URL


def login(url: Annotated[str | None, typer.Option(
              help="the control plane [the global --url, else the one logged in to, else the data "
                   f"directory's endpoint, else {DEFAULT_URL}]")] = None,
          token: Annotated[str | None, typer.Option(
              help="the token [the global --token or CUMULUS_TOKEN, else asked for, unechoed: a token on "
                   "the command line stays in the shell's history]")] = None) -> None:
    """Check a token with the control plane, then store the URL and token for later commands."""
    try:
        target = check_url(_login_url(url))
    except ClientError as exc:
        _fail(exc.message)
    secret = (token or _target("token") or typer.prompt(f"token for {target}", hide_input=True,
                                                        err=True)).strip()
    if not secret:
        _fail("no token given")
    try:
        me = Client(target, secret).get("/v1/whoami")
    except ClientError as exc:
        _fail(f"not logged in, nothing stored: {exc.kind}: {exc.message}"
              + (f" (HTTP {exc.status})" if exc.status else ""))
    try:
        path = save_credentials(target, secret)
    except OSError as exc:
        _fail(f"cannot store the credentials in {credentials_path()}: {exc.strerror or exc}")
    _out().print(f"logged in to {escape(target)} as [bold]{escape(me['user'])}[/] ({me['role']} of "
                 f"{escape(me['tenant'])}); credentials in {escape(str(path))}", highlight=False)
    shadowing = [v for v in ("CUMULUS_URL", "CUMULUS_TOKEN") if os.environ.get(v)]
    if shadowing:
        _err().print(f"note: {' and '.join(shadowing)} {'is' if len(shadowing) == 1 else 'are'} set and "
                     "win over the stored credentials", highlight=False)


def logout(revoke_token: Annotated[bool, typer.Option(
        "--revoke", help="also revoke the stored token on its control plane")] = False) -> None:
    """Forget the URL and token `cumulus login` stored."""
    path = credentials_path()
    if revoke_token:
        try:
            creds = load_credentials(path)
            if creds is not None:
                c = Client(creds["url"], creds["token"])
                token_id = c.get("/v1/whoami")["token_id"]
                c.delete(f"/v1/tokens/{_seg(token_id)}")
                _out().print(f"revoked token {escape(token_id)} on {escape(c.url)}", highlight=False)
        except ClientError as exc:
            _fail(f"not revoked, so still logged in: {exc.kind}: {exc.message}"
                  + (f" (HTTP {exc.status})" if exc.status else "")
                  + "; `cumulus logout` without --revoke forgets the credentials")
    try:
        deleted = delete_credentials(path)
    except OSError as exc:
        _fail(f"cannot delete {path}: {exc.strerror or exc}")
    if deleted:
        _out().print(f"logged out: deleted {escape(str(path))}", highlight=False)
    else:
        _out().print(f"not logged in (no {escape(str(path))})", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the account commands to the `cumulus` app."""
    app.add_typer(tenant_app, name="tenant")
    app.add_typer(user_app, name="user")
    app.add_typer(token_app, name="token")
    app.command("grant")(grant)
    app.command("revoke")(revoke)
    app.command("grants")(grants)
    app.command("whoami")(whoami)
    app.command("login")(login)
    app.command("logout")(logout)
