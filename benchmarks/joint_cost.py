"""Joint training against plain training on any device: the time and peak memory of the ``ift-cost`` experiment.

The runs of ``nestopt.experiments.ift_cost`` (plain training with a fixed global decay, and joint training that
tunes decays per layer and per weight with the experiment's hypergradient), with the network and the data on
``--device``. On the CPU the experiment itself is the reference (its claims use CPU seconds and exact tensor
bytes); this script exists for the GPU, where time is wall clock after ``torch.cuda.synchronize`` and memory is
``torch.cuda.max_memory_allocated`` (allocator bytes, model and data included).

    python benchmarks/joint_cost.py [--device cuda] [--repeats 3] [--quick]
    python benchmarks/joint_cost.py --breakdown [--set curvature=gauss-newton]

``--breakdown`` (CPU) times nothing: it prints, for each run of the experiment's full configuration, what is
alive at its memory peak in network sizes, by the operator and the lines that made it
(:meth:`nestopt.profile.PeakMemory.breakdown`).
"""

from __future__ import annotations

import functools
import statistics
import time
from typing import Any

import torch

from _report import env_line, environment, parser, synchronizer, write
from nestopt import data
from nestopt.errors import InvalidArgumentError, NestoptError
from nestopt.experiments import ift_cost
from nestopt.experiments.settings import parse_setting
from nestopt.profile import PeakMemory


def _on(d: data.Splits, device: str) -> data.Splits:
    return data.Splits(*(data.Split(s.x.to(device), s.y.to(device)) for s in (d.train, d.val, d.test)), d.num_classes)


def peak(run: Any, d: data.Splits, cfg: dict[str, Any], device: str) -> int:
    """Peak bytes of a run of ``cfg["memory_steps"]`` steps, model and data included."""
    net = ift_cost._net(d, cfg, 1).to(device)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        run(d, cfg, net, cfg["memory_steps"], 0)
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated())
    with PeakMemory(count=ift_cost._footprint(d, net)) as tracker:
        run(d, cfg, net, cfg["memory_steps"], 0)
    return tracker.peak


def breakdown(cfg: dict[str, Any], top: int = 12) -> None:
    """Print what is alive at the memory peak of each run, in network sizes (largest first)."""
    d = data.mnist1d(cfg["n_train"], cfg["n_val"], 10, seed=0)
    runs = {"plain": ift_cost.plain_run}
    runs.update({per: functools.partial(ift_cost.joint_run, per=per) for per in cfg["per"]})
    for name, run in runs.items():
        net = ift_cost._net(d, cfg, 1)
        size = sum(p.numel() * p.element_size() for p in net.parameters())
        with PeakMemory(count=ift_cost._footprint(d, net), trace=True, depth=4) as tracker:
            run(d, cfg, net, cfg["memory_steps"], 0)
        print(f"\n{name}: peak {tracker.peak / size:.2f} network sizes ({tracker.peak / 2**20:.2f} MiB)")
        for what, nbytes in tracker.breakdown()[:top]:
            print(f"  {nbytes / size:5.2f}  {what}")


def main() -> None:
    ap = parser(__doc__)
    ap.set_defaults(repeats=3)
    ap.add_argument("--breakdown", action="store_true", help="print what is alive at each run's memory peak")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a setting of ift-cost")
    args = ap.parse_args()
    env = environment(args.threads, args.device)
    exp = ift_cost.EXPERIMENT
    try:  # the settings of `nestopt run ift-cost --set`, parsed and checked the same way
        overrides = {}
        for item in args.set:
            key, sep, raw = item.partition("=")
            if not sep or key not in exp.full:
                raise InvalidArgumentError(f"expects KEY=VALUE with KEY a setting of ift-cost: {sorted(exp.full)}")
            overrides[key] = parse_setting(key, raw, exp.full[key])
        cfg = dict(exp.config(args.quick, overrides))
    except NestoptError as err:
        ap.error(f"--set: {err}")
    if args.quick:
        cfg.update(steps=40, repeats=1, memory_steps=20, n_train=512, hidden=[64, 64])
    if args.breakdown:
        breakdown(cfg)
        return
    d = _on(data.mnist1d(cfg["n_train"], cfg["n_val"], 10, seed=0), args.device)
    runs = {"plain": ift_cost.plain_run}
    runs.update({per: functools.partial(ift_cost.joint_run, per=per) for per in cfg["per"]})
    sync = synchronizer(args.device)
    for run in runs.values():  # warm-up: one-time initialization inside torch
        run(d, cfg, ift_cost._net(d, cfg, 1).to(args.device), 2 * cfg["inner_steps_per_outer"], 0)
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(1 if args.quick else args.repeats):  # round-robin
        for name, run in runs.items():
            net = ift_cost._net(d, cfg, 1).to(args.device)
            sync()
            start = time.perf_counter()
            run(d, cfg, net, cfg["steps"], 0)
            sync()
            seconds[name].append(time.perf_counter() - start)
    memory = {name: peak(run, d, cfg, args.device) for name, run in runs.items()}
    median = {name: statistics.median(s) for name, s in seconds.items()}
    rows = [
        {"run": name, "status": "ok", "seconds": median[name], "spread": (max(s) - min(s)) / median[name],
         "peak_bytes": memory[name], "time_ratio": median[name] / median["plain"],
         "memory_ratio": memory[name] / memory["plain"]}
        for name, s in seconds.items()
    ]  # fmt: skip
    cmd = "python benchmarks/joint_cost.py" + (" --quick" if args.quick else f" --repeats {args.repeats}")
    cmd += f" --device {args.device}" if args.device != "cpu" else ""
    lines = [
        "# Joint training cost",
        "",
        f"`{cmd}`. The runs of the `ift-cost` experiment ({cfg['steps']} training steps, hidden {cfg['hidden']}, "
        f"batch {cfg['batch_size']}) on {env['device']}. {env_line(env)}",
        "",
        "| run | seconds (median) | spread | peak memory (MiB) | time / plain | memory / plain |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['run']} | {r['seconds']:.2f} | {r['spread']:.0%} | {r['peak_bytes'] / 2**20:.2f} | "
        f"{r['time_ratio']:.2f} | {r['memory_ratio']:.2f} |"
        for r in rows
    ]
    name = "joint_cost" if args.device == "cpu" else f"joint_cost_{torch.device(args.device).type}"
    result = {"benchmark": "joint_cost", "environment": env, "command": cmd, "config": cfg, "rows": rows}
    write(args.out, name, result, lines)


if __name__ == "__main__":
    main()
