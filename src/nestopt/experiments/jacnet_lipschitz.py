"""JacNet (2019): a 1-Lipschitz function learned through a Jacobian bounded by construction.

A JacNet with ``structure=Lipschitz(k=1)`` (:math:`J = k \\tanh(a)`) and an unconstrained MLP with (nearly) the
same number of parameters learn :math:`|x|` on :math:`[-2, 2]` from samples, trained the same way, over several
seeds. The Lipschitz constant of each fitted function is measured on a dense grid as the largest slope between
neighbouring grid points, :math:`\\max_i |f(x_{i+1}) - f(x_i)| / (x_{i+1} - x_i)`.

Claim: the JacNet's measured constant is at most :math:`k = 1` for every seed (the claim's value is
:math:`L - k \\le 0`). The MLP's constant is reported (it may exceed :math:`k` or not; the notes say which).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from nestopt.experiments._jacobian_common import DTYPE, box_grid, fit, for_evaluation, matched_mlp, param_count
from nestopt.experiments.registry import Claim, Config, Context, Experiment, Metrics, register
from nestopt.jacobian import JacNet, Lipschitz
from nestopt.profile import threads

__all__ = ["K", "grid_lipschitz"]

K = 1.0
"""The Lipschitz constant imposed and claimed (that of :math:`|x|`)."""


def grid_lipschitz(values: Tensor, grid: Tensor) -> float:
    """The largest slope between neighbouring points of a sorted 1-D grid: a lower bound on the Lipschitz constant."""
    return float(((values[1:] - values[:-1]).abs() / (grid[1:] - grid[:-1])).max())


def _mse(model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor) -> Callable[[], Tensor]:
    return lambda: ((model(x) - y) ** 2).mean()


FULL = {"seeds": 5, "n_train": 128, "hidden": 32, "lr": 1e-2, "steps": 2000, "nodes": 32, "grid": 8001}
QUICK = {"seeds": 2, "n_train": 128, "hidden": 32, "lr": 1e-2, "steps": 1000, "nodes": 32, "grid": 4001}


def compute(cfg: Config, ctx: Context) -> Metrics:
    """Per seed: fit the JacNet and the MLP, then measure their Lipschitz constants on the grid."""
    grid = box_grid(-2.0, 2.0, cfg["grid"], 1)
    truth = grid.abs()
    runs: list[dict[str, Any]] = []
    with threads(1):
        for seed in range(cfg["seeds"]):
            gen = ctx.generator(100 * seed)
            x = 4.0 * torch.rand(cfg["n_train"], 1, generator=gen, dtype=DTYPE) - 2.0
            y = x.abs()
            net = JacNet(
                1,
                Lipschitz(k=K),
                hidden=(cfg["hidden"], cfg["hidden"]),
                nodes=cfg["nodes"],
                quadrature_tol=None,  # trained with the fixed rule, evaluated with the adaptive one
                generator=ctx.generator(100 * seed + 1),
            ).to(DTYPE)
            mlp = matched_mlp(1, 1, param_count(net), ctx.generator(100 * seed + 2))
            for model, name in ((net, "JacNet"), (mlp, "MLP")):
                fit(_mse(model, x, y), model, steps=cfg["steps"], lr=cfg["lr"], ctx=ctx, desc=f"{name} {seed}")
            for_evaluation(net)
            with torch.no_grad():
                f_net, f_mlp = net(grid), mlp(grid)
                jac = net.jacobian(grid)[:, 0, 0]
                est = net.forward_with_error(grid)
            runs.append(
                {
                    "lipschitz_jacnet": grid_lipschitz(f_net[:, 0], grid[:, 0]),
                    "lipschitz_mlp": grid_lipschitz(f_mlp[:, 0], grid[:, 0]),
                    "max_abs_jacobian": float(jac.abs().max()),
                    "rmse_jacnet": float(((f_net - truth) ** 2).mean().sqrt()),
                    "rmse_mlp": float(((f_mlp - truth) ** 2).mean().sqrt()),
                    "quadrature_error_estimate": est.max_error,
                    "params_jacnet": param_count(net),
                    "params_mlp": param_count(mlp),
                }
            )
            if seed == 0:
                d_mlp = torch.gradient(f_mlp[:, 0], spacing=(grid[:, 0],))[0]
                first = {"grid": grid[:, 0], "jacnet": f_net[:, 0], "mlp": f_mlp[:, 0], "jacobian": jac, "d_mlp": d_mlp}
    return {
        "runs": runs,
        "lipschitz_jacnet_max": max(r["lipschitz_jacnet"] for r in runs),
        "lipschitz_mlp_max": max(r["lipschitz_mlp"] for r in runs),
        "mlp_exceeds_k_in_seeds": sum(r["lipschitz_mlp"] > K for r in runs),
        "_seed0": first,
    }


def claims(m: Metrics, cfg: Config) -> list[Claim]:
    # The value is L - k (at most 0 needed), which a 4-digit table shows better than L itself (0.99999 -> "1").
    return [
        Claim.at_most("JacNet: grid Lipschitz constant minus k (max over seeds)", m["lipschitz_jacnet_max"] - K, 0.0)
    ]


def notes(m: Metrics, cfg: Config) -> str:
    exceeded = m["mlp_exceeds_k_in_seeds"]
    return (
        f"The unconstrained MLP {'exceeds' if exceeded else 'stays within'} k = {K:g}: its grid Lipschitz constant "
        f"reaches {m['lipschitz_mlp_max']:.4g} (max over {len(m['runs'])} seeds) and is above k in {exceeded} of "
        f"them. JacNet: at most {m['lipschitz_jacnet_max']:.6g}."
    )


def plots(plt: Any, m: Metrics, cfg: Config) -> dict[str, Any]:
    c = m["_seed0"]
    g = c["grid"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    axes[0].plot(g, g.abs(), "k-", lw=3, alpha=0.3, label="|x|")
    axes[0].plot(g, c["jacnet"], "C0-", label="JacNet, Lipschitz(k=1)")
    axes[0].plot(g, c["mlp"], "C1--", label="MLP")
    axes[0].set(title="fit (seed 0)", xlabel="x")
    axes[0].legend()
    axes[1].plot(g, torch.sign(g), "k-", lw=3, alpha=0.3, label="sign(x)")
    axes[1].plot(g, c["jacobian"], "C0-", label="JacNet J(x)")
    axes[1].plot(g, c["d_mlp"], "C1--", label="MLP derivative")
    axes[1].axhline(K, color="C3", ls=":", label="±k")
    axes[1].axhline(-K, color="C3", ls=":")
    axes[1].set(title="derivatives (seed 0)", xlabel="x")
    axes[1].legend()
    return {"jacnet_lipschitz": fig}


EXPERIMENT = register(
    Experiment(
        "jacnet-lipschitz",
        paper="JacNet: Learning Functions with Structured Jacobians (Lorraine & Hossain, 2019)",
        summary="A JacNet with Lipschitz(k=1) learns |x|: its Lipschitz constant on a dense grid is at most 1 "
        "(an unconstrained MLP of the same size is reported)",
        full=FULL,
        quick=QUICK,
        compute=compute,
        claims=claims,
        plots=plots,
        notes=notes,
        figures=("jacnet_lipschitz",),
    )
)
