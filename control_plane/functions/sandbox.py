"""The build sandbox: where a function's requirements are installed, never on the control plane.

`BuildSandbox` is the seam; `DockerBuildSandbox` runs each build step in a throw-away container of
the function's runtime image. Its guarantees (held by `tests/contract/test_build_sandbox.py`):

- nothing of the host is mounted: the inputs are streamed in as a tar on stdin, the output comes
  back as a tar on stdout, both through the engine's attach stream;
- no network at all (`network_mode=none`: only a loopback interface), no capabilities,
  `no-new-privileges`, user `nobody`, a read-only root;
- bounds: memory (no swap), a CPU quota, a pids limit, a tmpfs of `disk_mib` that holds the inputs,
  the build's temporary files and its output (so a build cannot fill the host's disk), an output
  of at most `output_mib`, a wall-clock timeout; each breach is reported as such;
- the container is removed whatever happens: each step's container carries a label of its own, so
  one the engine made although the create call failed (an engine slow to answer) is found too; a
  removal the engine refuses is retried, then again before the next step; leftovers of a crashed
  control plane are removed by `cleanup`. What the build prints is kept to its last `LOG_TAIL` bytes.

The command run inside is the control plane's own pip, zipped and streamed in with the inputs
(the runtime image has only Python's standard library), with `--no-index`: a sandboxed step only
ever installs or builds what the control plane fetched for it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tarfile
import threading
import uuid
import zipfile
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from tenacity import Retrying, retry_if_result, stop_after_attempt, wait_exponential

from control_plane.core import BuildUnavailable
from node_agent.image import ImageBuildError, ImageRecipe, ensure_runtime_image

log = logging.getLogger(__name__)

LABEL_ROLE = "io.cumulus.role"
LABEL_OWNER = "io.cumulus.owner"
LABEL_STEP = "io.cumulus.build-step"
REMOVE_ATTEMPTS = 5  # then the step's label waits for the next step's sweep
LOG_TAIL = 16 * 1024
NOBODY = "65534:65534"

# Runs inside the container (standard library only): unpack the inputs, run pip, pack the output.
_STEP = r"""
import json, os, subprocess, sys, tarfile
args = json.loads(sys.argv[1])
for d in ("/work/in", "/work/out", "/work/tmp", "/work/home"):
    os.makedirs(d, exist_ok=True)
with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as t:
    t.extractall("/work/in")
env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/work/home", "TMPDIR": "/work/tmp",
       "LANG": "C.UTF-8", "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_NO_INPUT": "1",
       "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_BREAK_SYSTEM_PACKAGES": "1", "PIP_PROGRESS_BAR": "off",
       "PYTHONDONTWRITEBYTECODE": "1", "PIP_NO_CACHE_DIR": "1"}
code = subprocess.call([sys.executable, "/work/in/pip.zip/pip", *args], stdin=subprocess.DEVNULL,
                       stdout=sys.stderr, stderr=sys.stderr, env=env, cwd="/work/tmp")
if code:
    sys.exit(code)
sys.stderr.flush()
with tarfile.open(fileobj=sys.stdout.buffer, mode="w|") as t:
    t.add("/work/out", arcname="out")
"""

_PROBE = r"""
import json, os, platform, sys
libc = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else None
print(json.dumps({"version": list(sys.version_info[:2]), "implementation": sys.implementation.name,
                  "machine": platform.machine(), "glibc": libc}))
"""


@dataclass(frozen=True)
class BuildLimits:
    """What one build step may use."""

    memory_mib: int = 2048
    cpu_millis: int = 2000
    disk_mib: int = 1024  # the tmpfs holding inputs, temporary files and output (counts as memory)
    output_mib: int = 512  # the installed requirements at most
    timeout_s: float = 600.0  # the whole build
    pids: int = 512


@dataclass(frozen=True)
class Interpreter:
    """The Python a runtime image runs, as pip needs to know it to fetch wheels for it."""

    version: tuple[int, int]
    implementation: str  # "cpython"
    machine: str  # "x86_64", "aarch64"
    glibc: tuple[int, int] | None  # None: not a glibc system

    def describe(self) -> str:
        """E.g. "CPython 3.11 on linux x86_64 (glibc 2.36)"."""
        libc = f" (glibc {self.glibc[0]}.{self.glibc[1]})" if self.glibc else ""
        return f"{'CPython' if self.implementation == 'cpython' else self.implementation} " \
               f"{self.version[0]}.{self.version[1]} on linux {self.machine}{libc}"

    def platforms(self) -> list[str]:
        """The wheel platform tags it can load, most specific first."""
        tags: list[str] = []
        if self.glibc and self.glibc[0] == 2:
            legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
            for minor in range(self.glibc[1], 4, -1):
                tags.append(f"manylinux_2_{minor}_{self.machine}")
                if minor in legacy:
                    tags.append(f"{legacy[minor]}_{self.machine}")
        tags.append(f"linux_{self.machine}")
        return tags

    def pip_args(self) -> list[str]:
        """`pip download` options that fetch wheels for this interpreter (and only wheels)."""
        major, minor = self.version
        impl = "cp" if self.implementation == "cpython" else "py"
        args = ["--only-binary=:all:", f"--python-version={major}.{minor}", f"--implementation={impl}"]
        if impl == "cp":
            args += [f"--abi=cp{major}{minor}", "--abi=abi3", "--abi=none"]
        return args + [f"--platform={tag}" for tag in self.platforms()]


@dataclass(frozen=True)
class StepResult:
    """How a build step ended: `failure` is "" when pip succeeded and its output came back."""

    exit_code: int | None
    log: str  # the last LOG_TAIL bytes the step printed
    failure: str = ""  # "timed out", "ran out of memory", "ran out of disk", "output too large", "failed"

    @property
    def ok(self) -> bool:
        """Whether the step succeeded."""
        return not self.failure


class BuildSandbox(Protocol):
    """Runs pip where nothing of the host is in reach (see the module's guarantees)."""

    image: str  # the runtime image it builds for

    def image_id(self) -> str:
        """The id of that image in its engine (part of the dependency cache's key; BuildUnavailable
        if the engine or image is missing)."""
        ...

    def interpreter(self) -> Interpreter:
        """The runtime image's Python (BuildUnavailable if the engine or image is missing)."""
        ...

    def run(self, inputs: Mapping[str, Path], pip_args: Sequence[str], output: Path, *,
            timeout_s: float) -> StepResult:
        """Run `pip <pip_args>` with `inputs` (name inside /work/in → host file) and the zipped
        pip at /work/in/pip.zip; what the step leaves in /work/out is written to `output` as a tar
        (members under `out/`). BuildUnavailable if the engine or image is missing."""
        ...

    def cleanup(self) -> int:
        """Remove build containers this control plane left behind; how many."""
        ...


def zipped_pip(tools_dir: Path) -> Path:
    """The control plane's own pip as a zip that `python pip.zip/pip` runs (made once per version)."""
    import pip

    source = Path(pip.__file__).resolve().parent
    path = tools_dir / f"pip-{pip.__version__}.zip"
    if path.is_file():
        return path
    tools_dir.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(f".{os.getpid()}.part")
    with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(source.rglob("*")):
            if file.is_file() and "__pycache__" not in file.parts:
                zf.write(file, f"pip/{file.relative_to(source).as_posix()}")
    os.replace(part, path)
    return path


class _Tail:
    """The last `limit` bytes written."""

    def __init__(self, limit: int = LOG_TAIL) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._limit = limit

    def write(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        while self._size - len(self._chunks[0]) >= self._limit:
            self._size -= len(self._chunks.popleft())

    def text(self) -> str:
        return b"".join(self._chunks)[-self._limit:].decode("utf-8", "replace")


class DockerBuildSandbox:
    """`BuildSandbox` on a Docker engine: one throw-away container per step."""

    def __init__(self, docker_host: str, image: str, tools_dir: Path, *, limits: BuildLimits | None = None,
                 owner: str = "", recipe: ImageRecipe | None = None) -> None:
        self.docker_host = docker_host
        self.image = image
        self.recipe = recipe  # how to build the image from Debian's mirror when the engine lacks it
        self.tools_dir = tools_dir
        self.limits = limits or BuildLimits()
        self.owner = owner
        self._client: Any = None
        self._interpreters: dict[str, Interpreter] = {}
        self._lock = threading.Lock()
        self._unremoved: set[str] = set()  # steps whose container the engine would not remove yet

    def _docker(self) -> Any:
        import docker

        with self._lock:
            if self._client is None:
                try:
                    client = docker.DockerClient(base_url=self.docker_host, timeout=60)
                    client.ping()
                except Exception as exc:
                    raise BuildUnavailable(f"the build sandbox's Docker engine ({self.docker_host}) does "
                                           f"not answer: {exc}") from None
                self._client = client
            return self._client

    def _image_id(self) -> str:
        import docker.errors

        try:
            return str(self._docker().images.get(self.image).id)
        except docker.errors.ImageNotFound:
            if self.recipe is None or self.recipe.tag != self.image:
                raise BuildUnavailable(f"the runtime image {self.image} is not in the build sandbox's "
                                       "Docker engine") from None
        except docker.errors.DockerException as exc:
            raise BuildUnavailable(f"the build sandbox's Docker engine failed: {exc}") from None
        try:  # first use of this runtime here: build it from Debian's mirror (cached by recipe)
            ensure_runtime_image(self._docker(), self.recipe)
            return str(self._docker().images.get(self.image).id)
        except ImageBuildError as exc:
            raise BuildUnavailable(f"the runtime image {self.image} could not be built: {exc}") from None
        except docker.errors.DockerException as exc:
            raise BuildUnavailable(f"the build sandbox's Docker engine failed: {exc}") from None

    def image_id(self) -> str:
        return self._image_id()

    def interpreter(self) -> Interpreter:
        image_id = self._image_id()
        known = self._interpreters.get(image_id)
        if known is not None:
            return known
        with _temp_file(self.tools_dir, ".probe") as out:
            result, stdout = self._container(["python3", "-I", "-c", _PROBE], None, out, timeout_s=60,
                                             raw_output=True)
            if not result.ok:
                raise BuildUnavailable(f"the runtime image {self.image} has no working python3: "
                                       f"{result.failure}: {result.log[-500:]}")
            info = json.loads(stdout)
        libc = str(info.get("glibc") or "")
        glibc = None
        if libc.startswith("glibc "):
            major, _, minor = libc.split()[1].partition(".")
            glibc = (int(major), int(minor.split(".")[0]))
        found = Interpreter(version=(int(info["version"][0]), int(info["version"][1])),
                            implementation=str(info["implementation"]), machine=str(info["machine"]),
                            glibc=glibc)
        self._interpreters[image_id] = found
        return found

    def run(self, inputs: Mapping[str, Path], pip_args: Sequence[str], output: Path, *,
            timeout_s: float) -> StepResult:
        files = {"pip.zip": zipped_pip(self.tools_dir), **inputs}
        result, _ = self._container(["python3", "-I", "-c", _STEP, json.dumps(list(pip_args))], files,
                                    output, timeout_s=timeout_s)
        return result

    def cleanup(self) -> int:
        try:
            client = self._docker()
        except BuildUnavailable:
            return 0
        labels = [f"{LABEL_ROLE}=build"] + ([f"{LABEL_OWNER}={self.owner}"] if self.owner else [])
        removed = 0
        for summary in client.api.containers(all=True, filters={"label": labels}):
            with contextlib.suppress(Exception):
                client.api.remove_container(summary["Id"], force=True)
                removed += 1
        return removed

    def _container(self, command: list[str], files: Mapping[str, Path] | None, output: Path, *,
                   timeout_s: float, raw_output: bool = False) -> tuple[StepResult, bytes]:
        import docker.errors
        from docker.utils.socket import STDOUT, frames_iter

        lim = self.limits
        client = self._docker()
        self._image_id()
        for earlier in list(self._unremoved):
            self._remove_step(client, earlier, attempts=1)
        step = uuid.uuid4().hex
        try:
            ct = client.containers.create(
                self.image, command, stdin_open=True, network_mode="none", read_only=True,
                user=NOBODY, cap_drop=["ALL"], security_opt=["no-new-privileges"],
                mem_limit=f"{lim.memory_mib}m", memswap_limit=f"{lim.memory_mib}m",
                nano_cpus=lim.cpu_millis * 1_000_000, pids_limit=lim.pids, init=True,
                tmpfs={"/work": f"size={lim.disk_mib}m,mode=1777,exec", "/tmp": "size=64m,mode=1777"},
                log_config={"type": "none"},
                labels={LABEL_ROLE: "build", LABEL_OWNER: self.owner, LABEL_STEP: step})
        except docker.errors.DockerException as exc:
            self._remove_step(client, step)  # the engine may have made it all the same
            raise BuildUnavailable(f"the build sandbox could not be created: {exc}") from None
        tail = _Tail()
        state = {"too_large": False, "killed": False}
        captured = bytearray()
        try:
            sock = ct.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            raw: socket.socket = sock._sock
            ct.start()

            def kill() -> None:
                state["killed"] = True
                with contextlib.suppress(Exception):
                    ct.kill()

            timer = threading.Timer(max(1.0, timeout_s), kill)
            timer.daemon = True
            timer.start()
            cap = lim.output_mib * 2**20

            def read() -> None:
                written = 0
                with output.open("wb") as out:
                    for stream, data in frames_iter(sock, tty=False):
                        if stream != STDOUT:
                            tail.write(data)
                            continue
                        written += len(data)
                        if written > cap:
                            if not state["too_large"]:
                                state["too_large"] = True
                                # Killed from another thread: this one keeps draining the stream,
                                # the engine finishes a kill (and reports the exit) only then.
                                threading.Thread(target=kill, daemon=True).start()
                            continue
                        if raw_output:
                            if len(captured) < 1 << 16:
                                captured.extend(data)
                        else:
                            out.write(data)

            reader = threading.Thread(target=read, name="cumulus-build-read", daemon=True)
            reader.start()
            try:
                with raw.makefile("wb") as stdin:
                    _write_tar(stdin, files or {})
                raw.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the step ended early (killed, or it failed before reading everything)
            reader.join(timeout_s + 30)
            timer.cancel()
            try:
                status = ct.wait(timeout=30)
            except Exception:
                kill()
                status = ct.wait(timeout=30)
            code = int(status.get("StatusCode", -1))
            ct.reload()
            oom = bool(ct.attrs.get("State", {}).get("OOMKilled"))
            text = tail.text()
            if state["too_large"]:
                failure = f"output too large (over {lim.output_mib} MiB)"
            elif state["killed"]:
                failure = f"timed out (after {timeout_s:.0f} s)"
            elif oom or code == 137:
                failure = f"ran out of memory ({lim.memory_mib} MiB)"
            elif "No space left on device" in text:
                failure = f"ran out of disk ({lim.disk_mib} MiB)"
            elif code != 0:
                failure = "failed"
            else:
                failure = ""
            return StepResult(code, text, failure), bytes(captured)
        finally:
            try:
                ct.remove(force=True)
            except Exception:
                self._remove_step(client, step)

    def _remove_step(self, client: Any, step: str, attempts: int = REMOVE_ATTEMPTS) -> None:
        """Remove the step's container(s), found by label; retried with back-off while the engine
        refuses, then left to the next step's sweep (said in the log)."""
        def sweep() -> bool:
            left = False
            try:
                for summary in client.api.containers(all=True, filters={"label": f"{LABEL_STEP}={step}"}):
                    try:
                        client.api.remove_container(summary["Id"], force=True)
                    except Exception:
                        left = True
            except Exception:
                left = True
            return left

        retrying = Retrying(stop=stop_after_attempt(attempts), wait=wait_exponential(multiplier=0.2, max=3),
                            retry=retry_if_result(bool), retry_error_callback=lambda state: True)
        if retrying(sweep):
            if step not in self._unremoved:
                log.warning("event=build_container_not_removed step=%s", step)
            self._unremoved.add(step)
        else:
            self._unremoved.discard(step)


def _write_tar(stream: BinaryIO, files: Mapping[str, Path]) -> None:
    with tarfile.open(fileobj=stream, mode="w|") as tar:
        for name, path in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = path.stat().st_size
            info.mode = 0o644
            with path.open("rb") as fh:
                tar.addfile(info, fh)


@contextlib.contextmanager
def _temp_file(folder: Path, suffix: str) -> Iterator[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".{os.getpid()}.{threading.get_ident()}{suffix}"
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
