"""Deploy and invoke through the real parts: `cumulus up`, a node agent, Docker, SQLite."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import RunningPlatform, containers_of, wait_for

pytestmark = pytest.mark.docker

ECHO = {"main.py": """
import os, socket

def handler(event, context):
    print("event", event)
    return {"event": event, "host": socket.gethostname(), "version": context.function_version,
            "name": context.function_name, "memory": context.memory_limit_in_mb,
            "request_id": context.request_id, "remaining": context.get_remaining_time_in_millis(),
            "env": os.environ.get("GREETING")}
"""}

SLEEPY = {"main.py": """
import socket, time

def handler(event, context):
    time.sleep(event.get("sleep", 0.5))
    return {"host": socket.gethostname()}
"""}


def test_deploy_and_invoke_returns_result_and_context(platform: RunningPlatform) -> None:
    out = platform.deploy_ok("echo", ECHO, memory_mb=128, env={"GREETING": "hi"})
    assert out["version"] == 1
    assert out["url"] == f"{platform.url}/v1/functions/echo/invoke"
    resp = platform.invoke("echo", {"name": "x"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["event"] == {"name": "x"}
    assert body["name"] == "echo" and body["version"] == "1" and body["memory"] == 128
    assert body["env"] == "hi"
    assert body["request_id"] == resp.headers["X-Request-Id"]
    assert 0 < body["remaining"] <= 30_000
    assert resp.headers["X-Cumulus-Cold-Start"] == "true"
    assert float(resp.headers["X-Cumulus-Duration-Ms"]) >= 0


def test_warm_instance_is_reused(platform: RunningPlatform) -> None:
    platform.deploy_ok("warm", ECHO)
    first = platform.invoke("warm", {})
    second = platform.invoke("warm", {})
    assert first.status_code == second.status_code == 200
    assert second.headers["X-Cumulus-Cold-Start"] == "false"
    assert first.json()["host"] == second.json()["host"]
    assert len(containers_of("warm")) == 1


def test_concurrent_calls_scale_out_up_to_max(platform: RunningPlatform) -> None:
    platform.deploy_ok("sleepy", SLEEPY, concurrency=1, max_instances=3)
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: platform.invoke("sleepy", {"sleep": 2}), range(6)))
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    # Six calls at once, concurrency 1, max three: three instances start, none beyond (and each
    # serves calls unless the machine is so loaded that one instance did the work of three).
    assert len(containers_of("sleepy")) == 3
    assert 2 <= len({r.json()["host"] for r in results}) <= 3


def test_instance_concurrency_shares_one_instance(platform: RunningPlatform) -> None:
    platform.deploy_ok("shared", SLEEPY, concurrency=4, max_instances=4)
    platform.invoke("shared", {"sleep": 0})  # warm one instance first
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: platform.invoke("shared", {"sleep": 0.5}), range(4)))
    assert {r.json()["host"] for r in results} == {results[0].json()["host"]}


def test_keep_alive_expiry_stops_idle_instances(platform: RunningPlatform) -> None:
    platform.deploy_ok("brief", ECHO, keep_alive_s=1)
    assert platform.invoke("brief", {}).status_code == 200
    assert len(containers_of("brief")) == 1
    wait_for(lambda: not containers_of("brief"), 20, what="idle instance to stop")
    assert platform.get("/v1/functions/brief")["instances"] == 0
    again = platform.invoke("brief", {})  # scales back from zero
    assert again.status_code == 200 and again.headers["X-Cumulus-Cold-Start"] == "true"


def test_min_instances_are_kept_warm(platform: RunningPlatform) -> None:
    platform.deploy_ok("prewarmed", ECHO, min_instances=1, keep_alive_s=0)
    wait_for(lambda: platform.get("/v1/functions/prewarmed")["instances"] == 1, 30, what="min instance")
    assert len(containers_of("prewarmed")) == 1
    resp = platform.invoke("prewarmed", {})
    assert resp.headers["X-Cumulus-Cold-Start"] == "false"


def test_redeploy_makes_a_new_version_and_drains_the_old(platform: RunningPlatform) -> None:
    platform.deploy_ok("versions", ECHO)
    assert platform.invoke("versions", {}).json()["version"] == "1"
    out = platform.deploy_ok("versions", ECHO)
    assert out["version"] == 2
    assert platform.invoke("versions", {}).json()["version"] == "2"
    wait_for(lambda: {c["Labels"]["io.cumulus.version"] for c in containers_of("versions")} == {"2"}, 20,
             what="old version to drain")


def test_delete_stops_instances_and_forgets_the_function(platform: RunningPlatform) -> None:
    platform.deploy_ok("doomed", ECHO)
    assert platform.invoke("doomed", {}).status_code == 200
    resp = platform.cli("rm", "doomed")
    assert resp.returncode == 0, resp.stderr
    wait_for(lambda: not containers_of("doomed"), 20, what="containers removed")
    gone = platform.invoke("doomed", {})
    assert gone.status_code == 404 and gone.json()["error"]["type"] == "FunctionNotFound"


def test_logs_hold_each_invocations_output_newest_last(platform: RunningPlatform) -> None:
    platform.deploy_ok("chatty", ECHO)
    for i in range(3):
        assert platform.invoke("chatty", {"i": i}).status_code == 200
    rows = platform.get("/v1/functions/chatty/logs")
    assert [r["logs"] for r in rows] == [f"event {{'i': {i}}}\n" for i in range(3)]
    assert rows[0]["cold_start"] and not rows[1]["cold_start"]
    cli = platform.cli("logs", "chatty")
    assert cli.returncode == 0 and cli.stdout.rindex("{'i': 2}") > cli.stdout.rindex("{'i': 0}")


def test_cli_deploy_invoke_ls_nodes(platform: RunningPlatform, tmp_path: object) -> None:
    from pathlib import Path

    folder = Path(str(tmp_path)) / "fn"
    folder.mkdir()
    (folder / "main.py").write_text(ECHO["main.py"])
    dep = platform.cli("deploy", str(folder), "--name", "clifn", "--memory", "128", "--env", "GREETING=yo")
    assert dep.returncode == 0, dep.stderr
    assert f"{platform.url}/v1/functions/clifn/invoke" in dep.stdout
    inv = platform.cli("invoke", "clifn", "--data", '{"a": 1}')
    assert inv.returncode == 0, inv.stderr
    assert json.loads(inv.stdout)["env"] == "yo"
    event_file = Path(str(tmp_path)) / "event.json"
    event_file.write_text('{"from": "file"}')
    assert json.loads(platform.cli("invoke", "clifn", "--data", f"@{event_file}").stdout)["event"] == \
        {"from": "file"}
    assert json.loads(platform.cli("invoke", "clifn", "--data", "-", input=b'{"from": "stdin"}')
                      .stdout)["event"] == {"from": "stdin"}
    assert "clifn" in platform.cli("ls").stdout
    assert "clifn" in platform.cli("ls", flags=True).stdout  # --url and --token instead of variables
    nodes = platform.cli("nodes")
    assert nodes.returncode == 0 and "ready" in nodes.stdout
    missing = platform.cli("invoke", "nope")
    assert missing.returncode == 1 and "FunctionNotFound" in missing.stderr


def test_nodes_report_capacity_and_use(platform: RunningPlatform) -> None:
    nodes = [n for n in platform.get("/v1/nodes") if n["provider"] == "local"]
    assert len(nodes) == 1
    node = nodes[0]
    assert node["state"] == "ready" and node["provider"] == "local"
    assert node["capacity"]["memory_mib"] > 0 and node["capacity"]["cpu_millis"] > 0
