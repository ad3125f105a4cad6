"""The `cumulus` command's own surface, without a control plane: its version, global options and the
variables named in --help, every argument described, and one readable line (exit status 1) for a
URL that cannot work: no scheme, a port out of range, nothing listening, not an HTTP server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from control_plane.cli.app import app
from control_plane.core import version
from provisioners.net import free_port

runner = CliRunner()


def _run(*args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, list(args), env={"CUMULUS_URL": None, "CUMULUS_TOKEN": None,  # type: ignore[dict-item]
                                                 "COLUMNS": "200", **(env or {})}, prog_name="cumulus")


def test_version() -> None:
    result = _run("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"cumulus {version()}"


def test_help_names_the_global_options_and_variables() -> None:
    text = _run("--help").stdout
    for word in ("--url", "--token", "--version", "CUMULUS_URL", "CUMULUS_TOKEN", "CUMULUS_DATA_DIR"):
        assert word in text, word
    assert "CUMULUS_DATA_DIR" in _run("up", "--help").stdout


def test_every_argument_and_option_is_described() -> None:
    root = typer.main.get_command(app)
    commands: dict[str, Any] = getattr(root, "commands")  # noqa: B009 (typer vendors click: no isinstance)
    assert {"up", "deploy", "invoke", "ls", "rm", "logs", "nodes", "events", "simulate"} <= set(commands)
    missing = [f"{name} {param.name}" for name, command in [("", root), *commands.items()]
               for param in command.params if not getattr(param, "help", None)]
    assert not missing, missing


@pytest.fixture
def closing_server() -> Iterator[int]:
    """A loopback port that accepts and closes without answering (not an HTTP server)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(10)

    def serve() -> None:
        for _ in range(20):  # bounded: the test makes one request
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.recv(1024)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield int(server.getsockname()[1])
    server.close()


@pytest.mark.parametrize(("url", "said"), [
    ("127.0.0.1:8080", "has no http:// or https:// scheme"),
    ("http://127.0.0.1:99999", "is not a valid URL"),
    ("http://127.0.0.1:0", "port 0"),
    ("http://:8080", "names no host"),
    ("refused", "connection refused"),
    ("closing", "closed without an HTTP answer"),
])
def test_a_url_that_cannot_work_is_one_readable_line(url: str, said: str, closing_server: int) -> None:
    if url == "refused":
        url = f"http://127.0.0.1:{free_port()}"
    elif url == "closing":
        url = f"http://127.0.0.1:{closing_server}"
    for args, env in ((("--url", url, "--token", "t", "ls"), {}), (("ls",), {"CUMULUS_URL": url,
                                                                            "CUMULUS_TOKEN": "t"})):
        result = _run(*args, env=env)
        assert result.exit_code == 1, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and said in lines[0], result.stderr
        assert "Traceback" not in result.output and "HTTPConnectionPool" not in result.stderr


def test_no_token_says_where_one_comes_from(tmp_path: Path) -> None:
    result = _run("ls", env={"CUMULUS_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 1
    assert "--token" in result.stderr and "CUMULUS_TOKEN" in result.stderr and str(tmp_path) in result.stderr


def test_the_flags_win_over_the_variables_and_the_data_directory(tmp_path: Path, closing_server: int) -> None:
    (tmp_path / "endpoint").write_text("http://127.0.0.1:1\n")
    (tmp_path / "admin.token").write_text("from-file\n")
    env = {"CUMULUS_DATA_DIR": str(tmp_path)}
    assert "127.0.0.1:1:" in _run("ls", env=env).stderr  # the data directory's endpoint
    target = f"http://127.0.0.1:{closing_server}"
    assert target in _run("ls", env={**env, "CUMULUS_URL": target}).stderr
    assert target in _run("--url", target, "ls", env={**env, "CUMULUS_URL": "http://127.0.0.1:1"}).stderr


def test_a_malformed_secret_env_is_not_repeated(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("def handler(event, context):\n    return 1\n")
    result = _run("--url", "http://127.0.0.1:1", "--token", "t", "deploy", str(tmp_path), "--name", "x",
                  "--secret-env", "hunter2-no-key")
    assert result.exit_code == 1 and "--secret-env expects KEY=VALUE" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    result = _run("--url", "http://127.0.0.1:1", "--token", "t", "deploy", str(tmp_path), "--name", "x",
                  "--env", "NOSEP")
    assert result.exit_code == 1 and "--env expects KEY=VALUE, got 'NOSEP'" in result.stderr
