"""What a hypergradient costs, in training steps: time and peak memory of every estimator.

An MLP (40-512-512-10, about 289k parameters) on MNIST-1D with one weight-decay hyperparameter per
parameter. In one process, it times one training step (forward, backward, SGD update) and one hypergradient
by each method, and measures the peak extra memory of each, then reports both as ratios to the training step.

    python benchmarks/hypergrad_cost.py [--repeats 5] [--threads 1] [--device cpu|cuda] [--out benchmarks/results]

Targets (checked and printed): Neumann-5 costs at most 10 training steps; implicit methods' peak memory at
most 2x a training step's; checkpointed unrolling's memory grows at most logarithmically with the steps.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path
from typing import Any

import torch
from torch.func import functional_call

import nestopt
from _measure import peak_memory, time_it
from nestopt import data, hypergrad, linalg
from nestopt.nets import mlp
from nestopt.optim import functional


def build(device: str, batch_size: int = 128, hidden: int = 512) -> dict[str, Any]:
    ds = data.mnist1d(n_train=4000, n_val=500, n_test=100, seed=0)
    net = mlp([40, hidden, hidden, 10], "relu", generator=torch.Generator().manual_seed(0)).to(device)
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    hparams = {k: torch.full_like(v, -8.0) for k, v in params.items()}

    def inner_loss(p, h, batch):
        x, y = batch
        penalty = sum((h[k].exp() * p[k] ** 2).sum() for k in p)
        return torch.nn.functional.cross_entropy(functional_call(net, p, (x,)), y) + penalty

    def outer_loss(p, h, batch):
        x, y = batch
        return torch.nn.functional.cross_entropy(functional_call(net, p, (x,)), y)

    train = (ds.train.x[:batch_size].to(device), ds.train.y[:batch_size].to(device))
    val = (ds.val.x[:batch_size].to(device), ds.val.y[:batch_size].to(device))
    # a few hundred SGD steps so that the Hessian is that of a partly trained network
    w = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    opt = torch.optim.SGD(list(w.values()), lr=0.1, momentum=0.9)
    for i in range(300):
        lo = i * batch_size % (4000 - batch_size)
        batch = (ds.train.x[lo : lo + batch_size].to(device), ds.train.y[lo : lo + batch_size].to(device))
        opt.zero_grad()
        inner_loss(w, hparams, batch).backward()
        opt.step()
    params = {k: v.detach() for k, v in w.items()}
    resident = sum(v.numel() * v.element_size() for v in params.values())
    resident += sum(v.numel() * v.element_size() for v in hparams.values())
    resident *= 2  # plus one optimizer buffer (momentum) for the parameters and for the hyperparameters
    resident += sum(t.numel() * t.element_size() for t in (ds.train.x, ds.train.y, ds.val.x, ds.val.y))
    return {
        "net": net,
        "params": params,
        "hparams": hparams,
        "inner": inner_loss,
        "outer": outer_loss,
        "train": train,
        "val": val,
        "resident_bytes": resident,
    }


def methods(p: dict[str, Any]) -> dict[str, Any]:
    inner, outer, params, hparams, train, val = p["inner"], p["outer"], p["params"], p["hparams"], p["train"], p["val"]
    sgd = functional.sgd(lr=0.1)

    start = {k: v.clone() for k, v in params.items()}  # the training step updates its own copy

    def train_step() -> None:
        w = {k: v.detach().requires_grad_(True) for k, v in start.items()}
        loss = inner(w, hparams, train)
        grads = torch.autograd.grad(loss, list(w.values()))
        with torch.no_grad():
            torch._foreach_add_(list(w.values()), grads, alpha=-0.1)

    def implicit(solver: linalg.Solver, mode: str = "rev-rev") -> Any:
        return lambda: hypergrad.implicit(inner, outer, params, hparams, train, val, solver=solver, hvp_mode=mode)

    def unrolled(steps: int, **kw: Any) -> Any:
        return lambda: hypergrad.unrolled(
            inner, outer, params, hparams, [train] * steps, val, optimizer=sgd, steps=steps, **kw
        )

    global_wd = {"log_wd": torch.tensor(-8.0, device=train[0].device)}

    def inner_global(p_: dict, h: dict, batch: Any) -> torch.Tensor:
        return inner(p_, {k: h["log_wd"].expand_as(v) for k, v in p_.items()}, batch)

    def forward_one(steps: int) -> Any:
        return lambda: hypergrad.forward(
            inner_global, outer, params, global_wd, [train] * steps, val, optimizer=sgd, steps=steps
        )

    return {
        "training step": train_step,
        "Neumann 5": implicit(linalg.Neumann(steps=5, alpha=0.01)),
        "Neumann 5 (fwd-rev HVP)": implicit(linalg.Neumann(steps=5, alpha=0.01), "fwd-rev"),
        "Neumann 20": implicit(linalg.Neumann(steps=20, alpha=0.01)),
        "CG 20": implicit(linalg.CG(steps=20, tol=0.0, damping=1e-3)),
        "Nystrom 10": implicit(linalg.Nystrom(rank=10, rho=1.0)),
        "Nystrom 10, chunks of 1": implicit(linalg.Nystrom(rank=10, rho=1.0, chunk_size=1)),
        "unrolled 10": unrolled(10),
        "unrolled 10, truncate 5": unrolled(10, truncate=5),
        "unrolled 10, checkpoint": unrolled(10, checkpoint=True),
        "unrolled 50": unrolled(50),
        "unrolled 50, truncate 5": unrolled(50, truncate=5),
        "unrolled 50, checkpoint": unrolled(50, checkpoint=True),
        "forward 1 hparam, 10 steps": forward_one(10),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    problem = build(args.device)
    n_params = sum(v.numel() for v in problem["params"].values())
    fns = methods(problem)
    # Round-robin: every round times each method once and the training step three times, so that load
    # changes on a shared machine hit all alike; a method's time ratio is the median of its per-round ratios.
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    ratios: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(args.repeats):
        base_time = time_it(fns["training step"], repeats=3, warmup=0, device=args.device)
        for name, fn in fns.items():
            t = base_time if name == "training step" else time_it(fn, repeats=1, warmup=0, device=args.device)
            times[name].append(t)
            ratios[name].append(t / base_time)
    rows = []
    for name, fn in fns.items():
        seconds, ratio = statistics.median(times[name]), statistics.median(ratios[name])
        peak = peak_memory(fn, device=args.device)
        rows.append({"method": name, "seconds": seconds, "time_ratio": ratio, "peak_bytes": peak})
        print(f"{name:<28} {seconds * 1e3:9.2f} ms  x{ratio:7.2f}   peak {peak / 2**20:8.2f} MiB", flush=True)
    base = rows[0]
    resident = problem["resident_bytes"]
    for r in rows:
        r["memory_ratio"] = r["peak_bytes"] / base["peak_bytes"]
        r["total_memory_ratio"] = (resident + r["peak_bytes"]) / (resident + base["peak_bytes"])
    by = {r["method"]: r for r in rows}
    implicit_names = ["Neumann 5", "Neumann 20", "CG 20"]
    targets = {
        "Neumann 5 time <= 10 training steps": by["Neumann 5"]["time_ratio"] <= 10,
        "implicit (Neumann, CG) peak extra memory <= 2x training step": all(
            by[n]["memory_ratio"] <= 2 for n in implicit_names
        ),
        "implicit (Neumann, CG) peak total memory <= 2x training step": all(
            by[n]["total_memory_ratio"] <= 2 for n in implicit_names
        ),
        "checkpointed unrolling memory, 50 vs 10 steps <= log2(50)/log2(10)": (
            by["unrolled 50, checkpoint"]["peak_bytes"] / by["unrolled 10, checkpoint"]["peak_bytes"] <= 1.7
        ),
    }
    result = {
        "benchmark": "hypergrad_cost",
        "params": n_params,
        "hyperparameters": n_params,
        "device": args.device,
        "torch": torch.__version__,
        "nestopt": nestopt.__version__,
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "resident_bytes": resident,
        "rows": rows,
        "targets": targets,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "hypergrad_cost.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"One hypergradient vs one training step: MLP 40-512-512-10 ({n_params:,} parameters and as many weight-decay "
        f"hyperparameters), batch 128, {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads.",
        "",
        "Peak extra memory: tensors allocated by the operation itself. Peak total: the same plus what a training run "
        f"keeps resident ({resident / 2**20:.1f} MiB: parameters, hyperparameters, one optimizer buffer for each, "
        "the data set), as torch.cuda.max_memory_allocated would count it.",
        "",
        "Time ratio: the median over rounds of (method time / training-step time measured in the same round).",
        "",
        "| method | time (ms) | x training step | peak extra (MiB) | x training step | peak total x training step |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['seconds'] * 1e3:.1f} | {r['time_ratio']:.2f} | {r['peak_bytes'] / 2**20:.2f} "
            f"| {r['memory_ratio']:.2f} | {r['total_memory_ratio']:.2f} |"
        )
    lines += ["", "| target | met |", "|---|---|"] + [f"| {k} | {'yes' if v else 'NO'} |" for k, v in targets.items()]
    (out / "hypergrad_cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
