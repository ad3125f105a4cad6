"""`QemuProvider`: every node is a QEMU VM on this host, running a node agent installed over SSH.

`create` returns at once with nodes in state "pending"; a background thread per node builds the
image if needed (once per content hash), boots the VM, installs the agent over SSH and waits for
its `/healthz`. The node is "running" from then on. Booting takes tens of seconds under software
emulation, and the control plane counts a node as Ready only when its agent joins anyway, so
nothing is gained by blocking the caller.

Each node has a folder `<root>/<node id>/` holding `node.json` (cluster, request id, type, phase,
QEMU pid, forwarded ports: the provider's listing), the VM's disk overlay, console log and QMP
socket. QEMU runs daemonized, so VMs survive a control-plane restart; a new provider adopts its
cluster's VMs from their folders and resumes the bootstraps that were under way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from placement import Resources
from provisioners import ssh
from provisioners.base import PROGRAMMING_ERRORS, BootstrapFor, NodeType, ProviderError, ProviderNode
from provisioners.qemu import bootstrap as boot
from provisioners.qemu.image import VmImage, ensure_vm_image
from provisioners.qemu.software import GuestSoftware
from provisioners.qemu.vm import (
    GuestForward,
    VmShape,
    detect_accel,
    qemu_alive,
    require_qemu,
    start_vm,
    stop_vm,
)

log = logging.getLogger("cumulus.qemu")

# Phases of a node in node.json; every phase but "ready" and "failed" is reported as "pending".
STARTING, BOOTING, BOOTSTRAPPING, READY, FAILED = "starting", "booting", "bootstrapping", "ready", "failed"
VM_OVERHEAD_MIB = 512  # guest kernel, systemd, dockerd and the agent, on top of the node's capacity


def shape_for(node_type: NodeType, shapes: Mapping[str, VmShape]) -> VmShape:
    """The VM size for `node_type`: from `shapes`, else `extra` (`vm_memory_mib`, `vm_cpus`), else its
    capacity plus room for the guest's own processes."""
    if node_type.name in shapes:
        return shapes[node_type.name]
    memory = int(node_type.extra.get("vm_memory_mib", node_type.capacity.memory_mib + VM_OVERHEAD_MIB))
    cpus = int(node_type.extra.get("vm_cpus", max(1, math.ceil(node_type.capacity.cpu_millis / 1000))))
    return VmShape(memory_mib=memory, cpus=min(cpus, os.cpu_count() or 1))


class QemuProvider:
    """`NodeProvider` whose nodes are QEMU VMs booted from a cached image (see the module docstring)."""

    name = "qemu"
    boot_deadline_s = 900.0  # software emulation: a boot plus the agent installed over SSH

    def __init__(self, cluster: str, bootstrap_for: BootstrapFor, *, root: Path, software: GuestSoftware,
                 cache_dir: Path, shapes: Mapping[str, VmShape] | None = None,
                 boot_timeout_s: float = 300.0, agent_timeout_s: float = 300.0,
                 guest_forwards: Sequence[GuestForward] = ()) -> None:
        self.cluster = cluster
        self.guest_forwards = tuple(guest_forwards)  # host services the guests reach (see GuestForward)
        self.bootstrap_for = bootstrap_for
        self.root = root
        self.shapes = dict(shapes or {})
        self.software = software  # the runtime image and agent package, from the composition root
        self.cache_dir = cache_dir
        self.boot_timeout_s = boot_timeout_s
        self.agent_timeout_s = agent_timeout_s
        self._lock = threading.Lock()  # guards node.json files and the maps below
        self._threads: dict[str, threading.Thread] = {}
        self._cancelled: set[str] = set()
        self._image: VmImage | None = None
        root.mkdir(parents=True, exist_ok=True)
        for rec in self._records():
            if rec["phase"] in (STARTING, BOOTING, BOOTSTRAPPING):
                self._launch(str(rec["id"]))

    # -- records -----------------------------------------------------------------------------

    def _records(self) -> list[dict[str, Any]]:
        out = []
        for meta in sorted(self.root.glob("*/node.json")):
            try:
                rec = json.loads(meta.read_text())
            except (OSError, ValueError):
                continue
            if rec.get("cluster") == self.cluster:
                out.append(rec)
        return out

    def _record(self, node_id: str) -> dict[str, Any] | None:
        try:
            rec: dict[str, Any] = json.loads((self.root / node_id / "node.json").read_text())
        except (OSError, ValueError):
            return None
        return rec if rec.get("cluster") == self.cluster else None

    def _save(self, rec: Mapping[str, Any]) -> None:
        folder = self.root / str(rec["id"])
        tmp = folder / "node.json.tmp"
        tmp.write_text(json.dumps(dict(rec), indent=2))
        os.replace(tmp, folder / "node.json")

    def _update(self, node_id: str, **changes: Any) -> dict[str, Any]:
        """Apply `changes` to a node's record; raises `_Cancelled` if the node was terminated."""
        with self._lock:
            rec = self._record(node_id)
            if rec is None or node_id in self._cancelled:
                raise _Cancelled(node_id)
            rec.update(changes)
            self._save(rec)
            return rec

    def _state(self, rec: Mapping[str, Any]) -> str:
        phase = rec["phase"]
        pid = int(rec.get("pid") or 0)
        alive = pid > 0 and qemu_alive(pid, self.root / str(rec["id"]) / "disk.qcow2")
        if phase == READY:
            return "running" if alive else "terminated"
        if phase in (STARTING, BOOTING, BOOTSTRAPPING):
            thread = self._threads.get(str(rec["id"]))
            return "pending" if alive or (thread is not None and thread.is_alive()) else "terminated"
        return "terminated"

    def _node(self, rec: Mapping[str, Any]) -> ProviderNode:
        keys = ("phase", "pid", "ssh_port", "agent_port", "agent_url", "accel", "error")
        extra = {k: rec[k] for k in keys if rec.get(k) is not None}
        extra["dir"] = str(self.root / str(rec["id"]))
        extra["console_log"] = str(self.root / str(rec["id"]) / "console.log")
        extra["timings"] = dict(rec.get("timings", {}))
        return ProviderNode(id=str(rec["id"]), node_type=str(rec["node_type"]), state=self._state(rec),
                            request_id=str(rec["request_id"]), cluster=self.cluster,
                            created_at=float(rec["created_at"]), extra=extra)

    # -- NodeProvider ------------------------------------------------------------------------

    def create(self, node_type: NodeType, count: int, *, request_id: str) -> list[ProviderNode]:
        """Start `count` VMs booting (returned "pending"); a repeated `request_id` returns its nodes."""
        require_qemu()
        with self._lock:
            done = [r for r in self._records() if r.get("request_id") == request_id]
            new = []
            for _ in range(count - len(done)):
                node_id = f"qemu-{uuid.uuid4().hex[:10]}"
                (self.root / node_id).mkdir(parents=True)
                shape = shape_for(node_type, self.shapes)
                rec = {"id": node_id, "cluster": self.cluster, "request_id": request_id,
                       "node_type": node_type.name,
                       "node_capacity": [node_type.capacity.cpu_millis, node_type.capacity.memory_mib],
                       "memory_mib": shape.memory_mib, "cpus": shape.cpus, "phase": STARTING,
                       "created_at": time.time(), "timings": {}}
                self._save(rec)
                new.append(rec)
                log.info("event=node_create node=%s request=%s type=%s memory_mib=%d cpus=%d",
                         node_id, request_id, node_type.name, shape.memory_mib, shape.cpus)
        for rec in new:
            self._launch(str(rec["id"]), node_type)
        return [self._node(r) for r in done + new]

    def terminate(self, ids: Sequence[str], *, request_id: str) -> None:
        """Stop each VM and delete its folder (overlay included); missing ids are success."""
        for node_id in ids:
            with self._lock:
                rec = self._record(node_id)
                if rec is None:
                    continue
                self._cancelled.add(node_id)
            pid = rec.get("pid")
            if pid:
                stop_vm(int(pid), self.root / node_id / "disk.qcow2")
            shutil.rmtree(self.root / node_id, ignore_errors=True)
            log.info("event=node_terminated node=%s request=%s", node_id, request_id)

    def list_instances(self) -> list[ProviderNode]:
        """This cluster's nodes whose VM is booting or running."""
        return [n for n in (self._node(r) for r in self._records()) if n.state != "terminated"]

    # -- waiting (tests, benchmarks, the CLI) --------------------------------------------------

    def wait_running(self, ids: Sequence[str], *, timeout_s: float) -> list[ProviderNode]:
        """Block until every node in `ids` is "running"; raises `ProviderError` if one fails or time
        runs out."""
        deadline = time.monotonic() + timeout_s
        while True:
            recs = {i: self._record(i) for i in ids}
            nodes = {i: self._node(r) for i, r in recs.items() if r is not None}
            failed = [n for n in nodes.values() if n.state == "terminated"]
            missing = [i for i in ids if recs[i] is None]
            if failed or missing:
                why = "; ".join(f"{n.id}: {n.extra.get('error', 'stopped')}" for n in failed)
                raise ProviderError(f"nodes did not start: {why or missing}")
            if all(n.state == "running" for n in nodes.values()):
                return [nodes[i] for i in ids]
            if time.monotonic() > deadline:
                phases = {i: n.extra.get("phase") for i, n in nodes.items()}
                raise ProviderError(f"nodes not running after {timeout_s:.0f}s: {phases}")
            time.sleep(0.2)

    # -- the background launch -----------------------------------------------------------------

    def _launch(self, node_id: str, node_type: NodeType | None = None) -> None:
        thread = threading.Thread(target=self._run_launch, args=(node_id, node_type),
                                  name=f"qemu-launch-{node_id}", daemon=True)
        with self._lock:
            self._threads[node_id] = thread
        thread.start()

    def _image_once(self) -> VmImage:
        if self._image is None:
            self._image = ensure_vm_image(self.cache_dir, self.software)
        return self._image

    def _run_launch(self, node_id: str, node_type: NodeType | None) -> None:
        try:
            self._boot_and_bootstrap(node_id, node_type)
        except _Cancelled:
            log.info("event=node_launch_cancelled node=%s", node_id)
        except Exception as exc:
            log.warning("event=node_launch_failed node=%s error=%s", node_id, exc,
                        exc_info=isinstance(exc, PROGRAMMING_ERRORS))  # a bug: with its traceback
            with self._lock:
                rec = self._record(node_id)
                if rec is None or node_id in self._cancelled:
                    return
            if rec.get("pid"):
                stop_vm(int(rec["pid"]), self.root / node_id / "disk.qcow2")
            (self.root / node_id / "disk.qcow2").unlink(missing_ok=True)
            with contextlib.suppress(_Cancelled):
                self._update(node_id, phase=FAILED, error=str(exc)[-2000:])
        finally:
            with self._lock:
                self._threads.pop(node_id, None)

    def _boot_and_bootstrap(self, node_id: str, node_type: NodeType | None) -> None:
        t0 = time.monotonic()
        rec = self._update(node_id)
        folder = self.root / node_id
        image = self._image_once()
        timings = dict(rec.get("timings", {}))
        timings.setdefault("image_s", round(time.monotonic() - t0, 2))
        bootstrap = self.bootstrap_for(str(rec["request_id"]))
        if rec["phase"] == STARTING or not rec.get("pid"):
            accel = detect_accel(image, self.cache_dir)
            t1 = time.monotonic()
            with self._lock:  # terminate() must see the pid of any QEMU we start
                if self._record(node_id) is None or node_id in self._cancelled:
                    raise _Cancelled(node_id)
                shape = VmShape(memory_mib=int(rec["memory_mib"]), cpus=int(rec["cpus"]))
                vm = start_vm(image, folder, shape, accel=accel, agent_guest_port=bootstrap.agent_port,
                              guest_forwards=self.guest_forwards)
                rec.update(phase=BOOTING, pid=vm.pid, ssh_port=vm.ssh_port, agent_port=vm.agent_port,
                           agent_url=f"http://127.0.0.1:{vm.agent_port}", accel=accel)
                self._save(rec)
            timings["qemu_start_s"] = round(time.monotonic() - t1, 2)
        known_hosts = folder / "known_hosts"
        boot.write_known_hosts(known_hosts, image, int(rec["ssh_port"]))
        t2 = time.monotonic()
        client = self._connect(node_id, image, known_hosts, int(rec["ssh_port"]))
        try:
            timings["boot_to_ssh_s"] = round(time.monotonic() - t2, 2)
            rec = self._update(node_id, phase=BOOTSTRAPPING, timings=timings)
            cpu, memory = rec["node_capacity"]
            node_type = node_type or NodeType(name=str(rec["node_type"]), capacity=Resources(cpu, memory))
            plan = boot.plan_agent(bootstrap, node_id=node_id,
                                   node_type=node_type, agent_host_port=int(rec["agent_port"]),
                                   runtime_image=image.runtime_image, agent_wheel=self.software.agent_wheel())
            t3 = time.monotonic()
            boot.install_agent(client, plan, timeout_s=self.agent_timeout_s)
            timings["bootstrap_s"] = round(time.monotonic() - t3, 2)
        finally:
            client.close()
        healthy_s = boot.wait_healthy(plan.agent_url, timeout_s=self.agent_timeout_s,
                                      give_up=lambda: self._check_live(node_id))
        timings["agent_healthy_s"] = round(healthy_s, 2)
        timings["total_s"] = round(time.monotonic() - t0, 2)
        self._update(node_id, phase=READY, timings=timings)
        log.info("event=node_ready node=%s %s", node_id, " ".join(f"{k}={v}" for k, v in timings.items()))


    def _check_live(self, node_id: str) -> None:
        """Raise `_Cancelled` if the node was terminated, `ProviderError` if its QEMU died."""
        with self._lock:
            rec = self._record(node_id)
            if rec is None or node_id in self._cancelled:
                raise _Cancelled(node_id)
        if rec.get("pid") and not qemu_alive(int(rec["pid"]), self.root / node_id / "disk.qcow2"):
            raise ProviderError(f"QEMU of {node_id} exited; see {self.root / node_id / 'console.log'}")

    def _connect(self, node_id: str, image: VmImage, known_hosts: Path, port: int) -> Any:
        """An SSH session to the booted guest (a real handshake, not a TCP connect: QEMU accepts
        forwarded connections before the guest listens), bounded by `boot_timeout_s`."""
        deadline = time.monotonic() + self.boot_timeout_s
        boot.wait_ssh_banner(port, timeout_s=self.boot_timeout_s, give_up=lambda: self._check_live(node_id))
        settings = boot.ssh_settings(image, known_hosts, ready_timeout_s=10.0)
        while True:
            self._check_live(node_id)
            try:
                return ssh.connect("127.0.0.1", settings, port=port)
            except ssh.SshError as exc:
                if time.monotonic() > deadline:
                    raise ProviderError(f"{node_id}: no SSH within {self.boot_timeout_s:.0f}s: "
                                        f"{exc}") from exc


class _Cancelled(Exception):
    """The node was terminated while it was being launched."""
