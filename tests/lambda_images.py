"""Lambda-style function images for integration tests, built locally from the runtime image (no
registry: the base is our Debian-python image, everything else is COPYed from a build context).

- `build_awslambdaric_image`: AWS's Python runtime interface client (awslambdaric, from PyPI, with
  this host's pip for the image's Python and platform) running a handler module, as in an image
  built `FROM public.ecr.aws/lambda/python`.
- `build_custom_runtime_image`: a "provided"-style custom runtime: an executable `bootstrap` in
  Python's standard library that runs the Lambda Runtime API loop itself.

Both take `AWS_LAMBDA_RUNTIME_API` from the environment, like on Lambda. Builds are cached by the
content hash of their context: an image tagged `<repository>:ctx-<hash>` is reused, not rebuilt.
No build step needs the network (the build runs with `network_mode="none"`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from node_agent.image import default_cache_dir

__all__ = [
    "AWSLAMBDARIC",
    "CUSTOM_RUNTIME_HANDLER",
    "LambdaImageError",
    "build_awslambdaric_image",
    "build_custom_runtime_image",
    "context_digest",
]

# Pinned: the integration tests assert how this client behaves (its headers, its init error).
AWSLAMBDARIC = "awslambdaric==4.2.2"
PYTHON_VERSION = "3.11"  # the runtime image's (Debian bookworm's python3)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux2014_x86_64")
# awslambdaric's native client (runtime_client.*.so) links libstdc++: the runtime image carries it
# (it is one of the libraries manylinux wheels expect, `node_agent.image.WHEEL_LIBRARIES`).
TASK_ROOT = "/var/task"


class LambdaImageError(RuntimeError):
    """A Lambda-style test image could not be prepared or built."""


# -- the custom runtime ------------------------------------------------------------------------
CUSTOM_RUNTIME_BOOTSTRAP = r'''#!/usr/bin/python3
"""A Lambda custom runtime in the standard library: init, then next -> handler -> response/error.

Init fails (POST /runtime/init/error, exit 1) when FAIL_INIT is set (its value is the message) or
when the handler named by _HANDLER (module.function under LAMBDA_TASK_ROOT) cannot be loaded.
"""
import http.client
import importlib
import json
import os
import sys
import time
import traceback

API = os.environ.get("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")
BASE = "/2018-06-01/runtime"
ERROR_TYPE = "Lambda-Runtime-Function-Error-Type"


class Client:
    """One kept-alive connection to the Runtime API, opened again if it drops."""

    def __init__(self):
        self.conn = None

    def call(self, method, path, body=None, headers=None):
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(API)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                resp = self.conn.getresponse()
                return resp.status, resp.headers, resp.read()
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt == 2 or method != "GET":
                    raise


class Context:
    def __init__(self, headers):
        self.aws_request_id = headers["Lambda-Runtime-Aws-Request-Id"]
        self.invoked_function_arn = headers.get("Lambda-Runtime-Invoked-Function-Arn", "")
        self.deadline_ms = int(headers.get("Lambda-Runtime-Deadline-Ms", "0"))
        self.trace_id = headers.get("Lambda-Runtime-Trace-Id", "")
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")

    def get_remaining_time_in_millis(self):
        return max(0, self.deadline_ms - int(time.time() * 1000))


def report(exc):
    return json.dumps({"errorMessage": str(exc), "errorType": type(exc).__name__,
                       "stackTrace": traceback.format_tb(exc.__traceback__)}).encode()


def load_handler():
    if os.environ.get("FAIL_INIT"):
        raise RuntimeError(os.environ["FAIL_INIT"])
    module, _, name = os.environ.get("_HANDLER", "app.handler").rpartition(".")
    sys.path.insert(0, os.environ.get("LAMBDA_TASK_ROOT", "/var/task"))
    return getattr(importlib.import_module(module), name)


def main():
    client = Client()
    try:
        handler = load_handler()
    except Exception as exc:
        kind = "Runtime.ImportModuleError" if isinstance(exc, ImportError) else "Runtime.InitError"
        client.call("POST", f"{BASE}/init/error", report(exc),
                    {ERROR_TYPE: kind, "Content-Type": "application/json"})
        sys.exit(1)
    while True:
        status, headers, body = client.call("GET", f"{BASE}/invocation/next")
        if status != 200:
            sys.exit(f"GET /invocation/next answered {status}: {body[:200]!r}")
        request_id = headers["Lambda-Runtime-Aws-Request-Id"]
        try:
            result = json.dumps(handler(json.loads(body) if body else None, Context(headers))).encode()
        except Exception as exc:
            client.call("POST", f"{BASE}/invocation/{request_id}/error", report(exc),
                        {ERROR_TYPE: "Unhandled", "Content-Type": "application/json"})
        else:
            client.call("POST", f"{BASE}/invocation/{request_id}/response", result,
                        {"Content-Type": "application/json"})


if __name__ == "__main__":
    main()
'''

CUSTOM_RUNTIME_HANDLER = '''"""The custom runtime's handler: echoes, fails or sleeps, as the event says."""
import time


def handler(event, context):
    event = event if isinstance(event, dict) else {"value": event}
    if "sleep" in event:
        time.sleep(float(event["sleep"]))
    if "fail" in event:
        raise ValueError(event["fail"])
    return {"echo": event, "request_id": context.aws_request_id,
            "arn": context.invoked_function_arn, "remaining_ms": context.get_remaining_time_in_millis()}
'''


# -- building ----------------------------------------------------------------------------------
def context_digest(root: Path) -> str:
    """Content hash of a build context: every file's relative path, mode and bytes, in order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink()):
        rel = path.relative_to(root).as_posix()
        mode = stat.S_IMODE(path.lstat().st_mode)
        digest.update(f"{rel}\0{mode:o}\0".encode())
        digest.update(os.readlink(path).encode() if path.is_symlink() else path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise LambdaImageError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")


def awslambdaric_layer(requirement: str = AWSLAMBDARIC, cache_dir: Path | None = None) -> Path:
    """A folder with `python/` (awslambdaric and its dependencies, for the image's Python), cached:
    fetched from the package index once per machine."""
    key = hashlib.sha256(repr((requirement, PYTHON_VERSION, PLATFORMS)).encode())
    target = (cache_dir or default_cache_dir()) / "lambda" / f"awslambdaric-{key.hexdigest()[:12]}"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ric-", dir=target.parent))
    try:
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
               "--no-compile", "--target", str(work / "python"), "--only-binary=:all:",
               "--python-version", PYTHON_VERSION, "--implementation", "cp"]
        for platform in PLATFORMS:
            cmd += ["--platform", platform]
        _run([*cmd, requirement])
        try:
            work.rename(target)
        except OSError:  # built meanwhile by another process: use theirs
            if not target.exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _build(client: Any, context: Path, tag: str) -> str:
    """Build `context` as `tag`, unless an image of the same context hash exists already."""
    import docker.errors

    repository, _, version = tag.rpartition(":") if ":" in tag.split("/")[-1] else (tag, "", "latest")
    hash_tag = f"{repository}:ctx-{context_digest(context)}"
    try:
        image = client.images.get(hash_tag)
    except docker.errors.ImageNotFound:
        try:
            image, _ = client.images.build(path=str(context), tag=hash_tag, rm=True, forcerm=True,
                                           pull=False, network_mode="none")
        except docker.errors.BuildError as exc:
            log = "".join(str(part.get("stream", part.get("error", ""))) for part in exc.build_log)
            raise LambdaImageError(f"building {tag}: {exc.msg}\n{log[-3000:]}") from exc
        except docker.errors.APIError as exc:
            raise LambdaImageError(f"building {tag}: {exc}") from exc
    image.tag(repository, version or "latest")
    return tag


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def build_awslambdaric_image(client: Any, base_tag: str, handler_source: str, tag: str, *,
                             requirement: str = AWSLAMBDARIC, cache_dir: Path | None = None) -> str:
    """An image running `handler_source` (as `app.py`, handler `app.handler`) under awslambdaric.

    Like an AWS base image: the code in /var/task (LAMBDA_TASK_ROOT), `ENTRYPOINT ["python3", "-m",
    "awslambdaric"]`, `CMD ["app.handler"]`. Returns `tag`.
    """
    layer = awslambdaric_layer(requirement, cache_dir)
    with tempfile.TemporaryDirectory(prefix="lambda-ric-") as tmp:
        ctx = Path(tmp)
        shutil.copytree(layer / "python", ctx / "python", symlinks=True)
        _write(ctx / "function" / "app.py", handler_source)
        _write(ctx / "Dockerfile", f"""FROM {base_tag}
COPY python/ /opt/awslambdaric/
COPY function/ {TASK_ROOT}/
ENV PYTHONPATH={TASK_ROOT}:/opt/awslambdaric LAMBDA_TASK_ROOT={TASK_ROOT}
WORKDIR {TASK_ROOT}
RUN ["python3", "-c", "import runtime_client, awslambdaric.bootstrap"]
ENTRYPOINT ["python3", "-m", "awslambdaric"]
CMD ["app.handler"]
""")
        return _build(client, ctx, tag)


def build_custom_runtime_image(client: Any, base_tag: str, tag: str, *,
                               handler_source: str = CUSTOM_RUNTIME_HANDLER) -> str:
    """An image whose entrypoint is a custom runtime's `bootstrap` (standard library only), running
    `handler_source` as `app.py` (`_HANDLER=app.handler`). Returns `tag`.

    Set `FAIL_INIT=<message>` (or a `_HANDLER` that does not load) to make it report an init error.
    """
    with tempfile.TemporaryDirectory(prefix="lambda-provided-") as tmp:
        ctx = Path(tmp)
        _write(ctx / "bootstrap", CUSTOM_RUNTIME_BOOTSTRAP, 0o755)
        _write(ctx / "function" / "app.py", handler_source)
        _write(ctx / "Dockerfile", f"""FROM {base_tag}
COPY bootstrap /var/runtime/bootstrap
COPY function/ {TASK_ROOT}/
ENV LAMBDA_TASK_ROOT={TASK_ROOT} _HANDLER=app.handler
WORKDIR {TASK_ROOT}
ENTRYPOINT ["/var/runtime/bootstrap"]
""")
        return _build(client, ctx, tag)
