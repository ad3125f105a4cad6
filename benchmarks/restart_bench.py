"""Restart benchmark: time from starting a control plane whose store holds 1,000 functions and 100
nodes to serving its API (`/healthz`, then the function list), on SQLite and optionally PostgreSQL.

Run: `.venv/bin/python benchmarks/restart_bench.py [--db postgresql+psycopg://...]`.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import requests
from bench_platform import start_control_plane

from control_plane.functions import FunctionCreate
from control_plane.store import NodeRecord, Store
from provisioners.net import free_port


def fill(url: str, functions: int, nodes: int) -> None:
    store = Store(url)
    for i in range(functions):
        name = f"fn-{i:04d}"
        store.add_version(name, FunctionCreate(name=name).model_dump(mode="json"), code_digest="0" * 64,
                          code_size=1)
    for i in range(nodes):
        store.upsert_node(NodeRecord(id=f"gone-{i:03d}", provider="local", node_type="local",
                                     url="http://127.0.0.1:9", cpu_millis=2000, memory_mib=4096,
                                     state="ready"))
    store.engine.dispose()


def measure(data_dir: Path, db: str, runs: int, expect: int = 1000) -> list[tuple[float, float]]:
    out = []
    for _ in range(runs):
        port = free_port()
        t0 = time.monotonic()
        proc = start_control_plane(data_dir, port, db=db)
        token = ""
        healthy = listed = 0.0
        try:
            deadline = t0 + 120
            while time.monotonic() < deadline and not healthy:
                try:
                    if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                        healthy = time.monotonic() - t0
                except requests.RequestException:
                    time.sleep(0.02)
            token = (data_dir / "admin.token").read_text().strip()
            resp = requests.get(f"http://127.0.0.1:{port}/v1/functions", timeout=60,
                                headers={"Authorization": f"Bearer {token}"})
            assert resp.ok and len(resp.json()) >= expect, resp.text[:200]
            listed = time.monotonic() - t0
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
        out.append((healthy, listed))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="", help="a PostgreSQL URL to measure too")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    # Baseline, in the same run: the same start with an empty store (process and API start-up).
    data_dir = Path(tempfile.mkdtemp(prefix="cumulus-restart-"))
    try:
        fill(f"sqlite:///{data_dir / 'cumulus.db'}", 1, 0)
        base = sorted(measure(data_dir, "", args.runs, expect=1))[args.runs // 2]
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f"baseline: an empty store (SQLite): API healthy {base[0]:.2f} s, function list served "
          f"{base[1]:.2f} s after start (median of {args.runs})")
    for label, db in [("sqlite", ""), ("postgresql", args.db)]:
        if label == "postgresql" and not db:
            continue
        data_dir = Path(tempfile.mkdtemp(prefix="cumulus-restart-"))
        try:
            fill(db or f"sqlite:///{data_dir / 'cumulus.db'}", 1000, 100)
            rows = measure(data_dir, db, args.runs)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
        best = sorted(rows)[len(rows) // 2]
        print(f"{label}: 1,000 functions + 100 nodes in the store: API healthy {best[0]:.2f} s, "
              f"function list served {best[1]:.2f} s after start (median of {len(rows)}; "
              f"x{best[1] / base[1]:.2f} of the baseline)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
