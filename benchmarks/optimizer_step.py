"""Optimizer step time: complex momentum and complex Adam against torch's SGD-momentum and Adam.

3M float32 parameters (by default) in three large tensors (1500x1000, 1000x1000, 500x1000), one thread, gradients fixed.
Every optimizer is timed round-robin (one sample of each per round, a sample being ``--steps`` steps) and the
ratio of a pair is the median over rounds of the ratio within a round, so that load changes on a shared
machine hit both alike. Targets: ``ComplexMomentum / torch.optim.SGD(momentum=0.9, foreach=True)`` and
``ComplexAdam / torch.optim.Adam(foreach=True)`` at most 1.15 (Lorraine et al., 2022: complex momentum has
"an almost identical computational cost"), for the best path of each.

An optimizer step is memory-bound, so its cost is the number of passes over parameter-sized buffers (each
tensor read or written once counts one pass):

==========================================  ======  =============================================================
step                                        passes  how
==========================================  ======  =============================================================
torch SGD(momentum), foreach                8       ``buf *= m`` (2), ``buf += g`` (3), ``p -= lr buf`` (3)
torch SGD(momentum), fused (CPU kernel)     5       read g, buf, p; write buf, p
HeavyBall, foreach (nestopt kernels)        8       the same three operations
ComplexMomentum, foreach                    18      a copy of ``bi Im mu`` (2), ``Im mu`` update (5), ``Re mu``
                                                    update (8), ``p += lr Re(alpha mu)`` (3; 6 for a complex alpha)
ComplexMomentum, for-loop                   18      the same operations, the whole step per tensor (cache reuse)
ComplexMomentum, fused (torch.compile)      7       read g, Re mu, Im mu, p; write Re mu, Im mu, p (the minimum)
torch Adam, foreach                         18      lerp m (3), v (5), sqrt, /, +eps (6), addcdiv p (4)
torch Adam, fused (CPU kernel)              7       read g, m, v, p; write m, v, p
ComplexAdam, foreach                        40      complex m (18), v (5), denominator (6), Re(m/c) and / (8), p (3)
ComplexAdam, fused (torch.compile)          9       read g, Re m, Im m, v, p; write Re m, Im m, v, p
==========================================  ======  =============================================================

So the plain ``_foreach`` path of the complex methods cannot reach the target (2.25x and 2.2x the passes of
their references); the fused path (``fused=True``: ``torch.compile`` of the same in-place kernel, one pass per
tensor) can. Both are measured. The first fused step compiles (its time is reported separately).

The cost per pass depends on where the buffers live: at 3M parameters a buffer is 12 MB, so torch's SGD
(parameters, gradients, one buffer: 36 MB) and complex momentum (two buffers: 48 MB) both fit a large
last-level cache, while a 32 MB one nearly holds SGD's and not complex momentum's; the results name the CPU
and its cache sizes. ``--size 300k`` and ``--size 30M`` measure the step in cache and in main memory (results
``optimizer_step_300k`` and ``optimizer_step_30M``).

    python benchmarks/optimizer_step.py [--quick] [--size 3M] [--repeats 30] [--steps 5] [--threads 1] [--out DIR]

``--quick`` (30k parameters, 3 rounds) writes to a scratch folder unless ``--out`` is given; a full run writes
``benchmarks/results/optimizer_step.{json,md}`` (``optimizer_step_SIZE`` for another ``--size``).
"""

from __future__ import annotations

import cmath
import math
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

from _measure import peak_memory
from _report import env_line, environment, parser, write
from nestopt import optim
from nestopt.optim import _fused

SHAPES = [(1500, 1000), (1000, 1000), (500, 1000)]
SIZES = {"300k": 0.1, "3M": 1.0, "30M": 10.0}  # --size: the rows of every tensor of SHAPES, scaled
QUICK_SHAPES = [(150, 100), (100, 100), (50, 100)]
LR = 1e-4
BETA = cmath.rect(0.9, math.pi / 8)

Make = Callable[[list[torch.Tensor]], torch.optim.Optimizer]
ROWS: dict[str, tuple[Make, int]] = {  # name -> (optimizer factory, passes over parameter-sized buffers)
    "torch SGD(momentum=0.9), foreach": (lambda p: torch.optim.SGD(p, lr=LR, momentum=0.9, foreach=True), 8),
    "torch SGD(momentum=0.9), fused": (lambda p: torch.optim.SGD(p, lr=LR, momentum=0.9, fused=True), 5),
    "HeavyBall(0.9), foreach": (lambda p: optim.HeavyBall(p, lr=LR, momentum=0.9, foreach=True), 8),
    "ComplexMomentum, foreach": (lambda p: optim.ComplexMomentum(p, lr=LR, beta=BETA, foreach=True), 18),
    "ComplexMomentum, for-loop": (lambda p: optim.ComplexMomentum(p, lr=LR, beta=BETA, foreach=False), 18),
    "ComplexMomentum, fused": (lambda p: optim.ComplexMomentum(p, lr=LR, beta=BETA, fused=True), 7),
    "torch Adam, foreach": (lambda p: torch.optim.Adam(p, lr=LR, foreach=True), 18),
    "torch Adam, fused": (lambda p: torch.optim.Adam(p, lr=LR, fused=True), 7),
    "ComplexAdam, foreach": (lambda p: optim.ComplexAdam(p, lr=LR, foreach=True), 40),
    "ComplexAdam, fused": (lambda p: optim.ComplexAdam(p, lr=LR, fused=True), 9),
}
RATIOS = [  # (numerator, denominator, target or None)
    ("ComplexMomentum, fused", "torch SGD(momentum=0.9), foreach", 1.15),
    ("ComplexMomentum, foreach", "torch SGD(momentum=0.9), foreach", None),
    ("ComplexMomentum, for-loop", "torch SGD(momentum=0.9), foreach", None),
    ("ComplexMomentum, fused", "torch SGD(momentum=0.9), fused", None),
    ("HeavyBall(0.9), foreach", "torch SGD(momentum=0.9), foreach", None),
    ("ComplexAdam, fused", "torch Adam, foreach", 1.15),
    ("ComplexAdam, foreach", "torch Adam, foreach", None),
    ("ComplexAdam, fused", "torch Adam, fused", None),
]


def build(shapes: list[tuple[int, int]]) -> dict[str, Any]:
    """One optimizer per row, each on its own copy of the parameters, with the same fixed gradients."""
    g = torch.Generator().manual_seed(0)
    start = [torch.randn(s, generator=g) for s in shapes]
    grads = [torch.randn(s, generator=g) for s in shapes]
    steps: dict[str, Callable[[], None]] = {}
    first: dict[str, float] = {}
    for name, (make, _) in ROWS.items():
        params = [torch.nn.Parameter(x.clone()) for x in start]
        for p, gr in zip(params, grads):
            p.grad = gr.clone()
        opt = make(params)
        t0 = time.perf_counter()
        opt.step()  # creates the state; compiles the fused paths
        first[name] = time.perf_counter() - t0
        steps[name] = opt.step
    return {"steps": steps, "first_step_seconds": first, "params": sum(x.numel() for x in start)}


def measure(steps: dict[str, Callable[[], None]], rounds: int, per_sample: int) -> dict[str, Any]:
    def sample(step: Callable[[], None]) -> float:
        t0 = time.perf_counter()
        for _ in range(per_sample):
            step()
        return (time.perf_counter() - t0) / per_sample

    for step in steps.values():  # warm-up
        sample(step)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            times[name].append(sample(step))
    ratios = {f"{a} / {b}": statistics.median(x / y for x, y in zip(times[a], times[b])) for a, b, _ in RATIOS}
    return {"times": times, "ratios": ratios}


def main() -> None:
    ap = parser(__doc__)
    ap.set_defaults(repeats=30)
    ap.add_argument("--steps", type=int, default=5, help="optimizer steps per timed sample")
    ap.add_argument("--size", choices=list(SIZES), default="3M", help="parameters (the target's size: 3M)")
    args = ap.parse_args()
    out = args.out
    env = environment(args.threads)
    shapes = QUICK_SHAPES if args.quick else [(round(rows * SIZES[args.size]), cols) for rows, cols in SHAPES]
    rounds = 3 if args.quick else args.repeats
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        problem = build(shapes)
    fallback = {s.step.__name__: s.error for s in _fused._FUSED.values() if s.error is not None}
    m = measure(problem["steps"], rounds, args.steps)
    rows = []
    for name, (_, passes) in ROWS.items():
        ts = m["times"][name]
        median = statistics.median(ts)
        peak = None if "fused" in name else peak_memory(problem["steps"][name])
        rows.append({
            "system": "torch" if name.startswith("torch") else "nestopt", "status": "ok", "optimizer": name, "passes": passes, "seconds": median, "min_seconds": min(ts), "max_seconds": max(ts),
            "spread": (max(ts) - min(ts)) / median, "first_step_seconds": problem["first_step_seconds"][name],
            "peak_extra_bytes": peak,
        })  # fmt: skip
    targets = [
        {"name": f"{a} / {b} <= {t}", "value": m["ratios"][f"{a} / {b}"], "threshold": t,
         "passed": m["ratios"][f"{a} / {b}"] <= t}
        for a, b, t in RATIOS if t is not None
    ]  # fmt: skip
    cmd = "python benchmarks/optimizer_step.py" + (" --quick" if args.quick else f" --repeats {args.repeats}")
    other_size = not args.quick and args.size != "3M"  # its results get their own name: the 3M ones stay
    cmd += f" --size {args.size}" if other_size else ""
    result = {
        "benchmark": "optimizer_step", "environment": env, "command": cmd, "params": problem["params"],
        "shapes": shapes, "rounds": rounds, "steps_per_sample": args.steps, "rows": rows, "ratios": m["ratios"],
        "targets": targets, "fused_fallback": fallback, "warnings": sorted({str(w.message) for w in caught}),
    }  # fmt: skip
    name = f"optimizer_step_{args.size}" if other_size else "optimizer_step"
    write(out, name, result, markdown(result, env))


def markdown(r: dict[str, Any], env: dict[str, Any]) -> list[str]:
    lines = [
        "# Optimizer step time",
        "",
        f"{r['params']:,} float32 parameters in {len(r['shapes'])} tensors "
        f"({', '.join('x'.join(map(str, s)) for s in r['shapes'])}), fixed gradients; {r['rounds']} round-robin "
        f"rounds of {r['steps_per_sample']} steps per optimizer. {env_line(env)}",
        "",
        "Passes: reads plus writes of parameter-sized buffers per step (counted from the kernels, see the "
        "script's docstring). Fused nestopt rows are `torch.compile` of the same in-place kernel; their first step "
        "includes the compilation. Peak extra memory is not measured for fused rows.",
        "",
        "| optimizer | passes | step (ms) | spread | first step (s) | peak extra (MiB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in r["rows"]:
        peak = "" if row["peak_extra_bytes"] is None else f"{row['peak_extra_bytes'] / 2**20:.1f}"
        lines.append(
            f"| {row['optimizer']} | {row['passes']} | {row['seconds'] * 1e3:.2f} | {row['spread']:.2f} | "
            f"{row['first_step_seconds']:.2f} | {peak} |"
        )
    lines += ["", "| ratio (median of per-round ratios) | value | target | met |", "|---|---:|---:|---|"]
    targets = {t["name"].split(" <= ")[0]: t for t in r["targets"]}
    for name, value in r["ratios"].items():
        t = targets.get(name)
        lines.append(
            f"| {name} | {value:.3f} | {'' if t is None else t['threshold']} | "
            f"{'' if t is None else ('yes' if t['passed'] else 'NO')} |"
        )
    if r["fused_fallback"]:
        lines += ["", f"torch.compile was unavailable, fused rows ran the for-loop kernel: {r['fused_fallback']}"]
    lines += ["", f"Command: `{r['command']}`"]
    return lines


if __name__ == "__main__":
    main()
