"""`python -m provisioners.qemu.forward PORT`: one guest connection (on stdin/stdout, as QEMU's
`guestfwd=...-cmd:` hands it over) relayed to 127.0.0.1:PORT on the host, both ways, until either
side closes. Used by `GuestForward`: a service of the host at a virtual address inside the guests."""

from __future__ import annotations

import os
import socket
import sys
import threading


def relay(port: int) -> None:
    """Copy stdin to the socket and the socket to stdout until both directions end."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=30)
    conn.settimeout(None)

    def upstream() -> None:
        while data := os.read(0, 65536):
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=upstream, daemon=True)
    thread.start()
    while data := conn.recv(65536):
        os.write(1, data)
    conn.close()


if __name__ == "__main__":
    relay(int(sys.argv[1]))
