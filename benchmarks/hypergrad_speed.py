"""Hypergradient speed, peak memory and accuracy: nestopt against TorchOpt, Betty and higher.

An MLP 40-h-h-10 (ReLU) on MNIST-1D with one weight-decay hyperparameter per parameter, at about 30k, 300k and
3M parameters, batch 128, float32, CPU. At each size every system computes the same hypergradient from the
same partly trained weights (see ``_problems.py``):

* implicit, Neumann K=10 (alpha = 1/lambda_max): nestopt, TorchOpt, Betty;
* implicit, CG K=10: nestopt, TorchOpt, Betty;
* unrolled T=10 and T=50 steps of SGD (momentum 0.9), one mini-batch per step: nestopt, higher, TorchOpt.

Time: median of repeats after a warm-up, in one process, the same thread count for everyone; the systems of a
group run round-robin (one run of each per round) so that load changes on a shared machine hit all alike. Peak memory:
the extra bytes a hypergradient allocates, measured exactly (``_measure.peak_memory``). Accuracy: cosine
similarity with a reference: for implicit rows, CG to a tight tolerance on the same system (float64 where
it fits), for unrolled rows the same unroll in float64 (the exact derivative).

**Equal accuracy.** A user wants a hypergradient of a given accuracy at the lowest cost, whatever the method:
for every system and each of its methods the step count is raised until the cosine with the reference reaches
0.99 (nestopt's methods include CG with a Nystrom preconditioner and the Gauss-Newton curvature), and the
fastest configuration of each system is timed round-robin against the others. nestopt is given the inner loss
as its users write it, with the weight decays and the proximal term named (``MLPProblem.inner_split``: their
derivatives from their formulas); its row "CG, plain loss" is the same solver on the peers' plain callable.

    python benchmarks/hypergrad_speed.py [--quick] [--sizes 30k 300k 3M] [--repeats 5] [--threads 2]
        [--device cuda] [--unrolls 10 50] [--no-equal-accuracy]

A full run writes ``benchmarks/results/hypergrad_speed.{json,md,png}``; a run of other sizes writes
``hypergrad_speed_SIZES`` (``--sizes 300k``: ``hypergrad_speed_300k``), so it never overwrites the full table,
and ``--device cuda`` adds ``_cuda``.

Targets: for the same method and step count, nestopt at least 1.3x faster than the fastest peer and no more
peak memory than any peer, at every size; at equal accuracy (cosine >= 0.99), nestopt at least 1.3x faster
than the fastest peer at 300k and 3M parameters.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import torch

import _peers
import _problems
from _report import env_line, environment, interleaved, parser, pyplot, write
from nestopt import linalg

GROUPS = [  # (label, method, steps, systems)
    ("implicit Neumann", "neumann", 10, ["nestopt", "torchopt", "betty"]),
    ("implicit CG", "cg", 10, ["nestopt", "torchopt", "betty"]),
    ("unrolled", "unrolled", 10, ["nestopt", "higher", "torchopt", "betty"]),
    ("unrolled", "unrolled", 50, ["nestopt", "higher", "torchopt", "betty"]),
]
QUICK_GROUPS = [
    ("implicit Neumann", "neumann", 3, ["nestopt", "torchopt", "betty"]),
    ("implicit CG", "cg", 3, ["nestopt", "torchopt", "betty"]),
    ("unrolled", "unrolled", 3, ["nestopt", "higher", "torchopt", "betty"]),
]
TARGET_SPEEDUP = 1.3
SIZES = ["30k", "300k", "3M"]  # --sizes by default; a run of other sizes writes hypergrad_speed_SIZES
COSINE = 0.99  # the accuracy every system must reach in the equal-accuracy table
EQUAL_SIZES = ("300k", "3M")  # where the equal-accuracy target applies


def _nestopt(solver_fn: Any, curvature: str = "hessian", named: bool = True) -> Any:
    return lambda p, k: _peers.nestopt_solver(p, solver_fn(p, k), curvature, named)


# system -> method -> (builder(problem, steps) -> closure, the step counts tried, in increasing order)
FAMILIES: dict[str, dict[str, tuple[Any, list[int]]]] = {
    "nestopt": {
        "Neumann": (lambda p, k: _peers.build("nestopt", "neumann", p, k), [10, 20, 40, 80]),
        "CG": (lambda p, k: _peers.build("nestopt", "cg", p, k), [3, 4, 5, 6, 8, 10, 12, 16, 20]),
        "CG + Nystrom 8": (
            _nestopt(lambda p, k: linalg.CG(steps=k, tol=0.0, preconditioner=linalg.NystromPreconditioner(rank=8))),
            [2, 3, 4, 5, 6, 8, 10],
        ),
        "CG, Gauss-Newton": (_nestopt(lambda p, k: linalg.CG(steps=k, tol=0.0), "gauss-newton"), [3, 4, 5, 6, 8, 10]),
        # the peers' loss as it is, a plain callable: its penalties' derivatives through autograd
        "CG, plain loss": (_nestopt(lambda p, k: linalg.CG(steps=k, tol=0.0), named=False), [3, 4, 5, 6, 8, 10, 12]),
    },
    "torchopt": {
        "Neumann": (lambda p, k: _peers.build("torchopt", "neumann", p, k), [10, 20, 40, 80]),
        "CG": (lambda p, k: _peers.build("torchopt", "cg", p, k), [3, 4, 5, 6, 8, 10, 12, 16, 20]),
    },
    "betty": {
        "Neumann": (lambda p, k: _peers.build("betty", "neumann", p, k), [10, 20, 40, 80]),
        "CG": (lambda p, k: _peers.build("betty", "cg", p, k), [3, 5, 10, 20]),
    },
}


def references(p: _problems.MLPProblem, groups: list[Any], quick: bool) -> dict[str, Any]:
    """The reference hypergradient of each group, and how it was made."""
    big = p.n_params > 1_000_000
    start = time.perf_counter()
    ref_implicit, info = _problems.reference_implicit(
        p, steps=60 if quick else (200 if big else 400), dtype=torch.float32 if big else torch.float64
    )
    info["seconds"] = time.perf_counter() - start
    out: dict[str, Any] = {"implicit": (ref_implicit, info)}
    for _, method, steps, _ in groups:
        if method != "unrolled":
            continue
        fits = p.n_params * steps <= 3e7
        q = p.to(torch.float64) if fits else p
        grads = _peers.nestopt_unrolled(q, steps)()
        what = "nestopt unrolled in float64" if fits else "nestopt unrolled in float32 (float64 does not fit)"
        out[f"unrolled {steps}"] = (grads, {"what": what})
    return out


def run_size(
    name: str, hidden: int, groups: list[Any], repeats: int, quick: bool, device: str, equal: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    start = time.perf_counter()
    p = _problems.mlp_problem(hidden, pretrain=20 if quick else 200, n_train=512 if quick else 2000, device=device)
    print(
        f"\n== {name}: {p.n_params:,} parameters, lambda_max {p.lam_max:.3g} (built in {time.perf_counter() - start:.1f} s)"
    )
    refs = references(p, groups, quick)
    print(f"reference: {refs['implicit'][1]}")
    rows = []
    for label, method, steps, systems in groups:
        ref_key = f"unrolled {steps}" if method == "unrolled" else "implicit"
        ref = refs[ref_key][0]
        group_rows: dict[str, dict[str, Any]] = {}
        fns: dict[str, Any] = {}
        results: dict[str, Any] = {}
        for system in systems:
            row: dict[str, Any] = {"size": name, "params": p.n_params, "group": f"{label} {steps}", "system": system}
            group_rows[system] = row
            try:
                fn = _peers.build(system, method, p, steps)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    results[system] = fn()
                fns[system] = fn
                row["status"] = "ok"
            except _peers.Unavailable as err:
                row["status"] = f"unavailable: {err}"
            except Exception as err:  # a peer that crashes gets a row that says how
                row["status"] = f"failed: {type(err).__name__}: {err}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            measured = interleaved(fns, repeats, device=device) if fns else {}
        for system, row in group_rows.items():
            if system in measured:
                row.update(measured[system])
                row["cosine"] = _problems.cosine(results[system], ref)
                row["rel_error"] = _problems.relative_error(results[system], ref)
            if method == "cg" and system == "betty" and row["status"] == "ok":
                row["note"] = "its CG updates the search direction with the previous residual"
            rows.append(row)
            if row["status"] == "ok":
                print(
                    f"{row['group']:<22} {system:<9} {row['seconds'] * 1e3:9.1f} ms (spread {row['spread']:.0%}) "
                    f"peak {row['peak_bytes'] / 2**20:8.2f} MiB  cos {row['cosine']:.6f}",
                    flush=True,
                )
            else:
                print(f"{row['group']:<22} {system:<9} {row['status']}", flush=True)
    for key, (_, info) in refs.items():
        rows.append(
            {"size": name, "params": p.n_params, "group": f"reference ({key})", "system": "", "status": str(info)}
        )
    accuracy = equal_accuracy(name, p, refs["implicit"][0], repeats, device, quick) if equal else []
    return rows, accuracy


def equal_accuracy(
    name: str, p: _problems.MLPProblem, ref: Any, repeats: int, device: str, quick: bool
) -> list[dict[str, Any]]:
    """For every system and method, the fewest steps whose cosine with ``ref`` reaches COSINE; those timed."""
    rows: list[dict[str, Any]] = []
    fns: dict[str, Any] = {}
    for system, methods in FAMILIES.items():
        for method, (make, counts) in methods.items():
            row: dict[str, Any] = {"size": name, "params": p.n_params, "system": system, "method": method}
            tried = []
            try:
                for k in counts[:2] if quick else counts:
                    fn = make(p, k)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        cos = _problems.cosine(fn(), ref)
                    tried.append((k, cos))
                    if cos >= COSINE:
                        fns[f"{system} {method} {k}"] = fn
                        row.update(steps=k, cosine=cos, status="ok", key=f"{system} {method} {k}")
                        break
                else:
                    row["status"] = f"cosine below {COSINE} up to {tried[-1][0]} steps ({tried[-1][1]:.4f})"
            except _peers.Unavailable as err:
                row["status"] = f"unavailable: {err}"
            except Exception as err:  # a peer that crashes gets a row that says how
                row["status"] = f"failed: {type(err).__name__}: {err}"
            row["tried"] = tried
            rows.append(row)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        measured = interleaved(fns, repeats, device=device) if fns else {}
    for row in rows:
        if row.get("key") in measured:
            row.update(measured[row["key"]])
            print(f"equal accuracy {name:<5} {row['key']:<34} {row['seconds'] * 1e3:9.1f} ms  cos {row['cosine']:.4f}")
        else:
            print(f"equal accuracy {name:<5} {row['system']} {row['method']:<22} {row['status']}")
    return rows


def equal_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """At each size: the fastest configuration of each system reaching the cosine, and nestopt's speedup."""
    out = []
    for size in dict.fromkeys(r["size"] for r in rows):
        best: dict[str, dict[str, Any]] = {}
        for r in rows:
            if (
                r["size"] == size
                and "seconds" in r
                and (r["system"] not in best or r["seconds"] < best[r["system"]]["seconds"])
            ):
                best[r["system"]] = r
        if "nestopt" not in best:
            continue
        peers = [r for s, r in best.items() if s != "nestopt"]
        fastest = min(peers, key=lambda r: r["seconds"], default=None)
        entry: dict[str, Any] = {"size": size, "nestopt": best["nestopt"]["key"], "nestopt_seconds": best["nestopt"]["seconds"],
                                 "best": {s: r["key"] for s, r in best.items()}}  # fmt: skip
        if fastest is not None:
            entry.update(fastest_peer=fastest["key"], peer_seconds=fastest["seconds"],
                         speedup=fastest["seconds"] / best["nestopt"]["seconds"])  # fmt: skip
            entry["met"] = entry["speedup"] >= TARGET_SPEEDUP if size in EQUAL_SIZES else None
        out.append(entry)
    return out


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """nestopt against the fastest peer of each (size, group)."""
    out = []
    keys = sorted(
        {(r["size"], r["group"]) for r in rows if r["system"]},
        key=lambda k: rows.index(next(r for r in rows if (r["size"], r["group"]) == k)),
    )
    for size, group in keys:
        ok = [r for r in rows if r["size"] == size and r["group"] == group and r["status"] == "ok"]
        mine = next((r for r in ok if r["system"] == "nestopt"), None)
        peers = [r for r in ok if r["system"] != "nestopt"]
        if mine is None or not peers:
            continue
        fastest = min(peers, key=lambda r: r["seconds"])
        leanest = min(peers, key=lambda r: r["peak_bytes"])
        speedup = fastest["seconds"] / mine["seconds"]
        memory = mine["peak_bytes"] / leanest["peak_bytes"]
        out.append(
            {
                "size": size,
                "group": group,
                "fastest_peer": fastest["system"],
                "speedup": speedup,
                "leanest_peer": leanest["system"],
                "memory_ratio": memory,
                "met": speedup >= TARGET_SPEEDUP and memory <= 1.0,
            }
        )
    return out


def markdown(rows: list[dict[str, Any]], tgt: list[dict[str, Any]], env: dict[str, Any], cmd: str) -> list[str]:
    lines = [
        "# Hypergradient speed and memory",
        "",
        f"`{cmd}`. MLP 40-h-h-10 on MNIST-1D, one weight-decay hyperparameter per parameter, batch 128, float32, "
        f"{env.get('device', 'cpu')}. {env_line(env)}",
        "",
        "Time: median over the repeats after a warm-up, systems of a group timed round-robin (spread = (max - min) / "
        "median: the noise of this machine). Peak: extra memory one "
        "hypergradient allocates. Cosine and relative error: against the reference of the group (last rows).",
        "",
        "| size | group | system | time (ms) | spread | peak (MiB) | cosine | rel. error | status |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r["status"] == "ok":
            note = r.get("note", "")
            lines.append(
                f"| {r['size']} ({r['params']:,}) | {r['group']} | {r['system']} | {r['seconds'] * 1e3:.1f} | "
                f"{r['spread']:.0%} | {r['peak_bytes'] / 2**20:.2f} | {r['cosine']:.6f} | {r['rel_error']:.2e} | "
                f"ok{'; ' + note if note else ''} |"
            )
        else:
            lines.append(f"| {r['size']} ({r['params']:,}) | {r['group']} | {r['system']} | | | | | | {r['status']} |")
    lines += [
        "",
        f"Target: nestopt at least {TARGET_SPEEDUP}x faster than the fastest peer, and no more peak memory than the "
        "leanest peer, for the same method and steps.",
        "",
        "| size | group | fastest peer | nestopt speedup | leanest peer | nestopt memory / leanest | met |",
        "|---|---|---|---:|---|---:|---|",
    ]
    for t in tgt:
        lines.append(
            f"| {t['size']} | {t['group']} | {t['fastest_peer']} | {t['speedup']:.2f}x | {t['leanest_peer']} | "
            f"{t['memory_ratio']:.2f} | {'yes' if t['met'] else 'NO'} |"
        )
    return lines


def equal_markdown(rows: list[dict[str, Any]], tgt: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    lines = [
        "",
        f"## Equal accuracy: the fastest configuration reaching cosine {COSINE}",
        "",
        "For every system and method, the fewest steps whose hypergradient has cosine at least "
        f"{COSINE} with the reference (steps tried in increasing order); those configurations timed round-robin.",
        "",
        "| size | system | method | steps | cosine | time (ms) | spread | peak (MiB) | status |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "seconds" in r:
            lines.append(
                f"| {r['size']} | {r['system']} | {r['method']} | {r['steps']} | {r['cosine']:.4f} | "
                f"{r['seconds'] * 1e3:.1f} | {r['spread']:.0%} | {r['peak_bytes'] / 2**20:.2f} | ok |"
            )
        else:
            lines.append(f"| {r['size']} | {r['system']} | {r['method']} | | | | | | {r['status']} |")
    lines += [
        "",
        f"Target: nestopt's fastest configuration at least {TARGET_SPEEDUP}x faster than the fastest peer's, at "
        f"{' and '.join(EQUAL_SIZES)} parameters.",
        "",
        "| size | nestopt | fastest peer | speedup | met |",
        "|---|---|---|---:|---|",
    ]
    for t in tgt:
        met = "" if t.get("met") is None else ("yes" if t["met"] else "NO")
        lines.append(f"| {t['size']} | {t['nestopt']} ({t['nestopt_seconds'] * 1e3:.1f} ms) | "
                     f"{t.get('fastest_peer', '')} ({t.get('peer_seconds', float('nan')) * 1e3:.1f} ms) | "
                     f"{t.get('speedup', float('nan')):.2f}x | {met} |")  # fmt: skip
    return lines


def plot(rows: list[dict[str, Any]]) -> Any:
    plt = pyplot()
    if plt is None:
        return None
    ok = [r for r in rows if r["status"] == "ok"]
    groups = list(dict.fromkeys(r["group"] for r in ok))
    sizes = list(dict.fromkeys(r["size"] for r in ok))
    systems = list(dict.fromkeys(r["system"] for r in ok))
    colors = {"nestopt": "C0", "torchopt": "C1", "betty": "C2", "higher": "C3"}
    fig, axes = plt.subplots(2, len(groups), figsize=(3.4 * len(groups), 6), squeeze=False)
    width = 0.8 / max(1, len(systems))
    for j, group in enumerate(groups):
        for metric, ax in zip(("seconds", "peak_bytes"), axes[:, j]):
            for i, system in enumerate(systems):
                vals = []
                for s in sizes:
                    r = next((r for r in ok if r["group"] == group and r["size"] == s and r["system"] == system), None)
                    vals.append(
                        float("nan") if r is None else (r[metric] * 1e3 if metric == "seconds" else r[metric] / 2**20)
                    )
                xs = [k + (i - (len(systems) - 1) / 2) * width for k in range(len(sizes))]
                ax.bar(xs, vals, width, label=system, color=colors.get(system))
            ax.set_yscale("log")
            ax.set_xticks(range(len(sizes)), sizes)
            ax.set_title(group if metric == "seconds" else "", fontsize=9)
            ax.set_ylabel("time (ms)" if metric == "seconds" else "peak extra memory (MiB)")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("One hypergradient: time and peak memory by system (lower is better)")
    fig.tight_layout()
    return fig


def result_name(sizes: list[str], quick: bool, device: str) -> str:
    """The results' file name: ``hypergrad_speed``, with the sizes of a partial run (so that it never overwrites
    the full table) and the device type when it is not the CPU."""
    name = "hypergrad_speed"
    if not quick and sizes != SIZES:
        name += "_" + "_".join(sizes)
    return name if torch.device(device).type == "cpu" else f"{name}_{torch.device(device).type}"


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--sizes", nargs="+", default=SIZES, choices=list(_problems.HIDDEN))
    ap.add_argument("--unrolls", type=int, nargs="*", default=[10, 50], help="unroll lengths of the unrolled groups")
    ap.add_argument("--no-equal-accuracy", action="store_true", help="skip the equal-accuracy table")
    args = ap.parse_args()
    env = environment(args.threads, args.device)
    sizes = {"quick": 16} if args.quick else {s: _problems.HIDDEN[s] for s in args.sizes}
    groups = QUICK_GROUPS if args.quick else [g for g in GROUPS if g[1] != "unrolled" or g[2] in args.unrolls]
    repeats = 1 if args.quick else args.repeats
    rows: list[dict[str, Any]] = []
    accuracy: list[dict[str, Any]] = []
    for name, hidden in sizes.items():
        r, a = run_size(name, hidden, groups, repeats, args.quick, args.device, not args.no_equal_accuracy)
        rows, accuracy = rows + r, accuracy + a
    tgt, eq = targets(rows), equal_targets(accuracy)
    cmd = "python benchmarks/hypergrad_speed.py" + (" --quick" if args.quick else f" --repeats {args.repeats}")
    if not args.quick and args.sizes != SIZES:
        cmd += f" --sizes {' '.join(args.sizes)}"
    if not args.quick and args.unrolls != [10, 50]:
        cmd += f" --unrolls {' '.join(map(str, args.unrolls))}"
    if args.device != "cpu":
        cmd += f" --device {args.device}"
    result = {"benchmark": "hypergrad_speed", "environment": env, "command": cmd, "rows": rows, "targets": tgt,
              "equal_accuracy": accuracy, "equal_targets": eq}  # fmt: skip
    name = result_name(args.sizes, args.quick, args.device)
    write(args.out, name, result, markdown(rows, tgt, env, cmd) + equal_markdown(accuracy, eq), plot(rows))


if __name__ == "__main__":
    main()
