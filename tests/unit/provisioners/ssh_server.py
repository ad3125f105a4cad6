"""A loopback SSH server (paramiko) that records the commands and stdin it gets, without running them.

Enough to test the SSH bootstrap plumbing (key auth, exec, script on stdin, exit status) without a
VM and without executing a bootstrap script on the test machine.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from types import TracebackType

import paramiko


class _Handler(paramiko.ServerInterface):
    def __init__(self, allowed: paramiko.PKey, hang_up: paramiko.Transport | None = None) -> None:
        self.allowed = allowed
        self.hang_up = hang_up
        self.command: str | None = None
        self.exec_event = threading.Event()

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if username == "debian" and key == self.allowed:
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        if self.hang_up is not None:  # like an sshd restarted under us: the command never starts
            self.hang_up.close()
            return False
        self.command = command.decode()
        self.exec_event.set()
        return True


class LoopbackSshServer:
    """SSH on 127.0.0.1:<free port>; `commands` and `scripts` record each exec and its stdin."""

    def __init__(self, tmp: Path) -> None:
        self.host_key = paramiko.ECDSAKey.generate()
        client_key = paramiko.ECDSAKey.generate()
        self.client_key_path = tmp / "id_ecdsa"
        client_key.write_private_key_file(str(self.client_key_path))
        self.allowed = paramiko.ECDSAKey(filename=str(self.client_key_path))
        self.exit_status = 0
        self.drop_sessions = 0  # close this many connections right after auth, before any command
        self.errors: list[BaseException] = []
        self.commands: list[str] = []
        self.scripts: list[str] = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self._sock.settimeout(0.2)
        self.port = int(self._sock.getsockname()[1])
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> LoopbackSshServer:
        self._accept.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._accept.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._session, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _session(self, conn: socket.socket) -> None:
        transport = paramiko.Transport(conn)
        transport.add_server_key(self.host_key)
        hang_up = self.drop_sessions > 0
        self.drop_sessions -= hang_up
        handler = _Handler(self.allowed, transport if hang_up else None)
        try:
            transport.start_server(server=handler)
            if hang_up:
                transport.accept(30)
                return
            chan = transport.accept(60)
            if chan is None or not handler.exec_event.wait(60):
                self.errors.append(TimeoutError("no session or no exec request within 60 s"))
                return
            chan.settimeout(60)
            data = bytearray()
            while chunk := chan.recv(65536):
                data += chunk
            self.commands.append(handler.command or "")
            self.scripts.append(data.decode())
            chan.sendall(b"cumulus-bootstrap: event=agent_started\n")
            chan.send_exit_status(self.exit_status)
            chan.close()
        except Exception as exc:  # kept for the test's failure message, not swallowed silently
            self.errors.append(exc)
            raise
        finally:
            transport.close()
