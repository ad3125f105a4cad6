"""Lambda code benchmark: deploy time of a numpy function with its requirements uncached and cached,
and cold starts of a numpy function, an image function (awslambdaric, and a custom runtime) and,
as the baseline in the same run, the plain hello function.

Run: `.venv/bin/python benchmarks/lambda_code_bench.py` (a Docker engine up, pip able to reach its
package index). Starts its own `cumulus up` on a free loopback port with a throwaway data directory
(so its dependency-layer cache starts empty); the uncached deploy also skips pip's own HTTP cache
(`PIP_NO_CACHE_DIR`), so it fetches numpy from the index. All traffic goes to 127.0.0.1.
A cold start is a first call to a new function version: a new container, end to end. Functions
have egress (the default) but for "network none".
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from provisioners.net import free_port

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

HELLO = "def handler(event, context):\n    return {'hello': event.get('n')}\n"
NUMPY = ("import numpy as np\n\ndef handler(event, context):\n"
         "    return {'sum': float(np.arange(event.get('n', 10)).sum())}\n")
RIC = "def handler(event, context):\n    return {'hello': event.get('n')}\n"


def code_zip(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buf.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", type=int, default=7, help="cold starts per kind of function")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="cumulus-bench-lambda-"))
    port = free_port()
    env = {**os.environ, "DOCKER_HOST": os.environ.get("DOCKER_HOST", "unix:///run/cumulus-docker.sock"),
           "PIP_NO_CACHE_DIR": "1"}
    log = (data_dir / "up.out").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "control_plane.cli", "up", "--data-dir", str(data_dir),
                             "--port", str(port), "--no-example"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while "Press Ctrl-C" not in (data_dir / "up.out").read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                print((data_dir / "up.out").read_text())
                return 1
            time.sleep(0.2)
        token = (data_dir / "admin.token").read_text().strip()
        hdr = {"Authorization": f"Bearer {token}"}

        def deploy(name: str, files: dict[str, str] | None = None, **cfg: Any) -> float:
            t = time.perf_counter()
            multipart: dict[str, Any] = {"config": (None, json.dumps({"name": name, **cfg}))}
            if files is not None:
                multipart["code"] = ("c.zip", code_zip(files), "application/zip")
            r = requests.post(f"{url}/v1/functions", headers=hdr, timeout=900, files=multipart)
            if r.status_code != 201:
                raise SystemExit(f"deploy {name}: {r.status_code} {r.text}")
            return time.perf_counter() - t

        def cold_starts(make: Callable[[int], None], name: str) -> list[float]:
            out = []
            for i in range(args.cold):
                make(i)  # a new version: its first call starts a new container
                t = time.perf_counter()
                r = requests.post(f"{url}/v1/functions/{name}/invoke", headers=hdr, data=b'{"n": 3}',
                                  timeout=120)
                out.append((time.perf_counter() - t) * 1000)
                if r.status_code != 200:
                    raise SystemExit(f"invoke {name}: {r.status_code} {r.text}")
            return out

        numpy_files = {"main.py": NUMPY, "requirements.txt": "numpy\n"}
        uncached = deploy("np", numpy_files)
        cached = deploy("np2", numpy_files)
        hello_base = deploy("hello-deploy", {"main.py": HELLO})

        import docker
        from lambda_images import build_awslambdaric_image, build_custom_runtime_image

        from node_agent.image import DEFAULT_RECIPE

        client = docker.DockerClient(base_url=env["DOCKER_HOST"])
        ric = build_awslambdaric_image(client, DEFAULT_RECIPE.tag, RIC, "cumulus-bench/ric:1")
        provided = build_custom_runtime_image(client, DEFAULT_RECIPE.tag, "cumulus-bench/provided:1")

        cold = {
            "hello (zip, baseline)": cold_starts(
                lambda i: deploy("hello", {"main.py": HELLO}, env={"V": str(i)}, keep_alive_s=5), "hello"),
            "hello, network none": cold_starts(
                lambda i: deploy("quiet", {"main.py": HELLO}, env={"V": str(i)}, keep_alive_s=5,
                                 network="none"), "quiet"),
            "numpy (zip + layer)": cold_starts(
                lambda i: deploy("np", numpy_files, env={"V": str(i)}, keep_alive_s=5), "np"),
            "image, awslambdaric": cold_starts(
                lambda i: deploy("ric", None, package_type="image", image=ric, env={"V": str(i)},
                                 keep_alive_s=5), "ric"),
            "image, custom runtime": cold_starts(
                lambda i: deploy("provided", None, package_type="image", image=provided, env={"V": str(i)},
                                 keep_alive_s=5), "provided"),
        }
        print(f"deploy with requirements.txt = numpy: uncached {uncached:.1f} s, cached {cached:.2f} s "
              f"(no requirements: {hello_base:.2f} s)")
        base = statistics.median(cold["hello (zip, baseline)"])
        for kind, times in cold.items():
            med = statistics.median(times)
            print(f"cold start {kind:24s} p50 {med:6.0f} ms  min {min(times):6.0f}  max {max(times):6.0f}  "
                  f"({med / base:.2f}x hello) over {len(times)}")
        return 0
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    sys.exit(main())
