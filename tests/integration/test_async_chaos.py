"""Chaos under async calls: 1,000 events (each with its own Idempotency-Key, sent again by its client
until a 202 comes back) while the control plane is SIGKILLed and restarted several times and a node's
agent is SIGKILLed (the node vanishes and is replaced). Every event ends as its function dictates:
the good function's succeeded on their first attempt, the failing one's dead-lettered after exactly
1 + max_retries attempts. None is lost and none is accepted twice; a run of the same attempt twice
(at-least-once) is only ever one the platform counted in `duplicates`, and no run happened that an
attempt does not account for (checked on the nodes' usage records). On the store (SQLite and
PostgreSQL) and on the broker (NATS JetStream); printed as counts."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from helpers import RunningPlatform, start_platform, wait_for

from control_plane.store import Store

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

N_EVENTS, BAD_EVERY, SENDERS = 1000, 5, 4
GOOD = {"main.py": "import time\n\ndef handler(event, context):\n    time.sleep(event['s'])\n"
                   "    return {'i': event['i']}\n"}
BAD = {"main.py": "def handler(event, context):\n    raise ValueError('bad event %d' % event['i'])\n"}
ENV = {"CUMULUS_NODE_CPU_MILLIS": "4000", "CUMULUS_NODE_MEMORY_MIB": "2048", "CUMULUS_JOB_LEASE_S": "5",
       "CUMULUS_ASYNC_CONCURRENCY": "24", "CUMULUS_WATERMARK_WINDOW_S": "3",
       "CUMULUS_SCALE_DOWN_COOLDOWN_S": "60", "CUMULUS_ORPHAN_GRACE_S": "20"}


@dataclass
class Sender:
    """Sends its share of the events, each until it is accepted."""

    plat: RunningPlatform
    todo: list[int]
    lock: threading.Lock
    accepted: dict[int, str] = field(default_factory=dict)
    refused: Counter[str] = field(default_factory=Counter)

    def run(self) -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            with self.lock:
                if not self.todo:
                    return
                i = self.todo.pop()
            name = "bad" if i % BAD_EVERY == 0 else "good"
            body = json.dumps({"i": i, "s": (i % 7) / 100}).encode()
            while time.monotonic() < deadline:
                try:
                    resp = requests.post(f"{self.plat.url}/v1/functions/{name}/invoke", data=body, timeout=30,
                                         headers={**self.plat.headers, "X-Cumulus-Invocation-Type": "Event",
                                                  "Idempotency-Key": f"chaos-{i}"})
                except requests.RequestException as exc:
                    self.refused[type(exc).__name__] += 1
                    time.sleep(0.2)
                    continue
                if resp.status_code == 202:
                    self.accepted[i] = resp.json()["request_id"]
                    break
                self.refused[f"http {resp.status_code}"] += 1
                time.sleep(0.2)


def _calls(plat: RunningPlatform, name: str) -> list[dict[str, Any]]:
    return plat.get(f"/v1/functions/{name}/invocations?limit=1000")  # type: ignore[no-any-return]


@pytest.mark.parametrize("queue", ["sqlite", pytest.param("postgresql", marks=pytest.mark.pg),
                                   pytest.param("nats", marks=pytest.mark.broker)])
def test_sigkills_under_1000_async_events_lose_none_and_run_none_unaccounted(
        chaos_dir: Path, queue: str, request: pytest.FixtureRequest) -> None:
    rng = random.Random(20261203)
    db = str(request.getfixturevalue("postgres_db")) if queue == "postgresql" else None
    env = {**ENV, **({"CUMULUS_QUEUE_URL": str(request.getfixturevalue("nats_server"))} if queue == "nats"
                     else {})}
    args = ("--min-nodes", "1", "--max-nodes", "2", *(("--db", db) if db else ()))
    plat = start_platform(chaos_dir, extra_env=env, args=args)
    port = int(plat.url.rsplit(":", 1)[1])
    todo = list(range(N_EVENTS))
    rng.shuffle(todo)
    lock = threading.Lock()
    senders = [Sender(plat, todo, lock) for _ in range(SENDERS)]
    threads = [threading.Thread(target=s.run) for s in senders]
    kills = agent_kills = 0
    try:
        plat.deploy_ok("good", GOOD, memory_mb=128, concurrency=4, max_instances=4, keep_alive_s=60,
                       timeout_s=10)
        plat.deploy_ok("bad", BAD, memory_mb=128, concurrency=4, max_instances=2, keep_alive_s=60,
                       timeout_s=10, max_retries=1)
        for t in threads:
            t.start()

        def restart() -> RunningPlatform:
            nonlocal kills
            time.sleep(rng.uniform(1.5, 4.0))
            plat.proc.send_signal(signal.SIGKILL)
            plat.proc.wait(30)
            kills += 1
            again = start_platform(chaos_dir, extra_env=env, args=args, port=port)
            for s in senders:
                s.plat = again
            return again

        plat = restart()
        plat = restart()
        # A node's agent SIGKILLed under the calls (for the local provider, the machine is gone).
        nodes = plat.get("/v1/nodes")
        victim = max(nodes, key=lambda n: n["instances"])
        meta = json.loads((chaos_dir / "nodes" / victim["id"] / "node.json").read_text())
        os.kill(meta["pid"], signal.SIGKILL)
        agent_kills += 1
        wait_for(lambda: victim["id"] not in {n["id"] for n in plat.get("/v1/nodes")}, 60, interval=0.5,
                 what=f"the vanished node {victim['id']} dropped")
        plat = restart()
        for t in threads:
            t.join(600)
        assert not any(t.is_alive() for t in threads)

        accepted = {i: rid for s in senders for i, rid in s.accepted.items()}
        assert sorted(accepted) == list(range(N_EVENTS))  # every event accepted in the end...
        assert len(set(accepted.values())) == N_EVENTS  # ...each as its own call
        bad = {rid for i, rid in accepted.items() if i % BAD_EVERY == 0}
        good = set(accepted.values()) - bad

        def ended() -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
            g, b = _calls(plat, "good"), _calls(plat, "bad")
            states = Counter(c["state"] for c in g + b)
            if states["succeeded"] + states["dead_lettered"] + states["failed"] < N_EVENTS:
                return None
            return g, b

        got = wait_for(ended, 300, interval=1, what=lambda: "every async call to end: " + str(
            Counter(c["state"] for c in _calls(plat, "good") + _calls(plat, "bad"))))
        assert got is not None
        good_calls, bad_calls = got
        # Nothing lost, nothing accepted twice: the calls are the accepted ones, exactly.
        assert {c["request_id"] for c in good_calls} == good and {c["request_id"] for c in bad_calls} == bad
        assert {(c["state"], c["attempts"]) for c in good_calls} == {("succeeded", 1)}
        assert {(c["state"], c["attempts"]) for c in bad_calls} == {("dead_lettered", 2)}
        letters = plat.get("/v1/functions/bad/dlq?limit=1000")
        assert sorted(d["request_id"] for d in letters) == sorted(bad)
        assert all(d["reason"] == "retries_exhausted" for d in letters)
        # Every run the nodes metered is an attempt of an accepted call.
        attempts = {rid: c["attempts"] for c in good_calls + bad_calls for rid in [c["request_id"]]}
        allowed = {rid if n == 1 else f"{rid}-{n}" for rid, k in attempts.items() for n in range(1, k + 1)}
        store = Store(db or f"sqlite:///{plat.data_dir / 'cumulus.db'}")
        time.sleep(2)  # what the node still held is in by now
        runs = [u.request_id for u in store.usage_rows()]
        unaccounted = set(runs) - allowed
        assert not unaccounted, sorted(unaccounted)[:10]
        duplicates = sum(c["duplicates"] for c in good_calls + bad_calls)
        refused = Counter[str]()
        for s in senders:
            refused.update(s.refused)
        print(f"\nasync chaos ({queue}): events={N_EVENTS} cp_sigkills={kills} agent_sigkills={agent_kills} "
              f"accepted={len(accepted)} succeeded={len(good_calls)} dead_lettered={len(bad_calls)} lost=0 "
              f"accepted_twice=0 attempts={sum(attempts.values())} metered_runs={len(runs)} "
              f"unaccounted_runs=0 duplicates_detected={duplicates} sends_refused={dict(refused)}")
    finally:
        for s in senders:
            with s.lock:
                s.todo.clear()
        for t in threads:
            t.join(60)
        plat.stop()
