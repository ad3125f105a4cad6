"""A function acting as an attacker would, through `cumulus up`, a node agent and Docker: each attempt
gets its typed answer, leaves the platform serving, and leaves nothing behind on the host.

One case per bound: the socket folder and /tmp cannot fill the disk, a result over 6 MB is a 502
`ResponseTooLarge` that neither the agent nor the control plane holds, printing 1 GB keeps 256 KiB, a
fork bomb meets the pids limit, a memory hog its memory limit, an endless loop its timeout; and what a
function can see: no Docker socket, no other function's socket, no platform secret in any
environment, no network route at all (read from its own network configuration; nothing is connected
to)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

import pytest
from helpers import RunningPlatform, container_that_ran, containers_of, wait_for

pytestmark = [pytest.mark.adversarial, pytest.mark.docker]

PROBE = '''
import errno, json, os, sys, time

def _fill(path, limit):
    written = 0
    try:
        with open(path, "wb") as f:
            while written < limit:
                f.write(b"x" * 65536)
                f.flush()
                written += 65536
    except OSError as exc:
        return written, errno.errorcode.get(exc.errno, str(exc.errno))
    return written, "none"

def handler(event, context):
    what = event["what"]
    if what == "fill":
        return {p: _fill(p, 200 * 1024 * 1024) for p in ("/run/fn/fill", "/tmp/fill", "/var/task/fill",
                                                          "/fill")}
    if what == "huge":
        return "x" * (event.get("mb", 7) * 1024 * 1024)
    if what == "print":
        chunk = "y" * (1 << 20)
        for _ in range(1024):  # 1 GB in all
            sys.stdout.write(chunk)
        return "printed"
    if what == "fork":
        pids = []
        try:
            for _ in range(10000):
                pid = os.fork()
                if pid == 0:
                    time.sleep(30)
                    os._exit(0)
                pids.append(pid)
        except OSError as exc:
            return {"forked": len(pids), "error": errno.errorcode.get(exc.errno)}
        return {"forked": len(pids), "error": None}
    if what == "hog":
        hog = []
        while True:
            hog.append(bytearray(64 * 1024 * 1024))
    if what == "host":
        return os.uname().nodename
    if what == "spin":
        while True:
            pass
    if what == "look":
        env1 = ""
        try:
            env1 = open("/proc/1/environ", "rb").read().decode("latin-1")
        except OSError as exc:
            env1 = f"unreadable: {exc.errno}"
        routes = open("/proc/net/route").read().splitlines()[1:]
        v6 = "/proc/net/ipv6_route"
        ipv6 = open(v6).read().splitlines() if os.path.exists(v6) else []
        interfaces = sorted(os.listdir("/sys/class/net"))
        sockets = sorted(os.listdir("/run/fn"))
        engines = ("/var/run/docker.sock", "/run/docker.sock", "/run/cumulus-docker.sock")
        docker = [p for p in engines if os.path.exists(p)]
        return {"env": dict(os.environ), "env1": env1, "routes": routes, "ipv6": ipv6,
                "interfaces": interfaces, "sockets": sockets, "docker": docker,
                "uid": os.getuid(), "pids": sorted(int(d) for d in os.listdir("/proc") if d.isdigit())}
    return "ok"
'''


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _agent_pid(platform: RunningPlatform) -> int:
    [node] = [json.loads(p.read_text()) for p in (platform.data_dir / "nodes").glob("*/node.json")]
    return int(node["pid"])


@pytest.fixture(scope="module")
def probe(platform: RunningPlatform) -> str:
    platform.deploy_ok("probe", {"main.py": PROBE}, memory_mb=256, timeout_s=20, network="none")
    return "probe"


def _call(platform: RunningPlatform, what: str, **extra: object) -> tuple[int, object, Mapping[str, str]]:
    resp = platform.invoke("probe", {"what": what, **extra}, timeout=120)
    return resp.status_code, resp.json(), resp.headers


def test_nothing_writable_can_fill_the_host(platform: RunningPlatform, probe: str) -> None:
    before = shutil.disk_usage(platform.data_dir).used
    status, result, _ = _call(platform, "fill")
    assert status == 200, result
    assert isinstance(result, dict)
    assert result["/run/fn/fill"][0] <= 64 * 1024 and result["/run/fn/fill"][1] == "ENOSPC"
    assert result["/tmp/fill"][0] <= 64 * 1024 * 1024 and result["/tmp/fill"][1] == "ENOSPC"
    assert result["/var/task/fill"] == [0, "EROFS"] and result["/fill"] == [0, "EROFS"]
    assert shutil.disk_usage(platform.data_dir).used - before < 16 * 1024 * 1024  # tmpfs is memory
    assert _call(platform, "ok")[:2] == (200, "ok")


def test_a_result_over_6_mb_is_refused_and_held_by_nobody(platform: RunningPlatform, probe: str) -> None:
    _call(platform, "ok")
    agent, cp = _agent_pid(platform), platform.proc.pid
    before = (_rss_mib(agent), _rss_mib(cp))
    for _ in range(5):
        status, result, _ = _call(platform, "huge", mb=40)
        assert status == 502 and isinstance(result, dict) and result["error"]["type"] == "ResponseTooLarge"
    after = (_rss_mib(agent), _rss_mib(cp))
    print(f"\nRSS MiB before/after five 40 MB results: agent {before[0]:.0f}/{after[0]:.0f}, "
          f"control plane {before[1]:.0f}/{after[1]:.0f}")
    assert after[0] - before[0] < 20 and after[1] - before[1] < 20
    assert _call(platform, "ok")[:2] == (200, "ok")


def test_printing_a_gigabyte_keeps_256_kib(platform: RunningPlatform, probe: str) -> None:
    status, result, headers = _call(platform, "print")
    assert (status, result) == (200, "printed")
    [record] = [r for r in platform.get("/v1/functions/probe/logs?limit=1")]
    assert record["request_id"] == headers["X-Request-Id"]
    assert 256 * 1024 - 4 < len(record["logs"].encode()) <= 256 * 1024 + 100 and "dropped" in record["logs"]


def test_a_fork_bomb_meets_the_pids_limit(platform: RunningPlatform) -> None:
    # A fresh instance of its own: one whose heap earlier calls grew could meet its memory limit first
    # (each child copies the pages it touches), which bounds it too but is not what is tested here.
    platform.deploy_ok("forker", {"main.py": PROBE})
    resp = platform.invoke("forker", {"what": "fork"}, timeout=120)
    status, result = resp.status_code, resp.json()
    assert status == 200 and isinstance(result, dict), result
    assert result["error"] == "EAGAIN" and result["forked"] < 256
    again = wait_for(lambda: platform.invoke("forker", {"what": "ok"}, timeout=60), 60,
                     what="the instance to serve again")
    assert again.status_code == 200


def test_a_memory_hog_is_killed_at_its_limit(platform: RunningPlatform, probe: str) -> None:
    status, result, _ = _call(platform, "hog")
    assert status == 502 and isinstance(result, dict) and result["error"]["type"] == "FunctionOutOfMemory"
    assert _call(platform, "ok")[:2] == (200, "ok")  # a fresh instance


def test_an_endless_loop_ends_at_its_timeout(platform: RunningPlatform) -> None:
    platform.deploy_ok("spinner", {"main.py": PROBE}, timeout_s=2)
    host = platform.invoke("spinner", {"what": "host"})
    assert host.status_code == 200, host.text
    spinning = container_that_ran("spinner", host.json())  # the warm one, which the next call gets
    resp = platform.invoke("spinner", {"what": "spin"})
    assert resp.status_code == 504 and resp.json()["error"]["type"] == "FunctionTimeout"
    # That container is removed (a new instance may already stand in: the function is warm).
    wait_for(lambda: spinning not in {c["Id"] for c in containers_of("spinner")}, 30,
             what="the spinning container to be removed")


def test_a_function_sees_no_socket_secret_or_route_of_the_platform(platform: RunningPlatform,
                                                                    probe: str) -> None:
    status, seen, _ = _call(platform, "look")
    assert status == 200 and isinstance(seen, dict)
    assert seen["uid"] == 65534 and seen["docker"] == [] and seen["sockets"] == ["fn.sock", "services.sock"]
    # What would let it act as the platform: the admin token, the secret key, each node's own secrets.
    secrets = [platform.token, (platform.data_dir / "secret.key").read_text().strip()]
    for saved in (platform.data_dir / "nodes").glob("*/data/identity.json"):
        identity = json.loads(saved.read_text())
        secrets += [identity["node_secret"], identity["agent_key"]]
    assert len(secrets) >= 4  # at least one node joined
    environments = json.dumps(seen["env"]) + seen["env1"]
    assert not [s for s in secrets if s in environments]
    assert not [k for k in seen["env"] if "TOKEN" in k or "SECRET" in k]
    # No route anywhere, so no metadata address either: only the loopback interface exists.
    assert seen["routes"] == [] and seen["interfaces"] == ["lo"]
    assert all(line.split()[-1] == "lo" for line in seen["ipv6"])
    assert len(seen["pids"]) <= 3  # its own pid namespace: init, the shim (and the reading process)


def test_a_deep_event_is_refused_and_the_warm_instance_lives_on(platform: RunningPlatform,
                                                                 probe: str) -> None:
    _call(platform, "ok")
    [before] = [c["Id"] for c in containers_of("probe") if c["State"] == "running"]
    resp = platform.invoke("probe", raw=b"[" * 100_000 + b"]" * 100_000)
    assert resp.status_code == 400 and resp.json()["error"]["type"] == "InvalidEvent"
    assert _call(platform, "ok")[:2] == (200, "ok")
    assert [c["Id"] for c in containers_of("probe") if c["State"] == "running"] == [before]
