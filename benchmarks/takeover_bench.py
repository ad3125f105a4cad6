"""HA takeover benchmark: two control planes on one PostgreSQL database; SIGKILL the leader and time
until the other one leads (as its `/v1/control-planes` says), then restart the dead one as a
follower and repeat. Printed against the lease TTL measured in the same run: a takeover can take
at most TTL + TTL/3 (the lease must expire, and the follower retries every TTL/3).

Run: `.venv/bin/python benchmarks/takeover_bench.py --db postgresql+psycopg://... [--ttl 3 --kills 5]`
(a fresh database; the test suite's `postgres_server` fixture shows how to start a throwaway server).
"""

from __future__ import annotations

import argparse
import functools
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from bench_platform import start_control_plane, wait
from cryptography.fernet import Fernet

from provisioners.net import free_port

KEY = Fernet.generate_key().decode()  # the cluster's secret key, which every control plane of it has


def start(data_dir: Path, db: str, ttl: float, port: int) -> subprocess.Popen[bytes]:
    return start_control_plane(data_dir, port, env={"CUMULUS_DB": db, "CUMULUS_LEASE_TTL_S": str(ttl),
                                                    "CUMULUS_NODES_DIR": str(data_dir.parent / "nodes"),
                                                    "CUMULUS_SECRET_KEY": KEY})


def members(port: int, token: str) -> list[dict[str, object]]:
    resp = requests.get(f"http://127.0.0.1:{port}/v1/control-planes", timeout=5,
                        headers={"Authorization": f"Bearer {token}"})
    resp.raise_for_status()
    return list(resp.json())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="a PostgreSQL URL (an empty database)")
    parser.add_argument("--ttl", type=float, default=3.0, help="lease TTL in seconds")
    parser.add_argument("--kills", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cumulus-takeover-"))
    ports = [free_port(), free_port()]
    dirs = [root / "a", root / "b"]
    procs = [start(dirs[0], args.db, args.ttl, ports[0])]
    times: list[float] = []
    try:
        wait(lambda: (dirs[0] / "admin.token").exists(), 60)
        token = (dirs[0] / "admin.token").read_text().strip()  # both accept it: one database

        def leads(i: int) -> bool:
            return any(m["leader"] and m["self"] for m in members(ports[i], token))

        wait(lambda: leads(0), 60)
        procs.append(start(dirs[1], args.db, args.ttl, ports[1]))
        wait(lambda: len(members(ports[1], token)) == 2, 60)
        for _ in range(args.kills):
            leader = 0 if leads(0) else 1
            procs[leader].send_signal(signal.SIGKILL)
            t0 = time.monotonic()
            procs[leader].wait(30)
            wait(functools.partial(leads, 1 - leader), 10 * args.ttl)
            times.append(time.monotonic() - t0)
            procs[leader] = start(dirs[leader], args.db, args.ttl, ports[leader])
            wait(functools.partial(members, ports[leader], token), 60)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.wait(60)
        shutil.rmtree(root, ignore_errors=True)
    bound = args.ttl * 4 / 3
    print(f"takeover after SIGKILL of the leader, {len(times)} kills, lease TTL {args.ttl:g} s: "
          f"median {statistics.median(times):.2f} s, max {max(times):.2f} s "
          f"(x{statistics.median(times) / args.ttl:.2f} of the TTL; bound TTL+TTL/3 = {bound:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
