"""The door of async calls, in-process (no node: the calls stay queued): an `Idempotency-Key` makes
a call accepted once per key and function (sent again, the same request id and nothing queued),
the same key of another function is another call, and a malformed key is a 400 before anything is
queued."""

from __future__ import annotations

from conftest import Api, error

EVENT = {"X-Cumulus-Invocation-Type": "Event"}


def _send(api: Api, name: str, key: str | None, body: bytes = b'{"n": 1}') -> object:
    headers = {**api.headers, **EVENT, **({"Idempotency-Key": key} if key is not None else {})}
    return api.client.post(f"/v1/functions/{name}/invoke", content=body, headers=headers)


def _calls(api: Api, name: str) -> list[dict[str, object]]:
    resp = api.client.get(f"/v1/functions/{name}/invocations", headers=api.headers)
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


def test_an_idempotency_key_accepts_a_call_once_per_function(api: Api) -> None:
    for name in ("orders", "refunds"):
        assert api.deploy(name).status_code == 201
    first = _send(api, "orders", "order-1:retry.ok")
    again = _send(api, "orders", "order-1:retry.ok", b'{"n": 2}')  # even with another event: the same call
    assert first.status_code == again.status_code == 202, first.text  # type: ignore[attr-defined]
    rid = first.json()["request_id"]  # type: ignore[attr-defined]
    assert again.json()["request_id"] == rid  # type: ignore[attr-defined]
    other = _send(api, "refunds", "order-1:retry.ok").json()["request_id"]  # type: ignore[attr-defined]
    assert other != rid
    plain = {_send(api, "orders", None).json()["request_id"] for _ in range(2)}  # type: ignore[attr-defined]
    assert len(plain) == 2  # no key: each call is its own
    assert sorted(c["request_id"] for c in _calls(api, "orders")) == sorted({rid, *plain})


def test_a_malformed_key_is_refused_before_anything_is_queued(api: Api) -> None:
    assert api.deploy("strict").status_code == 201
    for bad in ("", "x" * 129, "has space", "semi;colon", "slash/y"):
        error(_send(api, "strict", bad), 400, "InvalidRequest")
    assert _calls(api, "strict") == []
