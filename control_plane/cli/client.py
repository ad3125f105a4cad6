"""A small synchronous client of the REST API, used by the CLI (not on the invocation hot path)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from control_plane.core import default_data_dir


class ClientError(Exception):
    """The API answered with an error, or could not be reached."""

    def __init__(self, status: int, kind: str, message: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(f"{kind}: {message}")
        self.status = status
        self.kind = kind
        self.message = message
        self.extra = extra or {}


@dataclass
class Client:
    """Talks to one control plane with one token."""

    url: str
    token: str
    timeout_s: float = 960.0

    @classmethod
    def from_env(cls, data_dir: Path | None = None) -> Client:
        """`CUMULUS_URL` / `CUMULUS_TOKEN`, falling back to the local data directory."""
        data = data_dir or default_data_dir()
        url = os.environ.get("CUMULUS_URL", "")
        if not url and (data / "endpoint").exists():
            url = (data / "endpoint").read_text().strip()
        token = os.environ.get("CUMULUS_TOKEN", "")
        if not token and (data / "admin.token").exists():
            token = (data / "admin.token").read_text().strip()
        if not url:
            url = "http://127.0.0.1:8080"
        if not token:
            raise ClientError(0, "NoToken", f"no token: set CUMULUS_TOKEN or run `cumulus up` "
                                            f"(it writes {data / 'admin.token'})")
        return cls(url.rstrip("/"), token)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One API call; errors become ClientError with the API's type and message."""
        headers = kwargs.pop("headers", {})
        headers["Authorization"] = f"Bearer {self.token}"
        try:
            resp = requests.request(method, self.url + path, headers=headers, timeout=self.timeout_s,
                                    **kwargs)
        except requests.RequestException as exc:
            raise ClientError(0, "Unreachable", f"cannot reach {self.url}: {exc}") from exc
        if resp.status_code >= 400:
            try:
                err = resp.json()["error"]
                extra = {k: v for k, v in err.items() if k not in ("type", "message")}
                raise ClientError(resp.status_code, err["type"], err["message"], extra)
            except (ValueError, KeyError, TypeError):
                raise ClientError(resp.status_code, "HTTPError", resp.text[:500]) from None
        return resp

    def deploy(self, code_zip: bytes, config: dict[str, Any]) -> dict[str, Any]:
        """Upload a new version."""
        files = {"code": ("code.zip", code_zip, "application/zip")}
        resp = self.request("POST", "/v1/functions", files=files, data={"config": json.dumps(config)})
        return resp.json()  # type: ignore[no-any-return]

    def invoke(self, name: str, event: bytes) -> requests.Response:
        """Invoke a function; returns the raw response (result JSON and headers)."""
        return self.request("POST", f"/v1/functions/{name}/invoke", data=event,
                            headers={"Content-Type": "application/json"})

    def get(self, path: str) -> Any:
        """GET and decode JSON."""
        return self.request("GET", path).json()

    def delete(self, path: str) -> None:
        """DELETE."""
        self.request("DELETE", path)
