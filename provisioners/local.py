"""The local provider: a "node" is a node agent process on this machine.

Each node has a folder `<root>/<node id>/` holding `node.json` (its tags: cluster, request id,
type, pid) and the agent's config and log. The folders are the provider's listing, so a restarted
control plane finds the agents it started, which keep running across its restarts. Each agent
joins with a single-use join token, as a cloud node does: nodes share no secret.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from provisioners.base import PROGRAMMING_ERRORS, BootstrapFor, NodeType, ProviderError, ProviderNode
from provisioners.net import free_port


@dataclass(frozen=True, slots=True)
class AgentBootstrap:
    """How this machine runs its node agents (where to join comes from each node's `NodeBootstrap`)."""

    docker_host: str = ""
    image: str = ""
    heartbeat_interval_s: float = 2.0



def _find_agent(config_path: Path) -> int:
    """The pid of the running agent started with `config_path`, 0 if none (found by its
    command line: how a node whose pid was never written down is still found)."""
    needle = str(config_path).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"node_agent" in cmdline and needle in cmdline.split(b"\0") and _alive(int(entry.name)):
            return int(entry.name)
    return 0


def _alive(pid: int) -> bool:
    """A live (not zombie) node agent process with this pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[0]
    return state not in ("Z", "X") and b"node_agent" in cmdline


class LocalProvider:
    """`NodeProvider` whose nodes are agent processes on this host."""

    name = "local"
    boot_deadline_s = 60.0  # an agent process joins in seconds, or has failed

    def __init__(self, root: Path, cluster: str, bootstrap_for: BootstrapFor,
                 bootstrap: AgentBootstrap | None = None) -> None:
        self.root = root
        self.cluster = cluster
        self.bootstrap_for = bootstrap_for  # each node joins with a join token, like any other node
        self.bootstrap = bootstrap or AgentBootstrap()
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        root.mkdir(parents=True, exist_ok=True)

    def _records(self) -> list[dict[str, object]]:
        out = []
        for meta in sorted(self.root.glob("*/node.json")):
            try:
                rec = json.loads(meta.read_text())
            except (OSError, ValueError):
                continue
            if rec.get("cluster") == self.cluster:
                out.append(rec)
        return out

    def _reap(self) -> None:
        for pid, proc in list(self._children.items()):
            if proc.poll() is not None:
                self._children.pop(pid, None)  # terminate and list may reap at once, in threads

    def _pid(self, rec: dict[str, object]) -> int:
        """The agent's pid: as recorded, or looked up when the record was written but the
        provider stopped (crashed) before adding the pid."""
        pid = int(str(rec.get("pid") or 0))
        return pid or _find_agent(self.root / str(rec["id"]) / "agent.json")

    def _alive(self, pid: int) -> bool:
        """Whether the agent `pid` lives. A child of ours answers through its `Popen` (its pid cannot
        be reused before we reap it): right after `exec` its `/proc/PID/cmdline` can still be empty
        for a moment, so the command-line check alone would call a starting agent dead."""
        proc = self._children.get(pid)
        if proc is not None:
            return proc.poll() is None
        return _alive(pid)

    def _node(self, rec: dict[str, object]) -> ProviderNode:
        pid = self._pid(rec)
        return ProviderNode(id=str(rec["id"]), node_type=str(rec["node_type"]),
                            state="running" if self._alive(pid) else "terminated",
                            request_id=str(rec["request_id"]), cluster=self.cluster,
                            created_at=float(str(rec["created_at"])),
                            extra={"pid": pid, "port": rec["port"], "url": rec["url"],
                                   "dir": str(self.root / str(rec["id"]))})

    def create(self, node_type: NodeType, count: int, *, request_id: str) -> list[ProviderNode]:
        """Start `count` agents; a repeated `request_id` returns the nodes it already made."""
        self._reap()
        done = []
        for rec in self._records():
            if rec.get("request_id") != request_id:
                continue
            node = self._node(rec)
            if node.state == "terminated" and not rec.get("pid"):  # crashed before starting it
                shutil.rmtree(self.root / node.id, ignore_errors=True)
                continue
            done.append(node)
        nodes = list(done)
        for _ in range(count - len(done)):
            node_id = f"local-{uuid.uuid4().hex[:8]}"
            node_dir = self.root / node_id
            node_dir.mkdir(parents=True)
            port = free_port()
            try:
                join = self.bootstrap_for(request_id)
            except Exception as exc:
                shutil.rmtree(node_dir, ignore_errors=True)
                if isinstance(exc, PROGRAMMING_ERRORS):  # a bug: seen as it is, never retried
                    raise
                raise ProviderError(f"no bootstrap for {request_id}: {exc}", request_id=request_id) from exc
            config = {"join_token": join.join_token, "provider_node_id": node_id,
                      "control_plane_url": join.control_plane_url, "listen_host": "127.0.0.1",
                      "listen_port": port,
                      "data_dir": str(node_dir / "data"), "cpu_millis": node_type.capacity.cpu_millis,
                      "memory_mib": node_type.capacity.memory_mib, "image": self.bootstrap.image,
                      "docker_host": self.bootstrap.docker_host, "node_type": node_type.name,
                      "provider": self.name, "heartbeat_interval_s": self.bootstrap.heartbeat_interval_s}
            cfg_path = node_dir / "agent.json"
            cfg_path.write_text(json.dumps(config))
            cfg_path.chmod(0o600)
            # Written down before the process starts: a crash right after starting it leaves a
            # listed node (found by its command line), never an invisible, leaked agent.
            rec = {"id": node_id, "cluster": self.cluster, "request_id": request_id,
                   "node_type": node_type.name, "pid": 0, "port": port,
                   "url": f"http://127.0.0.1:{port}", "created_at": time.time()}
            self._write_record(node_dir, rec)
            with (node_dir / "agent.log").open("ab") as logf:
                try:
                    proc = subprocess.Popen([sys.executable, "-m", "node_agent", "--config", str(cfg_path)],
                                            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
                except OSError as exc:
                    shutil.rmtree(node_dir, ignore_errors=True)
                    raise ProviderError(f"could not start a node agent: {exc}",
                                        request_id=request_id) from exc
            self._children[proc.pid] = proc
            rec["pid"] = proc.pid
            self._write_record(node_dir, rec)
            nodes.append(self._node(rec))
        return nodes

    @staticmethod
    def _write_record(node_dir: Path, rec: dict[str, object]) -> None:
        tmp = node_dir / "node.json.tmp"
        tmp.write_text(json.dumps(rec))
        os.replace(tmp, node_dir / "node.json")

    def terminate(self, ids: Sequence[str], *, request_id: str) -> None:
        """SIGTERM each agent (it removes its containers), SIGKILL after 20 s; missing is success."""
        records = {str(r["id"]): r for r in self._records()}
        pids = []
        for node_id in ids:
            rec = records.get(node_id)
            if rec is None:
                continue
            pid = self._pid(rec)
            if pid and self._alive(pid):
                os.kill(pid, signal.SIGTERM)
                pids.append(pid)
            else:  # the agent died without removing its containers: have them removed now
                self._cleanup(node_id)
        deadline = time.monotonic() + 20
        while pids and time.monotonic() < deadline:
            self._reap()
            pids = [pid for pid in pids if self._alive(pid)]
            time.sleep(0.05)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        self._reap()
        for node_id in ids:
            if node_id in records:
                shutil.rmtree(self.root / node_id, ignore_errors=True)

    def _cleanup(self, node_id: str) -> None:
        cfg = self.root / node_id / "agent.json"
        if not cfg.exists():
            return
        # Best effort: on a time-out the containers stay labelled with the node, to be found later.
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run([sys.executable, "-m", "node_agent", "--config", str(cfg), "--cleanup"],
                           capture_output=True, timeout=120, check=False)

    def list_instances(self) -> list[ProviderNode]:
        """Nodes of this cluster whose agent process is alive."""
        self._reap()
        return [n for n in (self._node(r) for r in self._records()) if n.state != "terminated"]
