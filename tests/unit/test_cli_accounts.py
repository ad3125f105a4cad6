"""The account commands of `cumulus`: durations, the credentials `login` stores (0600, atomic, under
$XDG_CONFIG_HOME), which control plane and token a command uses, and tenant, user, token and grant
commands end to end against a real control plane served by uvicorn on loopback (no node)."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
import uvicorn
from typer.testing import CliRunner

from control_plane.cli import accounts
from control_plane.cli.app import app
from control_plane.cli.client import (
    Client,
    ClientError,
    credentials_path,
    function_path,
    load_credentials,
    save_credentials,
)
from control_plane.core import Settings
from provisioners.net import free_port

runner = CliRunner()


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the real ~/.config, ~/.cumulus or the caller's variables."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("CUMULUS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("CUMULUS_URL", raising=False)
    monkeypatch.delenv("CUMULUS_TOKEN", raising=False)


def _run(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), env={"COLUMNS": "250", **(env or {})}, input=input,
                         prog_name="cumulus")


def _ok(*args: str, **kwargs: Any) -> Any:
    result = _run(*args, **kwargs)
    assert result.exit_code == 0, (args, result.output)
    return result


# -- durations -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("15m", 900), ("12h", 43200), ("30d", 30 * 86400), ("2w", 14 * 86400), ("3600", 3600),
    ("0", 0), ("1.5h", 5400), (".5m", 30), ("30D", 30 * 86400), (" 10 m ", 600), ("7.", 7),
])
def test_a_duration_is_seconds_or_a_number_with_a_unit(text: str, seconds: float) -> None:
    assert accounts.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "10y", "-5", "-5m", "1h30m", "h", "1e9", "nan", "inf", "5 ms",
                                  "1,5h", "0x10"])
def test_anything_else_is_a_clear_bad_parameter(text: str) -> None:
    said = r"is not a duration: give seconds .* \(90s, 15m, 12h, 30d, 2w\)"
    with pytest.raises(typer.BadParameter, match=said):
        accounts.parse_duration(text)


def test_a_lifetime_is_longer_than_nothing() -> None:
    assert accounts.parse_lifetime("30d") == 30 * 86400
    with pytest.raises(typer.BadParameter, match="longer than 0"):
        accounts.parse_lifetime("0s")
    result = _run("--url", "http://127.0.0.1:1", "--token", "t", "token", "create", "--expires", "soon")
    assert result.exit_code == 2 and "'soon' is not a duration" in result.output


def test_the_choices_mirror_the_identity_room() -> None:
    from control_plane.identity import QUOTAS, Permission, Role

    assert [r.value for r in accounts.Role] == [r.value for r in Role]
    assert [p.value for p in accounts.Permission] == [p.value for p in Permission]
    assert list(accounts.QUOTA_NAMES) == list(QUOTAS)


def test_a_function_keeps_the_slash_between_tenant_and_name() -> None:
    assert function_path("acme/resize", "/invoke") == "/v1/functions/acme/resize/invoke"
    assert function_path("resize") == "/v1/functions/resize"
    assert function_path("a b?c") == "/v1/functions/a%20b%3Fc"


def test_every_account_command_describes_its_arguments() -> None:
    root = typer.main.get_command(app)
    commands: dict[str, Any] = getattr(root, "commands")  # noqa: B009 (typer vendors click: no isinstance)
    added = {"tenant", "user", "token", "grant", "revoke", "grants", "whoami", "login", "logout"}
    assert added <= set(commands)
    todo = list(commands.items())
    missing = []
    while todo:
        name, cmd = todo.pop()
        todo += [(f"{name} {sub}", c) for sub, c in (getattr(cmd, "commands", None) or {}).items()]
        missing += [f"{name} {p.name}" for p in cmd.params if not getattr(p, "help", None)]
    assert not missing, missing
    assert {"create", "ls", "show", "set"} <= set(commands["tenant"].commands)
    assert {"create", "ls", "role", "rm"} <= set(commands["user"].commands)
    assert {"create", "ls", "revoke", "rotate"} <= set(commands["token"].commands)


# -- the credentials file --------------------------------------------------------------------------------
def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_credentials_live_under_xdg_config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert credentials_path() == tmp_path / "config" / "cumulus" / "credentials.json"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for unset in ("", "relative/dir"):  # the XDG spec: unset, empty or relative means ~/.config
        monkeypatch.setenv("XDG_CONFIG_HOME", unset)
        assert credentials_path() == tmp_path / "home" / ".config" / "cumulus" / "credentials.json"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert credentials_path() == tmp_path / "home" / ".config" / "cumulus" / "credentials.json"


def test_saved_credentials_are_private_and_replaced_atomically(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    old_umask = os.umask(0)  # the most permissive umask: the modes are the code's own
    try:
        path = save_credentials("http://cp.example:8080/", "s3cret")
    finally:
        os.umask(old_umask)
    assert path == credentials_path()
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700
    assert json.loads(path.read_text()) == {"url": "http://cp.example:8080", "token": "s3cret"}
    assert load_credentials() == {"url": "http://cp.example:8080", "token": "s3cret"}

    replaced: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: Any, dst: Any) -> None:
        assert _mode(Path(src)) == 0o600 and Path(src).parent == path.parent  # complete before it is seen
        assert json.loads(Path(src).read_text())["token"] == "n3w"
        replaced.append((str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    save_credentials("http://cp.example:8080", "n3w")
    assert replaced and replaced[0][1] == str(path)
    assert json.loads(path.read_text())["token"] == "n3w" and _mode(path) == 0o600

    def broken(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError):
        save_credentials("http://cp.example:8080", "lost")
    assert json.loads(path.read_text())["token"] == "n3w"  # the old file, whole
    assert sorted(p.name for p in path.parent.iterdir()) == ["credentials.json"]  # no temporary left


def test_a_damaged_credentials_file_says_what_to_do(tmp_path: Path) -> None:
    path = credentials_path()
    path.parent.mkdir(parents=True)
    for text in ("{not json", '{"url": "http://x"}', '{"url": "nourl", "token": "t"}', "[]"):
        path.write_text(text)
        with pytest.raises(ClientError, match="cumulus login") as info:
            load_credentials()
        assert info.value.kind == "BadCredentials" and str(path) in info.value.message
    result = _run("ls")
    assert result.exit_code == 1 and "cumulus logout" in result.stderr and "Traceback" not in result.output


# -- which control plane and token -------------------------------------------------------------------------
def test_from_env_takes_options_then_variables_then_login_then_the_data_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    data.mkdir()

    def target() -> tuple[str, str]:
        c = Client.from_env()
        return c.url, c.token

    with pytest.raises(ClientError, match="cumulus login"):
        target()
    (data / "endpoint").write_text("http://data-dir:1\n")
    (data / "admin.token").write_text("data-token\n")
    assert target() == ("http://data-dir:1", "data-token")
    save_credentials("http://logged-in:2", "login-token")
    assert target() == ("http://logged-in:2", "login-token")
    monkeypatch.setenv("CUMULUS_TOKEN", "env-token")
    assert target() == ("http://logged-in:2", "env-token")  # a variable wins, per setting
    monkeypatch.setenv("CUMULUS_URL", "http://env:3")
    assert target() == ("http://env:3", "env-token")
    c = Client.from_env(url="http://flag:4", token="flag-token")
    assert (c.url, c.token) == ("http://flag:4", "flag-token")

    monkeypatch.delenv("CUMULUS_TOKEN")
    # The stored token goes to its own URL only; another URL gets the data directory's token.
    assert target() == ("http://env:3", "data-token")
    monkeypatch.setenv("CUMULUS_URL", "http://logged-in:2/")
    assert target() == ("http://logged-in:2", "login-token")
    (data / "admin.token").unlink()
    monkeypatch.setenv("CUMULUS_URL", "http://elsewhere:5")
    with pytest.raises(ClientError, match="no token"):
        target()


def test_the_cli_uses_the_stored_credentials(tmp_path: Path) -> None:
    save_credentials(f"http://127.0.0.1:{free_port()}", "login-token")
    result = _run("whoami")
    assert result.exit_code == 1 and "connection refused" in result.stderr
    assert load_credentials() is not None and credentials_path().exists()


# -- against a real control plane -------------------------------------------------------------------------
@dataclass
class Plane:
    """A control plane on loopback and its admin token."""

    url: str
    token: str

    def run(self, *args: str, token: str | None = None, **kwargs: Any) -> Any:
        """A command with this plane's URL and `token` (the admin's by default), as it ran."""
        return _run("--url", self.url, "--token", token or self.token, *args, **kwargs)

    def ok(self, *args: str, token: str | None = None, **kwargs: Any) -> Any:
        result = self.run(*args, token=token, **kwargs)
        assert result.exit_code == 0, (args, result.output)
        return result


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    from control_plane.api import build_asgi
    from control_plane.platform import Platform

    port = free_port()
    settings = Settings(data_dir=tmp_path_factory.mktemp("plane"), host="127.0.0.1", port=port,
                        provider="local", min_nodes=0, max_nodes=0, reconcile_interval_s=0.2,
                        queue_timeout_s=1)
    platform = Platform(settings, use_provider=False)
    server = uvicorn.Server(uvicorn.Config(build_asgi(platform), host="127.0.0.1", port=port, loop="asyncio",
                                           log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the control plane did not start"
        time.sleep(0.02)
    try:
        yield Plane(settings.url, platform.admin_token_path.read_text().strip())
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def _secret(result: Any) -> str:
    """The secret a `token create` or `token rotate` printed: stdout is that one line."""
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    assert "shown this once" in result.stderr
    return str(lines[0])


def test_tenants_users_tokens_and_grants_end_to_end(plane: Plane) -> None:
    out = plane.ok("tenant", "create", "acme", "--functions", "3", "--rps", "5", "--burst", "10",
                   "--memory-mib", "512", "--budget", "20", "--budget-action", "warn").stdout
    assert "acme" in out and "functions=3" in out and "rps=5" in out and "20/month (warn)" in out
    assert plane.run("tenant", "create", "acme").exit_code == 1
    assert "acme" in plane.ok("tenant", "ls").stdout
    out = plane.ok("tenant", "set", "acme", "--functions", "5", "--unset", "rps", "--no-budget").stdout
    assert "functions=5" in out and "rps" not in out
    assert [line.split()[1:] for line in out.splitlines() if line.startswith("budget")] == [["none"]]
    shown = plane.ok("tenant", "show", "acme").stdout
    assert "functions=5" in shown and "burst=10" in shown and "memory_mib=512" in shown
    result = plane.run("tenant", "set", "acme")
    assert result.exit_code == 1 and "nothing to change" in result.stderr
    result = plane.run("tenant", "set", "acme", "--unset", "bogus")
    assert result.exit_code == 1 and "no such quota" in result.stderr
    result = plane.run("tenant", "show", "nope")
    assert result.exit_code == 1 and result.stderr.startswith("error: NotFound:")
    assert "(HTTP 404)" in result.stderr

    plane.ok("user", "create", "alice", "--tenant", "acme", "--role", "developer")
    plane.ok("user", "create", "bob", "--tenant", "acme", "--role", "invoker")
    users = plane.ok("user", "ls", "--tenant", "acme").stdout
    assert "alice" in users and "bob" in users and "invoker" in users
    assert "alice" in plane.ok("user", "ls", "--tenant", "*").stdout
    assert plane.run("user", "create", "x", "--role", "boss").exit_code == 2  # not a role

    created = plane.ok("token", "create", "--user", "alice", "--name", "alice's laptop", "--expires", "30d")
    alice = _secret(created)
    assert "for alice (alice's laptop)" in created.stderr and "(in 30d)" in created.stderr
    me = plane.ok("whoami", token=alice).stdout
    assert "alice" in me and "acme" in me and "developer" in me and "cluster admin" not in me
    assert "(cluster admin)" in plane.ok("whoami").stdout

    scoped = _secret(plane.ok("token", "create", "--user", "bob", "--scope", "invoke:acme/resize"))
    assert "invoke:acme/resize" in plane.ok("whoami", token=scoped).stdout

    assert "granted bob invoke on acme/img-*" in plane.ok("grant", "bob", "invoke", "acme/img-*").stdout
    plane.ok("grant", "bob", "logs", "acme/resize")
    listed = plane.ok("grants", "--tenant", "acme").stdout
    assert "acme/img-*" in listed and "acme/resize" in listed and "logs" in listed
    assert "acme/img-*" in plane.ok("grants", "--user", "bob").stdout
    assert "revoked bob's invoke on acme/img-*" in plane.ok("revoke", "bob", "invoke", "acme/img-*").stdout
    listed = plane.ok("grants", "--tenant", "acme").stdout
    assert "acme/img-*" not in listed and "acme/resize" in listed
    result = plane.run("revoke", "bob", "invoke", "acme/img-*")
    assert result.exit_code == 1 and "(HTTP 404)" in result.stderr
    assert plane.run("grant", "bob", "fly", "acme/x").exit_code == 2  # not a permission
    result = plane.run("grant", "bob", "invoke", "beta/x", token=alice)  # alice may not grant
    assert result.exit_code == 1 and "Forbidden" in result.stderr

    tokens = plane.ok("token", "ls", "--user", "alice").stdout
    alice_id = json.loads(Client(plane.url, alice).request("GET", "/v1/whoami").text)["token_id"]
    assert alice_id in tokens and "alice's laptop" in tokens and "active" in tokens and "all" in tokens
    assert "invoke:acme/resize" in plane.ok("token", "ls", "--tenant", "acme").stdout

    rotated = plane.ok("token", "rotate", alice_id, "--overlap", "0", "--expires", "2w")
    alice2 = _secret(rotated)
    assert "old secret keeps working for 0s" in rotated.stderr
    assert "alice" in plane.ok("whoami", token=alice2).stdout
    refused = plane.run("whoami", token=alice)  # no overlap: the old secret is done
    assert refused.exit_code == 1 and "(HTTP 401)" in refused.stderr

    alice2_id = json.loads(Client(plane.url, alice2).request("GET", "/v1/whoami").text)["token_id"]
    assert f"revoked token {alice2_id} of alice" in plane.ok("token", "revoke", alice2_id).stdout
    refused = plane.run("whoami", token=alice2)
    assert refused.exit_code == 1 and "Unauthorized" in refused.stderr and "(HTTP 401)" in refused.stderr
    assert "revoked" in plane.ok("token", "ls", "--user", "alice").stdout

    assert "bob is now developer of acme" in plane.ok("user", "role", "bob", "developer").stdout
    plane.ok("user", "rm", "bob")
    assert "bob" not in plane.ok("user", "ls", "--tenant", "acme").stdout
    refused = plane.run("whoami", token=scoped)  # bob's tokens went with him
    assert refused.exit_code == 1 and "(HTTP 401)" in refused.stderr


def test_functions_are_listed_by_tenant_and_named_tenant_slash_name(plane: Plane, tmp_path: Path) -> None:
    from control_plane.functions import zip_folder

    plane.run("tenant", "create", "zeta")
    plane.ok("user", "create", "zed", "--tenant", "zeta")
    zed = _secret(plane.ok("token", "create", "--user", "zed"))
    (tmp_path / "main.py").write_text("def handler(event, context):\n    return 1\n")
    Client(plane.url, zed).deploy(zip_folder(tmp_path), {"name": "resize"})
    mine = plane.ok("ls", token=zed).stdout
    row = next(line for line in mine.splitlines() if "resize" in line)
    assert row.split("│")[1:3] == [" zeta   ", " resize "] or row.split()[1:4:2] == ["zeta", "resize"], mine
    assert "/v1/functions/zeta/resize/invoke" in row
    assert "zeta" not in plane.ok("ls").stdout  # the admin's own tenant: default
    every = plane.ok("ls", "--tenant", "*").stdout
    assert "zeta" in every and "resize" in every
    assert "resize" in plane.ok("ls", "--tenant", "zeta").stdout
    plane.ok("logs", "zeta/resize")
    assert "deleted zeta/resize" in plane.ok("rm", "zeta/resize").stdout
    assert "resize" not in plane.ok("ls", "--tenant", "zeta").stdout


def test_login_checks_the_token_then_stores_it_and_logout_forgets_it(plane: Plane) -> None:
    path = credentials_path()
    refused = _run("login", "--url", plane.url, "--token", "not-a-token")
    assert refused.exit_code == 1 and "nothing stored" in refused.stderr and "(HTTP 401)" in refused.stderr
    assert not path.exists()

    result = _run("login", "--url", plane.url, input=plane.token + "\n")  # asked for, unechoed
    assert result.exit_code == 0, result.output
    assert plane.token not in result.stdout and "as admin" in result.stdout and str(path) in result.stdout
    assert json.loads(path.read_text()) == {"url": plane.url, "token": plane.token}
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700
    assert "admin" in _ok("whoami").stdout  # no --url, no --token: the stored ones

    _ok("user", "create", "lou")
    lou = _secret(_ok("token", "create", "--user", "lou"))
    _ok("login", "--token", lou)  # the URL logged in to before
    assert json.loads(path.read_text()) == {"url": plane.url, "token": lou}
    assert "lou" in _ok("whoami").stdout
    note = _ok("login", "--token", lou, env={"CUMULUS_URL": plane.url})
    assert "CUMULUS_URL is set" in note.stderr

    assert "logged out" in _ok("logout").stdout and not path.exists()
    assert "not logged in" in _ok("logout").stdout

    _ok("login", "--url", plane.url, "--token", lou)
    assert "revoked token" in _ok("logout", "--revoke").stdout and not path.exists()
    refused = plane.run("whoami", token=lou)
    assert refused.exit_code == 1 and "(HTTP 401)" in refused.stderr
