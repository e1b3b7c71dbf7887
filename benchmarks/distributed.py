"""Data-parallel hypergradients: time and communicated bytes on 1 and 2 processes, and a cost model.

Weak scaling: every rank holds its own batch of 128 examples (2 ranks see twice the data of 1), of an MLP
40-h-h-10 with one weight decay per parameter (float32, synthetic data), and computes one implicit
hypergradient with Neumann(K) in the ``"exact"`` mode (``K + 1`` all-reduces of the parameter count ``P`` and
one of the hyperparameter count) and in the biased ``"local"`` mode (one all-reduce of the hyperparameters).
One process is rank 0 computing alone (the other rank waiting at a barrier); the three configurations are
timed in alternation in one 2-process launch, so that the load of a shared machine hits them alike.

The cost model is the ring all-reduce, ``t(n bytes, R ranks) = 2 (R - 1) a + 2 (R - 1) / R * n / B``, with
the latency ``a`` and bandwidth ``B`` fitted to an all-reduce sweep on 2 processes here (gloo over loopback);
it predicts the 2-process hypergradient as ``T(1) + (K + 1) t(4P) + t(4|lambda|)``, which is checked against
the measurement, and the communication alone (the exact mode's time minus the local mode's, timed in
alternation on the same 2 processes) against ``(K + 1) t(4P)``. It projects 8 and 64 GPUs from the same volume with a stated interconnect: NVLink inside
one node (8 GPUs) and InfiniBand across 8 nodes (64 GPUs). Under weak scaling a rank's compute stays ``T(1)``;
the projection uses the compute time measured here (this CPU), and lists the communication alone, which a
reader can add to their own device's compute time.

    python benchmarks/distributed.py [--quick] [--repeats 7] [--steps 10]

It launches itself with ``torchrun --standalone --nproc_per_node=2``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from _report import env_line, environment, parser, write

HERE = Path(__file__).resolve()
PER_RANK_BATCH = 128
WIDTHS, QUICK_WIDTHS = [128, 512], [32]
SWEEP = [2**k for k in range(10, 24, 2)]  # all-reduce payloads, bytes (1 KiB ... 8 MiB)
STATED = {  # the interconnects of the projection: bandwidth per rank link (bytes/s) and latency per ring step
    8: {"name": "8 GPUs, one node, NVLink", "bandwidth": 200e9, "latency": 10e-6},
    64: {"name": "64 GPUs, 8 nodes, InfiniBand", "bandwidth": 40e9, "latency": 20e-6},
}


# -- the worker, one per rank -----------------------------------------------------------------------------
def problem(hidden: int, rank: int) -> tuple[Any, dict[str, torch.Tensor], dict[str, torch.Tensor], Any, Any]:
    from nestopt import data, hparams

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(40, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, hidden), torch.nn.Tanh(),
        torch.nn.Linear(hidden, 10),
    )  # fmt: skip
    obj = hparams.Objective(net, torch.nn.functional.cross_entropy, [hparams.WeightDecay(net, "parameter", 1e-3)])
    d = data.synthetic_classification(n_train=PER_RANK_BATCH * 2, n_val=PER_RANK_BATCH * 2, n_test=1, dim=40,
                                      num_classes=10, seed=0, dtype=torch.float32)  # fmt: skip
    part = slice(rank * PER_RANK_BATCH, (rank + 1) * PER_RANK_BATCH)  # this rank's own batch
    params = {k: v.detach().clone() for k, v in obj.params().items()}
    return obj, params, obj.init_hparams(), (d.train.x[part], d.train.y[part]), (d.val.x[part], d.val.y[part])


def interleaved_times(problem_: tuple[Any, ...], steps: int, repeats: int) -> dict[str, Any]:
    """Time three configurations in alternation, so that the machine's load hits them alike: ``"single"``
    (rank 0 alone, no reduction, the other rank waiting), ``"exact"`` and ``"local"`` (every rank). One
    warm-up of each, then ``repeats`` rounds; every hypergradient starts after a barrier."""
    from nestopt import distributed, hypergrad, linalg

    obj, w, h, inner, outer = problem_
    solver = linalg.Neumann(steps=steps, alpha=0.01)
    rank = distributed.world().rank

    def run(mode: str) -> Any:
        if mode == "single":
            return (
                hypergrad.implicit(obj.inner_loss, obj.outer_loss, w, h, inner, outer, solver=solver)
                if rank == 0
                else None
            )
        return distributed.implicit(obj.inner_loss, obj.outer_loss, w, h, inner, outer, mode=mode, solver=solver)

    modes = ("single", "exact", "local")
    last = {mode: run(mode) for mode in modes}
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(repeats):
        for mode in modes:
            distributed.barrier()
            start = time.perf_counter()
            last[mode] = run(mode)
            times[mode].append(time.perf_counter() - start)
    return {mode: (last[mode], times[mode]) for mode in modes}


def worker(out: Path, widths: list[int], steps: int, repeats: int) -> None:
    from nestopt import distributed

    torch.set_num_threads(1)
    here = distributed.init(timeout=120)
    rows = []
    for hidden in widths:
        prob = problem(hidden, here.rank)
        for mode, (res, times) in interleaved_times(prob, steps, repeats).items():
            median = statistics.median(times)
            comm = res.info.extra.get("distributed", {}) if res is not None else {}
            rows.append({
                "hidden": hidden, "params": sum(v.numel() for v in prob[1].values()),
                "hparams": sum(v.numel() for v in prob[2].values()), "ranks": 1 if mode == "single" else 2,
                "mode": "exact" if mode == "single" else mode, "steps": steps, "seconds": median,
                "min_seconds": min(times), "spread": (max(times) - min(times)) / median,
                "collectives": comm.get("collectives", 0), "bytes": comm.get("bytes", 0),
                "collective_seconds": comm.get("seconds", 0.0), "status": "ok",
            })  # fmt: skip
    sweep = []
    if here.world_size > 1:  # the all-reduce alone
        for n in SWEEP:
            buf = {"x": torch.ones(n // 4)}
            times = []
            for _ in range(max(repeats, 5)):
                distributed.barrier()
                start = time.perf_counter()
                distributed.all_reduce_mean(buf)
                times.append(time.perf_counter() - start)
            sweep.append({"bytes": n, "seconds": statistics.median(times), "min_seconds": min(times)})
    if here.is_main:
        out.write_text(json.dumps({"rows": rows, "sweep": sweep}))
    if here.world_size > 1:
        torch.distributed.destroy_process_group()


# -- the driver -------------------------------------------------------------------------------------------
def launch(nproc: int, widths: list[int], steps: int, repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rank0.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(HERE),
               "--worker", str(out), "--widths", ",".join(map(str, widths)), "--steps", str(steps),
               "--repeats", str(repeats)]  # fmt: skip
        subprocess.run(cmd, check=True, timeout=1800, env={**os.environ, "OMP_NUM_THREADS": "1"})
        return json.loads(out.read_text())


def fit(sweep: list[dict[str, float]]) -> tuple[float, float]:
    """Least squares ``t = c + n / B`` on the 2-rank sweep; returns the latency per ring step ``a = c / 2``
    (a 2-rank ring all-reduce takes 2 steps) and ``B`` in bytes per second."""
    n = torch.tensor([s["bytes"] for s in sweep], dtype=torch.float64)
    t = torch.tensor([s["seconds"] for s in sweep], dtype=torch.float64)
    design = torch.stack([torch.ones_like(n), n], dim=1)
    c, inv_b = torch.linalg.lstsq(design, t[:, None]).solution[:, 0].tolist()
    return max(c, 0.0) / 2, 1.0 / inv_b


def ring(n: float, ranks: int, latency: float, bandwidth: float) -> float:
    return 2 * (ranks - 1) * latency + 2 * (ranks - 1) / ranks * n / bandwidth


def volume(row: dict[str, Any]) -> int:
    """Bytes all-reduced by one hypergradient (float32): (K + 1) 4P + 4|lambda| exact, 4|lambda| local."""
    return (row["steps"] + 1 if row["mode"] == "exact" else 0) * 4 * row["params"] + 4 * row["hparams"]


def size(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.2f} MB"


def comm_time(row: dict[str, Any], ranks: int, latency: float, bandwidth: float) -> float:
    """Predicted communication of one hypergradient: K + 1 all-reduces of 4P bytes and one of 4|lambda| (exact),
    one of 4|lambda| (local)."""
    big = row["steps"] + 1 if row["mode"] == "exact" else 0
    return big * ring(4 * row["params"], ranks, latency, bandwidth) + ring(4 * row["hparams"], ranks, latency,
                                                                          bandwidth)  # fmt: skip


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--steps", type=int, default=10, help="Neumann terms K (Hessian-vector products)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--widths", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(Path(args.worker), [int(w) for w in args.widths.split(",")], args.steps, args.repeats)
        return
    env = environment(args.threads)
    widths = QUICK_WIDTHS if args.quick else WIDTHS
    repeats = 2 if args.quick else args.repeats
    two = launch(2, widths, args.steps, repeats)
    one = {"rows": [r for r in two["rows"] if r["ranks"] == 1]}
    two["rows"] = [r for r in two["rows"] if r["ranks"] == 2]
    latency, bandwidth = fit(two["sweep"])
    checks: list[dict[str, Any]] = []
    rows = []
    for base in one["rows"]:
        rows.append({**base, "predicted_seconds": base["seconds"], "comm_seconds": 0.0})
        pair = {r["mode"]: r for r in two["rows"] if r["hidden"] == base["hidden"]}
        for row in pair.values():
            predicted = comm_time(row, 2, latency, bandwidth)
            rows.append({**row, "comm_seconds": predicted, "predicted_seconds": base["seconds"] + predicted,
                         "prediction_error": (base["seconds"] + predicted) / row["seconds"] - 1})  # fmt: skip
        # the communication alone: the exact mode's extra time over the local mode, both on 2 ranks
        extra_model = comm_time(pair["exact"], 2, latency, bandwidth) - comm_time(pair["local"], 2, latency, bandwidth)
        checks.append({
            "hidden": base["hidden"], "params": base["params"], "model_seconds": extra_model,
            "measured_seconds": pair["exact"]["seconds"] - pair["local"]["seconds"],
            "measured_min_seconds": pair["exact"]["min_seconds"] - pair["local"]["min_seconds"],
            "compute_slowdown": pair["local"]["seconds"] / base["seconds"],
        })  # fmt: skip
    projections = []
    for base in one["rows"]:
        for ranks, link in STATED.items():
            for mode in ("exact", "local"):
                row = {**base, "mode": mode}
                comm = comm_time(row, ranks, link["latency"], link["bandwidth"])
                projections.append({
                    "hidden": base["hidden"], "params": base["params"], "ranks": ranks, "interconnect": link["name"],
                    "mode": mode, "allreduce_bytes": volume(row), "comm_seconds": comm,
                    "seconds": base["seconds"] + comm, "efficiency": base["seconds"] / (base["seconds"] + comm),
                })  # fmt: skip
    big = {"params": 100_000_000, "hparams": 100_000_000, "steps": args.steps}
    for ranks, link in STATED.items():
        for mode in ("exact", "local"):
            row = {**big, "mode": mode}
            comm = comm_time(row, ranks, link["latency"], link["bandwidth"])
            projections.append({"hidden": None, "params": big["params"], "ranks": ranks, "interconnect": link["name"],
                                "mode": mode, "allreduce_bytes": volume(row), "comm_seconds": comm, "seconds": None,
                                "efficiency": None})  # fmt: skip
    links = "; ".join(
        f"{v['name']}: {v['bandwidth'] / 1e9:.0f} GB/s per rank, {1e6 * v['latency']:.0f} µs per step"
        for v in STATED.values()
    )
    md = [
        "# Data-parallel hypergradients: measured on 1 and 2 processes, projected to 8 and 64 GPUs",
        "",
        f"MLP 40-h-h-10, one weight decay per parameter, {PER_RANK_BATCH} examples per rank (weak scaling), "
        f"float32, Neumann K = {args.steps}; median and fastest of {repeats}; gloo over loopback on this machine; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the start. {env_line(env)}",
        "",
        "| h | P | ranks | mode | collectives | MB all-reduced | measured ms | fastest ms | in collectives ms "
        "| model ms | model comm ms | model error |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        err = f"{100 * r['prediction_error']:+.0f}%" if "prediction_error" in r else ""
        md.append(f"| {r['hidden']} | {r['params']:,} | {r['ranks']} | {r['mode']} | {r['collectives']} | "
                  f"{r['bytes'] / 1e6:.2f} | {1e3 * r['seconds']:.1f} | {1e3 * r['min_seconds']:.1f} | "
                  f"{1e3 * r['collective_seconds']:.1f} | {1e3 * r['predicted_seconds']:.1f} | "
                  f"{1e3 * r['comm_seconds']:.1f} | {err} |")  # fmt: skip
    md += [
        "",
        f"All-reduce fitted on 2 processes here: latency {1e6 * latency:.0f} µs per ring step, bandwidth "
        f"{bandwidth / 1e9:.2f} GB/s. Model: `T(R) = T(1) + (K + 1) t(4P, R) + t(4|λ|, R)` (exact), "
        '`T(1) + t(4|λ|, R)` (local), `t(n, R) = 2(R-1) a + 2(R-1)/R n / B` (ring). "In collectives" is rank '
        "0's time inside them for the last hypergradient, waiting for the other rank included.",
        "",
        "The communication alone, exact minus local on 2 processes (timed in alternation, so that both see the "
        "same load), against the model's `(K + 1) t(4P, 2)`; and how much slower a rank computes when 2 run "
        "(local mode on 2 processes over 1 process), which the model assumes is 1 (weak scaling):",
        "",
        "| h | P | model ms | measured ms (median) | measured ms (fastest) | compute slowdown with 2 processes |",
        "|---|---|---|---|---|---|",
    ]
    for c in checks:
        md.append(f"| {c['hidden']} | {c['params']:,} | {1e3 * c['model_seconds']:.1f} | "
                  f"{1e3 * c['measured_seconds']:.1f} | {1e3 * c['measured_min_seconds']:.1f} | "
                  f"{c['compute_slowdown']:.2f} |")  # fmt: skip
    md += [
        "",
        f"Projection (stated interconnects: {links}; compute per rank = the 1-process time measured here):",
        "",
        "| P | ranks | mode | all-reduced per hypergradient | comm ms | time ms | efficiency T(1)/T(R) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in projections:
        total = "(add your compute)" if r["seconds"] is None else f"{1e3 * r['seconds']:.1f}"
        eff = "" if r["efficiency"] is None else f"{r['efficiency']:.2f}"
        md.append(f"| {r['params']:,} | {r['ranks']} | {r['mode']} | {size(r['allreduce_bytes'])} | "
                  f"{1e3 * r['comm_seconds']:.2f} | {total} | {eff} |")  # fmt: skip
    result = {"benchmark": "distributed", "environment": env, "rows": rows, "checks": checks, "sweep": two["sweep"],
              "fit": {"latency_s": latency, "bandwidth_Bps": bandwidth}, "stated": STATED,
              "projections": projections}  # fmt: skip
    write(args.out, "distributed", result, md)


if __name__ == "__main__":
    main()
