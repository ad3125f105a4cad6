"""A loopback HTTP proxy in front of moto that writes the EC2 XML namespace the way real EC2 does
(with its trailing slash), so libcloud's EC2 driver in a control-plane subprocess can parse moto's
answers. Tests only: product code carries no such patch (see shared/ENVIRONMENT.md)."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MOTO_NS = b'xmlns="http://ec2.amazonaws.com/doc/2016-11-15"'
EC2_NS = b'xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"'


class NamespaceProxy:
    """Forwards every request to moto at `host:port`; serves on 127.0.0.1:`self.port`."""

    def __init__(self, host: str, port: int) -> None:
        target = (host, port)

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
                conn = http.client.HTTPConnection(*target, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read().replace(MOTO_NS, EC2_NS)
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection", "server",
                                           "date"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = _forward

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
