"""qemu provider benchmark: how long a new VM node takes to be usable, split by phase.

Run: .venv/bin/python benchmarks/vm_boot_bench.py [--runs N] [--cpus C] [--memory-mib M]

Phases: the provider call (`create`, returns a pending node), image (cache lookup, or the first
build), QEMU start, boot to the first SSH handshake, bootstrap over SSH (copy the agent, write its
config, start its service), and agent healthy (its `/healthz` through the forwarded port).
The agent runs with an explicit node id and token here: no control plane takes part.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from control_plane.fleet import AgentPackage, qemu_software
from node_agent.image import default_cache_dir
from placement import Resources
from provisioners.base import NodeBootstrap, NodeType
from provisioners.qemu.image import ensure_vm_image
from provisioners.qemu.provider import QemuProvider
from provisioners.qemu.vm import VmShape

PHASES = ("image_s", "qemu_start_s", "boot_to_ssh_s", "bootstrap_s", "agent_healthy_s", "total_s")


def _bootstrap(request_id: str) -> NodeBootstrap:
    return NodeBootstrap(control_plane_url="http://127.0.0.1:9", join_token="unused",
                         extra_env={"CUMULUS_AGENT_NODE_ID": f"bench-{request_id}",
                                    "CUMULUS_AGENT_TOKEN": "bench-secret"})


def main() -> int:
    """Boot `--runs` VMs one after another and print each phase's time."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--cpus", type=int, default=1)
    parser.add_argument("--memory-mib", type=int, default=1024)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    node_type = NodeType(name="bench", capacity=Resources(1000 * args.cpus, args.memory_mib - 512))
    rows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="cumulus-vm-bench-") as tmp:
        cache = default_cache_dir()
        software = qemu_software(AgentPackage(Path(tmp) / "agent-package"), cache)
        t0 = time.monotonic()
        image = ensure_vm_image(cache, software)
        print(f"image {image.digest}: ready in {time.monotonic() - t0:.1f}s (cached after the first build)")
        provider = QemuProvider("bench", _bootstrap, root=Path(tmp) / "nodes", software=software,
                                cache_dir=cache,
                                shapes={"bench": VmShape(memory_mib=args.memory_mib, cpus=args.cpus)})
        for run in range(args.runs):
            t1 = time.monotonic()
            [pending] = provider.create(node_type, 1, request_id=f"bench-{run}")
            call_s = time.monotonic() - t1
            try:
                [node] = provider.wait_running([pending.id], timeout_s=600)
            finally:
                provider.terminate([pending.id], request_id=f"bench-{run}-end")
            timings = {k: float(v) for k, v in dict(node.extra["timings"]).items()}
            row = {"provider_call_s": call_s, **{k: timings.get(k, 0.0) for k in PHASES}}
            rows.append(row)
            print(f"run {run + 1} (accel={node.extra.get('accel')}): "
                  + " ".join(f"{k}={v:.2f}" for k, v in row.items()))
    if len(rows) > 1:
        print("median: " + " ".join(f"{k}={statistics.median(r[k] for r in rows):.2f}" for k in rows[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
