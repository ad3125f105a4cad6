"""A small synchronous client of the REST API, used by the CLI (not on the invocation hot path), and
the credentials file `cumulus login` writes.

Every failure is a `ClientError` whose message is one readable line: the API's own error type and
message, or what went wrong reaching it (a URL without a scheme, a port out of range, nothing
listening, an unknown host), never the HTTP library's text.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from control_plane.core import DEFAULT_PORT, default_data_dir

DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}"


class ClientError(Exception):
    """The API answered with an error, or could not be reached."""

    def __init__(self, status: int, kind: str, message: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(f"{kind}: {message}")
        self.status = status
        self.kind = kind
        self.message = message
        self.extra = extra or {}


def check_url(url: str) -> str:
    """`url` without a trailing slash, or ClientError(BadUrl) saying what is wrong with it."""
    hint = f"give a URL such as {DEFAULT_URL}"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError when it is not a number from 0 to 65535
    except ValueError as exc:
        raise ClientError(0, "BadUrl", f"{url!r} is not a valid URL ({exc}); {hint}") from None
    if parts.scheme not in ("http", "https"):
        raise ClientError(0, "BadUrl", f"{url!r} has no http:// or https:// scheme; {hint}")
    if not parts.hostname:
        raise ClientError(0, "BadUrl", f"{url!r} names no host; {hint}")
    if port == 0:
        raise ClientError(0, "BadUrl", f"{url!r}: port 0 is not a port one can connect to; {hint}")
    return url.rstrip("/")


def function_path(ref: str, suffix: str = "") -> str:
    """The API path of a function, `NAME` (the caller's tenant) or `TENANT/NAME`, with `suffix`
    (`/invoke`, `/logs`): the slash between tenant and name stays a slash."""
    return f"/v1/functions/{quote(ref, safe='/')}{suffix}"


def credentials_path() -> Path:
    """Where `cumulus login` keeps the URL and token: `$XDG_CONFIG_HOME/cumulus/credentials.json`
    (default ~/.config)."""
    base = os.environ.get("XDG_CONFIG_HOME") or ""  # the XDG spec: a relative one is ignored
    root = Path(base) if Path(base).is_absolute() else Path.home() / ".config"
    return root / "cumulus" / "credentials.json"


def load_credentials(path: Path | None = None) -> dict[str, str] | None:
    """The `{url, token}` `cumulus login` stored; None when there are none; ClientError when the file
    cannot be read or is not what login writes."""
    path = path or credentials_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ClientError(0, "BadCredentials", f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
        creds = {"url": check_url(str(data["url"])), "token": str(data["token"])}
    except (ValueError, KeyError, TypeError, ClientError):
        raise ClientError(0, "BadCredentials", f"{path} is not a credentials file `cumulus login` wrote: "
                                               "run `cumulus login` again, or `cumulus logout`") from None
    return creds


def save_credentials(url: str, token: str, path: Path | None = None) -> Path:
    """Store `{url, token}` for later commands: the file readable by its owner only (0600, in a 0700
    directory), replaced atomically (a reader sees the old file or the new one, never a part)."""
    path = path or credentials_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".credentials-", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump({"url": check_url(url), "token": token}, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def delete_credentials(path: Path | None = None) -> bool:
    """Forget what `cumulus login` stored; whether there was anything."""
    path = path or credentials_path()
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc` and what it wraps (causes, contexts, exceptions among its args), outermost first."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo and len(seen) < 20:
        cur = todo.pop(0)
        if any(cur is s for s in seen):
            continue
        seen.append(cur)
        todo += [e for e in (cur.__cause__, cur.__context__, *cur.args) if isinstance(e, BaseException)]
    return seen


def _why(exc: requests.RequestException) -> str:
    """The root cause of a failed request, in a few words."""
    if isinstance(exc, requests.Timeout):
        return "no answer in time"
    causes = _causes(exc)
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return "connection refused (is the control plane running there? `cumulus up` starts one)"
    if any(isinstance(c, socket.gaierror) for c in causes):
        return "unknown host"
    if any(type(c).__name__ in ("RemoteDisconnected", "BadStatusLine", "ProtocolError") for c in causes):
        return "the connection closed without an HTTP answer (is this the control plane's port?)"
    for c in reversed(causes):
        if isinstance(c, OSError) and c.strerror:
            return str(c.strerror).lower()
    text = str(causes[-1]) or type(causes[-1]).__name__
    return text.splitlines()[0][:200]


@dataclass
class Client:
    """Talks to one control plane with one token."""

    url: str
    token: str
    timeout_s: float = 960.0

    def __post_init__(self) -> None:
        self.url = check_url(self.url)

    @classmethod
    def from_env(cls, data_dir: Path | None = None, *, url: str | None = None, token: str | None = None,
                 credentials: Path | None = None) -> Client:
        """Which control plane and token, each the first of: `url` / `token` (the options), the
        `CUMULUS_URL` / `CUMULUS_TOKEN` variables, the credentials file `cumulus login` wrote, and
        what `cumulus up` wrote in the data directory (`CUMULUS_DATA_DIR`, default ~/.cumulus).

        The stored token goes only to the URL stored with it: given another URL, it is not sent."""
        data = data_dir or default_data_dir()
        url = url or os.environ.get("CUMULUS_URL", "")
        token = token or os.environ.get("CUMULUS_TOKEN", "")
        creds_path = credentials or credentials_path()
        if not url or not token:
            creds = load_credentials(creds_path)
            if creds is not None and (not url or check_url(url) == creds["url"]):
                url = url or creds["url"]
                token = token or creds["token"]
        if not url and (data / "endpoint").exists():
            url = (data / "endpoint").read_text().strip()
        if not token and (data / "admin.token").exists():
            token = (data / "admin.token").read_text().strip()
        if not token:
            raise ClientError(0, "NoToken", "no token: pass --token, set CUMULUS_TOKEN, run `cumulus login`, "
                                            f"or run `cumulus up` (it writes {data / 'admin.token'})")
        return cls(url or DEFAULT_URL, token)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One API call; errors become ClientError with the API's type and message."""
        headers = kwargs.pop("headers", {})
        headers["Authorization"] = f"Bearer {self.token}"
        try:
            resp = requests.request(method, self.url + path, headers=headers, timeout=self.timeout_s,
                                    **kwargs)
        except requests.RequestException as exc:
            raise ClientError(0, "Unreachable", f"cannot reach {self.url}: {_why(exc)}") from exc
        if resp.status_code >= 400:
            try:
                err = resp.json()["error"]
                extra = {k: v for k, v in err.items() if k not in ("type", "message")}
                raise ClientError(resp.status_code, err["type"], err["message"], extra)
            except (ValueError, KeyError, TypeError):
                first = resp.text.strip().splitlines()[0][:200] if resp.text.strip() else resp.reason
                raise ClientError(resp.status_code, "HTTPError",
                                  f"{self.url} answered HTTP {resp.status_code}: {first} "
                                  "(is this a Cumulus control plane?)") from None
        return resp

    def deploy(self, code_zip: bytes, config: dict[str, Any], build_id: str = "") -> dict[str, Any]:
        """Upload a new version (its build named `build_id`, whose stages `build` reads meanwhile)."""
        files = {"code": ("code.zip", code_zip, "application/zip")}
        headers = {"X-Cumulus-Build-Id": build_id} if build_id else {}
        resp = self.request("POST", "/v1/functions", files=files, data={"config": json.dumps(config)},
                            headers=headers)
        return resp.json()  # type: ignore[no-any-return]

    def deploy_image(self, archive: Path | None, config: dict[str, Any]) -> dict[str, Any]:
        """Upload a new version of an image function: its `docker save` archive, or none (`image`
        in the config names one the nodes hold)."""
        data = {"config": json.dumps(config)}
        if archive is None:
            resp = self.request("POST", "/v1/functions", files={"config": (None, data["config"])})
            return resp.json()  # type: ignore[no-any-return]
        with archive.open("rb") as fh:
            resp = self.request("POST", "/v1/functions", data=data,
                                files={"image": (archive.name, fh, "application/x-tar")})
        return resp.json()  # type: ignore[no-any-return]

    def build(self, build_id: str) -> dict[str, Any] | None:
        """A named build's stages so far; None when this control plane does not know it (yet)."""
        try:
            resp = requests.get(f"{self.url}/v1/builds/{build_id}", timeout=5,
                                headers={"Authorization": f"Bearer {self.token}"})
        except requests.RequestException:
            return None
        return resp.json() if resp.status_code == 200 else None

    def invoke(self, name: str, event: bytes, invocation_type: str | None = None) -> requests.Response:
        """Invoke a function (`invocation_type` "Event": queue an async call); returns the raw
        response (result JSON and headers; for an async call, its request id)."""
        headers = {"Content-Type": "application/json"}
        if invocation_type is not None:
            headers["X-Cumulus-Invocation-Type"] = invocation_type
        return self.request("POST", function_path(name, "/invoke"), data=event, headers=headers)

    def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        """GET (with `params` in the query) and decode JSON."""
        return self.request("GET", path, params=params).json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        """POST a JSON body and decode the JSON answer (None for an empty one, as 204)."""
        resp = self.request("POST", path, json=body)
        return resp.json() if resp.content else None

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        """PATCH with a JSON body and decode the JSON answer."""
        return self.request("PATCH", path, json=body).json()

    def delete(self, path: str) -> Any:
        """DELETE; the decoded JSON answer, if any (None for 204)."""
        resp = self.request("DELETE", path)
        return resp.json() if resp.content else None
