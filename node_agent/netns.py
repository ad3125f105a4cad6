"""A listening socket inside another process's network namespace (a container's), made by the node.

The node agent serves the Lambda Runtime API to an image function on 127.0.0.1 *inside* the
function's own namespace, so the function needs no network at all to reach it and nothing else can:
a short-lived thread enters the namespace (`setns`, as root), binds and listens, and ends; the
socket stays in that namespace and the agent's event loop serves it.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading

CLONE_NEWNET = 0x40000000


class NetnsError(OSError):
    """The socket could not be made inside the namespace."""


def listen_in(pid: int, host: str, port: int, backlog: int = 64) -> socket.socket:
    """A TCP socket listening on `host:port` in the network namespace of process `pid`."""
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def enter_and_listen() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            failed.append(exc)
            return
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                failed.append(NetnsError(err, f"setns into process {pid}'s network: {os.strerror(err)}"))
                return
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
                sock.listen(backlog)
            except OSError as exc:
                sock.close()
                failed.append(exc)
                return
            sock.setblocking(False)
            made.append(sock)
        finally:
            os.close(fd)
        # The thread ends in the other namespace: nothing else runs on it.

    thread = threading.Thread(target=enter_and_listen, name=f"cumulus-netns-{pid}", daemon=True)
    thread.start()
    thread.join(timeout=10)
    if made:
        return made[0]
    if failed:
        raise NetnsError(f"listening in process {pid}'s network namespace: {failed[0]}") from failed[0]
    raise NetnsError(f"listening in process {pid}'s network namespace did not finish")
