"""Scaling: time and peak memory of one hypergradient against the parameter count, the solver steps and the
unroll length.

The MLP problem of ``hypergrad_speed.py`` (40-h-h-10, one weight decay per parameter, batch 128, float32):

* against the parameter count (h = 150 ... 1700, about 30k to 3M parameters; ``--widths 5450`` reaches 30M on a
  GPU): implicit Neumann 10 and CG 10 (nestopt, TorchOpt, Betty) and unrolled 10 steps (nestopt, higher,
  TorchOpt);
* against the solver steps K = 1 ... 50 at h = 520 (about 300k parameters): implicit Neumann K and CG K (nestopt,
  TorchOpt, Betty);
* against the unroll length T = 1 ... 200 at h = 64 (about 7k parameters): nestopt unrolled, nestopt unrolled
  with checkpointing (memory logarithmic in T), higher and TorchOpt.

    python benchmarks/scaling.py [--quick] [--repeats 3] [--threads 1] [--device cuda] [--widths ...]
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

import _peers
import _problems
from _report import env_line, environment, parser, pyplot, timed, write

WIDTHS = [150, 300, 520, 1000, 1700]
SOLVER_STEPS = [1, 2, 5, 10, 20, 50]
SOLVER_WIDTH = 520
UNROLLS = [1, 2, 5, 10, 20, 50, 100, 200]
BY_STEPS = [
    ("implicit Neumann", "neumann", ["nestopt", "torchopt", "betty"]),
    ("implicit CG", "cg", ["nestopt", "torchopt", "betty"]),
]
BY_SIZE = [  # (label, method, steps, systems)
    ("implicit Neumann 10", "neumann", 10, ["nestopt", "torchopt", "betty"]),
    ("implicit CG 10", "cg", 10, ["nestopt", "torchopt", "betty"]),
    ("unrolled 10", "unrolled", 10, ["nestopt", "higher", "torchopt"]),
]
BY_LENGTH = ["nestopt", "nestopt (checkpoint)", "higher", "torchopt"]


def measure(system: str, method: str, p: Any, steps: int, repeats: int, device: str = "cpu") -> dict[str, Any]:
    row: dict[str, Any] = {}
    try:
        if system == "nestopt (checkpoint)":
            fn = _peers.nestopt_unrolled(p, steps, checkpoint=True)
        else:
            fn = _peers.build(system, method, p, steps)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            row.update(timed(fn, repeats, device=device))
        row["status"] = "ok"
    except _peers.Unavailable as err:
        row["status"] = f"unavailable: {err}"
    except Exception as err:  # reported in the row
        row["status"] = f"failed: {type(err).__name__}: {err}"
    return row


def run(
    widths: list[int],
    unrolls: list[int],
    width_t: int,
    repeats: int,
    pretrain: int,
    n_train: int = 1024,
    *,
    solver_steps: list[int] = SOLVER_STEPS,
    solver_width: int = SOLVER_WIDTH,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    rows = []

    def problem(h: int) -> Any:
        return _problems.mlp_problem(h, pretrain=pretrain, n_train=n_train, iterations=10, device=device)

    def add(row: dict[str, Any], system: str, method: str, p: Any, steps: int) -> None:
        row.update(measure(system, method, p, steps, repeats, device))
        rows.append(row)
        _print(row)

    for h in widths:
        p = problem(h)
        for label, method, steps, systems in BY_SIZE:
            for system in systems:
                row = {"sweep": "params", "group": label, "system": system, "params": p.n_params, "steps": steps}
                add(row, system, method, p, steps)
    if solver_steps:
        p = problem(solver_width)
        for steps in solver_steps:
            for label, method, systems in BY_STEPS:
                for system in systems:
                    row = {"sweep": "solver", "group": label, "system": system, "params": p.n_params, "steps": steps}
                    add(row, system, method, p, steps)
    p = problem(width_t)
    for steps in unrolls:
        for system in BY_LENGTH:
            row = {"sweep": "unroll", "group": "unrolled", "system": system, "params": p.n_params, "steps": steps}
            add(row, system, "unrolled", p, steps)
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
        f"`{cmd}`. MLP on MNIST-1D, float32, {env.get('device', 'cpu')}. {env_line(env)}",
        "",
        "Median time of one hypergradient and the peak extra memory it allocates.",
    ]
    for sweep, key, title in SWEEPS:
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


SWEEPS = (
    ("params", "params", "parameters"),
    ("solver", "steps", "solver steps K"),
    ("unroll", "steps", "unroll length T"),
)


def plot(rows: list[dict[str, Any]]) -> Any:
    plt = pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(2, 3, figsize=(16, 8))
    colors = {"nestopt": "C0", "nestopt (checkpoint)": "C4", "torchopt": "C1", "betty": "C2", "higher": "C3"}
    styles = {"implicit Neumann 10": "o-", "implicit CG 10": "s--", "unrolled 10": "^:", "unrolled": "^-",
              "implicit Neumann": "o-", "implicit CG": "s--"}  # fmt: skip
    for col, (sweep, key, xlabel) in enumerate(SWEEPS):
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
                    label=system if sweep == "unroll" else f"{system} {group}",
                    markersize=4,
                )
                ax.set_xscale("log")
                ax.set_yscale("log")
                ax.set_xlabel(xlabel)
                ax.set_ylabel(ylabel)
                ax.grid(alpha=0.3)
    for ax in axes[0]:
        ax.legend(fontsize=7)
    axes[0, 0].set_title("against the parameter count")
    axes[0, 1].set_title(f"against the solver steps ({SOLVER_WIDTH}-wide MLP)")
    axes[0, 2].set_title("against the unroll length")
    fig.tight_layout()
    return fig


def main() -> None:
    ap = parser(__doc__)
    ap.set_defaults(repeats=3)
    ap.add_argument("--widths", type=int, nargs="+", default=WIDTHS, help="hidden widths of the parameter sweep")
    ap.add_argument("--unrolls", type=int, nargs="+", default=UNROLLS, help="unroll lengths of the second sweep")
    ap.add_argument("--solver-steps", type=int, nargs="*", default=SOLVER_STEPS, help="solver steps of the third sweep")
    args = ap.parse_args()
    env = environment(args.threads, args.device)
    if args.quick:
        rows = run([8], [1, 3], 8, 1, pretrain=5, n_train=256, solver_steps=[1, 3], solver_width=8)
    else:
        rows = run(args.widths, args.unrolls, 64, args.repeats, pretrain=100, solver_steps=args.solver_steps,
                   device=args.device)  # fmt: skip
    cmd = "python benchmarks/scaling.py" + (
        " --quick"
        if args.quick
        else f" --repeats {args.repeats} --widths {' '.join(map(str, args.widths))} "
        f"--solver-steps {' '.join(map(str, args.solver_steps))} --unrolls {' '.join(map(str, args.unrolls))}"
    )
    cmd += f" --device {args.device}" if args.device != "cpu" else ""
    result = {"benchmark": "scaling", "environment": env, "command": cmd, "rows": rows}
    name = "scaling" if args.device == "cpu" else f"scaling_{torch.device(args.device).type}"
    write(args.out, name, result, markdown(rows, env, cmd), plot(rows))


if __name__ == "__main__":
    main()
