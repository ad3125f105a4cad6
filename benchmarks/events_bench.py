"""Events benchmark: async calls on the store and on the broker (enqueue rate; latency from enqueue to
the handler's start, p50/p99), the event bus's matching rate against 1,000 rules, and a 1,000-branch
`Map` workflow against 1,000 direct async calls, each beside a baseline measured in the same run.

Run: `make bench` (or `.venv/bin/python benchmarks/events_bench.py` with a Docker engine up and
Debian's `nats-server` installed). Starts one `cumulus up` with the queue in its SQLite database and
one with it on a NATS JetStream server this script starts, both on free loopback ports with
throwaway data directories, one node each, a no-op function with warm instances. The baselines:
synchronous calls of the same function on the same platform (what a caller waits for without the
queue), and matching against 10 rules. The handler's start is the node's own record of the call
(`started_at` of its usage record, wall clock of this machine), the enqueue the control plane's
(`enqueued_at`). All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from bench_platform import Platform, start, stop, wait_up
from invoke_bench import RawClient, code_zip, pct

from control_plane.eventbus import RuleIndex, compile_pattern
from control_plane.store import Store
from provisioners.net import free_port

REPO = Path(__file__).resolve().parent.parent
INSTANCES = 4


def _get(p: Platform, path: str) -> Any:
    r = requests.get(p.url + path, headers=p.headers, timeout=60)
    r.raise_for_status()
    return r.json()


def _post(p: Platform, path: str, body: Any) -> Any:
    r = requests.post(p.url + path, headers=p.headers, json=body, timeout=60)
    r.raise_for_status()
    return r.json()


def start_nats(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("nats-server")
    if binary is None:
        raise SystemExit("nats-server is not installed (apt-get install nats-server; `make bootstrap` does)")
    port = free_port()
    log = (root / "nats.log").open("wb")
    proc = subprocess.Popen([binary, "-js", "-sd", str(root / "js"), "-a", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while b"Server is ready" not in (root / "nats.log").read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit((root / "nats.log").read_text())
        time.sleep(0.05)
    return proc, f"nats://127.0.0.1:{port}"


def start_queue(label: str, queue_url: str = "") -> Platform:
    return start(label, {"CUMULUS_QUEUE_URL": queue_url, "CUMULUS_ASYNC_CONCURRENCY": "32",
                         "CUMULUS_NODE_CPU_MILLIS": "4000", "CUMULUS_NODE_MEMORY_MIB": "4096"})


def prepare(p: Platform) -> None:
    wait_up(p)
    r = requests.post(f"{p.url}/v1/functions", headers=p.headers, timeout=120,
                      files={"code": ("c.zip", code_zip(), "application/zip")},
                      data={"config": json.dumps({"name": "noop", "memory_mb": 128, "concurrency": 8,
                                                  "min_instances": INSTANCES, "max_instances": INSTANCES,
                                                  "max_retries": 0})})
    r.raise_for_status()
    deadline = time.monotonic() + 120
    while _get(p, "/v1/functions/noop")["instances"] < INSTANCES:
        if time.monotonic() > deadline:
            raise SystemExit(f"{p.label}: the instances did not start within 120 s")
        time.sleep(0.5)
    _post(p, "/v1/workflows", {"name": "fan", "definition": {
        "StartAt": "Fan", "States": {"Fan": {
            "Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": 0, "End": True,
            "Iterator": {"StartAt": "Call", "States": {"Call": {"Type": "Task", "Resource": "noop",
                                                                  "End": True}}}}}}})


def _client(p: Platform, headers: dict[str, str]) -> RawClient:
    tcp = socket.create_connection(("127.0.0.1", p.port))
    tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return RawClient(tcp, "127.0.0.1", "/v1/functions/noop/invoke", {**p.headers, **headers})


def rate(p: Platform, n: int, clients: int, headers: dict[str, str], want: int) -> float:
    """Calls a second, `n` calls from `clients` kept-alive connections."""
    left = [n]
    lock = threading.Lock()

    def worker() -> None:
        c = _client(p, headers)
        while True:
            with lock:
                if left[0] <= 0:
                    break
                left[0] -= 1
            status, body = c.call(b"{}")
            assert status == want, (status, body[:200])
        c.sock.close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return n / (time.perf_counter() - t0)


def wait_ended(p: Platform, count: int, timeout_s: float = 600) -> list[dict[str, Any]]:
    """The function's async calls, once `count` of them ended (newest first)."""
    deadline = time.monotonic() + timeout_s
    while True:
        calls: list[dict[str, Any]] = _get(p, "/v1/functions/noop/invocations?limit=1000")
        done = [c for c in calls if c["state"] in ("succeeded", "failed", "dead_lettered")]
        if len(done) >= count:
            return calls
        if time.monotonic() > deadline:
            raise SystemExit(f"{p.label}: {len(done)} of {count} async calls ended in {timeout_s:g} s")
        time.sleep(0.2)


def clear_calls(p: Platform) -> None:
    """Wait until every async call so far ended (the next measurement starts from an empty queue)."""
    while _get(p, "/v1/functions/noop/invocations?state=queued&state=running&state=retrying&limit=1"):
        time.sleep(0.2)


def latency(p: Platform, n: int, per_s: float) -> tuple[list[float], list[float]]:
    """Enqueue -> handler start of `n` async calls paced at `per_s`, and sync call latencies (the
    baseline), both in ms."""
    c = _client(p, {"X-Cumulus-Invocation-Type": "Event"})
    rids = []
    t0 = time.monotonic()
    for i in range(n):
        time.sleep(max(0.0, t0 + i / per_s - time.monotonic()))
        status, body = c.call(b"{}")
        assert status == 202, body
        rids.append(json.loads(body)["request_id"])
    c.sock.close()
    calls = {c["request_id"]: c for c in wait_ended(p, len(rids))}
    store = Store(f"sqlite:///{p.data_dir / 'cumulus.db'}")
    started: dict[str, float] = {}
    deadline = time.monotonic() + 30
    while not set(rids) <= set(started) and time.monotonic() < deadline:
        started = {u.request_id: u.started_at for u in store.usage_rows()}
        time.sleep(0.3)
    async_ms = [(started[r] - calls[r]["enqueued_at"]) * 1000 for r in rids if r in started and r in calls]
    s = _client(p, {})
    sync_ms = []
    for _ in range(n):
        time.sleep(1 / per_s)
        t = time.perf_counter()
        status, _ = s.call(b"{}")
        sync_ms.append((time.perf_counter() - t) * 1000)
        assert status == 200
    s.sock.close()
    return async_ms, sync_ms


def fan_out(p: Platform, n: int) -> tuple[float, float]:
    """Wall time (s) of a workflow mapping `n` items over the function, and of `n` direct async calls."""
    t0 = time.monotonic()
    started = _post(p, "/v1/workflows/fan/executions", {"input": {"items": list(range(n))}})
    execution = started["id"]
    while True:
        state = _get(p, f"/v1/executions/{execution}")
        if state["status"] != "RUNNING":
            break
        time.sleep(0.1)
    workflow_s = time.monotonic() - t0
    if state["status"] != "SUCCEEDED":
        raise SystemExit(f"{p.label}: the Map workflow ended {state['status']}: {state}")
    clear_calls(p)
    t0 = time.monotonic()
    rate(p, n, 8, {"X-Cumulus-Invocation-Type": "Event"}, 202)
    while _get(p, "/v1/functions/noop/invocations?state=queued&state=running&state=retrying&limit=1"):
        time.sleep(0.1)
    return workflow_s, time.monotonic() - t0


# -- the bus: matching, pure ---------------------------------------------------------------------------
def _rules(n: int) -> list[Any]:
    """`n` rules as a bus of many applications has them: nine in ten name the source they listen to
    (one of 100 applications) and filter on the detail with an operator; one in ten names no
    source (those are checked against every event)."""
    conditions: list[Callable[[int], dict[str, Any]]] = [
        lambda i: {"detail-type": ["Order Placed"]},
        lambda i: {"detail": {"amount": [{"numeric": [">", i, "<=", i + 100]}], "currency": ["EUR"]}},
        lambda i: {"detail": {"status": [{"anything-but": ["ok", f"s{i}"]}], "region": [{"exists": True}]}},
        lambda i: {"detail-type": [{"equals-ignore-case": f"Kind {i}"}]},
        lambda i: {"detail": {"path": [{"wildcard": f"/v{i}/*/items"}]}},
        lambda i: {"$or": [{"detail-type": [f"or.{i}"]}, {"detail": {"user": [{"suffix": f"@{i}.test"}]}}]},
    ]
    out = []
    for i in range(n):
        rule = conditions[i % len(conditions)](i)
        if i % 10:
            rule["source"] = [f"app.{i % 100}"]
        out.append(rule)
    return out


def _events(n: int, rng: random.Random) -> list[dict[str, Any]]:
    out = []
    for k in range(n):
        i = rng.randrange(1000)
        out.append({"id": str(k), "source": f"app.{rng.randrange(100)}",
                    "detail-type": rng.choice(["Order Placed", f"KIND {i}", "x"]),
                    "time": "2026-12-03T00:00:00Z",
                    "detail": {"amount": rng.randrange(2000), "currency": rng.choice(["EUR", "USD"]),
                               "status": rng.choice(["ok", "late", f"s{i}"]), "region": "eu",
                               "path": f"/v{i}/abc/items", "user": f"u@{i}.test"}})
    return out


def matching_rate(rules: int, events: list[dict[str, Any]], *, indexed: bool) -> tuple[float, int]:
    """Events a second matched against `rules` compiled rules, through the bus's index by source or
    (the baseline) against every rule, and the matches found (the same both ways)."""
    compiled = [(compile_pattern(r), n) for n, r in enumerate(_rules(rules))]
    index = RuleIndex(compiled)
    hits = 0
    t0 = time.perf_counter()
    for event in events:
        if indexed:
            hits += len(index.matching(event))
        else:
            hits += sum(1 for pattern, _ in compiled if pattern.matches(event))
    return len(events) / (time.perf_counter() - t0), hits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--enqueue", type=int, default=2000, help="async calls of the enqueue-rate run")
    parser.add_argument("--latency", type=int, default=300, help="paced async calls of the latency run")
    parser.add_argument("--per-s", type=float, default=25.0, help="their pace")
    parser.add_argument("--branches", type=int, default=1000, help="items of the Map workflow")
    parser.add_argument("--events", type=int, default=5000, help="events matched against the rules")
    args = parser.parse_args()

    events = _events(args.events, random.Random(7))
    bus = {(n, indexed): matching_rate(n, events, indexed=indexed)
           for n in (10, 1000) for indexed in (True, False)}
    print("\n== Cumulus events benchmark ==")
    print(f"machine: {os.cpu_count()} cores")
    print(f"event bus matching (pure; {args.events} events; 9 in 10 rules name one of 100 sources):")
    for (n, indexed), (per_s, hits) in bus.items():
        how = "the bus (index by source)" if indexed else "every rule checked"
        print(f"  {n:>5} rules, {how:<26}: {per_s:>10,.0f} events/s ({hits} matches)")

    root = Path(tempfile.mkdtemp(prefix="cumulus-bench-nats-"))
    nats, nats_url = start_nats(root)
    platforms = [start_queue("store"), start_queue("nats", nats_url)]
    try:
        for p in platforms:
            prepare(p)
        print(f"async calls: a no-op handler, 128 MB, {INSTANCES} warm instances x concurrency 8; "
              f"enqueue rate from 8 kept-alive clients ({args.enqueue} calls); latency of {args.latency} "
              f"calls paced at {args.per_s:g}/s")
        print(f"{'queue':<22}{'enqueue/s':>10}{'sync/s':>9}{'e2e p50 ms':>12}{'e2e p99 ms':>12}"
              f"{'sync p50':>10}{'sync p99':>10}{'Map s':>8}{'1000 async s':>14}")
        for p in platforms:
            enq = rate(p, args.enqueue, 8, {"X-Cumulus-Invocation-Type": "Event"}, 202)
            clear_calls(p)
            sync = rate(p, args.enqueue, 8, {}, 200)
            a, s = latency(p, args.latency, args.per_s)
            clear_calls(p)
            wf, direct = fan_out(p, args.branches)
            label = "store (SQLite)" if p.label == "store" else "broker (NATS JetStream)"
            print(f"{label:<22}{enq:>10,.0f}{sync:>9,.0f}{pct(a, 50):>12.1f}{pct(a, 99):>12.1f}"
                  f"{pct(s, 50):>10.2f}{pct(s, 99):>10.2f}{wf:>8.1f}{direct:>14.1f}")
    finally:
        for p in platforms:
            stop(p)
        os.killpg(nats.pid, signal.SIGKILL)
        nats.wait(10)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
