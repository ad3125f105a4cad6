"""Functions' mail (`context.services.mail.send`): a message checked whole, admitted within its
tenant's rate, and handed to the cluster's SMTP relay.

The function never holds a credential or a network route for this: its node's agent forwards the
request with the instance that made it, and the tenant is the one that instance's function
belongs to (see `node_agent.services`). The sender is always the cluster's (`mail_from`), named
after the function ("acme/report via Cumulus"); a function may set Reply-To. Every message names
its tenant and function in `X-Cumulus-Tenant` and `X-Cumulus-Function`.

Why aiosmtplib: an asyncio SMTP client that speaks STARTTLS, implicit TLS and AUTH, so the relay's
latency holds no thread of the control plane.
"""

from __future__ import annotations

import email.utils
import logging
import re
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, Field, ValidationError

from control_plane.core import InvalidMail, MailNotConfigured, MailRelayError
from control_plane.identity import Governor

__all__ = ["MAX_BODY_CHARS", "MAX_RECIPIENTS", "MailMessage", "Mailer", "Relay"]

log = logging.getLogger("cumulus.services.mail")

MAX_RECIPIENTS = 50  # to + cc + bcc of one message
MAX_BODY_CHARS = 256 * 1024  # of the text body, and of the HTML body
MAX_SUBJECT_CHARS = 998  # RFC 5322's line length
_ADDRESS = re.compile(r"^[^@\s<>()\[\],;:\\\"]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")

Recipients = str | list[str]


class MailMessage(BaseModel):
    """What a function asks to send."""

    model_config = {"extra": "forbid"}
    to: Recipients
    subject: str = Field(max_length=MAX_SUBJECT_CHARS)
    body: str = Field(max_length=MAX_BODY_CHARS)
    cc: Recipients | None = None
    bcc: Recipients | None = None
    reply_to: str | None = None
    html: str | None = Field(default=None, max_length=MAX_BODY_CHARS)


def _addresses(value: Recipients | None, what: str) -> list[str]:
    items = [value] if isinstance(value, str) else list(value or [])
    out = []
    for item in items:
        if "\r" in item or "\n" in item:
            raise InvalidMail(f"{what}: an address may not hold a line break")
        # "Name <addr>" or a bare address (then all of it is the address: "a @b" is none)
        addr = email.utils.parseaddr(item)[1] if "<" in item else item.strip()
        if not addr or not _ADDRESS.match(addr) or len(addr) > 254:
            raise InvalidMail(f"{what}: {item[:100]!r} is not an email address")
        out.append(addr)
    return out


@dataclass(frozen=True)
class Relay:
    """Where mail goes: parsed from `mail_relay` (smtp://[user:password@]host[:port], smtps://...)."""

    host: str
    port: int
    tls: bool  # TLS from the first byte (smtps); else STARTTLS when the relay offers it
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> Relay:
        """The relay of a `mail_relay` URL."""
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError(f"mail_relay {url!r}: want smtp://[user:password@]host[:port] or smtps://...")
        tls = parts.scheme == "smtps"
        return cls(host=parts.hostname, port=parts.port or (465 if tls else 25), tls=tls,
                   username=unquote(parts.username) if parts.username else None,
                   password=unquote(parts.password) if parts.password else None)


class Mailer:
    """Sends functions' mail through the relay, within each tenant's rate."""

    def __init__(self, relay: str, *, sender: str, governor: Governor, per_min: int,
                 timeout_s: float) -> None:
        self.relay = Relay.parse(relay) if relay else None
        self.sender = sender
        self.governor = governor
        self.per_min = per_min
        self.timeout_s = timeout_s
        self.sent = 0

    def parse(self, body: bytes) -> MailMessage:
        """The message of a request's body, or InvalidMail naming what is wrong."""
        try:
            return MailMessage.model_validate_json(body)
        except ValidationError as exc:
            faults = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'body'}: {e['msg']}"
                               for e in exc.errors()[:5])
            raise InvalidMail(f"not a message: {faults}") from None

    def build(self, msg: MailMessage, *, tenant: str, function: str,
              request_id: str) -> tuple[EmailMessage, list[str]]:
        """The message as it goes out (InvalidMail for a bad address or header)."""
        to, cc, bcc = _addresses(msg.to, "to"), _addresses(msg.cc, "cc"), _addresses(msg.bcc, "bcc")
        if not to:
            raise InvalidMail("to: give at least one recipient")
        if len(to) + len(cc) + len(bcc) > MAX_RECIPIENTS:
            raise InvalidMail(f"a message goes to at most {MAX_RECIPIENTS} recipients (to, cc and bcc), "
                              f"not {len(to) + len(cc) + len(bcc)}")
        if "\r" in msg.subject or "\n" in msg.subject:
            raise InvalidMail("subject: a subject may not hold a line break")
        out = EmailMessage()
        out["From"] = email.utils.formataddr((f"{function} via Cumulus", self.sender))
        out["To"] = ", ".join(to)
        if cc:
            out["Cc"] = ", ".join(cc)
        if msg.reply_to is not None:
            out["Reply-To"] = ", ".join(_addresses(msg.reply_to, "reply_to"))
        out["Subject"] = msg.subject
        out["Date"] = email.utils.formatdate(time.time(), usegmt=True)
        domain = self.sender.rpartition("@")[2] or "cumulus.invalid"
        out["Message-ID"] = email.utils.make_msgid(domain=domain)
        out["X-Cumulus-Tenant"] = tenant
        out["X-Cumulus-Function"] = function
        if request_id:
            out["X-Cumulus-Request-Id"] = request_id
        out.set_content(msg.body)
        if msg.html is not None:
            out.add_alternative(msg.html, subtype="html")
        return out, to + cc + bcc  # Bcc is only in the envelope, never in a header

    async def send(self, body: bytes, *, tenant: str, function: str, request_id: str = "") -> dict[str, Any]:
        """Check, admit and send one message; `{"message_id", "recipients"}` once the relay took it."""
        if self.relay is None:
            raise MailNotConfigured("this cluster sends no mail: its administrator has not set mail_relay "
                                    "(an SMTP relay, smtp://host:port)")
        msg = self.parse(body)
        out, recipients = self.build(msg, tenant=tenant, function=function, request_id=request_id)
        self.governor.admit_mail(tenant, self.per_min)  # only a message that could go counts
        await self._deliver(out, recipients)
        self.sent += 1
        log.info("event=mail_sent tenant=%s function=%s recipients=%d message_id=%s", tenant, function,
                 len(recipients), out["Message-ID"])
        return {"message_id": out["Message-ID"], "recipients": len(recipients)}

    async def _deliver(self, out: EmailMessage, recipients: list[str]) -> None:
        import aiosmtplib

        relay = self.relay
        assert relay is not None
        try:
            await aiosmtplib.send(out, sender=self.sender, recipients=recipients, hostname=relay.host,
                                  port=relay.port, username=relay.username, password=relay.password,
                                  use_tls=relay.tls, start_tls=False if relay.tls else None,
                                  timeout=self.timeout_s)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = ", ".join(sorted(r.recipient for r in exc.recipients))
            raise InvalidMail(f"the relay refused every recipient: {refused}") from None
        except aiosmtplib.SMTPResponseException as exc:
            raise MailRelayError(f"the mail relay refused the message: {exc.code} {exc.message}") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise MailRelayError(f"the mail relay {relay.host}:{relay.port} did not take the message: "
                                 f"{exc}") from None
