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
from nestopt.experiments.registry import Claim, Context, Outcome, experiment
from nestopt.optim import functional

PAPER = "Optimizing Millions of Hyperparameters by Implicit Differentiation (Lorraine et al., AISTATS 2020)"


def _inner(p: dict, h: dict, batch: Any) -> torch.Tensor:
    x, y = batch
    return 0.5 * ((x @ p["w"] - y) ** 2).mean() + 0.5 * (h["log_l2"].exp() * p["w"] ** 2).sum()


def _outer(p: dict, h: dict, batch: Any) -> torch.Tensor:
    x, y = batch
    return ((x @ p["w"] - y) ** 2).mean()


def _rel(a: dict, b: dict) -> float:
    return float(tree.norm(tree.sub(a, b)) / tree.norm(b))


@experiment(
    "hypergrad-accuracy",
    paper=PAPER,
    summary=(
        "On ridge regression with one L2 penalty per feature, every hypergradient estimator converges to the "
        "closed form: Exact to 1e-8, CG to 1e-6, Neumann and unrolling as their budgets grow, forward = reverse."
    ),
    full={"dim": 100, "n_train": 150, "n_val": 100, "noise": 0.5, "unroll_steps": [10, 30, 100, 300, 1000]},
    quick={"dim": 20, "n_train": 30, "n_val": 40, "noise": 0.5, "unroll_steps": [10, 30, 100, 300]},
)
def hypergrad_accuracy(cfg: dict[str, Any], ctx: Context) -> Outcome:
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

    def implicit_error(solver: linalg.Solver) -> tuple[float, int]:
        res = hypergrad.implicit(_inner, _outer, params, hparams, train, val, solver=solver)
        return _rel(res.grads, truth), res.info.hvp_calls

    curves: dict[str, list[tuple[int, float]]] = {}
    exact_err, exact_hvps = implicit_error(linalg.Exact())
    curves["Exact"] = [(exact_hvps, exact_err)]

    cg_steps = sorted({1, 2, 5, 10, d // 2, d, 2 * d})
    curves["CG"] = [implicit_error(linalg.CG(steps=k, tol=0.0))[::-1] for k in ctx.progress(cg_steps, "CG")]
    cg_enough = implicit_error(linalg.CG(steps=2 * d, tol=1e-14))[0]

    alpha = 1.0 / lam_max
    neumann_steps = [1, 4, 16, 64, 256, 1024] + ([4096] if not ctx.quick else [])
    curves["Neumann"] = [
        implicit_error(linalg.Neumann(steps=k, alpha=alpha))[::-1] for k in ctx.progress(neumann_steps, "Neumann")
    ]
    neumann_errors = [e for _, e in curves["Neumann"]]

    # Low-rank Nystrom needs a damping near the spectrum's tail (the complement of the sampled columns is
    # scaled by 1/rho); at full rank a tiny rho makes it exact.
    rho_sweep, rho = lam_min, 1e-6
    ranks = sorted({max(1, d // 8), d // 4, d // 2, (3 * d) // 4, d})
    curves[f"Nystrom (rho={rho_sweep:.2g})"] = [
        implicit_error(linalg.Nystrom(rank=r, rho=rho_sweep, seed=ctx.seed))[::-1] for r in ranks
    ]
    nystrom_full = hypergrad.implicit(
        _inner, _outer, params, hparams, train, val, solver=linalg.Nystrom(rank=d, rho=rho, seed=ctx.seed)
    )
    damped_exact = hypergrad.implicit(_inner, _outer, params, hparams, train, val, solver=linalg.Exact(damping=rho))
    curves[f"Nystrom (rank={d}, rho={rho:.0e})"] = [(d, _rel(nystrom_full.grads, truth))]
    nystrom_vs_damped = _rel(nystrom_full.grads, damped_exact.grads)
    nystrom_vs_truth = _rel(nystrom_full.grads, truth)

    opt = functional.sgd(lr=1.0 / lam_max)
    w0 = {"w": torch.zeros(d, dtype=x.dtype)}
    curves["Unrolled GD"] = []
    for k in ctx.progress(cfg["unroll_steps"], "unrolled"):
        res = hypergrad.unrolled(_inner, _outer, w0, hparams, [train] * k, val, optimizer=opt, steps=k)
        curves["Unrolled GD"].append((k, _rel(res.grads, truth)))
    unroll_errors = [e for _, e in curves["Unrolled GD"]]

    k_fr = cfg["unroll_steps"][1]
    rev = hypergrad.unrolled(_inner, _outer, w0, hparams, [train] * k_fr, val, optimizer=opt, steps=k_fr)
    fwd = hypergrad.forward(_inner, _outer, w0, hparams, [train] * k_fr, val, optimizer=opt, steps=k_fr)
    fwd_vs_rev = _rel(fwd.grads, rev.grads)

    def decreasing(values: list[float]) -> bool:
        return all(b < a for a, b in itertools.pairwise(values))

    claims = [
        Claim.at_most("Exact: relative error to the closed form", exact_err, 1e-8),
        Claim.at_most(f"CG ({2 * d} steps): relative error", cg_enough, 1e-6),
        Claim.holds(
            f"Neumann (alpha = 1/lambda_max): error falls with steps {neumann_steps}",
            decreasing(neumann_errors) and neumann_errors[-1] < 0.1 * neumann_errors[0],
            value=neumann_errors,
        ),
        Claim.holds(
            f"unrolled GD approaches the implicit hypergradient (K = {cfg['unroll_steps']})",
            decreasing(unroll_errors) and unroll_errors[-1] < 0.05,
            value=unroll_errors,
        ),
        Claim.at_most(f"forward vs reverse unrolling (K = {k_fr}): relative difference", fwd_vs_rev, 1e-8),
        Claim.at_most(f"Nystrom rank = dim ({d}) vs the exact solve with the same damping", nystrom_vs_damped, 1e-8),
    ]
    metrics = {
        "dim": d,
        "hessian_eigenvalue_range": [lam_min, lam_max],
        "curves": {name: [{"cost": c, "relative_error": e} for c, e in pts] for name, pts in curves.items()},
        "cg_enough_steps_error": cg_enough,
        "nystrom_full_rank_vs_truth": nystrom_vs_truth,
        "nystrom_rho": rho,
        "forward_vs_reverse": fwd_vs_rev,
    }

    plt = ctx.pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for name, pts in curves.items():
            cost, err = zip(*pts)
            single = len(cost) == 1
            ax.plot(
                cost, [max(e, 1e-17) for e in err], marker="*" if single else "o", ms=12 if single else 5, label=name
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("Hessian-vector products (unrolled: inner steps)")
        ax.set_ylabel("relative error of the hypergradient")
        ax.set_title(f"Ridge regression, {d} per-feature penalties (cond {lam_max / lam_min:.0f})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        ctx.savefig(fig, "error_vs_hvps")
    return Outcome(metrics, claims)
