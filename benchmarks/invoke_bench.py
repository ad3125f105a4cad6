"""Invocation benchmark: warm latency (through the control plane, and straight to the container's
socket as the floor), throughput at 1 and 32 clients, cold start, and resident memory.

Run: `make bench` (or `.venv/bin/python benchmarks/invoke_bench.py` with a Docker engine up).
Starts its own `cumulus up` on a free loopback port with a throwaway data directory. All traffic
goes to 127.0.0.1 or to the instance's unix socket. Throughput uses wrk (Debian package `wrk`) when
present, else a Python load generator.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import requests

from provisioners.net import free_port

REPO = Path(__file__).resolve().parent.parent
NOOP = "def handler(event, context):\n    return {'ok': True}\n"



def code_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("main.py", NOOP)
    return buf.getvalue()


def rss_kib(pid: int) -> int:
    """Resident memory of a process and its descendants."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                children = (task / "children").read_text().split()
                todo.extend(int(c) for c in children)
        except OSError:
            continue
    return total


class RawClient:
    """A minimal HTTP/1.1 keep-alive client on a blocking socket, so the client's own overhead is
    small and the same for the TCP and the unix-socket measurements."""

    def __init__(self, sock: socket.socket, host: str, path: str, headers: dict[str, str]) -> None:
        self.sock = sock
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Length: "
        self.buf = b""

    def call(self, body: bytes) -> tuple[int, bytes]:
        self.sock.sendall(self.head.encode() + f"{len(body)}\r\n\r\n".encode() + body)
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        while len(rest) < length:
            rest += self.sock.recv(65536)
        self.buf = rest[length:]
        return status, rest[:length]


def latencies(client: RawClient, n: int, body: bytes = b"{}") -> list[float]:
    for _ in range(200):  # warm-up
        client.call(body)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        status, _ = client.call(body)
        out.append((time.perf_counter() - t) * 1000)
        assert status == 200, status
    return out


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q / 100 * len(s)))]


def wrk(url: str, token: str, connections: int, seconds: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write('wrk.method = "POST"\nwrk.body = "{}"\n'
                     f'wrk.headers["Authorization"] = "Bearer {token}"\n'
                     'done = function(summary, latency, requests)\n'
                     '  io.write(string.format("RESULT %d %d %f %f\\n", summary.requests, '
                     'summary.errors.status + summary.errors.connect + summary.errors.read + '
                     'summary.errors.write + summary.errors.timeout, latency:percentile(50), '
                     'latency:percentile(99)))\nend\n')
    out = subprocess.run(["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "-s", script.name,
                          url], capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    os.unlink(script.name)
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT"))
    _, reqs, errs, p50, p99 = line.split()
    return {"rps": int(reqs) / seconds, "errors": int(errs), "p50_ms": float(p50) / 1000,
            "p99_ms": float(p99) / 1000}


def python_load(port: int, path: str, token: str, connections: int, seconds: float) -> dict[str, float]:
    import threading

    count = [0] * connections
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        s = socket.create_connection(("127.0.0.1", port))
        c = RawClient(s, "127.0.0.1", path, {"Authorization": f"Bearer {token}"})
        while time.monotonic() < stop:
            c.call(b"{}")
            count[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"rps": sum(count) / seconds, "errors": 0, "p50_ms": float("nan"), "p99_ms": float("nan")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="latency samples per path")
    parser.add_argument("--seconds", type=int, default=10, help="duration of each throughput run")
    parser.add_argument("--cold", type=int, default=10, help="cold starts to measure")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="cumulus-bench-"))
    port = free_port()
    env = {**os.environ, "DOCKER_HOST": os.environ.get("DOCKER_HOST", "unix:///run/cumulus-docker.sock")}
    log = (data_dir / "up.out").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "control_plane.cli", "up", "--data-dir", str(data_dir),
                             "--port", str(port), "--no-example"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while "Press Ctrl-C" not in (data_dir / "up.out").read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                print((data_dir / "up.out").read_text())
                return 1
            time.sleep(0.2)
        token = (data_dir / "admin.token").read_text().strip()
        hdr = {"Authorization": f"Bearer {token}"}

        def deploy(name: str, **cfg: object) -> None:
            r = requests.post(f"{url}/v1/functions", headers=hdr, timeout=120,
                              files={"code": ("c.zip", code_zip(), "application/zip")},
                              data={"config": json.dumps({"name": name, **cfg})})
            r.raise_for_status()

        # 32 warm instances (min = max = 32), so the runs below measure the warm path, not a burst
        # of 32 container starts on two cores.
        deploy("bench", memory_mb=256, concurrency=1, min_instances=32, max_instances=32)
        deadline = time.monotonic() + 120
        while requests.get(f"{url}/v1/functions/bench", headers=hdr, timeout=10).json()["instances"] < 32:
            if time.monotonic() > deadline:
                raise SystemExit("the 32 instances did not start within 120 s")
            time.sleep(0.5)
        assert requests.post(f"{url}/v1/functions/bench/invoke", headers=hdr, data=b"{}", timeout=60).ok

        # Warm latency through the control plane (TCP, kept alive).
        tcp = socket.create_connection(("127.0.0.1", port))
        tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cp = latencies(RawClient(tcp, "127.0.0.1", "/v1/functions/bench/invoke", hdr), args.requests)
        tcp.close()

        # The floor: straight to an instance's unix socket (in its container, through its root).
        from node_agent.runtime import LABEL_FUNCTION, DockerRuntime

        runtime = DockerRuntime(env["DOCKER_HOST"])
        sock_path = runtime.socket_path(runtime.list({LABEL_FUNCTION: "bench"})[0])
        us = socket.socket(socket.AF_UNIX)
        us.connect(str(sock_path))
        floor = latencies(RawClient(us, "fn", "/invoke", {}), args.requests)
        us.close()

        # Throughput at 1 and 32 concurrent clients.
        load = {}
        for conns in (1, 32):
            if shutil.which("wrk"):
                load[conns] = wrk(f"{url}/v1/functions/bench/invoke", token, conns, args.seconds)
            else:
                load[conns] = python_load(port, "/v1/functions/bench/invoke", token, conns, args.seconds)
        instances = requests.get(f"{url}/v1/functions/bench", headers=hdr, timeout=10).json()["instances"]

        # Resident memory, while the instances are there.
        agent_pid = int(json.loads(next((data_dir / "nodes").glob("*/node.json")).read_text())["pid"])
        import docker

        client = docker.from_env()
        one = client.api.containers(filters={"label": "io.cumulus.function=bench"})[0]
        rss = {"control plane": rss_kib(proc.pid), "node agent": rss_kib(agent_pid),
               "one idle warm instance": rss_kib(client.api.inspect_container(one["Id"])["State"]["Pid"])}
        requests.delete(f"{url}/v1/functions/bench", headers=hdr, timeout=60).raise_for_status()

        # Cold starts: a fresh function each time, so each first call starts a new container.
        cold = []
        for i in range(args.cold):
            deploy(f"cold{i}", keep_alive_s=5)
            t = time.perf_counter()
            r = requests.post(f"{url}/v1/functions/cold{i}/invoke", headers=hdr, data=b"{}", timeout=60)
            cold.append((time.perf_counter() - t) * 1000)
            assert r.ok and r.headers["X-Cumulus-Cold-Start"] == "true", r.text

        print("\n== Cumulus invocation benchmark ==")
        print(f"machine: {os.cpu_count()} cores; function: no-op handler, 256 MB, concurrency 1, "
              "32 warm instances")
        print(f"{'path':<34}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
        for label, vals in (("warm, through control plane", cp), ("floor: container socket", floor)):
            print(f"{label:<34}{pct(vals, 50):>10.3f}{pct(vals, 99):>10.3f}{statistics.fmean(vals):>10.3f}")
        print(f"overhead of the platform (p50): {pct(cp, 50) - pct(floor, 50):.3f} ms "
              f"({pct(cp, 50) / pct(floor, 50):.1f}x the floor)")
        for conns, res in load.items():
            print(f"throughput, {conns:>2} client(s): {res['rps']:>8.0f} inv/s  (p50 {res['p50_ms']:.2f} ms, "
                  f"p99 {res['p99_ms']:.2f} ms, errors {res['errors']:.0f})")
        print(f"instances serving after the 32-client run: {instances}")
        print(f"cold start (new container, end to end): p50 {pct(cold, 50):.0f} ms, "
              f"min {min(cold):.0f} ms, max {max(cold):.0f} ms over {len(cold)}")
        print("RSS: " + ", ".join(f"{k} {v / 1024:.1f} MiB" for k, v in rss.items()))
        targets = {"warm p50 <= 2 ms": pct(cp, 50) <= 2.0,
                   ">= 1000 inv/s at 32 clients": load[32]["rps"] >= 1000,
                   "cold start p50 <= 500 ms": pct(cold, 50) <= 500}
        for name, ok in targets.items():
            print(f"target {name}: {'met' if ok else 'MISSED'}")
        return 0
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
