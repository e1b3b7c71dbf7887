"""Which outer solution is reached depends on the hypergradient approximation (Vicol et al., 2022, section 4).

The problem of ``implicit-bias-minnorm`` (:mod:`nestopt.experiments._implicit_bias`), solved with cold start
and the same heavy-ball outer optimizer by each hypergradient method:

* exact implicit differentiation (``linalg.Exact``): the minimizer closest to :math:`u_0`;
* truncated Neumann series, ``K`` terms with :math:`\\alpha = 1/\\lambda_{max}`: its update is
  :math:`-\\eta\\, G_K r` with a fixed :math:`G_K = \\tfrac{4}{nm} B^\\top X N_K(H) X_v^\\top`, so it ends at the
  oblique projection :math:`u_0 + G_K (M G_K)^{-1}(t - M u_0)`: an outer minimizer, but another one;
* truncated CG, ``K`` steps, damped (:math:`\\delta = 0.3\\,\\lambda_{max}`: the outer gradient has a part
  outside the range of the singular Hessian, on which undamped CG has no solution; see
  ``docs/warm-or-cold.md``). CG is not linear in its right-hand side, so its end point has no closed form;
* ``K``-step unrolling of gradient descent from :math:`w_0` (``hypergrad.Unrolled``): the exact gradient of a
  different problem, the one whose inner solution is :math:`w_K(u)`; it ends at that problem's minimizer
  closest to :math:`u_0`, in closed form too, which is not a minimizer of the original outer objective.

Neumann and unrolling use the same truncations ``K`` (both step with :math:`1/\\lambda_{max}`). Each run is
checked against its closed form where there is one; the table reports each method's distance to
the minimum-norm solution and its outer loss at the converged inner solution.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import torch

from nestopt import hypergrad, linalg
from nestopt.experiments._implicit_bias import PAPER, LinearBilevel, heavy_ball, limit, run
from nestopt.experiments.registry import Claim, Config, Context, Experiment, Metrics, register
from nestopt.optim import functional
from nestopt.profile import threads

FULL = {
    "n": 12,
    "dim": 40,
    "p": 16,
    "m": 6,
    "spread": 2.0,
    "neumann_steps": [3, 10],
    "cg_steps": [2, 4],
    "cg_damping": 0.3,
    "unroll_steps": [3, 10],
    "inner_steps": 40,
    "outer_steps": 400,
    "threads": 1,
}
QUICK = {
    **FULL,
    "n": 8,
    "dim": 24,
    "p": 12,
    "m": 4,
    "neumann_steps": [3],
    "cg_steps": [2],
    "unroll_steps": [3],
    "inner_steps": 20,
    "outer_steps": 100,
}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _neumann_map(pr: LinearBilevel, steps: int, alpha: float) -> torch.Tensor:
    """:math:`G_K`: the outer residual to the truncated-Neumann hypergradient, a ``p x m`` matrix."""
    n, d = pr.x.shape
    a = torch.eye(d, dtype=pr.x.dtype) - alpha * pr.hessian
    series = alpha * sum(torch.linalg.matrix_power(a, j) for j in range(steps + 1))
    return 2.0 / n * pr.b.T @ pr.x @ series @ (2.0 / pr.xv.shape[0] * pr.xv.T)


def _unrolled_problem(pr: LinearBilevel, steps: int, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(M_K, t_K)``: the outer objective :math:`\\frac1m\\|M_K u - t_K\\|^2` at :math:`w_K(u)`, ``K`` steps of
    gradient descent from :math:`w_0` (:math:`w_K = A^K w_0 + \\sum_{j<K} A^j \\eta \\frac2n X^\\top B u`)."""
    n, d = pr.x.shape
    a = torch.eye(d, dtype=pr.x.dtype) - lr * pr.hessian
    gain = sum(torch.linalg.matrix_power(a, j) for j in range(steps)) @ (lr * 2.0 / n * pr.x.T @ pr.b)
    return pr.xv @ gain, pr.yv - pr.xv @ torch.linalg.matrix_power(a, steps) @ pr.w0


def compute(cfg: Config, ctx: Context) -> Metrics:
    """Each method's end point, its distance to the minimum-norm solution and to its own closed form."""
    with threads(cfg["threads"]):
        pr = LinearBilevel.make(cfg["n"], cfg["dim"], cfg["p"], cfg["m"], cfg["spread"], seed=ctx.seed)
        top, bottom = pr.curvature()
        lr, momentum = heavy_ball(top, bottom)
        inner = functools.partial(torch.optim.SGD, lr=lr, momentum=momentum)
        outer = heavy_ball(*pr.outer_curvature())
        alpha = 1.0 / top
        u_star = pr.min_norm()
        # name -> (strategy, inner optimizer, closed form of the end point or None)
        methods: dict[str, tuple[hypergrad.Strategy, Any, torch.Tensor | None]] = {
            "exact": (hypergrad.Implicit(solver=linalg.Exact()), inner, u_star)
        }
        for k in cfg["neumann_steps"]:
            neumann = hypergrad.Implicit(solver=linalg.Neumann(steps=k, alpha=alpha))
            methods[f"neumann-{k}"] = (neumann, inner, limit(pr, _neumann_map(pr, k, alpha)))
        for k in cfg["cg_steps"]:
            cg = hypergrad.Implicit(solver=linalg.CG(steps=k, tol=0.0, damping=cfg["cg_damping"] * top))
            methods[f"cg-{k}"] = (cg, inner, None)
        for k in cfg["unroll_steps"]:
            mk, tk = _unrolled_problem(pr, k, alpha)
            end = pr.u0 + torch.linalg.pinv(mk) @ (tk - mk @ pr.u0)
            methods[f"unrolled-{k}"] = (hypergrad.Unrolled(optimizer=functional.sgd(lr=alpha), steps=k), None, end)
        table = {}
        for name, (strategy, inner_opt, closed) in ctx.progress(methods.items(), "methods"):
            r = run(
                pr,
                strategy,
                warm_start=False,
                inner_steps=cfg["inner_steps"],
                outer_steps=cfg["outer_steps"],
                inner_optimizer=inner_opt,
                outer=outer,
            )
            table[name] = {
                "u": r["u"],
                "distance_to_min_norm": _rel(r["u"], u_star),
                "closed_form_error": None if closed is None else _rel(r["u"], closed),
                "outer_loss": pr.outer_loss(r["u"]),
                "distance_from_u0": float((r["u"] - pr.u0).norm()),
            }
    ends = {k: v.pop("u") for k, v in table.items()}
    approximations = [k for k in table if k != "exact"]
    pairs = {f"{a} / {b}": _rel(ends[a], ends[b]) for a, b in itertools.combinations(approximations, 2)}
    return {
        "sizes": {k: cfg[k] for k in ("n", "dim", "p", "m")},
        "table": table,
        "outer_loss_at_u0": pr.outer_loss(pr.u0),
        "min_norm_distance_from_u0": float((u_star - pr.u0).norm()),
        "pairwise_relative_distance": pairs,
        "hessian_curvature": [bottom, top],
        "step_sizes": {"inner": [lr, momentum], "outer": list(outer), "neumann_alpha": alpha, "unroll_lr": alpha},
    }


def claims(m: Metrics, cfg: Config) -> list[Claim]:
    t = m["table"]
    approximations = [k for k in t if k != "exact"]
    implicit = [k for k in approximations if not k.startswith("unrolled")]
    closed = [k for k in approximations if t[k]["closed_form_error"] is not None]
    out = [
        Claim.at_most(
            "exact: relative distance to the minimum-norm outer solution", t["exact"]["distance_to_min_norm"], 1e-6
        )
    ]
    if approximations:
        nearest = min(approximations, key=lambda k: t[k]["distance_to_min_norm"])
        out.append(
            Claim.at_least(
                "the solution depends on the approximation: smallest relative distance of an approximation's "
                f"solution to the minimum-norm one ({nearest})",
                t[nearest]["distance_to_min_norm"],
                1e-3,
            )
        )
    if m["pairwise_relative_distance"]:
        out.append(
            Claim.at_least(
                "... and to each other: smallest relative distance between two approximations' solutions",
                min(m["pairwise_relative_distance"].values()),
                1e-3,
            )
        )
    if implicit:
        worst = max(implicit, key=lambda k: t[k]["outer_loss"])
        out.append(
            Claim.at_most(
                f"the implicit approximations still reach outer minimizers: largest outer loss / outer loss at u0 ({worst})",
                t[worst]["outer_loss"] / m["outer_loss_at_u0"],
                1e-10,
            )
        )
    if closed:
        worst = max(closed, key=lambda k: t[k]["closed_form_error"])
        out.append(
            Claim.at_most(
                f"Neumann and unrolled runs end at their closed forms: largest relative error ({worst})",
                t[worst]["closed_form_error"],
                1e-6,
            )
        )
    return out


def notes(m: Metrics, cfg: Config) -> str:
    lines = [
        "| method | relative distance to the minimum-norm solution | outer loss (inner solved) | distance from u0 |",
        "|---|---|---|---|",
    ]
    for name, row in m["table"].items():
        lines.append(
            f"| {name} | {row['distance_to_min_norm']:.3g} | {row['outer_loss']:.3g} | {row['distance_from_u0']:.4g} |"
        )
    return "\n".join(lines)


def plots(plt: Any, m: Metrics, cfg: Config) -> dict[str, Any]:
    names = list(m["table"])
    rows = [m["table"][k] for k in names]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.bar(names, [max(r["distance_to_min_norm"], 1e-17) for r in rows], color="tab:blue")
    left.set_yscale("log")
    left.set_ylabel("|u - u*| / |u*|")
    left.set_title("End point vs the minimum-norm outer solution u*")
    right.bar(names, [max(r["outer_loss"], 1e-33) for r in rows], color="tab:orange")
    right.set_yscale("log")
    right.set_ylabel("outer loss at the converged inner solution")
    right.set_title(f"Outer loss (at u0: {m['outer_loss_at_u0']:.3g})")
    for ax in (left, right):
        ax.tick_params(axis="x", rotation=30)
        ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    return {"hypergrad": fig}


EXPERIMENT = register(
    Experiment(
        "implicit-bias-hypergrad",
        paper=PAPER,
        summary=(
            "On an underdetermined bilevel least-squares problem, the outer solution reached depends on the "
            "hypergradient approximation: exact implicit differentiation finds the minimum-norm one; truncated "
            "Neumann and CG find other outer minimizers; truncated unrolling optimizes a different problem."
        ),
        full=FULL,
        quick=QUICK,
        compute=compute,
        claims=claims,
        plots=plots,
        notes=notes,
        figures=("hypergrad",),
    )
)
