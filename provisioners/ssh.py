"""Bootstrap over SSH with paramiko: wait for a fresh machine's SSH, copy files, run a script as root.

Generic on purpose (used by the libcloud provider for drivers without user data; other providers,
e.g. qemu, may reuse it). Scripts travel on stdin, never on the command line, so secrets in them do
not show in the remote `ps` or in our logs; only sizes and exit statuses are logged.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from provisioners.base import ProviderError

log = logging.getLogger("cumulus.provisioners.ssh")


class SshError(ProviderError):
    """SSH to a node failed, or a script run over it exited non-zero."""


@dataclass(frozen=True, slots=True)
class SshSettings:
    """How to reach new nodes over SSH.

    `key_filename` is the private key; `public_key` (OpenSSH one-line form) is handed to clouds that
    install a key at creation. New machines have unknown host keys: they are accepted on first
    contact unless `known_hosts` names a file to check them against.
    """

    username: str = "debian"
    port: int = 22
    key_filename: str | None = None
    public_key: str | None = None
    password: str | None = None
    known_hosts: str | None = None
    sudo: bool = True
    connect_timeout_s: float = 10.0
    ready_timeout_s: float = 300.0
    command_timeout_s: float = 1200.0


@dataclass(frozen=True, slots=True)
class ScriptResult:
    """What a remote script did: its exit status and (merged) output."""

    exit_status: int
    output: str


def connect(host: str, settings: SshSettings, *, port: int | None = None) -> Any:
    """A connected `paramiko.SSHClient`, retrying until SSH answers or `ready_timeout_s` passes."""
    import paramiko

    port = port or settings.port
    pkey = None
    if settings.key_filename:
        try:
            pkey = paramiko.PKey.from_path(settings.key_filename)
        except (OSError, paramiko.SSHException, ValueError) as exc:
            raise SshError(f"cannot load the SSH key {settings.key_filename}: {exc}") from exc
    deadline = time.monotonic() + settings.ready_timeout_s
    attempt = 0
    while True:
        attempt += 1
        client = paramiko.SSHClient()
        if settings.known_hosts:
            client.load_host_keys(settings.known_hosts)
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        else:
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        try:
            timeout = settings.connect_timeout_s
            client.connect(host, port=port, username=settings.username, pkey=pkey, password=settings.password,
                           timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
                           allow_agent=False, look_for_keys=False)
            log.info("event=ssh_connected host=%s port=%d attempts=%d", host, port, attempt)
            return client
        except paramiko.AuthenticationException as exc:
            client.close()
            raise SshError(f"ssh to {settings.username}@{host}:{port} "
                           f"refused the credentials: {exc}") from exc
        except (OSError, paramiko.SSHException, EOFError) as exc:
            client.close()
            if time.monotonic() + 1 > deadline:
                raise SshError(f"ssh to {host}:{port} did not answer within "
                               f"{settings.ready_timeout_s:.0f} s: {exc}") from exc
            time.sleep(min(2.0, 0.2 * attempt))


def put_bytes(client: Any, data: bytes, remote_path: str, *, mode: int = 0o600) -> None:
    """Write `data` to `remote_path` over SFTP with `mode` (set before the content is written)."""
    with client.open_sftp() as sftp, sftp.open(remote_path, "wb") as f:
        f.chmod(mode)
        f.write(data)
    log.info("event=ssh_put path=%s bytes=%d", remote_path, len(data))


class SessionLost(SshError):
    """The SSH connection dropped before the remote command started: safe to retry on a new one."""


def run(client: Any, command: str, *, stdin: bytes = b"", timeout_s: float = 1200.0) -> ScriptResult:
    """Run `command` on a connected client, feeding `stdin`; bounded by `timeout_s`.

    Raises `SessionLost` if the connection drops before the server accepted the command (nothing
    ran), `SshError` if it drops later or the command does not finish in time. A server hanging up
    right after sending the exit status is normal, not an error.
    """
    import paramiko

    transient = (OSError, EOFError, paramiko.SSHException)
    chan = None
    try:
        chan = client.get_transport().open_session()
        chan.settimeout(timeout_s)
        chan.set_combine_stderr(True)
        chan.exec_command(command)
    except transient as exc:
        _close_quietly(chan)
        raise SessionLost(f"the SSH session closed before {command!r} started: {exc!r}") from exc
    out = bytearray()
    try:
        if stdin:
            chan.sendall(stdin)
        chan.shutdown_write()
        deadline = time.monotonic() + timeout_s
        while True:
            chunk = chan.recv(65536)
            if not chunk:
                break
            out += chunk
            if time.monotonic() > deadline:
                raise TimeoutError
        status = chan.recv_exit_status()
    except TimeoutError as exc:
        raise SshError(f"remote command did not finish within {timeout_s:.0f} s") from exc
    except transient as exc:
        tail = "\n".join(out.decode(errors="replace").splitlines()[-20:])
        raise SshError(f"the SSH connection dropped while {command!r} ran: {exc!r}\n{tail}") from exc
    finally:
        _close_quietly(chan)
    return ScriptResult(exit_status=status, output=out.decode(errors="replace"))


def _close_quietly(chan: Any) -> None:
    """Close a channel whose outcome is already known; the server may have hung up first."""
    if chan is None:
        return
    try:
        chan.close()
    except Exception as exc:  # paramiko raises EOFError, OSError or SSHException here
        log.debug("event=ssh_channel_close_failed error=%r", exc)


def run_script(host: str, script: str, settings: SshSettings, *, port: int | None = None,
               check: bool = True) -> ScriptResult:
    """Connect to `host` and run `script` with bash (as root through `sudo -n` unless `sudo=False`).

    Raises `SshError` if SSH never answers, or if `check` and the script exits non-zero (the error
    carries the last lines of its output).
    """
    command = "sudo -n bash -s" if settings.sudo else "bash -s"
    deadline = time.monotonic() + settings.ready_timeout_s
    for attempt in range(1, 1000):
        # A fresh machine's sshd may accept and then drop us (host keys regenerated, sshd restarted
        # by cloud-init): retry while nothing has run yet, bounded by the same readiness deadline.
        client = connect(host, settings, port=port)
        try:
            started = time.monotonic()
            result = run(client, command, stdin=script.encode(), timeout_s=settings.command_timeout_s)
            break
        except SessionLost as exc:
            if time.monotonic() + 1 > deadline:
                raise
            log.info("event=ssh_session_lost host=%s attempt=%d error=%s", host, attempt, exc)
            time.sleep(min(2.0, 0.2 * attempt))
        finally:
            client.close()
    else:  # pragma: no cover - the deadline ends the loop long before
        raise SshError(f"ssh to {host} kept dropping before the script started")
    log.info("event=ssh_script host=%s script_bytes=%d exit_status=%d duration_s=%.1f", host, len(script),
             result.exit_status, time.monotonic() - started)
    if check and result.exit_status != 0:
        tail = "\n".join(result.output.splitlines()[-20:])
        raise SshError(f"bootstrap script on {host} exited with {result.exit_status}:\n{tail}")
    return result
