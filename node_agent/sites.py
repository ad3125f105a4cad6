"""An aiohttp site with a cap on its open connections, for servers whose clients are not trusted.

The agent serves function code on sockets of its own (an image's Runtime API, the services every
instance may call): each connection a function opens is a file descriptor of the agent, so each
such server holds at most `max_connections`; the ones over it are closed as they arrive.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from aiohttp import web

__all__ = ["BoundedSockSite"]

log = logging.getLogger("cumulus.sites")


class _Refused(asyncio.Protocol):
    """A connection over the site's limit: closed at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.WriteTransport):
            transport.abort()  # frees the descriptor now, without a lingering close
        else:
            transport.close()


class BoundedSockSite(web.BaseSite):
    """`web.SockSite` (TCP or unix) with a cap on open connections (a soft cap: a burst of accepts
    may pass it by at most the backlog before the count catches up)."""

    def __init__(self, runner: web.AppRunner, sock: socket.socket, *, max_connections: int,
                 backlog: int, what: str = "server") -> None:
        super().__init__(runner, backlog=backlog)
        self._app_runner = runner
        self._listen_sock = sock
        self._listen_backlog = backlog
        self._max_connections = max_connections
        self._what = what
        address = sock.getsockname()
        if sock.family == socket.AF_UNIX:
            self._site_name = f"unix:{address}"
        else:
            self._site_name = f"http://{address[0]}:{address[1]}"

    @property
    def name(self) -> str:
        """The site's address, as a URL."""
        return self._site_name

    async def start(self) -> None:
        """Serve on the socket."""
        await super().start()
        server = self._app_runner.server
        assert server is not None

        def factory() -> asyncio.BaseProtocol:
            if len(server.connections) >= self._max_connections:
                log.warning("event=connection_refused server=%s open=%d", self._what, len(server.connections))
                return _Refused()
            return server()

        loop = asyncio.get_running_loop()
        if self._listen_sock.family == socket.AF_UNIX:
            self._server = await loop.create_unix_server(factory, sock=self._listen_sock,
                                                         backlog=self._listen_backlog)
        else:
            self._server = await loop.create_server(factory, sock=self._listen_sock,
                                                    backlog=self._listen_backlog)
