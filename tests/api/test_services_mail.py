"""The control plane's mail route for node agents, in-process, to a real SMTP server: a node sends
as the tenant of an instance placed on it only (never one of another node, nor one whose id does not
match its function), a request without its instance is refused, users' tokens open nothing here,
and every refusal is typed."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from conftest import Api, error, serve
from smtp_relay import Relay

from node_agent import protocol as p


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, smtp_server: Relay) -> Iterator[Api]:
    yield from serve(tmp_path_factory.mktemp("mail"), mail_relay=smtp_server.url(), mail_per_min=3)


def _join(api: Api, node_id: str) -> dict[str, str]:
    token = api.platform.store.issue_join_token(f"req-{uuid.uuid4().hex}", "test", "t", ttl_s=60)
    resp = api.client.post("/v1/internal/join",
                           json={"join_token": token, "url": "http://127.0.0.1:9",
                                 "provider_node_id": node_id})
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {node_id}:{resp.json()['node_secret']}"}


MESSAGE = json.dumps({"to": "ops@example.test", "subject": "s", "body": "b"})


def _mail(api: Api, headers: dict[str, str], instance: str, function: str, body: str = MESSAGE) -> object:
    return api.client.post(p.MAIL_ROUTE, content=body, headers={
        **headers, p.INSTANCE_HEADER: instance, p.FUNCTION_HEADER: function,
        "Content-Type": "application/json"})


def test_a_node_sends_as_the_tenant_of_its_own_instance(api: Api, smtp_server: Relay) -> None:
    node = _join(api, "n-mail")
    before = len(smtp_server.messages())
    instance = api.platform.keys.instance_id("acme/report", "n-mail")
    resp = _mail(api, node, instance, "acme/report")
    assert resp.status_code == 202, resp.text  # type: ignore[attr-defined]
    got = smtp_server.wait(before + 1)[-1].message
    assert (got["X-Cumulus-Tenant"], got["X-Cumulus-Function"]) == ("acme", "acme/report")
    assert resp.json()["message_id"] == got["Message-ID"]  # type: ignore[attr-defined]


def test_a_node_cannot_send_as_another_instance_or_function(api: Api, smtp_server: Relay) -> None:
    node = _join(api, "n-liar")
    before = len(smtp_server.messages())
    elsewhere = api.platform.keys.instance_id("acme/report", "n-other")
    mine_of_globex = api.platform.keys.instance_id("globex/spam", "n-liar")
    for instance, function in ((elsewhere, "acme/report"),  # placed on another node
                               (mine_of_globex, "acme/report"),  # its own, but of another function
                               ("report-0123456789ab01234567", "acme/report")):  # made up
        error(_mail(api, node, instance, function), 403, "Forbidden")
    error(api.client.post(p.MAIL_ROUTE, content=MESSAGE, headers=node), 400, "InvalidRequest")
    error(_mail(api, api.headers, elsewhere, "acme/report"), 401, "Unauthorized")  # a user's token
    assert len(smtp_server.messages()) == before


def test_refusals_are_typed_and_the_tenants_rate_holds(api: Api) -> None:
    node = _join(api, "n-rate")
    instance = api.platform.keys.instance_id("initech/news", "n-rate")
    err = error(_mail(api, node, instance, "initech/news", MESSAGE.replace("ops@example.test", "x")), 400,
                "InvalidMail")
    assert "not an email address" in err["message"]
    for _ in range(3):  # mail_per_min=3
        assert _mail(api, node, instance, "initech/news").status_code == 202  # type: ignore[attr-defined]
    resp = _mail(api, node, instance, "initech/news")
    error(resp, 429, "QuotaExceeded")
    assert int(resp.headers["Retry-After"]) >= 1  # type: ignore[attr-defined]


def test_without_a_relay_mail_is_not_configured(tmp_path_factory: pytest.TempPathFactory) -> None:
    for bare in serve(tmp_path_factory.mktemp("nomail")):
        node = _join(bare, "n-bare")
        instance = bare.platform.keys.instance_id("acme/report", "n-bare")
        err = error(_mail(bare, node, instance, "acme/report"), 503, "MailNotConfigured")
        assert "mail_relay" in err["message"]
