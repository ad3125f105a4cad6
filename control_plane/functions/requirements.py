"""A function's `requirements.txt`, read as text and checked before anything installs it.

Only named requirements reach pip: `name[extras] specifiers ; markers`, each optionally with
`--hash=` options, and the global options `--pre` and `--prefer-binary`. Everything that would
make pip read a file or reach an address the operator did not configure is refused with a
`RequirementsInstallFailed` that names the line and the option, never what a file holds: `-r`,
`-c` and `-e` (they read files), local paths and `file:` URLs, direct references (`name @ URL`,
`git+...`), and index options (`-i`, `--extra-index-url`, `-f`, `--trusted-host`, `--no-index`:
the package index is the one the control plane's pip configuration names). pip is then given a
requirements file written from what was parsed, not the user's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement

from control_plane.core import RequirementsFailed

MAX_REQUIREMENTS_BYTES = 64 * 1024
MAX_REQUIREMENTS = 500
GLOBAL_OPTIONS = ("--pre", "--prefer-binary")
READS_FILES = {"-r": "reads another file", "--requirement": "reads another file",
               "-c": "reads a constraints file", "--constraint": "reads a constraints file",
               "-e": "installs a local or VCS project in place", "--editable": "installs a local or VCS "
               "project in place"}
INDEX_OPTIONS = ("-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--trusted-host",
                 "--no-index")
_HASH = re.compile(r"^--hash=(sha256|sha384|sha512):[0-9a-fA-F]{64,128}$")


@dataclass(frozen=True)
class Requirements:
    """What a `requirements.txt` asks for, checked: the requirement lines pip is given and the
    global options it keeps."""

    lines: tuple[str, ...]
    options: tuple[str, ...] = ()

    @property
    def hashed(self) -> bool:
        """Whether the file pins hashes (pip then checks every download: `--require-hashes`)."""
        return any("--hash=" in line for line in self.lines)

    def text(self) -> str:
        """The requirements file pip is given."""
        return "".join(f"{line}\n" for line in (*self.options, *self.lines))


def _fail(lineno: int, why: str) -> RequirementsFailed:
    return RequirementsFailed(f"requirements.txt line {lineno}: {why}")


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each logical line: comments dropped, `\\` continuations joined."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line:
            out.append((start, line))
    if pending.strip():
        out.append((start, pending.strip()))
    return out


def _option(lineno: int, word: str) -> str:
    name = word.split("=", 1)[0]
    if name in READS_FILES:
        raise _fail(lineno, f"{name} {READS_FILES[name]} and is refused: list the packages themselves")
    if name in INDEX_OPTIONS:
        raise _fail(lineno, f"{name} is refused: packages come from the package index the operator "
                    "configured (the control plane's pip configuration)")
    if name in GLOBAL_OPTIONS and word == name:
        return name
    raise _fail(lineno, f"the option {name[:40]} is not supported (allowed: {', '.join(GLOBAL_OPTIONS)}, "
                "and --hash after a requirement)")


def _requirement(lineno: int, spec: str) -> str:
    head = spec.split(";", 1)[0]
    if spec.lower().startswith("file:"):
        raise _fail(lineno, "a file: URL is refused: name a package from the package index")
    if "@" in head or re.match(r"^[a-z][a-z0-9+.-]*://", spec, re.I) or re.match(r"^(git|hg|svn|bzr)\+",
                                                                                   spec, re.I):
        raise _fail(lineno, "a URL or direct reference (name @ URL) is refused: name a package from "
                    "the package index")
    if spec.startswith((".", "/", "~")) or "/" in head or "\\" in head or \
            head.lower().rstrip().endswith((".whl", ".zip", ".tar.gz", ".tgz", ".tar.bz2")):
        raise _fail(lineno, "a local path or file is refused: name a package from the package index")
    try:
        req = Requirement(spec)
    except InvalidRequirement as exc:
        raise _fail(lineno, f"not a requirement ({str(exc).splitlines()[0][:200]})") from None
    return str(req)


def parse_requirements(text: bytes) -> Requirements:
    """The checked content of a `requirements.txt` (RequirementsFailed, 422, on anything refused)."""
    if len(text) > MAX_REQUIREMENTS_BYTES:
        raise RequirementsFailed(f"requirements.txt is over {MAX_REQUIREMENTS_BYTES // 1024} KiB")
    try:
        decoded = text.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise RequirementsFailed("requirements.txt is not UTF-8 text") from None
    if "\x00" in decoded:
        raise RequirementsFailed("requirements.txt holds a NUL byte")
    lines: list[str] = []
    options: list[str] = []
    for lineno, line in _logical_lines(decoded):
        if line.startswith("-"):
            word, _, rest = line.partition(" ")
            option = _option(lineno, word)
            if rest.strip():
                raise _fail(lineno, f"{option} takes no value")
            if option not in options:
                options.append(option)
            continue
        spec, sep, tail = line.partition(" --")
        words = (sep.strip() + tail).split() if sep else []
        hashes: list[str] = []
        while words:
            word = words.pop(0)
            if word == "--hash" and words:
                word = f"--hash={words.pop(0)}"
            if not word.startswith("--hash"):
                _option(lineno, word)  # refuses it, saying why
            if not _HASH.match(word):
                raise _fail(lineno, "a --hash must be --hash=sha256:<hex> (or sha384, sha512)")
            hashes.append(word)
        lines.append(" ".join([_requirement(lineno, spec.strip()), *hashes]))
        if len(lines) > MAX_REQUIREMENTS:
            raise RequirementsFailed(f"requirements.txt lists over {MAX_REQUIREMENTS} requirements")
    if lines and any("--hash=" in x for x in lines) and not all("--hash=" in x for x in lines):
        raise RequirementsFailed("requirements.txt pins hashes for some requirements but not all: pin "
                                 "every one (pip checks them all once one is pinned)")
    return Requirements(tuple(lines), tuple(options))
