"""Placement benchmark: speed of `place` at scale, and packing efficiency on trace-derived demand.

Run: .venv/bin/python benchmarks/placement_bench.py [TRACE_PREFIX]
"""

from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from placement import NodeView, PlacementRequest, Resources, place
from placement.trace import load_profile, parse_trace

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRACE = ROOT / "examples" / "traces" / "azure2019" / "100"
NODE = Resources(4000, 16384)


def speed(repeats: int = 5) -> float:
    """Best time to place 10,000 instances on 1,000 partly used nodes, batched and one by one."""
    rnd = random.Random(7)
    nodes = [
        NodeView(f"n{i:04d}", NODE, Resources(rnd.randrange(0, 2000), rnd.randrange(0, 8192)))
        for i in range(1000)
    ]
    sizes = [128, 256, 512, 1024, 2048]
    worst = 0.0
    for label, fns, each in (("100 functions x 100", 100, 100), ("10,000 functions x 1", 10_000, 1)):
        requests = [
            PlacementRequest(f"fn-{i}", Resources(sizes[i % 5] // 4, sizes[i % 5]), each) for i in range(fns)
        ]
        best = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            d = place(nodes, requests)
            best = min(best, time.perf_counter() - t0)
        assert d.placed_count() + d.unplaced_count() == 10_000
        print(
            f"place 10,000 instances ({label}) on 1,000 nodes: {best * 1000:.0f} ms (best of {repeats}); "
            f"placed {d.placed_count():,}, unplaced {d.unplaced_count():,}"
        )
        worst = max(worst, best)
    return worst


def packing(prefix: Path) -> float:
    """Nodes used over the lower bound ceil(sum demand / node capacity), at the trace's busiest minute."""
    texts = [Path(f"{prefix}{s}").read_text() for s in ("_inv.csv", "_run.csv", "_mem.csv")]
    trace = parse_trace(*texts)
    worst = 0.0
    for target in (1.0, 10.0):
        per_minute: dict[int, list[PlacementRequest]] = {}
        for f in trace.functions:
            res = Resources(max(10, f.memory_mib * 250 // 1024), f.memory_mib)
            for m, (peak, _) in load_profile(f.invocations, f.duration_ms).items():
                per_minute.setdefault(m, []).append(
                    PlacementRequest(f.function, res, math.ceil(peak / target))
                )
        minute = max(per_minute, key=lambda m: sum(r.resources.memory_mib * r.count for r in per_minute[m]))
        requests = per_minute[minute]
        total = Resources.ZERO
        for r in requests:
            total = total + r.resources * r.count
        bound = math.ceil(total.max_share_of(NODE) - 1e-9)
        nodes = [NodeView(f"n{i:05d}", NODE, Resources.ZERO) for i in range(bound * 2 + 10)]
        t0 = time.perf_counter()
        d = place(nodes, requests)
        elapsed = time.perf_counter() - t0
        used = len({a.node_id for a in d.assignments})
        ratio = used / bound
        worst = max(worst, ratio)
        print(
            f"packing {prefix.name}-function trace, target {target:g}/instance, busiest minute {minute}: "
            f"{d.placed_count():,} instances ({total}) on {used} nodes; lower bound {bound}; "
            f"efficiency {ratio:.3f} (+{(ratio - 1) * 100:.1f}%) in {elapsed * 1000:.0f} ms"
        )
    return worst


def main() -> None:
    """Print the figures."""
    prefixes = [Path(p) for p in sys.argv[1:]] or [DEFAULT_TRACE]
    speed()
    for prefix in prefixes:
        packing(prefix)


if __name__ == "__main__":
    main()
