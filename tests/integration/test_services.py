"""Services for functions through `cumulus up`, a node agent and Docker, to a real SMTP server on
loopback: a function with no network at all sends mail and writes structured log entries; the mail
goes out as its own tenant (a function that writes to its services socket by hand, naming another
tenant's function, still sends as its own); each tenant has its own rate (its quota, or the cluster's
default); a cluster without a relay answers MailNotConfigured. The rules case by case:
tests/unit/test_mail.py; the socket between shim and agent: tests/contract/test_services_wire.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from helpers import RunningPlatform, start_platform, wait_for
from smtp_relay import Relay

pytestmark = pytest.mark.docker

MAILER = {"main.py": '''
import json, socket

def handler(event, context):
    s = context.services
    s.log("info", "mailing", to=event.get("to"), attempt=event.get("n", 0))
    if event.get("forge"):  # straight to the socket, claiming to be another tenant's function
        raw = socket.socket(socket.AF_UNIX)
        raw.connect("/run/fn/services.sock")
        body = json.dumps({"to": "ops@example.test", "subject": "forged", "body": "b"}).encode()
        raw.sendall(b"POST /v1/mail HTTP/1.1\\r\\nHost: x\\r\\nX-Cumulus-Function: globex/mailer\\r\\n"
                    b"X-Cumulus-Instance: mailer-000000000000000000\\r\\n"
                    b"Content-Length: " + str(len(body)).encode() + b"\\r\\n\\r\\n" + body)
        answer = raw.recv(65536).decode()
        raw.close()
        return {"raw": answer.split("\\r\\n")[0]}
    try:
        return {"id": s.mail.send(to=event.get("to", "ops@example.test"),
                                  subject="report " + str(event.get("n")), body="all green")}
    except s.Error as exc:
        s.log("error", "mail refused", type=exc.type)
        return {"type": exc.type, "status": exc.status, "retry_after_s": exc.retry_after_s,
                "message": exc.message}
'''}


@pytest.fixture(scope="module")
def mailing(tmp_path_factory: pytest.TempPathFactory, docker_engine: None,
            smtp_server: Relay) -> Iterator[RunningPlatform]:
    plat = start_platform(tmp_path_factory.mktemp("services") / "cp",
                          extra_env={"CUMULUS_MAIL_RELAY": smtp_server.url(), "CUMULUS_MAIL_PER_MIN": "100",
                                     "CUMULUS_MAIL_FROM": "functions@cumulus.test"})
    try:
        for tenant, quotas in (("acme", {"mail_per_min": 2}), ("globex", {})):
            resp = requests.post(f"{plat.url}/v1/tenants", headers=plat.headers, timeout=30,
                                 json={"name": tenant, "quotas": quotas})
            assert resp.status_code == 201, resp.text
            plat.deploy_ok(f"{tenant}/mailer", MAILER, network="none", memory_mb=128, keep_alive_s=30)
        yield plat
    finally:
        plat.stop()


def _call(plat: RunningPlatform, name: str, event: dict[str, Any]) -> Any:
    resp = plat.invoke(name, event)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_a_function_without_network_mails_as_its_own_tenant_within_its_rate(
        mailing: RunningPlatform, smtp_server: Relay) -> None:
    before = len(smtp_server.messages())
    first = _call(mailing, "acme/mailer", {"n": 1, "to": "ann@example.test"})
    second = _call(mailing, "acme/mailer", {"n": 2})
    got = smtp_server.wait(before + 2)[before:]
    assert [m.message["Message-ID"] for m in got] == [first["id"], second["id"]]
    msg = got[0].message
    assert (msg["X-Cumulus-Tenant"], msg["X-Cumulus-Function"]) == ("acme", "acme/mailer")
    assert msg["From"] == "acme/mailer via Cumulus <functions@cumulus.test>" and got[0].recipients == [
        "ann@example.test"]
    # acme's quota: 2 a minute. The third is refused, typed, with when to try again.
    third = _call(mailing, "acme/mailer", {"n": 3})
    assert third["type"] == "QuotaExceeded" and third["status"] == 429 and third["retry_after_s"] >= 1
    # globex has the cluster's default (100 a minute): its own, untouched by acme's.
    for n in range(3):
        assert "id" in _call(mailing, "globex/mailer", {"n": n})
    got = smtp_server.wait(before + 5)
    assert [m.message["X-Cumulus-Tenant"] for m in got[before + 2:]] == ["globex"] * 3


def test_a_forged_identity_on_the_socket_is_ignored(mailing: RunningPlatform, smtp_server: Relay) -> None:
    before = len(smtp_server.messages())
    answer = _call(mailing, "globex/mailer", {"forge": True})
    assert answer["raw"].startswith("HTTP/1.1 202"), answer
    [got] = smtp_server.wait(before + 1)[before:]
    assert got.message["Subject"] == "forged"
    assert (got.message["X-Cumulus-Tenant"], got.message["X-Cumulus-Function"]) == ("globex", "globex/mailer")


def test_log_entries_are_structured_lines_of_the_functions_logs(mailing: RunningPlatform) -> None:
    _call(mailing, "globex/mailer", {"n": 99, "to": "log@example.test"})

    def entry() -> dict[str, Any] | None:
        for record in mailing.get("/v1/functions/globex/mailer/logs?limit=100"):
            for line in record["logs"].splitlines():
                doc = json.loads(line)
                if doc.get("fields", {}).get("attempt") == 99:
                    return doc  # type: ignore[no-any-return]
        return None

    doc = wait_for(entry, 30, what="the log entry")
    assert doc["level"] == "INFO" and doc["message"] == "mailing"
    assert doc["fields"]["to"] == "log@example.test"
    assert doc["request_id"]


def test_without_a_relay_a_function_is_told_mail_is_not_configured(platform: RunningPlatform) -> None:
    platform.deploy_ok("nomail", MAILER, network="none", memory_mb=128, keep_alive_s=5)
    answer = _call(platform, "nomail", {"n": 1})
    assert answer["type"] == "MailNotConfigured" and answer["status"] == 503
    assert "mail_relay" in answer["message"]

