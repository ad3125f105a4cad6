"""Ordinary Lambda code through the real parts: requirements from the package index pip is configured
with (PyPI here), resolved for the runtime's own Python and installed in the build sandbox; numpy,
pandas, scikit-learn and Pillow import and compute in the runtime image; a second deploy of the same
requirements reuses their layer; each runtime runs its own Debian Python."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import docker.errors
import pytest
from helpers import RunningPlatform, docker_client, start_platform

from node_agent.image import RUNTIMES

pytestmark = [pytest.mark.docker, pytest.mark.packages, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]

STACK = {
    "requirements.txt": "numpy\npandas\nscikit-learn\nPillow\n",
    "frames.py": "import pandas as pd\n\ndef handler(event, context):\n"
                 "    df = pd.DataFrame(event['rows'])\n"
                 "    sums = df.groupby('team')['points'].sum().to_dict()\n"
                 "    return {'sums': {k: int(v) for k, v in sums.items()}, 'pandas': pd.__version__}\n",
    "learn.py": "import numpy as np\nfrom sklearn.linear_model import LogisticRegression\n\n"
                "def handler(event, context):\n"
                "    x = np.array([[0.0], [1.0], [2.0], [3.0], [10.0], [11.0], [12.0], [13.0]])\n"
                "    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])\n"
                "    model = LogisticRegression().fit(x, y)\n"
                "    return {'predicted': model.predict(np.array(event['x']).reshape(-1, 1)).tolist()}\n",
    "images.py": "import io\nfrom PIL import Image, ImageDraw\n\ndef handler(event, context):\n"
                 "    img = Image.new('RGB', (64, 48), 'white')\n"
                 "    ImageDraw.Draw(img).rectangle([8, 8, 40, 30], fill='red')\n"
                 "    small = img.resize((32, 24))\n"
                 "    out = io.BytesIO()\n    small.save(out, format='PNG')\n"
                 "    return {'size': list(small.size), 'png': out.getvalue()[:8].hex(),\n"
                 "            'red': small.getpixel((10, 8))}\n",
}
VERSION = "import sys\n\ndef handler(event, context):\n    return list(sys.version_info[:2])\n"


@pytest.fixture(scope="module")
def platform(docker_engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    """A platform whose pip uses the machine's own configuration (its package index), with time for
    a first call to wait for a runtime image that its node fetches."""
    plat = start_platform(tmp_path_factory.mktemp("lambda-code"),
                          extra_env={"PIP_NO_INDEX": "0", "CUMULUS_QUEUE_TIMEOUT_S": "120"})
    try:
        yield plat
    finally:
        plat.stop()


def _stages(stderr: str) -> list[str]:
    return [line.strip() for line in stderr.splitlines() if line.startswith("  ")]


def test_a_numpy_function_deploys_runs_and_its_layer_is_reused(platform: RunningPlatform) -> None:
    first = platform.cli("deploy", str(REPO / "examples" / "numpy-stats"), "--name", "np-stats")
    assert first.returncode == 0, first.stderr
    stages = _stages(first.stderr)  # the CLI shows the build as it goes
    assert any(s.startswith("fetching wheels of numpy for CPython 3.11") for s in stages), stages
    assert any(s.startswith("installing") and "in the build sandbox" in s for s in stages), stages
    resp = platform.invoke("np-stats", {"values": [2, 4, 4, 4, 5, 5, 7, 9]})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["mean"] == 5.0 and body["std"] == 2.0
    assert body["det"] == pytest.approx(-49.0, abs=1e-6)
    again = platform.cli("deploy", str(REPO / "examples" / "numpy-stats"), "--name", "np-again")
    assert again.returncode == 0, again.stderr
    assert any(s.endswith(": cached") for s in _stages(again.stderr)), again.stderr
    assert not any(s.startswith("fetching") for s in _stages(again.stderr)), again.stderr
    both = [platform.get(f"/v1/functions/{n}") for n in ("np-stats", "np-again")]
    assert both[0]["code_digest"] == both[1]["code_digest"]  # same code, same layer
    assert platform.invoke("np-again", {"values": [1]}).json()["mean"] == 1.0


def test_pandas_scikit_learn_and_pillow_run_unmodified(platform: RunningPlatform) -> None:
    for name in ("frames", "learn", "images"):
        platform.deploy_ok(name, STACK, handler=f"{name}.handler", memory_mb=512)
    rows = [{"team": "a", "points": 3}, {"team": "b", "points": 4}, {"team": "a", "points": 5}]
    frames = platform.invoke("frames", {"rows": rows})
    assert frames.status_code == 200, frames.text
    assert frames.json()["sums"] == {"a": 8, "b": 4}
    learn = platform.invoke("learn", {"x": [1.0, 12.0]})
    assert learn.status_code == 200, learn.text
    assert learn.json() == {"predicted": [0, 1]}
    images = platform.invoke("images", {})
    assert images.status_code == 200, images.text
    assert images.json() == {"size": [32, 24], "png": "89504e470d0a1a0a", "red": [255, 0, 0]}


def test_each_runtime_runs_its_own_python(platform: RunningPlatform) -> None:
    # The node's engine lacks the 3.13 image: its agent fetches the rootfs from the control plane.
    with contextlib.suppress(docker.errors.ImageNotFound):
        docker_client().images.remove(RUNTIMES["python3.13"].tag, force=True)
    for runtime, version in (("python3.11", [3, 11]), ("python3.13", [3, 13])):
        platform.deploy_ok(f"ver-{runtime.replace('.', '')}", {"main.py": VERSION}, runtime=runtime)
        resp = platform.invoke(f"ver-{runtime.replace('.', '')}", {})
        assert resp.status_code == 200, resp.text
        assert resp.json() == version
    shown = platform.get("/v1/functions/ver-python313")["config"]
    assert shown["runtime"] == "python3.13"
    logs = "".join(p.read_text() for p in (platform.data_dir / "nodes").glob("*/agent.log"))
    assert f"event=image_fetched image={RUNTIMES['python3.13'].tag}" in logs


def test_requirements_are_resolved_for_the_runtimes_python(platform: RunningPlatform,
                                                          tmp_path: Path) -> None:
    code = {"main.py": "import sys, numpy\n\ndef handler(event, context):\n"
                       "    return {'python': list(sys.version_info[:2]), 'numpy': numpy.__file__}\n",
            "requirements.txt": "numpy\n"}
    resp = platform.cli("deploy", "--name", "np313", "--runtime", "python3.13",
                        str(_folder(tmp_path / "np313", code)))
    assert resp.returncode == 0, resp.stderr
    assert any("for CPython 3.13" in s for s in _stages(resp.stderr)), resp.stderr
    called = platform.invoke("np313", {})
    assert called.status_code == 200, called.text
    assert called.json()["python"] == [3, 13] and called.json()["numpy"].startswith("/opt/cumulus-deps/")


def test_an_unknown_runtime_or_a_package_that_cannot_install_is_a_clear_error(
        platform: RunningPlatform, tmp_path: Path) -> None:
    bad = platform.deploy("oldpy", {"main.py": VERSION}, runtime="python2.7")
    assert bad.status_code == 422, bad.text
    assert bad.json()["error"]["type"] == "InvalidConfig"
    assert "python3.11, python3.13" in bad.json()["error"]["message"]
    missing = platform.deploy("nopkg", {"main.py": VERSION,
                                        "requirements.txt": "cumulus-no-such-package-zz9==1.0\n"})
    assert missing.status_code == 422, missing.text
    err = missing.json()["error"]
    assert err["type"] == "RequirementsInstallFailed" and "cumulus-no-such-package-zz9" in err["message"]
    cli = platform.cli("deploy", "--name", "nopkg", "--runtime", "python2.7",
                       str(_folder(tmp_path / "old", {"main.py": VERSION})))
    assert cli.returncode != 0 and "python2.7" in cli.stderr and "Traceback" not in cli.stderr


def _folder(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text)
    return root
