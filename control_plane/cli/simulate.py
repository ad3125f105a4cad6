"""`cumulus simulate`: replay a trace through the placement policies and compare them side by side.

Reading the trace files happens here; the replay itself is `placement.simulator`, which is pure.
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from placement.fleet_state import NodeType
from placement.keepalive import AdaptiveKeepAlive, FixedKeepAlive, HybridHistogramPolicy, KeepAlivePolicy
from placement.resources import Resources
from placement.simulator import (
    DEFAULT_NODE_TYPE,
    SIMULATED_FLEET,
    SIMULATED_SCALING,
    SimulationConfig,
    SimulationResult,
    oracle,
    simulate,
)
from placement.trace import Trace, TraceFormatError, parse_trace

DEFAULT_POLICIES = ("fixed", "adaptive", "histogram")


def parse_policy(spec: str) -> KeepAlivePolicy:
    """`fixed[:MINUTES]`, `adaptive[:BASELINE_MINUTES]` or `histogram[:RANGE_HOURS]` as a keep-alive
    policy (`histogram` is the paper's policy as published; `adaptive` holds it to a fixed keep-alive's
    budget)."""
    name, _, arg = spec.strip().partition(":")
    try:
        value = float(arg) if arg else None
    except ValueError:
        raise typer.BadParameter(f"{spec!r}: {arg!r} is not a number") from None
    if value is not None and value <= 0:
        raise typer.BadParameter(f"{spec!r}: the number must be positive")
    if name == "fixed":
        return FixedKeepAlive() if value is None else FixedKeepAlive(value * 60, name=f"fixed-{value:g}m")
    if name == "adaptive":
        if value is None:
            return AdaptiveKeepAlive()
        return AdaptiveKeepAlive(baseline_s=value * 60, name=f"adaptive-{value:g}m")
    if name == "histogram":
        if value is None:
            return HybridHistogramPolicy()
        return HybridHistogramPolicy(range_s=value * 3600, name=f"histogram-{value:g}h")
    raise typer.BadParameter(f"{spec!r}: policy must be fixed[:minutes], adaptive[:minutes] "
                             "or histogram[:range_hours]")


def parse_node_type(spec: str) -> NodeType:
    """`name:cpu_millis:memory_mib:hourly_cost:boot_s` as a node type."""
    parts = spec.split(":")
    if len(parts) != 5 or not parts[0]:
        raise typer.BadParameter(f"{spec!r}: expected name:cpu_millis:memory_mib:hourly_cost:boot_s")
    try:
        cpu, mem, cost, boot = int(parts[1]), int(parts[2]), float(parts[3]), float(parts[4])
    except ValueError:
        raise typer.BadParameter(
            f"{spec!r}: cpu and memory must be integers, cost and boot numbers"
        ) from None
    if cpu <= 0 or mem <= 0 or cost < 0 or boot < 0:
        raise typer.BadParameter(f"{spec!r}: capacity must be positive, cost and boot time not negative")
    return NodeType(parts[0], Resources(cpu, mem), cost, boot)


def load_trace(prefix: str) -> Trace:
    """Read PREFIX_inv.csv, PREFIX_run.csv and PREFIX_mem.csv and parse them."""
    texts = []
    for suffix in ("_inv.csv", "_run.csv", "_mem.csv"):
        path = Path(prefix + suffix)
        try:
            texts.append(path.read_text())
        except OSError as e:
            raise typer.BadParameter(f"cannot read {path}: {e.strerror or e}", param_hint="--trace") from None
    try:
        return parse_trace(*texts)
    except TraceFormatError as e:
        raise typer.BadParameter(f"{prefix}: {e}", param_hint="--trace") from None


def write_plot(results: Sequence[SimulationResult], path: Path) -> None:
    """A PNG of load, instances and nodes over time, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_load, ax_inst, ax_nodes) = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    first = results[0].timeline
    ax_load.plot([s.minute / 60 for s in first], [s.invocations for s in first], color="black", lw=0.7)
    ax_load.set_ylabel("invocations / min")
    for r in results:
        hours = [s.minute / 60 for s in r.timeline]
        ax_inst.plot(hours, [s.instances for s in r.timeline], lw=0.8, label=r.policy)
        ax_nodes.step(hours, [s.nodes for s in r.timeline], lw=0.9, where="post", label=r.policy)
    ax_inst.set_ylabel("instances")
    ax_nodes.set_ylabel("nodes")
    ax_nodes.set_xlabel("hours")
    ax_inst.legend(loc="upper right")
    ax_load.set_title("Trace replay: load, instances and nodes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_table(results: Sequence[SimulationResult], console: Console, title: str) -> None:
    """The comparison table."""
    table = Table(title=title)
    for col in ("policy", "invocations", "cold %", "p75 app cold %", "wasted GB·s", "node-h", "peak nodes"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for r in results:
        table.add_row(
            r.policy,
            f"{r.invocations:,}",
            f"{r.cold_start_pct:.3f}",
            f"{r.p75_app_cold_start_pct:.1f}",
            f"{r.wasted_memory_gb_s:,.0f}",
            f"{r.node_hours:.1f}",
            str(r.peak_nodes),
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add the `simulate` command to `app`."""

    @app.command("simulate")
    def simulate_command(
        trace: Annotated[
            str, typer.Option("--trace", help="Trace prefix: reads PREFIX_inv.csv, _run.csv, _mem.csv.")
        ],
        policy: Annotated[
            list[str] | None,
            typer.Option("--policy", help="fixed[:minutes], adaptive[:minutes] or histogram[:range_hours]; "
                                          "repeat to compare (an oracle row is always added)."),
        ] = None,
        node_type: Annotated[
            list[str] | None,
            typer.Option("--node-type", help="name:cpu_millis:memory_mib:hourly_cost:boot_s; repeatable."),
        ] = None,
        plot: Annotated[
            Path | None, typer.Option("--plot", help="Write a PNG of load, instances, nodes.")
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
        target_concurrency: Annotated[
            float, typer.Option(help="In-flight requests one instance serves (the autoscaler's target).")
        ] = 100.0,
        max_nodes: Annotated[int, typer.Option(help="Upper bound of the simulated fleet.")] = 500,
        warmup_minutes: Annotated[int, typer.Option(help="Replay but do not measure the first minutes.")] = 0,
    ) -> None:
        """Replay a trace (Azure Functions 2019 format) through keep-alive policies and compare them."""
        policies = [parse_policy(p) for p in (policy or DEFAULT_POLICIES)]
        types = tuple(parse_node_type(s) for s in node_type) if node_type else (DEFAULT_NODE_TYPE,)
        if target_concurrency <= 0:
            raise typer.BadParameter("must be positive", param_hint="--target-concurrency")
        if max_nodes < 1:
            raise typer.BadParameter("must be at least 1", param_hint="--max-nodes")
        if plot is not None and importlib.util.find_spec("matplotlib") is None:
            raise typer.BadParameter("plotting needs matplotlib: pip install 'cumulus[plot]'",
                                     param_hint="--plot")
        data = load_trace(trace)
        scaling = replace(SIMULATED_SCALING, target_concurrency=target_concurrency)
        fleet = replace(SIMULATED_FLEET, max_nodes=max_nodes)
        started = time.perf_counter()
        results = [
            simulate(data, SimulationConfig(p, types, fleet, scaling, warmup_minutes=warmup_minutes))
            for p in policies
        ]
        results.append(oracle(data, SimulationConfig(policies[0], types, fleet, scaling,
                                                     warmup_minutes=warmup_minutes)))
        elapsed = time.perf_counter() - started
        if plot is not None:
            write_plot(results, plot)
        if as_json:
            typer.echo(json.dumps([r.summary() for r in results], indent=2))
            return
        console = Console()
        render_table(
            results,
            console,
            f"{trace}: {len(data.functions)} functions, {data.minutes} min, "
            f"node types {', '.join(t.name for t in types)}",
        )
        console.print(
            f"replayed {len(policies)} polic{'y' if len(policies) == 1 else 'ies'} and the oracle "
            f"in {elapsed:.1f} s"
            + (f"; plot written to {plot}" if plot else "")
        )
