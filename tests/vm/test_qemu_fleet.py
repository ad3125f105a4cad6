"""The fleet on real VMs: `cumulus up --provider qemu --min-nodes 0 --max-nodes 2`. The first call of a
function with no node boots a VM, whose agent is installed over SSH and joins; the call returns the
right result (its cold start includes the boot). A SIGKILLed, restarted control plane keeps the VM
and its warm instance. The VM then vanishes (QEMU SIGKILLed): it is dropped
and cleaned up, and the next call boots a new one. Sustained demand adds a second VM. When load
stops, instances scale to zero, both VMs are drained and removed, and no QEMU process is left."""

from __future__ import annotations

import json
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import start_platform, wait_for

from control_plane.store import Store
from provisioners.qemu.vm import qemu_alive

# Three VM boots under software emulation (about 60-120 s each on 2 cores) plus the drain.
pytestmark = [pytest.mark.vm, pytest.mark.timeout(1200)]

SLEEPY = {"main.py": "import socket, time\n\ndef handler(event, context):\n"
                     "    time.sleep(event.get('sleep', 0))\n    return {'host': socket.gethostname()}\n"}


def _qemu_pids(nodes_dir: Path) -> list[tuple[int, Path]]:
    """(pid, overlay) of every VM the provider's node folders name."""
    out = []
    for meta in nodes_dir.glob("*/node.json"):
        try:
            rec = json.loads(meta.read_text())
        except (FileNotFoundError, json.JSONDecodeError):  # being removed, or not yet whole
            continue
        if rec.get("pid"):
            out.append((int(rec["pid"]), meta.parent / "disk.qcow2"))
    return out


def test_vms_boot_for_demand_and_go_away_when_idle(vm_image: object, tmp_path: Path) -> None:
    env = {"CUMULUS_WATERMARK_WINDOW_S": "5", "CUMULUS_SCALE_DOWN_COOLDOWN_S": "5",
           "CUMULUS_SCALE_UP_COOLDOWN_S": "5", "CUMULUS_JOIN_DEADLINE_S": "600",
           "CUMULUS_PROVISION_WAIT_S": "600", "CUMULUS_HEARTBEAT_INTERVAL_S": "2",
           "CUMULUS_NODE_LOST_AFTER_S": "60"}
    plat = start_platform(tmp_path / "cp", extra_env=env, wait_for_node=False,
                          args=("--provider", "qemu", "--min-nodes", "0", "--max-nodes", "2"))
    seen: set[tuple[int, Path]] = set()
    try:
        # 2 x 384 MiB: one 768 MiB VM holds two instances.
        plat.deploy_ok("onvm", SLEEPY, memory_mb=384, max_instances=4, keep_alive_s=5, timeout_s=120)
        first = plat.invoke("onvm", {}, timeout=900)
        assert first.status_code == 200, first.text
        assert first.headers["X-Cumulus-Cold-Start"] == "true" and "host" in first.json()
        nodes = plat.get("/v1/nodes")
        assert len(nodes) == 1 and nodes[0]["provider"] == "qemu" and nodes[0]["state"] == "ready"
        seen |= set(_qemu_pids(plat.data_dir / "nodes"))

        # The control plane is SIGKILLed and restarted: the VM and its warm instance are kept, and
        # a call made as soon as it answers is served (not 503) by the same instance.
        port = int(plat.url.rsplit(":", 1)[1])
        plat.proc.send_signal(signal.SIGKILL)
        plat.proc.wait(30)
        plat = start_platform(tmp_path / "cp", extra_env=env, wait_for_node=False, port=port,
                              args=("--provider", "qemu", "--min-nodes", "0", "--max-nodes", "2"))
        warm = plat.invoke("onvm", {}, timeout=120)
        assert warm.status_code == 200 and warm.headers["X-Cumulus-Cold-Start"] == "false", warm.text
        assert [n["id"] for n in plat.get("/v1/nodes")] == [nodes[0]["id"]]
        assert set(_qemu_pids(plat.data_dir / "nodes")) == seen  # the same VM, not a new one

        def kinds() -> list[str]:
            return [e["kind"] for e in plat.get("/v1/events?limit=1000")]

        # The first call was answered by the control plane that died: only the VM can tell of it,
        # and does once the new one listens. (Had the VM died too before that, the call would go
        # unbilled: both copies gone. Said in the README.)
        store = Store(f"sqlite:///{plat.data_dir / 'cumulus.db'}")
        wait_for(lambda: first.headers["X-Request-Id"] in {u.request_id for u in store.usage_rows()}, 30,
                 interval=0.2, what="the first call's usage record from the VM")

        # The VM vanishes (its QEMU process SIGKILLed) while its instance is still warm: the node
        # is dropped and its folder cleaned up; the next call boots a new VM and is answered.
        [(pid, _)] = _qemu_pids(plat.data_dir / "nodes")
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: plat.get("/v1/nodes") == [], 120, interval=1, what="the vanished VM dropped")
        assert {"node_gone", "node_lost"} & set(kinds()), kinds()
        wait_for(lambda: not _qemu_pids(plat.data_dir / "nodes"), 60, interval=1,
                 what="the vanished VM's folder removed")
        again = plat.invoke("onvm", {}, timeout=900)
        assert again.status_code == 200, again.text
        seen |= set(_qemu_pids(plat.data_dir / "nodes"))

        # Four concurrent long calls: more than one VM holds, so another VM boots for them (the
        # calls may be served by the first VM's freed slots before it is up: that is fine).
        # The VMs are noted all along, from another thread: the third may boot, join and (idle once
        # the calls are done) be removed again before they return.
        watching = threading.Event()

        def note_vms() -> None:
            while not watching.wait(0.5):
                seen.update(_qemu_pids(plat.data_dir / "nodes"))

        watcher = threading.Thread(target=note_vms, daemon=True)
        watcher.start()
        try:
            with ThreadPoolExecutor(4) as pool:
                results = list(pool.map(lambda _: plat.invoke("onvm", {"sleep": 20}, timeout=900), range(4)))
            assert all(r.status_code == 200 for r in results), [r.text for r in results]
            assert kinds().count("node_add") == 3
            wait_for(lambda: kinds().count("node_ready") == 3, 300, interval=1, what="the third VM to join")
        finally:
            watching.set()
            watcher.join(10)
        seen.update(_qemu_pids(plat.data_dir / "nodes"))
        assert len(seen) == 3

        # Load stops: scale to zero, then the fleet too.
        wait_for(lambda: plat.get("/v1/nodes") == [], 300, interval=2, what="both VMs drained and removed")
        wait_for(lambda: not _qemu_pids(plat.data_dir / "nodes"), 120, interval=1,
                 what="the VMs' folders to be removed")
        for pid, overlay in seen:
            wait_for(lambda p=pid, o=overlay: not qemu_alive(p, o), 60, interval=1,
                     what=f"QEMU {pid} to exit")
        assert kinds().count("node_remove") == 2, kinds()

        # Every call was metered: by the VM that ran it, sent from the guest and stored, or (the
        # warm call on the SIGKILLed VM, if it had no time to send it) from the gateway's ledger
        # of answered calls; the drained VMs' instances too.
        calls = {r.headers["X-Request-Id"] for r in (first, warm, again, *results)}
        wait_for(lambda: calls <= {u.request_id for u in store.usage_rows()}, 30, interval=1,
                 what="the calls' usage records from the VMs")
        assert all(u.memory_mib == 384 and u.billed_ms >= 1 for u in store.usage_rows())
        assert len(store.instance_rows()) >= 2
    finally:
        plat.stop()
