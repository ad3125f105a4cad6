"""Requirements through the real parts: `cumulus up` fetches wheels for the runtime's Python from the
package index it is configured with (one on 127.0.0.1 here), builds a source-only package in the
build sandbox, installs everything there, and the function imports it; what cannot be installed is
a 422 `RequirementsInstallFailed` that says why, and leaves no build container behind."""

from __future__ import annotations

import pytest
from helpers import RunningPlatform, docker_client

pytestmark = pytest.mark.docker

USES_BOTH = {"main.py": "import srconly, tinylib\n\ndef handler(event, context):\n"
                        "    return {'answer': tinylib.answer(), 'srconly': srconly.WHERE}\n",
             "requirements.txt": "tinylib==1.0  # needs srconly, which has no wheel\n"}


def _build_containers() -> list[object]:
    return list(docker_client().api.containers(all=True, filters={"label": "io.cumulus.role=build"}))


def test_wheels_and_a_source_only_package_are_installed_in_the_sandbox(platform: RunningPlatform) -> None:
    platform.deploy_ok("withdeps", USES_BOTH)
    resp = platform.invoke("withdeps", {})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"answer": 42, "srconly": "built in the sandbox"}
    assert not _build_containers()


@pytest.mark.parametrize(("requirements", "said"), [
    ("no-such-package-cumulus==9.9\n", "no wheel of no-such-package-cumulus==9.9 for CPython 3.11 on linux "
                                       "x86_64 (glibc 2.36), and no source distribution"),
    ("winonly\n", "no wheel of winonly for CPython 3.11"),
    ("tinylib==1.0\nsrconly<1\n", "no wheel of srconly<1 for CPython 3.11"),
    ("tinylib==1.0\ntinylib>=2\n", "conflicting dependencies"),
    ("tinylib==1.0 --hash=sha256:" + "0" * 64 + "\n", "THESE PACKAGES DO NOT MATCH THE HASHES"),
    ("-r /etc/passwd\n", "-r reads another file and is refused"),
])
def test_what_cannot_be_installed_is_a_clear_422(platform: RunningPlatform, requirements: str,
                                                 said: str) -> None:
    resp = platform.deploy("baddeps", {"main.py": "def handler(e, c):\n    return 1\n",
                                       "requirements.txt": requirements})
    assert resp.status_code == 422, resp.text
    err = resp.json()["error"]
    assert err["type"] == "RequirementsInstallFailed" and said in err["message"], err["message"]
    assert "root:x:0:0" not in err["message"]
    assert not _build_containers()
    gone = platform.invoke("baddeps", {})
    assert gone.status_code == 404  # nothing was recorded
