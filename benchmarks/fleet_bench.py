"""Fleet benchmark: time from the threshold crossing (a call that finds no node) to the new node
Ready, split into decision, provider call, and boot + join; then the call's answer.

Run: `.venv/bin/python benchmarks/fleet_bench.py [--provider local|qemu] [--config FILE] [--runs N]`.
Starts its own `cumulus up --min-nodes 0 --max-nodes 1` on a free loopback port; each run waits for
the fleet to shrink back to zero first, so every run provisions a fresh node.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import requests

from provisioners.net import free_port

REPO = Path(__file__).resolve().parent.parent



def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", default="local")
    parser.add_argument("--config", type=Path, help="TOML config (node types, provider parameters)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=900, help="per run, seconds")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="cumulus-fleet-bench-"))
    port = free_port()
    env = {**os.environ, "DOCKER_HOST": os.environ.get("DOCKER_HOST", "unix:///run/cumulus-docker.sock"),
           "CUMULUS_RECONCILE_INTERVAL_S": "0.2", "CUMULUS_HEARTBEAT_INTERVAL_S": "0.5",
           "CUMULUS_WATERMARK_WINDOW_S": "2", "CUMULUS_SCALE_DOWN_COOLDOWN_S": "2",
           "CUMULUS_PROVISION_WAIT_S": str(args.timeout)}
    cmd = [sys.executable, "-m", "control_plane.cli", "up", "--data-dir", str(data_dir), "--port", str(port),
           "--provider", args.provider, "--min-nodes", "0", "--max-nodes", "1", "--no-example"]
    if args.config:
        cmd += ["--config", str(args.config)]
    proc = subprocess.Popen(cmd, env=env, stdout=(data_dir / "up.out").open("wb"), stderr=subprocess.STDOUT,
                            cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while "Cumulus is up" not in (data_dir / "up.out").read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                print((data_dir / "up.out").read_text())
                return 1
            time.sleep(0.2)
        hdr = {"Authorization": f"Bearer {(data_dir / 'admin.token').read_text().strip()}"}
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("main.py", "def handler(event, context):\n    return 'ok'\n")
        deployed = requests.post(f"{url}/v1/functions", headers=hdr, timeout=60,
                                 files={"code": ("c.zip", buf.getvalue(), "application/zip")},
                                 data={"config": json.dumps({"name": "fleetbench", "keep_alive_s": 1})})
        deployed.raise_for_status()
        rows: list[dict[str, float]] = []
        for run in range(args.runs):
            t_wait = time.monotonic() + args.timeout
            while requests.get(f"{url}/v1/nodes", headers=hdr, timeout=10).json():
                if time.monotonic() > t_wait:
                    raise SystemExit("the fleet did not shrink to zero")
                time.sleep(0.5)
            seen = len(requests.get(f"{url}/v1/events?limit=1000", headers=hdr, timeout=10).json())
            t0 = time.time()
            r = requests.post(f"{url}/v1/functions/fleetbench/invoke", headers=hdr, data=b"{}",
                              timeout=args.timeout)
            t_end = time.time()
            assert r.ok, r.text
            events: list[dict[str, Any]] = requests.get(f"{url}/v1/events?limit=1000", headers=hdr,
                                                        timeout=10).json()[seen:]
            at = {e["kind"]: e["at"] for e in events}
            ready = next(e for e in events if e["kind"] == "node_ready")
            boot_join = float(ready["reason"].rsplit("boot and join ", 1)[1].rstrip("s"))
            row = {"decision": at["node_add"] - t0, "provider call": at["node_created"] - at["node_add"],
                   "boot and join": boot_join, "threshold to ready": at["node_created"] - t0 + boot_join,
                   "call answered": t_end - t0}
            rows.append(row)
            print(f"run {run + 1}: " + ", ".join(f"{k} {v:.2f}s" for k, v in row.items()), flush=True)
        print(f"\n== fleet: threshold crossing to node Ready ({args.provider}, {args.runs} runs, median) ==")
        for key in rows[0]:
            print(f"{key:<22}{statistics.median(r[key] for r in rows):>8.2f} s")
        return 0
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
