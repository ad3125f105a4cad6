"""Functions' mail, from the control plane to a real SMTP server (aiosmtpd on loopback): what goes
out (the cluster's sender named after the function, the tenant and function in headers, Bcc only in
the envelope, HTML as an alternative), each malformed message refused as InvalidMail before it goes,
the relay's refusals and absence typed, mail not configured, and the per-tenant rate (its own quota
or the cluster's default, split between control planes) on a manual clock."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from smtp_relay import Relay

from control_plane.core import InvalidMail, MailNotConfigured, MailRelayError, ManualClock, QuotaExceeded
from control_plane.identity import Governor
from control_plane.services import MAX_RECIPIENTS, Mailer
from control_plane.services import Relay as RelayUrl
from control_plane.store import Tenant
from provisioners.net import free_port


def mailer(relay: str, *, per_min: int = 1000, tenants: tuple[Tenant, ...] = (), peers: int = 1,
           clock: ManualClock | None = None) -> Mailer:
    gov = Governor(clock or ManualClock(), peers=lambda: peers)
    gov.load(tenants)
    return Mailer(relay, sender="cumulus@example.test", governor=gov, per_min=per_min, timeout_s=10)


def send(m: Mailer, tenant: str = "acme", function: str = "acme/report", **doc: Any) -> dict[str, Any]:
    body = json.dumps({"to": "ops@example.test", "subject": "hi", "body": "hello", **doc}).encode()
    return asyncio.run(m.send(body, tenant=tenant, function=function, request_id="req-1"))


def test_a_message_goes_out_as_the_clusters_sender_named_after_the_function(smtp_server: Relay) -> None:
    before = len(smtp_server.messages())
    answer = send(mailer(smtp_server.url()), to=["a@example.test", "B <b@example.test>"], cc="c@example.test",
                  bcc=["hidden@example.test"], reply_to="owner@acme.test", subject="Nightly report ✓",
                  body="all green\n", html="<p>all <b>green</b></p>")
    got = smtp_server.wait(before + 1)[-1]
    assert answer["recipients"] == 4 and answer["message_id"] == got.message["Message-ID"]
    assert got.sender == "cumulus@example.test"
    assert sorted(got.recipients) == ["a@example.test", "b@example.test", "c@example.test",
                                      "hidden@example.test"]
    msg = got.message
    assert msg["From"] == "acme/report via Cumulus <cumulus@example.test>"
    assert msg["To"] == "a@example.test, b@example.test" and msg["Cc"] == "c@example.test"
    assert "Bcc" not in msg and "hidden" not in msg.as_string()
    assert msg["Reply-To"] == "owner@acme.test" and msg["Subject"] == "Nightly report ✓"
    assert (msg["X-Cumulus-Tenant"], msg["X-Cumulus-Function"], msg["X-Cumulus-Request-Id"]) == \
        ("acme", "acme/report", "req-1")
    assert msg.get_body(("plain",)).get_content().splitlines() == ["all green"]
    assert "<b>green</b>" in msg.get_body(("html",)).get_content()


def test_the_relay_may_ask_for_a_login(smtp_server: Relay) -> None:
    before = len(smtp_server.messages())
    send(mailer(smtp_server.url(auth=True)))
    assert smtp_server.wait(before + 1)[-1].authenticated == "relay-user"


@pytest.mark.parametrize(("doc", "says"), [
    ({"to": "nobody"}, "not an email address"),
    ({"to": "a@b@example.test"}, "not an email address"),
    ({"to": "a @example.test"}, "not an email address"),
    ({"to": "ops@example.test\r\nBcc: victim@example.test"}, "line break"),
    ({"cc": ["ok@example.test", "bad"]}, "cc:"),
    ({"bcc": "<>"}, "bcc:"),
    ({"reply_to": "not-an-address"}, "reply_to:"),
    ({"to": []}, "at least one recipient"),
    ({"to": [f"r{i}@example.test" for i in range(MAX_RECIPIENTS + 1)]}, f"at most {MAX_RECIPIENTS}"),
    ({"subject": "hi\r\nBcc: victim@example.test"}, "line break"),
    ({"subject": "x" * 999}, "subject"),
    ({"body": "x" * (256 * 1024 + 1)}, "body"),
    ({"body": 42}, "body"),
    ({"to": 7}, "to"),
    ({"attachments": []}, "attachments"),
])
def test_a_malformed_message_is_refused_before_anything_goes(smtp_server: Relay, doc: dict[str, Any],
                                                             says: str) -> None:
    before = len(smtp_server.messages())
    with pytest.raises(InvalidMail) as err:
        send(mailer(smtp_server.url()), **doc)
    assert says in err.value.message and err.value.status == 400
    assert len(smtp_server.messages()) == before


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b'{"to": "a@example.test"}'])
def test_a_body_that_is_no_message_is_invalid(smtp_server: Relay, body: bytes) -> None:
    with pytest.raises(InvalidMail):
        asyncio.run(mailer(smtp_server.url()).send(body, tenant="acme", function="acme/f"))


def test_mail_not_configured_is_said_so() -> None:
    with pytest.raises(MailNotConfigured) as err:
        send(mailer(""))
    assert err.value.status == 503 and "mail_relay" in err.value.message


def test_the_relay_refusing_every_recipient_is_invalid_mail(smtp_server: Relay) -> None:
    with pytest.raises(InvalidMail) as err:
        send(mailer(smtp_server.url()), to="refused@example.test")
    assert "refused@example.test" in err.value.message


def test_a_relay_that_does_not_answer_is_a_relay_error() -> None:
    with pytest.raises(MailRelayError) as err:
        send(mailer(f"smtp://127.0.0.1:{free_port()}"))
    assert err.value.status == 502


def test_the_relay_url_is_parsed() -> None:
    assert RelayUrl.parse("smtp://relay.example.test") == RelayUrl("relay.example.test", 25, False)
    assert RelayUrl.parse("smtps://u%40x:p%3Aw@relay:2465") == RelayUrl("relay", 2465, True, "u@x", "p:w")
    assert RelayUrl.parse("smtps://relay").port == 465
    for bad in ("http://relay", "smtp://", "relay:25"):
        with pytest.raises(ValueError):
            RelayUrl.parse(bad)


def _rate(m: Mailer, clock: ManualClock, tenant: str = "acme") -> tuple[int, float | None]:
    """Messages admitted in a row, and the Retry-After of the first refused."""
    for sent in range(10_000):
        try:
            m.governor.admit_mail(tenant, m.per_min)
        except QuotaExceeded as exc:
            assert exc.extra["quota"] == "mail_per_min"
            return sent, exc.retry_after_s
    raise AssertionError("never refused")


def test_a_tenant_sends_its_minutes_worth_then_waits() -> None:
    clock = ManualClock()
    m = mailer("", per_min=30, clock=clock)
    assert _rate(m, clock) == (30, pytest.approx(2.0))  # 30 a minute: one every 2 s
    clock.advance(2.0)
    assert _rate(m, clock)[0] == 1
    assert _rate(m, clock, "globex")[0] == 30  # each tenant its own


def test_a_tenants_quota_overrides_the_default_and_zero_forbids() -> None:
    clock = ManualClock()
    m = mailer("", per_min=30, clock=clock, tenants=(
        Tenant(name="acme", quotas={"mail_per_min": 5}), Tenant(name="quiet", quotas={"mail_per_min": 0})))
    assert _rate(m, clock)[0] == 5
    with pytest.raises(QuotaExceeded) as err:
        m.governor.admit_mail("quiet", m.per_min)
    assert err.value.status == 403


def test_control_planes_share_a_tenants_rate() -> None:
    clock = ManualClock()
    assert _rate(mailer("", per_min=30, clock=clock, peers=3), clock)[0] == 10


def test_a_refused_message_costs_no_credit(smtp_server: Relay) -> None:
    m = mailer(smtp_server.url(), per_min=1)
    with pytest.raises(InvalidMail):
        send(m, to="nobody")
    send(m)  # the one message of the minute
    with pytest.raises(QuotaExceeded):
        send(m)
