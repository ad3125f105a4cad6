"""Metering benchmark: warm invoke latency (p50/p99) and throughput with authentication, quotas and
usage metering on, against the same build with metering off, in one run.

Run: `make bench` (or `.venv/bin/python benchmarks/metering_bench.py` with a Docker engine up).
Starts two `cumulus up` processes on free loopback ports with throwaway data directories: one as
shipped, one whose node agent records no usage (`CUMULUS_AGENT_METERING=false`). Both authenticate
every call with a tenant's developer token (not the admin's) against a tenant with a rate quota,
so the baseline differs only by metering. Rounds alternate between the two, so that drift of a
noisy machine falls on both alike; the figures are medians over the rounds. All traffic goes to
127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import sys
import time
from pathlib import Path

import requests
from bench_platform import Platform, start, stop, wait_up
from invoke_bench import RawClient, code_zip, latencies, pct, python_load, wrk

REPO = Path(__file__).resolve().parent.parent
INSTANCES = 4


def start_metering(label: str, metering: bool) -> Platform:
    return start(label, {"CUMULUS_AGENT_METERING": "true" if metering else "false"})


def prepare(p: Platform) -> None:
    """Wait for it; a tenant with a rate quota (high enough never to refuse), its developer and a
    token; a function with warm instances."""
    wait_up(p)
    admin = p.headers

    def post(path: str, body: dict[str, object]) -> dict[str, object]:
        r = requests.post(p.url + path, headers=admin, json=body, timeout=30)
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]

    post("/v1/tenants", {"name": "bench", "quotas": {"rps": 1_000_000, "concurrency": 10_000}})
    post("/v1/users", {"name": "dev", "tenant": "bench", "role": "developer"})
    p.token = str(post("/v1/tokens", {"user": "dev"})["token"])
    dev = {"Authorization": f"Bearer {p.token}"}
    r = requests.post(f"{p.url}/v1/functions", headers=dev, timeout=120,
                      files={"code": ("c.zip", code_zip(), "application/zip")},
                      data={"config": json.dumps({"name": "noop", "memory_mb": 128, "concurrency": 1,
                                                  "min_instances": INSTANCES, "max_instances": INSTANCES})})
    r.raise_for_status()
    deadline = time.monotonic() + 120
    while requests.get(f"{p.url}/v1/functions/bench/noop", headers=dev, timeout=10).json()["instances"] \
            < INSTANCES:
        if time.monotonic() > deadline:
            raise SystemExit(f"{p.label}: the instances did not start within 120 s")
        time.sleep(0.5)
    assert requests.post(f"{p.url}/v1/functions/bench/noop/invoke", headers=dev, data=b"{}", timeout=60).ok


def warm_latencies(p: Platform, n: int) -> list[float]:
    tcp = socket.create_connection(("127.0.0.1", p.port))
    tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        return latencies(RawClient(tcp, "127.0.0.1", "/v1/functions/bench/noop/invoke",
                                   {"Authorization": f"Bearer {p.token}"}), n)
    finally:
        tcp.close()


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def agent_pid(p: Platform) -> int:
    return int(json.loads(next((p.data_dir / "nodes").glob("*/node.json")).read_text())["pid"])


def throughput(p: Platform, clients: int, seconds: int) -> dict[str, float]:
    """Calls a second at `clients`, and the CPU time per call of the control plane and the agent."""
    path = "/v1/functions/bench/noop/invoke"
    pids = {"cp": p.proc.pid, "agent": agent_pid(p)}
    before = {k: cpu_s(v) for k, v in pids.items()}
    if shutil.which("wrk"):
        out = wrk(p.url + path, p.token, clients, seconds)
    else:
        out = python_load(p.port, path, p.token, clients, seconds)
    calls = max(1.0, out["rps"] * seconds)
    for k, pid in pids.items():
        out[f"{k}_us"] = (cpu_s(pid) - before[k]) / calls * 1e6
    return out


def usage_records(p: Platform) -> int:
    r = requests.get(f"{p.url}/v1/usage", headers={"Authorization": f"Bearer {p.token}"}, timeout=30)
    r.raise_for_status()
    return sum(int(row["invocations"]) for row in r.json())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per platform")
    parser.add_argument("--requests", type=int, default=2000, help="latency samples per round")
    parser.add_argument("--seconds", type=int, default=5, help="duration of each throughput run")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients of the throughput runs")
    args = parser.parse_args()

    on, off = start_metering("metering-on", True), start_metering("metering-off", False)
    try:
        for p in (on, off):
            prepare(p)
        p50: dict[str, list[float]] = {"on": [], "off": []}
        p99: dict[str, list[float]] = {"on": [], "off": []}
        rps: dict[str, list[float]] = {"on": [], "off": []}
        cpu: dict[str, dict[str, list[float]]] = {k: {"cp": [], "agent": []} for k in ("on", "off")}
        calls = 1 + args.rounds * (200 + args.requests)  # the first call, warm-ups and samples
        for r in range(args.rounds):
            order = [("on", on), ("off", off)] if r % 2 == 0 else [("off", off), ("on", on)]
            for key, p in order:
                lat = warm_latencies(p, args.requests)
                p50[key].append(pct(lat, 50))
                p99[key].append(pct(lat, 99))
            for key, p in order:
                res = throughput(p, args.clients, args.seconds)
                rps[key].append(res["rps"])
                for part in ("cp", "agent"):
                    cpu[key][part].append(res[f"{part}_us"])
                if key == "on":
                    calls += round(rps[key][-1] * args.seconds)
        time.sleep(2.0)  # the meter's last batch
        recorded = {"on": usage_records(on), "off": usage_records(off)}
        # wrk counts the calls answered within its run; the ones in flight at its end are answered
        # (and metered) too, at most one per client per run.
        complete = calls <= recorded["on"] <= calls + args.clients * args.rounds

        med = {k: {"p50": statistics.median(p50[k]), "p99": statistics.median(p99[k]),
                   "rps": statistics.median(rps[k]), "cp": statistics.median(cpu[k]["cp"]),
                   "agent": statistics.median(cpu[k]["agent"])} for k in ("on", "off")}
        print("\n== Cumulus metering benchmark ==")
        print(f"machine: {os.cpu_count()} cores; function: no-op handler, 128 MB, concurrency 1, {INSTANCES} "
              f"warm instances; a tenant developer's token, a tenant rate quota; {args.rounds} alternating "
              "rounds, medians")
        print(f"{'build':<30}{'p50 ms':>8}{'p99 ms':>8}{'inv/s':>8}{'CP µs/call':>12}{'agent µs/call':>15}"
              f"{'records':>9}")
        for key, label in (("on", "auth + quotas + metering"), ("off", "auth + quotas, metering off")):
            m = med[key]
            print(f"{label:<30}{m['p50']:>8.3f}{m['p99']:>8.3f}{m['rps']:>8.0f}{m['cp']:>12.0f}{m['agent']:>15.0f}"
                  f"{recorded[key]:>9}")
        p50_cost = med["on"]["p50"] / med["off"]["p50"] - 1
        rps_cost = 1 - med["on"]["rps"] / med["off"]["rps"]
        print(f"metering's cost: p50 {p50_cost * 100:+.1f}%, p99 "
              f"{(med['on']['p99'] / med['off']['p99'] - 1) * 100:+.1f}%, throughput {-rps_cost * 100:+.1f}% "
              f"({args.clients} clients)")
        print("rounds, p50 ms on/off: " + ", ".join(f"{a:.3f}/{b:.3f}" for a, b in zip(p50["on"], p50["off"],
                                                                                    strict=True)))
        print(f"target warm p50 with auth and metering within 10% of without: "
              f"{'met' if p50_cost <= 0.10 else 'MISSED'}")
        print(f"check: the metered build made {recorded['on']} records of {calls} calls counted "
              f"(+ at most {args.clients * args.rounds} in flight at the ends of runs): "
              f"{'ok' if complete else 'WRONG'}; the other made {recorded['off']}")
        return 0 if recorded["off"] == 0 and complete else 1
    finally:
        for p in (on, off):
            stop(p)


if __name__ == "__main__":
    sys.exit(main())
