"""Scaling: time and peak memory of one hypergradient against the parameter count and the unroll length.

The MLP problem of ``hypergrad_speed.py`` (40-h-h-10, one weight decay per parameter, batch 128, float32):

* against the parameter count (h = 32 ... 1024, about 3k to 1.1M parameters): implicit Neumann 10 and CG 10
  (nestopt, TorchOpt, Betty) and unrolled 10 steps (nestopt, higher, TorchOpt);
* against the unroll length T = 1 ... 200 at h = 64 (about 7k parameters): nestopt unrolled, nestopt unrolled
  with checkpointing (memory logarithmic in T), higher and TorchOpt.

    python benchmarks/scaling.py [--quick] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import warnings
from typing import Any

import _peers
import _problems
from _report import env_line, environment, parser, pyplot, timed, write

WIDTHS = [32, 64, 128, 256, 512, 1024]
UNROLLS = [1, 2, 5, 10, 20, 50, 100, 200]
BY_SIZE = [  # (label, method, steps, systems)
    ("implicit Neumann 10", "neumann", 10, ["nestopt", "torchopt", "betty"]),
    ("implicit CG 10", "cg", 10, ["nestopt", "torchopt", "betty"]),
    ("unrolled 10", "unrolled", 10, ["nestopt", "higher", "torchopt"]),
]
BY_LENGTH = ["nestopt", "nestopt (checkpoint)", "higher", "torchopt"]


def measure(system: str, method: str, p: Any, steps: int, repeats: int) -> dict[str, Any]:
    row: dict[str, Any] = {}
    try:
        if system == "nestopt (checkpoint)":
            fn = _peers.nestopt_unrolled(p, steps, checkpoint=True)
        else:
            fn = _peers.build(system, method, p, steps)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            row.update(timed(fn, repeats))
        row["status"] = "ok"
    except _peers.Unavailable as err:
        row["status"] = f"unavailable: {err}"
    except Exception as err:  # reported in the row
        row["status"] = f"failed: {type(err).__name__}: {err}"
    return row


def run(
    widths: list[int], unrolls: list[int], width_t: int, repeats: int, pretrain: int, n_train: int = 1024
) -> list[dict[str, Any]]:
    rows = []
    for h in widths:
        p = _problems.mlp_problem(h, pretrain=pretrain, n_train=n_train, iterations=10)
        for label, method, steps, systems in BY_SIZE:
            for system in systems:
                row = {"sweep": "params", "group": label, "system": system, "params": p.n_params, "steps": steps}
                row.update(measure(system, method, p, steps, repeats))
                rows.append(row)
                _print(row)
    p = _problems.mlp_problem(width_t, pretrain=pretrain, n_train=n_train, iterations=10)
    for steps in unrolls:
        for system in BY_LENGTH:
            row = {"sweep": "unroll", "group": "unrolled", "system": system, "params": p.n_params, "steps": steps}
            row.update(measure(system, "unrolled", p, steps, repeats))
            rows.append(row)
            _print(row)
    return rows


def _print(r: dict[str, Any]) -> None:
    what = f"{r['group']:<20} {r['system']:<21} P={r['params']:<8} T={r['steps']:<4}"
    if r["status"] == "ok":
        print(f"{what} {r['seconds'] * 1e3:9.1f} ms  peak {r['peak_bytes'] / 2**20:9.2f} MiB", flush=True)
    else:
        print(f"{what} {r['status']}", flush=True)


def markdown(rows: list[dict[str, Any]], env: dict[str, Any], cmd: str) -> list[str]:
    lines = [
        "# Scaling",
        "",
        f"`{cmd}`. MLP on MNIST-1D, float32, CPU. {env_line(env)}",
        "",
        "Median time of one hypergradient and the peak extra memory it allocates.",
    ]
    for sweep, key, title in (("params", "params", "parameters"), ("unroll", "steps", "unroll length T")):
        sub = [r for r in rows if r["sweep"] == sweep]
        if not sub:
            continue
        cols = list(dict.fromkeys(r[key] for r in sub))
        series = list(dict.fromkeys((r["group"], r["system"]) for r in sub))
        lines += ["", f"## Against the {title}", ""]
        lines += ["| group | system | " + " | ".join(f"{c:,}" for c in cols) + " |", "|---|---|" + "---:|" * len(cols)]
        for metric, unit, scale in (("seconds", "ms", 1e3), ("peak_bytes", "MiB", 2**-20)):
            for group, system in series:
                cells = []
                for c in cols:
                    r = next((r for r in sub if (r["group"], r["system"], r[key]) == (group, system, c)), None)
                    if r is None:
                        cells.append("")
                    elif r["status"] != "ok":
                        cells.append(r["status"].split(":")[0])
                    else:
                        cells.append(f"{r[metric] * scale:.1f}" if metric == "seconds" else f"{r[metric] * scale:.2f}")
                lines.append(f"| {group} ({unit}) | {system} | " + " | ".join(cells) + " |")
        reasons = {r["system"]: r["status"] for r in sub if r["status"] != "ok"}
        lines += [f"\n{s}: {why}" for s, why in reasons.items()]
    return lines


def plot(rows: list[dict[str, Any]]) -> Any:
    plt = pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    colors = {"nestopt": "C0", "nestopt (checkpoint)": "C4", "torchopt": "C1", "betty": "C2", "higher": "C3"}
    styles = {"implicit Neumann 10": "o-", "implicit CG 10": "s--", "unrolled 10": "^:", "unrolled": "^-"}
    for col, (sweep, key, xlabel) in enumerate(
        (("params", "params", "parameters"), ("unroll", "steps", "unroll length T"))
    ):
        sub = [r for r in rows if r["sweep"] == sweep and r["status"] == "ok"]
        for group, system in dict.fromkeys((r["group"], r["system"]) for r in sub):
            pts = [r for r in sub if (r["group"], r["system"]) == (group, system)]
            for row, (metric, scale, ylabel) in enumerate(
                (("seconds", 1e3, "time (ms)"), ("peak_bytes", 2**-20, "peak extra memory (MiB)"))
            ):
                ax = axes[row, col]
                ax.plot(
                    [r[key] for r in pts],
                    [r[metric] * scale for r in pts],
                    styles.get(group, "o-"),
                    color=colors.get(system),
                    label=f"{system} {group}" if sweep == "params" else system,
                    markersize=4,
                )
                ax.set_xscale("log")
                ax.set_yscale("log")
                ax.set_xlabel(xlabel)
                ax.set_ylabel(ylabel)
                ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    axes[0, 1].legend(fontsize=7)
    axes[0, 0].set_title("against the parameter count")
    axes[0, 1].set_title("against the unroll length")
    fig.tight_layout()
    return fig


def main() -> None:
    ap = parser(__doc__)
    ap.set_defaults(repeats=3)
    ap.add_argument("--widths", type=int, nargs="+", default=WIDTHS, help="hidden widths of the parameter sweep")
    ap.add_argument("--unrolls", type=int, nargs="+", default=UNROLLS, help="unroll lengths of the second sweep")
    args = ap.parse_args()
    env = environment(args.threads)
    if args.quick:
        rows = run([8], [1, 3], 8, 1, pretrain=5, n_train=256)
    else:
        rows = run(args.widths, args.unrolls, 64, args.repeats, pretrain=100)
    cmd = "python benchmarks/scaling.py" + (
        " --quick"
        if args.quick
        else f" --repeats {args.repeats} --widths {' '.join(map(str, args.widths))} "
        f"--unrolls {' '.join(map(str, args.unrolls))}"
    )
    result = {"benchmark": "scaling", "environment": env, "command": cmd, "rows": rows}
    write(args.out, "scaling", result, markdown(rows, env, cmd), plot(rows))


if __name__ == "__main__":
    main()
