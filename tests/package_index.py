"""A package index on loopback for the tests that install requirements: wheels and source
distributions made by the test itself (no build tool needed), served as a PEP 503 simple index on
127.0.0.1. A platform pointed at it (`pip_env`) reaches no other index."""

from __future__ import annotations

import base64
import hashlib
import html
import io
import os
import tarfile
import threading
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from packaging.utils import canonicalize_name


def wheel(name: str, version: str, files: Mapping[str, str | bytes], *, requires: tuple[str, ...] = (),
          tag: str = "py3-none-any") -> tuple[str, bytes]:
    """(filename, bytes) of a wheel holding `files`."""
    dist = f"{name.replace('-', '_')}-{version}"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + \
        "".join(f"Requires-Dist: {r}\n" for r in requires)
    content = {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}
    content[f"{dist}.dist-info/METADATA"] = meta.encode()
    content[f"{dist}.dist-info/WHEEL"] = f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n" \
                                         f"Tag: {tag}\n".encode()
    record = []
    for path, data in content.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}.dist-info/RECORD,,")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, data in content.items():
            zf.writestr(path, data)
        zf.writestr(f"{dist}.dist-info/RECORD", "\n".join(record) + "\n")
    return f"{dist}-{tag}.whl", buf.getvalue()


# A PEP 517 build backend in the source tree itself (backend-path): building the sdist runs it, which
# is what a package of an attacker would do. It zips the package's `src/` into a wheel, after
# running the package's own `build_hook.py`, if any.
IN_TREE_BACKEND = '''
import base64, hashlib, os, zipfile

def _meta():
    name, version = open("NAME").read().split()
    return name, version

def get_requires_for_build_wheel(config_settings=None):
    return []

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name, version = _meta()
    if os.path.exists("build_hook.py"):
        exec(compile(open("build_hook.py").read(), "build_hook.py", "exec"), {"__name__": "hook"})
    dist = name.replace("-", "_") + "-" + version
    files = {}
    for root, _, names in os.walk("src"):
        for n in names:
            p = os.path.join(root, n)
            files[os.path.relpath(p, "src")] = open(p, "rb").read()
    info = dist + ".dist-info/"
    files[info + "METADATA"] = f"Metadata-Version: 2.1\\nName: {name}\\nVersion: {version}\\n".encode()
    files[info + "WHEEL"] = (b"Wheel-Version: 1.0\\nGenerator: t\\nRoot-Is-Purelib: true\\n"
                             b"Tag: py3-none-any\\n")
    def digest(v):
        return base64.urlsafe_b64encode(hashlib.sha256(v).digest()).rstrip(b"=").decode()
    record = [f"{k},sha256={digest(v)},{len(v)}" for k, v in files.items()] + [info + "RECORD,,"]
    out = dist + "-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, out), "w") as zf:
        for k, v in files.items():
            zf.writestr(k, v)
        zf.writestr(dist + ".dist-info/RECORD", "\\n".join(record) + "\\n")
    return out
'''


def sdist(name: str, version: str, src: Mapping[str, str], *, build_hook: str = "",
          requires: tuple[str, ...] = ()) -> tuple[str, bytes]:
    """(filename, bytes) of a source-only package built by `IN_TREE_BACKEND`; `build_hook` runs when
    it is built."""
    top = f"{name.replace('-', '_')}-{version}"
    reqs = ", ".join(f'"{r}"' for r in requires)
    files = {"pyproject.toml": f'[build-system]\nrequires = [{reqs}]\nbuild-backend = "backend"\n'
                               'backend-path = ["."]\n',
             "backend.py": IN_TREE_BACKEND, "NAME": f"{name} {version}",
             "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             **{f"src/{k}": v for k, v in src.items()}}
    if build_hook:
        files["build_hook.py"] = build_hook
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{path}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return f"{top}.tar.gz", buf.getvalue()


class PackageIndex:
    """A simple index in `root` (`files/` and `simple/<project>/index.html`)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "files").mkdir(parents=True, exist_ok=True)
        (root / "simple").mkdir(exist_ok=True)
        self.port = 0

    def add(self, project: str, filename: str, data: bytes) -> None:
        """Publish a file of `project`."""
        (self.root / "files" / filename).write_bytes(data)
        page = self.root / "simple" / canonicalize_name(project)
        page.mkdir(exist_ok=True)
        links = []
        for f in sorted((self.root / "files").iterdir()):
            owner = f.name.split("-")[0]
            if canonicalize_name(owner) == canonicalize_name(project):
                digest = hashlib.sha256(f.read_bytes()).hexdigest()
                links.append(f'<a href="../../files/{html.escape(f.name)}#sha256={digest}">'
                             f"{html.escape(f.name)}</a><br>")
        body = "\n".join(links)
        (page / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{body}\n</body></html>")

    @property
    def url(self) -> str:
        """The index URL pip is given."""
        return f"http://127.0.0.1:{self.port}/simple/"

    def pip_env(self) -> dict[str, str]:
        """pip's configuration for a platform that uses this index and nothing else."""
        return {"PIP_INDEX_URL": self.url, "PIP_NO_INDEX": "0", "PIP_CONFIG_FILE": os.devnull,
                "PIP_FIND_LINKS": "", "PIP_EXTRA_INDEX_URL": "", "PIP_CONSTRAINT": "",
                "PIP_RETRIES": "0", "PIP_TIMEOUT": "10"}

    @contextmanager
    def serving(self) -> Iterator[PackageIndex]:
        """Serve on 127.0.0.1 (a free port) while the block runs."""
        handler = partial(_Quiet, directory=str(self.root))
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass
