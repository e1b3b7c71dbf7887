"""Accuracy for time: the relative error of each system's hypergradient against its wall time.

Two problems with a known hypergradient, in float64: ridge regression with one penalty per feature (closed
form) and logistic regression with one penalty per feature (solved by Newton's method to machine precision,
hypergradient by a dense solve). 400 training and 400 validation points, 200 features of unequal scales.

Every system sweeps its accuracy knob: the number of solver steps K for implicit Neumann (alpha =
1/lambda_max) and CG (nestopt, TorchOpt, Betty), and the number of unrolled SGD steps T from w = 0 (lr =
1/lambda_max, momentum 0.9) for unrolled differentiation (nestopt, higher, TorchOpt), whose hypergradient
tends to the implicit one as the inner problem converges. Each point: median time of repeats, relative
error ||g - g*|| / ||g*||.

    python benchmarks/accuracy_time.py [--quick] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import warnings
from typing import Any

import _peers
import _problems
from _report import env_line, environment, parser, pyplot, timed, write

IMPLICIT_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
UNROLL_STEPS = [10, 30, 100, 300, 1000]
SYSTEMS = {  # method -> systems
    "neumann": ["nestopt", "torchopt", "betty"],
    "cg": ["nestopt", "torchopt", "betty"],
    "unrolled": ["nestopt", "higher", "torchopt"],
}


def sweep(problem: _problems.LinearProblem, implicit_steps: list[int], unroll_steps: list[int], repeats: int):
    rows: list[dict[str, Any]] = []
    unrolled_view = problem.unrolled_view()
    for method, systems in SYSTEMS.items():
        steps_list = unroll_steps if method == "unrolled" else implicit_steps
        p = unrolled_view if method == "unrolled" else problem
        for system in systems:
            for steps in steps_list:
                row: dict[str, Any] = {"problem": problem.kind, "method": method, "system": system, "steps": steps}
                try:
                    fn = _peers.build(system, method, p, steps)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        grads = fn()
                        row.update(timed(fn, repeats, warmup=0, memory=False))  # time and error only
                    row["rel_error"] = _problems.relative_error(grads, problem.exact)
                    row["status"] = "ok"
                except _peers.Unavailable as err:
                    row["status"] = f"unavailable: {err}"
                except Exception as err:  # reported in the row
                    row["status"] = f"failed: {type(err).__name__}: {err}"
                rows.append(row)
                if row["status"] != "ok":
                    print(f"{problem.kind:<9} {method:<9} {system:<9} {row['status']}", flush=True)
                    break
                print(
                    f"{problem.kind:<9} {method:<9} {system:<9} K={steps:<5} {row['seconds'] * 1e3:9.2f} ms "
                    f"rel. error {row['rel_error']:.2e}",
                    flush=True,
                )
    return rows


def markdown(rows: list[dict[str, Any]], env: dict[str, Any], cmd: str) -> list[str]:
    lines = [
        "# Accuracy for time",
        "",
        f"`{cmd}`. float64, CPU. {env_line(env)}",
        "",
        "Relative error of the hypergradient against the exact one, and the median time to compute it. K: solver "
        "steps (implicit) or unrolled SGD steps from w = 0 (unrolled).",
    ]
    for kind in dict.fromkeys(r["problem"] for r in rows):
        lines += [
            "",
            f"## {kind}",
            "",
            "| method | system | K | time (ms) | rel. error | status |",
            "|---|---|---:|---:|---:|---|",
        ]
        for r in rows:
            if r["problem"] != kind:
                continue
            if r["status"] == "ok":
                lines.append(
                    f"| {r['method']} | {r['system']} | {r['steps']} | {r['seconds'] * 1e3:.2f} | {r['rel_error']:.2e} | ok |"
                )
            else:
                lines.append(f"| {r['method']} | {r['system']} | | | | {r['status']} |")
    lines += ["", "Time to reach a relative error (ms; the fastest point of each system at or below it):", ""]
    lines += [
        "| problem | method | system | error <= 1e-2 | error <= 1e-4 | error <= 1e-8 |",
        "|---|---|---|---:|---:|---:|",
    ]
    for kind in dict.fromkeys(r["problem"] for r in rows):
        for method, systems in SYSTEMS.items():
            for system in systems:
                pts = [
                    r
                    for r in rows
                    if (r["problem"], r["method"], r["system"], r["status"]) == (kind, method, system, "ok")
                ]
                if not pts:
                    continue
                cells = []
                for tol in (1e-2, 1e-4, 1e-8):
                    hit = [r["seconds"] for r in pts if r["rel_error"] <= tol]
                    cells.append(f"{min(hit) * 1e3:.2f}" if hit else "not reached")
                lines.append(f"| {kind} | {method} | {system} | " + " | ".join(cells) + " |")
    return lines


def plot(rows: list[dict[str, Any]]) -> Any:
    plt = pyplot()
    if plt is None:
        return None
    kinds = list(dict.fromkeys(r["problem"] for r in rows))
    fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4.5), squeeze=False)
    colors = {"nestopt": "C0", "torchopt": "C1", "betty": "C2", "higher": "C3"}
    styles = {"neumann": "o-", "cg": "s--", "unrolled": "^:"}
    for ax, kind in zip(axes[0], kinds):
        for method, systems in SYSTEMS.items():
            for system in systems:
                pts = [
                    r
                    for r in rows
                    if (r["problem"], r["method"], r["system"], r["status"]) == (kind, method, system, "ok")
                ]
                if pts:
                    ax.plot(
                        [r["seconds"] for r in pts],
                        [max(r["rel_error"], 1e-16) for r in pts],
                        styles[method],
                        color=colors[system],
                        label=f"{system} {method}",
                        markersize=4,
                        alpha=0.8,
                    )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("wall time per hypergradient (s)")
        ax.set_ylabel("relative error")
        ax.set_title(f"{kind} regression, per-feature penalties")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def main() -> None:
    ap = parser(__doc__)
    ap.set_defaults(repeats=3)
    args = ap.parse_args()
    env = environment(args.threads)
    if args.quick:
        problems = [_problems.ridge_problem(n=60, d=20), _problems.logistic_problem(n=60, d=20)]
        implicit_steps, unroll_steps, repeats = [5], [5], 1
    else:
        problems = [_problems.ridge_problem(), _problems.logistic_problem()]
        implicit_steps, unroll_steps, repeats = IMPLICIT_STEPS, UNROLL_STEPS, args.repeats
    rows = []
    for problem in problems:
        rows += sweep(problem, implicit_steps, unroll_steps, repeats)
    cmd = "python benchmarks/accuracy_time.py" + (" --quick" if args.quick else f" --repeats {args.repeats}")
    result = {"benchmark": "accuracy_time", "environment": env, "command": cmd, "rows": rows}
    write(args.out, "accuracy_time", result, markdown(rows, env, cmd), plot(rows))


if __name__ == "__main__":
    main()
