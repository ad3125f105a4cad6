"""Fixtures of the VM tier: the cached VM image, and a tiny code server reachable from guests."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator

import pytest
from code_server import CodeServer
from helpers import free_port, guest_software, make_zip

from node_agent.image import default_cache_dir
from provisioners.qemu.image import VmImage, ensure_vm_image
from provisioners.qemu.software import GuestSoftware

NETPROBE = """
import socket

def handler(event, context):
    out = {"routes": [r.split()[:2] for r in open("/proc/net/route").read().splitlines()[1:]]}
    for host, port in event["targets"]:
        s = socket.socket()
        s.settimeout(10)
        try:
            s.connect((host, port))
            out[f"{host}:{port}"] = "connected"
        except OSError as exc:
            out[f"{host}:{port}"] = f"{type(exc).__name__}: {exc}"
        finally:
            s.close()
    return out
"""

HELLO = """
def handler(event, context):
    name = (event or {}).get("name", "world")
    return {"message": f"Hello, {name}!", "function": context.function_name}
"""


@pytest.fixture(scope="session")
def software(tmp_path_factory: pytest.TempPathFactory) -> GuestSoftware:
    """What the control plane hands the qemu provider: runtime image and agent wheel."""
    return guest_software(tmp_path_factory.mktemp("agent-package"))


@pytest.fixture(scope="session")
def vm_image(software: GuestSoftware) -> VmImage:
    """The VM image (built on first use, ~2 min; cached by content hash afterwards)."""
    return ensure_vm_image(default_cache_dir(), software)


@pytest.fixture(scope="session")
def code_server() -> Iterator[CodeServer]:
    """A loopback HTTP server holding the hello function's code."""
    body = make_zip({"main.py": HELLO})
    digest = hashlib.sha256(body).hexdigest()[:16]
    probe = make_zip({"main.py": NETPROBE})
    probe_digest = hashlib.sha256(probe).hexdigest()[:16]
    zips = {f"/code/{digest}.zip": body, f"/code/{probe_digest}.zip": probe}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path not in zips:
                self.send_error(404)
                return
            body = zips[self.path]
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield CodeServer(port=server.server_address[1], digest=digest, probe_digest=probe_digest)
    finally:
        server.shutdown()
        server.server_close()
