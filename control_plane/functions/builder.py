"""Installing a function's requirements: fetched on the control plane, installed in the sandbox.

1. `requirements.txt` is checked (`requirements.py`): only named requirements reach pip.
2. The control plane's pip *downloads* wheels for the runtime image's Python and platform
   (`--only-binary=:all:` with `--platform`/`--python-version`/`--abi`): no package code runs while
   fetching, and the operator's pip configuration (index, extra indexes, find-links, certificate,
   constraints) applies as it does to any pip on that machine.
3. A package that has only a source distribution is fetched as a file (from the link pip's own
   index search found for it, its hash checked), its declared build requirements are fetched as
   wheels, and it is built into a wheel *inside the sandbox*, offline; then step 2 runs again with
   that wheel. A build that asks for more build requirements gets them, a few times at most.
4. `pip install --no-index --target` runs inside the sandbox from those files alone; its output
   comes back as a tar, checked (regular files and folders under `deps/` only, bounded) and put
   at `.cumulus/deps` in the artifact.

Nothing of this runs the user's packages on the control plane; see `sandbox.py` for the sandbox.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import ssl
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import tomllib
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import InvalidSdistFilename, canonicalize_name, parse_sdist_filename
from packaging.version import Version

from control_plane.core import BuildUnavailable, RequirementsFailed
from control_plane.functions.requirements import Requirements, parse_requirements
from control_plane.functions.sandbox import BuildLimits, BuildSandbox, Interpreter, StepResult

log = logging.getLogger(__name__)

DEPS_DIR = ".cumulus/deps"  # where artifacts built before dependency layers hold them
MAX_ROUNDS = 8  # source-only packages built, at most, per deploy
MAX_BUILD_RETRIES = 3  # build requirements a build asked for that were not declared
MAX_DEPS_FILES = 100_000
MAX_SDIST_BYTES = 256 * 2**20
MAX_PYPROJECT_BYTES = 1 << 20
DEFAULT_BUILD_REQUIRES = ("setuptools>=40.8.0", "wheel")
_MISSING = re.compile(r"No matching distribution found for (\S.*?)(?: \(from [^)]*\))?\s*$", re.M)
_SOURCE_LINK = re.compile(r"Skipping link: No sources permitted for ([^:\s]+): (\S+)")


def _tail(text: str, limit: int = 2000) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    shown = "\n".join(errors or lines[-15:])
    return shown[-limit:]


@dataclass(frozen=True)
class _Fetched:
    ok: bool
    output: str
    log: str

    @property
    def missing(self) -> str | None:
        """The requirement pip found no wheel for, if that is why it failed."""
        found = _MISSING.findall(self.output)
        return found[-1] if found else None


Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


class Builder:
    """Builds the dependency layer of an artifact from its `requirements.txt` (see the module).

    A layer is a deterministic zip of what pip installed, cached under `cache_dir` by the hash of
    the checked requirements, the runtime image they were installed for (its id, not its tag) and
    the control plane's pip configuration (its index, constraints...): deploying the same
    requirements for the same runtime again reuses it without running pip. A layer of requirements
    that are not all pinned (`==`) is reused for `unpinned_ttl_s` only, so new releases are picked
    up. The cache keeps at most `cache_mib`, the least recently used layers leaving first (never one
    used in the last 10 minutes).
    """

    def __init__(self, sandbox_for: Callable[[str], BuildSandbox], work_dir: Path, *,
                 limits: BuildLimits | None = None, pip: Sequence[str] = (sys.executable, "-m", "pip"),
                 max_concurrent: int = 2, cache_mib: int = 4096, unpinned_ttl_s: float = 86400.0) -> None:
        self.sandbox_for = sandbox_for
        self.work_dir = work_dir
        self.cache_dir = work_dir / "layers"
        self.cache_mib = cache_mib
        self.unpinned_ttl_s = unpinned_ttl_s
        self._pip_config: str | None = None
        self.limits = limits or BuildLimits()
        self.pip = list(pip)
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._cert: str | None = None
        self._key_locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def install(self, root: Path, runtime: str, progress: Progress | None = None) -> Path | None:
        """The dependency layer (a zip) of `root/requirements.txt` for `runtime`, built or taken
        from the cache; None when there is nothing to install."""
        req = root / "requirements.txt"
        if not req.is_file():
            return None
        reqs = parse_requirements(req.read_bytes())
        if not reqs.lines:
            return None
        progress = progress or _quiet
        sandbox = self.sandbox_for(runtime)
        progress(f"preparing the {runtime} build sandbox")
        interp = sandbox.interpreter()
        key = hashlib.sha256(json.dumps([reqs.text(), sandbox.image_id(), interp.describe(),
                                         self._pip_fingerprint()]).encode()).hexdigest()[:32]
        layer = self.cache_dir / f"{key}.zip"
        with self._guard:
            lock = self._key_locks.setdefault(key, threading.Lock())
        with lock:  # one build per set of requirements at a time: the second deploy reuses it
            if layer.is_file() and (_pinned(reqs) or time.time() - _built_at(layer) < self.unpinned_ttl_s):
                os.utime(layer)
                progress(f"requirements.txt for {interp.describe()}: cached")
                return layer
            deadline = time.monotonic() + self.limits.timeout_s
            if not self._slots.acquire(timeout=self.limits.timeout_s):
                raise BuildUnavailable(f"every build slot stayed busy for {self.limits.timeout_s:.0f} s")
            try:
                self.work_dir.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryDirectory(dir=self.work_dir, prefix="build-") as tmp:
                    deps = Path(tmp) / "deps"
                    self._install(sandbox, interp, reqs, Path(tmp), deps, deadline, progress)
                    progress("packing the installed requirements")
                    self.cache_dir.mkdir(parents=True, exist_ok=True)
                    part = Path(tmp) / "layer.zip"
                    deterministic_zip(deps, part)
                    layer.with_suffix(".built").write_text(f"{time.time()}\n")
                    os.replace(part, layer)
            finally:
                self._slots.release()
        with self._guard:
            self._evict(keep=layer)
        return layer

    def _pip_fingerprint(self) -> str:
        """What of the control plane's pip configuration decides what a requirement resolves to."""
        if self._pip_config is None:
            proc = subprocess.run([*self.pip, "config", "list"], capture_output=True, text=True, check=False,
                                  stdin=subprocess.DEVNULL, timeout=60)
            env = sorted((k, v) for k, v in os.environ.items() if k.startswith("PIP_"))
            self._pip_config = hashlib.sha256(json.dumps([proc.stdout, env]).encode()).hexdigest()
        return self._pip_config

    def _evict(self, keep: Path) -> None:
        """Drop the least recently used layers beyond `cache_mib` (never `keep`, nor one used in the
        last 10 minutes: a deploy may be copying it)."""
        layers = sorted(self.cache_dir.glob("*.zip"), key=lambda f: f.stat().st_mtime)
        total = sum(f.stat().st_size for f in layers)
        recent = time.time() - 600
        for old in layers:
            if total <= self.cache_mib * 2**20:
                break
            if old != keep and old.stat().st_mtime < recent:
                total -= old.stat().st_size
                old.unlink(missing_ok=True)
                old.with_suffix(".built").unlink(missing_ok=True)

    def _remaining(self, deadline: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RequirementsFailed(f"installing requirements.txt took over {self.limits.timeout_s:.0f} s")
        return left

    def _install(self, sandbox: BuildSandbox, interp: Interpreter, reqs: Requirements, tmp: Path, deps: Path,
                 deadline: float, progress: Progress) -> None:
        wheels, built_dir, sdists = tmp / "wheels", tmp / "built", tmp / "sdists"
        for folder in (wheels, built_dir, sdists):
            folder.mkdir()
        req_file = tmp / "requirements.txt"
        req_file.write_text(reqs.text())
        built: list[Path] = []
        names = ", ".join(Requirement(line.split(" --hash")[0]).name for line in reqs.lines[:6])
        more = f" and {len(reqs.lines) - 6} more" if len(reqs.lines) > 6 else ""
        for _ in range(MAX_ROUNDS):
            progress(f"fetching wheels of {names}{more} for {interp.describe()}")
            fetched = self._download(req_file, built, wheels, interp, reqs, deadline)
            if fetched.ok:
                break
            missing = fetched.missing
            if missing is None:
                raise RequirementsFailed(f"fetching requirements.txt for {interp.describe()} failed:\n"
                                         + _tail(fetched.output))
            if reqs.hashed:
                raise RequirementsFailed(f"{missing} has no wheel for {interp.describe()}; with pinned "
                                         "hashes every package needs a wheel")
            sdist = self._fetch_sdist(missing, fetched.log, sdists, reqs, interp)
            progress(f"building {sdist.name} in the build sandbox")
            built.append(self._build(sandbox, sdist, wheels, built_dir, interp, deadline))
        else:
            raise RequirementsFailed(f"requirements.txt needs over {MAX_ROUNDS} packages built from source")
        self._check_size(wheels, "the requirements' wheels")
        inputs = {f"wheels/{w.name}": w for w in wheels.iterdir()}
        inputs["requirements.txt"] = req_file
        args = ["install", "--no-index", "--find-links", "/work/in/wheels", "--target", "/work/out/deps",
                "--no-compile", "--no-warn-script-location", *reqs.options,
                *(["--require-hashes"] if reqs.hashed else []), "-r", "/work/in/requirements.txt"]
        out = tmp / "out.tar"
        count = sum(1 for _ in wheels.iterdir())
        progress(f"installing {count} wheel{'s' if count != 1 else ''} in the build sandbox")
        result = sandbox.run(inputs, args, out, timeout_s=self._remaining(deadline))
        if not result.ok:
            raise RequirementsFailed(f"installing requirements.txt in the build sandbox {result.failure}:\n"
                                     + _tail(result.log, 3000))
        _unpack(out, "out/deps", deps)

    def _check_size(self, folder: Path, what: str) -> None:
        size = sum(f.stat().st_size for f in folder.iterdir())
        if size > self.limits.disk_mib * 2**20 // 2:
            raise RequirementsFailed(f"{what} take {size / 2**20:.0f} MiB; the build sandbox holds "
                                     f"{self.limits.disk_mib} MiB for them, their installed files and "
                                     "its temporary files")

    def _download(self, req_file: Path | None, extra: Sequence[str | Path], dest: Path, interp: Interpreter,
                  reqs: Requirements, deadline: float) -> _Fetched:
        """`pip download` of wheels for `interp` (no package code runs)."""
        log_file = dest.parent / "pip-download.log"
        log_file.unlink(missing_ok=True)
        cmd = [*self.pip, "download", *interp.pip_args(), "--dest", str(dest), "--progress-bar", "off",
               "--no-input", "--disable-pip-version-check", "--log", str(log_file), *reqs.options,
               *(["--require-hashes"] if reqs.hashed else []),
               *(["-r", str(req_file)] if req_file is not None else []), *[str(x) for x in extra]]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL,
                                  timeout=self._remaining(deadline), cwd=dest)
        except subprocess.TimeoutExpired:
            raise RequirementsFailed("fetching requirements.txt took over "
                                     f"{self.limits.timeout_s:.0f} s") from None
        text = log_file.read_text(errors="replace") if log_file.exists() else ""
        for wheel in extra:  # wheels built from source: the install step needs them beside the rest
            path = Path(wheel)
            if path.is_file() and not (dest / path.name).exists():
                shutil.copy(path, dest / path.name)
        return _Fetched(proc.returncode == 0, proc.stdout + proc.stderr, text)

    def _fetch_sdist(self, missing: str, pip_log: str, sdists: Path, reqs: Requirements,
                     interp: Interpreter) -> Path:
        try:
            wanted = Requirement(missing)
        except InvalidRequirement:
            raise RequirementsFailed(f"no wheel of {missing} for {interp.describe()}") from None
        name = canonicalize_name(wanted.name)
        prereleases = True if "--pre" in reqs.options else None
        candidates: list[tuple[Version, str, str]] = []
        for project, url in _SOURCE_LINK.findall(pip_log):
            if canonicalize_name(project) != name:
                continue
            filename = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
            try:
                sdist_name, version = parse_sdist_filename(filename)
            except InvalidSdistFilename:
                continue
            if canonicalize_name(sdist_name) == name and \
                    wanted.specifier.contains(version, prereleases=prereleases):
                candidates.append((version, filename, url))
        if not candidates:
            raise RequirementsFailed(f"no wheel of {missing} for {interp.describe()}, and no source "
                                     "distribution of it in the package index")
        _, filename, url = max(candidates)
        target = sdists / filename
        self._fetch_file(url, target)
        return target

    def _operator_cert(self) -> str:
        """The CA bundle pip is configured with (`cert`), or "" for the system's."""
        if self._cert is None:
            proc = subprocess.run([*self.pip, "config", "list"], capture_output=True, text=True, check=False,
                                  stdin=subprocess.DEVNULL, timeout=60)
            found: dict[str, str] = {}
            for line in proc.stdout.splitlines():
                key, _, value = line.partition("=")
                if key.endswith(".cert"):
                    found[key.split(".")[0]] = value.strip().strip("'\"")
            self._cert = found.get(":env:") or found.get("download") or found.get("global") or ""
        return self._cert

    def _fetch_file(self, url: str, target: Path) -> None:
        """Fetch a source distribution pip's index search linked to, checking its hash."""
        parts = urllib.parse.urlsplit(url)
        fragment = urllib.parse.parse_qs(parts.fragment)
        plain = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, ""))
        try:
            if parts.scheme == "file":
                source = Path(urllib.request.url2pathname(parts.path))
                if source.stat().st_size > MAX_SDIST_BYTES:
                    raise RequirementsFailed(f"{target.name} is over {MAX_SDIST_BYTES // 2**20} MiB")
                shutil.copyfile(source, target)
            elif parts.scheme in ("http", "https"):
                cert = self._operator_cert()
                context = ssl.create_default_context(cafile=cert or None)
                with urllib.request.urlopen(plain, timeout=120, context=context) as resp, \
                        target.open("wb") as out:
                    size = 0
                    while chunk := resp.read(1 << 20):
                        size += len(chunk)
                        if size > MAX_SDIST_BYTES:
                            raise RequirementsFailed(f"{target.name} is over {MAX_SDIST_BYTES // 2**20} MiB")
                        out.write(chunk)
            else:
                raise RequirementsFailed(f"{target.name} is at a {parts.scheme}: link, which is not fetched")
        except OSError as exc:
            raise RequirementsFailed(f"fetching {target.name} failed: {exc}") from None
        for algorithm in ("sha256", "sha384", "sha512"):
            if algorithm in fragment:
                digest = hashlib.new(algorithm, target.read_bytes()).hexdigest()
                if digest != fragment[algorithm][0]:
                    raise RequirementsFailed(f"{target.name} does not match the {algorithm} hash the index "
                                             "gives for it")

    def _build(self, sandbox: BuildSandbox, sdist: Path, wheels: Path, built_dir: Path, interp: Interpreter,
               deadline: float) -> Path:
        """A wheel built from `sdist` in the sandbox, offline."""
        build_reqs = _build_requires(sdist)
        if build_reqs:
            self._fetch_build_requirements(sdist, build_reqs, wheels, interp, deadline)
        for _ in range(MAX_BUILD_RETRIES + 1):
            inputs = {f"wheels/{w.name}": w for w in wheels.iterdir()}
            inputs[f"sdists/{sdist.name}"] = sdist
            out = built_dir / "out.tar"
            args = ["wheel", "--no-deps", "--no-index", "--find-links", "/work/in/wheels", "--wheel-dir",
                    "/work/out", f"/work/in/sdists/{sdist.name}"]
            result: StepResult = sandbox.run(inputs, args, out, timeout_s=self._remaining(deadline))
            if result.ok:
                made = _unpack_wheels(out, built_dir)
                out.unlink(missing_ok=True)
                if not made:
                    raise RequirementsFailed(f"building {sdist.name} made no wheel")
                _check_built_wheel(made[0], sdist)
                return made[0]
            asked = _MISSING.findall(result.log)
            if not asked or result.failure != "failed":
                raise RequirementsFailed(f"building {sdist.name} in the build sandbox {result.failure}:\n"
                                         + _tail(result.log, 3000))
            self._fetch_build_requirements(sdist, [asked[-1]], wheels, interp, deadline)
        raise RequirementsFailed(f"building {sdist.name} kept asking for more build requirements")

    def _fetch_build_requirements(self, sdist: Path, build_reqs: Sequence[str], wheels: Path,
                                  interp: Interpreter, deadline: float) -> None:
        fetched = self._download(None, build_reqs, wheels, interp, Requirements(()), deadline)
        if not fetched.ok:
            raise RequirementsFailed(f"fetching the build requirements of {sdist.name} "
                                     f"({', '.join(build_reqs)}) as wheels for {interp.describe()} failed:\n"
                                     + _tail(fetched.output))


def _check_built_wheel(wheel: Path, sdist: Path) -> None:
    """A wheel the sandbox built is the build's word, not the index's: before the control plane's pip
    reads it, make sure it is that package and names no URL (a `file:` one would be read here)."""
    from email.parser import HeaderParser

    try:
        with zipfile.ZipFile(wheel) as zf:
            names = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
            if len(names) != 1:
                raise RequirementsFailed(f"the wheel built from {sdist.name} has no single METADATA")
            info = zf.getinfo(names[0])
            if info.file_size > MAX_PYPROJECT_BYTES:
                raise RequirementsFailed(f"the wheel built from {sdist.name} has an oversized METADATA")
            meta = HeaderParser().parsestr(zf.read(info).decode("utf-8", "replace"))
    except (zipfile.BadZipFile, OSError) as exc:
        raise RequirementsFailed(f"the wheel built from {sdist.name} is not a zip: {exc}") from None
    expected = canonicalize_name(parse_sdist_filename(sdist.name)[0])
    if canonicalize_name(str(meta.get("Name", ""))) != expected:
        raise RequirementsFailed(f"building {sdist.name} made a wheel of another package")
    for spec in meta.get_all("Requires-Dist") or []:
        try:
            url = Requirement(spec).url
        except InvalidRequirement:
            raise RequirementsFailed(f"the wheel built from {sdist.name} has an invalid "
                                     "requirement") from None
        if url:
            raise RequirementsFailed(f"the wheel built from {sdist.name} depends on a URL, which is refused")


def _is_top_pyproject(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return len(parts) == 2 and parts[1] == "pyproject.toml"


def _build_requires(sdist: Path) -> list[str]:
    """The build requirements an sdist declares in its pyproject.toml (read, never run)."""
    raw: bytes | None = None
    try:
        if sdist.name.endswith(".zip"):
            with zipfile.ZipFile(sdist) as zf:
                for info in zf.infolist():
                    if _is_top_pyproject(info.filename):
                        if info.file_size > MAX_PYPROJECT_BYTES:
                            raise RequirementsFailed(f"{sdist.name}'s pyproject.toml is too large")
                        raw = zf.read(info)
                        break
        else:
            with tarfile.open(sdist) as tf:
                for member in tf:
                    if _is_top_pyproject(member.name) and member.isfile():
                        if member.size > MAX_PYPROJECT_BYTES:
                            raise RequirementsFailed(f"{sdist.name}'s pyproject.toml is too large")
                        fh = tf.extractfile(member)
                        raw = fh.read() if fh else None
                        break
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as exc:
        raise RequirementsFailed(f"{sdist.name} is not a readable source distribution: {exc}") from None
    if raw is None:
        return list(DEFAULT_BUILD_REQUIRES)
    try:
        system = tomllib.loads(raw.decode()).get("build-system")
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RequirementsFailed(f"{sdist.name}'s pyproject.toml is not valid TOML: {exc}") from None
    if not isinstance(system, dict):
        return list(DEFAULT_BUILD_REQUIRES)
    requires = system.get("requires", [])
    if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
        raise RequirementsFailed(f"{sdist.name}'s build-system.requires is not a list of requirements")
    for spec in requires:
        try:
            if Requirement(spec).url:
                raise RequirementsFailed(f"{sdist.name} names a URL as a build requirement ({spec[:100]})")
        except InvalidRequirement:
            raise RequirementsFailed(f"{sdist.name} declares an invalid build requirement") from None
    backend = str(system.get("build-backend", "setuptools.build_meta:__legacy__"))
    if backend.startswith("setuptools") and not any(canonicalize_name(Requirement(r).name) == "wheel"
                                                    for r in requires):
        requires = [*requires, "wheel"]  # setuptools before 70.1 asks for it when it builds
    return list(requires)


def _members(tar_path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(tar_path, mode="r:")
    except (tarfile.TarError, OSError) as exc:
        raise RequirementsFailed(f"the build sandbox's output is not a tar: {exc}") from None


def _unpack(tar_path: Path, prefix: str, dest: Path) -> None:
    """Unpack what the sandbox left under `prefix` into `dest`: folders and regular files only."""
    files = 0
    with _members(tar_path) as tar:
        for member in tar:
            path = PurePosixPath(member.name)
            if path.is_absolute() or ".." in path.parts:
                raise RequirementsFailed("the build's output has a path outside its folder: "
                                         f"{member.name[:200]}")
            try:
                rel = path.relative_to(prefix)
            except ValueError:
                continue
            if member.isdir():
                (dest / rel).mkdir(parents=True, exist_ok=True)
                continue
            if not member.isfile():
                raise RequirementsFailed(f"the installed requirements hold {rel} which is not a regular "
                                         "file or folder (links are refused)")
            files += 1
            if files > MAX_DEPS_FILES:
                raise RequirementsFailed(f"the installed requirements hold over {MAX_DEPS_FILES} files")
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            if source is None:
                continue
            with source, target.open("wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
            if member.mode & 0o111:
                with contextlib.suppress(OSError):
                    os.chmod(target, 0o755)


def _unpack_wheels(tar_path: Path, dest: Path) -> list[Path]:
    """The wheels a sandboxed `pip wheel` left at the top of its output."""
    made: list[Path] = []
    with _members(tar_path) as tar:
        for member in tar:
            path = PurePosixPath(member.name)
            if len(path.parts) != 2 or path.parts[0] != "out" or not member.isfile() \
                    or not path.name.endswith(".whl") or "/" in path.name:
                continue
            source = tar.extractfile(member)
            if source is None:
                continue
            target = dest / path.name
            with source, target.open("wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
            made.append(target)
    return made


def _pinned(reqs: Requirements) -> bool:
    """Whether every requirement names one exact version (`==X`, no wildcard) or pins hashes."""
    if reqs.hashed:
        return True
    for line in reqs.lines:
        specs = list(Requirement(line).specifier)
        if len(specs) != 1 or specs[0].operator not in ("==", "===") or "*" in specs[0].version:
            return False
    return True


def _built_at(layer: Path) -> float:
    try:
        return float(layer.with_suffix(".built").read_text())
    except (OSError, ValueError):
        return 0.0


def deterministic_zip(root: Path, dest: Path) -> None:
    """Zip the folder `root` into `dest`, the same bytes for the same files (sorted, dated 1980,
    mode 644 or 755), streamed from disk."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for fname in sorted(filenames):
                full = Path(dirpath) / fname
                info = zipfile.ZipInfo(full.relative_to(root).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
                mode = 0o755 if full.stat().st_mode & 0o111 else 0o644
                info.external_attr = (0o100000 | mode) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                with full.open("rb") as src, zf.open(info, "w") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
