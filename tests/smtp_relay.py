"""A real SMTP server for tests (aiosmtpd, on 127.0.0.1 in a thread of the test process): what the
platform's mail relay receives. A recipient whose local part starts with "refused" is refused (550),
as a relay refuses an unknown mailbox; AUTH is offered (without TLS, on loopback) and takes
`relay-user` / `relay-secret` only."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from provisioners.net import free_port

USER, SECRET = "relay-user", "relay-secret"


@dataclass
class Received:
    """One message as the relay got it: the envelope and the parsed message."""

    sender: str
    recipients: list[str]
    message: EmailMessage
    authenticated: str | None


@dataclass
class Relay:
    """The running server and what it received."""

    host: str
    port: int
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, *, auth: bool = False) -> str:
        """Its `mail_relay` URL."""
        cred = f"{USER}:{SECRET}@" if auth else ""
        return f"smtp://{cred}{self.host}:{self.port}"

    def messages(self) -> list[Received]:
        """What it received so far."""
        with self.lock:
            return list(self.received)

    def wait(self, count: int, timeout_s: float = 30) -> list[Received]:
        """Once at least `count` messages came (AssertionError after `timeout_s`)."""
        deadline = time.monotonic() + timeout_s
        while len(self.messages()) < count:
            assert time.monotonic() < deadline, \
                f"the relay got {len(self.messages())} message(s), not {count}"
            time.sleep(0.05)
        return self.messages()


class _Handler:
    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address.split("@")[0].startswith("refused"):
            return "550 5.1.1 no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        with self.relay.lock:
            self.relay.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), msg,
                                                USER if session.authenticated else None))
        return "250 OK: queued"


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    if isinstance(auth_data, LoginPassword) and auth_data.login.decode() == USER and \
            auth_data.password.decode() == SECRET:
        return AuthResult(success=True)
    return AuthResult(success=False, handled=False)


@contextmanager
def smtp_relay() -> Iterator[Relay]:
    """Serve until the block ends."""
    relay = Relay("127.0.0.1", free_port())
    controller = Controller(_Handler(relay), hostname=relay.host, port=relay.port,
                            authenticator=_authenticate, auth_require_tls=False, auth_required=False)
    controller.start()
    try:
        yield relay
    finally:
        controller.stop()
