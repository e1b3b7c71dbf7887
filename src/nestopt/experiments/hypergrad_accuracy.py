"""Every hypergradient estimator against a closed form: ridge regression with one penalty per feature.

Inner problem :math:`\\min_w \\tfrac{1}{2n}\\|Xw - y\\|^2 + \\tfrac12 \\sum_i e^{\\lambda_i} w_i^2` has the solution
:math:`w^* = A^{-1} X^\\top y / n` with :math:`A = X^\\top X / n + \\mathrm{diag}(e^{\\lambda})`, and the validation
loss :math:`L_V(w^*)` has the hypergradient

.. math::  \\frac{dL_V}{d\\lambda_i} = -e^{\\lambda_i}\\, w^*_i \\,\\big(A^{-1} \\nabla_w L_V\\big)_i .
"""

from __future__ import annotations

import itertools
from typing import Any

import torch

from nestopt import data, hypergrad, linalg, tree
from nestopt.experiments._common import IFT_PAPER
from nestopt.experiments.registry import Claim, Config, Context, Experiment, Metrics, register
from nestopt.optim import functional

FULL = {"dim": 100, "n_train": 150, "n_val": 100, "noise": 0.5, "unroll_steps": [10, 30, 100, 300, 1000]}
QUICK = {"dim": 20, "n_train": 30, "n_val": 40, "noise": 0.5, "unroll_steps": [10, 30, 100, 300]}


def _inner(p: dict, h: dict, batch: Any) -> torch.Tensor:
    x, y = batch
    return 0.5 * ((x @ p["w"] - y) ** 2).mean() + 0.5 * (h["log_l2"].exp() * p["w"] ** 2).sum()


def _outer(p: dict, h: dict, batch: Any) -> torch.Tensor:
    x, y = batch
    return ((x @ p["w"] - y) ** 2).mean()


def _rel(a: dict, b: dict) -> float:
    return float(tree.norm(tree.sub(a, b)) / tree.norm(b))


def compute(cfg: Config, ctx: Context) -> Metrics:
    """Every estimator's relative error to the closed form, against its cost."""
    d = cfg["dim"]
    ds = data.synthetic_regression(cfg["n_train"], cfg["n_val"], 10, dim=d, noise=cfg["noise"], seed=ctx.seed)
    train, val = ds.train.as_tuple(), ds.val.as_tuple()
    x, y = train
    n = x.shape[0]
    log_l2 = -3.0 + 0.5 * torch.randn(d, generator=ctx.generator(1), dtype=x.dtype)
    hparams = {"log_l2": log_l2}

    a = x.T @ x / n + torch.diag(log_l2.exp())
    w_star = torch.linalg.solve(a, x.T @ y / n)
    g_val = 2 * val[0].T @ (val[0] @ w_star - val[1]) / val[0].shape[0]
    truth = {"log_l2": -log_l2.exp() * w_star * torch.linalg.solve(a, g_val)}
    params = {"w": w_star}
    eigs = torch.linalg.eigvalsh(a)
    lam_min, lam_max = float(eigs.min()), float(eigs.max())

    def implicit_error(solver: linalg.Solver) -> tuple[int, float]:
        res = hypergrad.implicit(_inner, _outer, params, hparams, train, val, solver=solver)
        return res.info.hvp_calls, _rel(res.grads, truth)

    curves: dict[str, list[tuple[int, float]]] = {"Exact": [implicit_error(linalg.Exact())]}
    cg_steps = sorted({1, 2, 5, 10, d // 2, d, 2 * d})
    curves["CG"] = [implicit_error(linalg.CG(steps=k, tol=0.0)) for k in ctx.progress(cg_steps, "CG")]
    cg_enough = implicit_error(linalg.CG(steps=2 * d, tol=1e-14))[1]

    neumann_steps = [1, 4, 16, 64, 256, 1024] + ([4096] if not ctx.quick else [])
    curves["Neumann"] = [
        implicit_error(linalg.Neumann(steps=k, alpha=1.0 / lam_max)) for k in ctx.progress(neumann_steps, "Neumann")
    ]

    # Low-rank Nystrom needs a damping near the spectrum's tail (the complement of the sampled columns is
    # scaled by 1/rho); at full rank a tiny rho makes it exact.
    rho_sweep, rho = lam_min, 1e-6
    ranks = sorted({max(1, d // 8), d // 4, d // 2, (3 * d) // 4, d})
    curves[f"Nystrom (rho={rho_sweep:.2g})"] = [
        implicit_error(linalg.Nystrom(rank=r, rho=rho_sweep, seed=ctx.seed)) for r in ranks
    ]
    nystrom_full = hypergrad.implicit(
        _inner, _outer, params, hparams, train, val, solver=linalg.Nystrom(rank=d, rho=rho, seed=ctx.seed)
    )
    damped_exact = hypergrad.implicit(_inner, _outer, params, hparams, train, val, solver=linalg.Exact(damping=rho))
    curves[f"Nystrom (rank={d}, rho={rho:.0e})"] = [(d, _rel(nystrom_full.grads, truth))]

    opt = functional.sgd(lr=1.0 / lam_max)
    w0 = {"w": torch.zeros(d, dtype=x.dtype)}
    curves["Unrolled GD"] = []
    for k in ctx.progress(cfg["unroll_steps"], "unrolled"):
        res = hypergrad.unrolled(_inner, _outer, w0, hparams, [train] * k, val, optimizer=opt, steps=k)
        curves["Unrolled GD"].append((k, _rel(res.grads, truth)))

    k_fr = cfg["unroll_steps"][1]
    rev = hypergrad.unrolled(_inner, _outer, w0, hparams, [train] * k_fr, val, optimizer=opt, steps=k_fr)
    fwd = hypergrad.forward(_inner, _outer, w0, hparams, [train] * k_fr, val, optimizer=opt, steps=k_fr)
    return {
        "dim": d,
        "hessian_eigenvalue_range": [lam_min, lam_max],
        "curves": {name: [{"cost": c, "relative_error": e} for c, e in pts] for name, pts in curves.items()},
        "neumann_steps": neumann_steps,
        "cg_enough_steps_error": cg_enough,
        "nystrom_full_rank_vs_truth": _rel(nystrom_full.grads, truth),
        "nystrom_full_rank_vs_damped_exact": _rel(nystrom_full.grads, damped_exact.grads),
        "nystrom_rho": rho,
        "forward_vs_reverse": _rel(fwd.grads, rev.grads),
    }


def _errors(m: Metrics, name: str) -> list[float]:
    return [p["relative_error"] for p in m["curves"][name]]


def _decreasing(values: list[float]) -> bool:
    return all(b < a for a, b in itertools.pairwise(values))


def claims(m: Metrics, cfg: Config) -> list[Claim]:
    d, neumann, unrolled = m["dim"], _errors(m, "Neumann"), _errors(m, "Unrolled GD")
    return [
        Claim.at_most("Exact: relative error to the closed form", _errors(m, "Exact")[0], 1e-8),
        Claim.at_most(f"CG ({2 * d} steps): relative error", m["cg_enough_steps_error"], 1e-6),
        Claim.holds(
            f"Neumann (alpha = 1/lambda_max): error falls with steps {m['neumann_steps']}",
            _decreasing(neumann) and neumann[-1] < 0.1 * neumann[0],
            value=neumann,
        ),
        Claim.holds(
            f"unrolled GD approaches the implicit hypergradient (K = {cfg['unroll_steps']})",
            _decreasing(unrolled) and unrolled[-1] < 0.05,
            value=unrolled,
        ),
        Claim.at_most(
            f"forward vs reverse unrolling (K = {cfg['unroll_steps'][1]}): relative difference",
            m["forward_vs_reverse"],
            1e-8,
        ),
        Claim.at_most(
            f"Nystrom rank = dim ({d}) vs the exact solve with the same damping",
            m["nystrom_full_rank_vs_damped_exact"],
            1e-8,
        ),
    ]


def plots(plt: Any, m: Metrics, cfg: Config) -> dict[str, Any]:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, pts in m["curves"].items():
        cost = [p["cost"] for p in pts]
        err = [max(p["relative_error"], 1e-17) for p in pts]
        single = len(cost) == 1
        ax.plot(cost, err, marker="*" if single else "o", ms=12 if single else 5, label=name)
    lam_min, lam_max = m["hessian_eigenvalue_range"]
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("Hessian-vector products (unrolled: inner steps)")
    ax.set_ylabel("relative error of the hypergradient")
    ax.set_title(f"Ridge regression, {m['dim']} per-feature penalties (cond {lam_max / lam_min:.0f})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return {"error_vs_hvps": fig}


EXPERIMENT = register(
    Experiment(
        "hypergrad-accuracy",
        paper=IFT_PAPER,
        summary=(
            "On ridge regression with one L2 penalty per feature, every hypergradient estimator converges to the "
            "closed form: Exact to 1e-8, CG to 1e-6, Neumann and unrolling as their budgets grow, forward = reverse."
        ),
        full=FULL,
        quick=QUICK,
        compute=compute,
        claims=claims,
        plots=plots,
        figures=("error_vs_hvps",),
    )
)
