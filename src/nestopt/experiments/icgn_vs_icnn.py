"""Input Convex Gradient Networks (2021): a one-layer ICGN against the gradient of a one-layer ICNN.

Two convex gradients in the plane are fitted by regression on samples, over several seeds, by a one-layer ICGN
and by the gradient of a one-layer ICNN with at least as many parameters, trained the same way (full-batch
Adam on the mean squared error of the vector field):

* ``convex``: :math:`\\nabla\\psi` for :math:`\\psi(x) = \\log\\sum_j \\exp(a_j^\\top x + c_j) + \\tfrac14 |x|^2`,
  samples uniform on :math:`[-2, 2]^2`, error on a grid. ICGN activation: the paper's sigmoid.
* ``gaussian-ot``: the optimal transport map between :math:`N(m_1, \\Sigma_1)` and :math:`N(m_2, \\Sigma_2)`,
  :math:`T(x) = m_2 + M (x - m_1)` with :math:`M = \\Sigma_1^{-1/2} (\\Sigma_1^{1/2} \\Sigma_2 \\Sigma_1^{1/2})^{1/2}
  \\Sigma_1^{-1/2}` (:func:`gaussian_ot_map`), samples from the source, error on fresh source samples. ICGN
  activation: softplus, since a bounded field (sigmoid) cannot push a Gaussian onto a Gaussian.

The error is the relative mean squared error :math:`E|g - T|^2 / E|T - E T|^2`. Claim, per task: the mean
error of the ICGN over seeds is below the ICNN's (value: the ratio of the means; spreads in the metrics). Also
checked: the trained one-layer ICGN's Jacobian is symmetric (an exact gradient field); a two-layer ICGN's
asymmetry is reported. The full run adds the ablation with the other ICGN activation on each task.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import torch
from torch import Tensor, nn

from nestopt.experiments._jacobian_common import DTYPE, box_grid, fit, for_evaluation, param_count
from nestopt.experiments.registry import Claim, Config, Context, Experiment, Metrics, register
from nestopt.jacobian import ICGN, ICNN
from nestopt.profile import threads

__all__ = ["ASYMMETRY_MAX", "TASKS", "convex_gradient", "gaussian_ot_map"]

ASYMMETRY_MAX = 1e-8
"""Largest accepted relative asymmetry of the one-layer ICGN's Jacobian (exact up to rounding)."""

TASKS = {"convex": "sigmoid", "gaussian-ot": "softplus"}
"""Task name -> the ICGN activation used for it (see the module docstring)."""

_A = torch.tensor([[1.0, 1.0], [-1.0, 0.5], [0.5, -1.5]], dtype=DTYPE)
_C = torch.tensor([0.0, 0.5, -0.5], dtype=DTYPE)
_M1, _S1 = torch.tensor([0.0, 0.0], dtype=DTYPE), torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=DTYPE)
_M2, _S2 = torch.tensor([1.0, -0.5], dtype=DTYPE), torch.tensor([[2.0, -0.6], [-0.6, 0.8]], dtype=DTYPE)


def convex_gradient(x: Tensor) -> Tensor:
    """:math:`\\nabla\\psi(x) = A^\\top \\mathrm{softmax}(Ax + c) + x/2`, the gradient of the convex test function."""
    return torch.softmax(x @ _A.T + _C, -1) @ _A + 0.5 * x


def _sqrtm(s: Tensor) -> Tensor:
    w, v = torch.linalg.eigh(s)
    return (v * w.clamp_min(0).sqrt()) @ v.mT


def gaussian_ot_map(m1: Tensor, s1: Tensor, m2: Tensor, s2: Tensor) -> tuple[Tensor, Tensor]:
    """The optimal transport map :math:`T(x) = Mx + b` from :math:`N(m_1, \\Sigma_1)` to :math:`N(m_2, \\Sigma_2)`.

    .. math::  M = \\Sigma_1^{-1/2} \\big(\\Sigma_1^{1/2} \\Sigma_2 \\Sigma_1^{1/2}\\big)^{1/2} \\Sigma_1^{-1/2},
               \\qquad b = m_2 - M m_1

    :math:`M` is symmetric positive definite (so :math:`T` is the gradient of a convex quadratic) and
    :math:`M \\Sigma_1 M = \\Sigma_2`.

    Example:
        >>> s1, s2 = torch.eye(2, dtype=torch.float64), 4 * torch.eye(2, dtype=torch.float64)
        >>> M, b = gaussian_ot_map(torch.zeros(2, dtype=torch.float64), s1, torch.ones(2, dtype=torch.float64), s2)
        >>> M.diagonal().tolist(), b.tolist()
        ([2.0, 2.0], [1.0, 1.0])
    """
    r1 = _sqrtm(s1)
    r1_inv = torch.linalg.inv(r1)
    m = r1_inv @ _sqrtm(r1 @ s2 @ r1) @ r1_inv
    m = 0.5 * (m + m.mT)
    return m, m2 - m @ m1


def _task_target(x: Tensor) -> Tensor:
    m, b = gaussian_ot_map(_M1, _S1, _M2, _S2)
    return x @ m.mT + b


def _task_data(task: str, cfg: dict[str, Any], gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if task == "convex":
        x = 4.0 * torch.rand(cfg["n_train"], 2, generator=gen, dtype=DTYPE) - 2.0
        xt = box_grid(-2.0, 2.0, cfg["grid"], 2)
        return x, convex_gradient(x), xt, convex_gradient(xt)
    m, b = gaussian_ot_map(_M1, _S1, _M2, _S2)
    chol = torch.linalg.cholesky(_S1)
    x = _M1 + torch.randn(cfg["n_train"], 2, generator=gen, dtype=DTYPE) @ chol.mT
    xt = _M1 + torch.randn(cfg["grid"] ** 2, 2, generator=gen, dtype=DTYPE) @ chol.mT
    return x, x @ m.mT + b, xt, xt @ m.mT + b


def _rel_error(pred: Tensor, target: Tensor) -> float:
    return float(((pred - target) ** 2).sum(-1).mean() / ((target - target.mean(0)) ** 2).sum(-1).mean())


def _icnn_width(target_params: int, dim: int) -> int:
    """The smallest one-layer ICNN width with at least ``target_params`` parameters (``m (d + 2) + d + 1``)."""
    return max(1, math.ceil((target_params - dim - 1) / (dim + 2)))


def _train_field(
    model: nn.Module, field: Any, x: Tensor, y: Tensor, cfg: dict[str, Any], ctx: Context, desc: str
) -> None:
    fit(lambda: ((field(x) - y) ** 2).sum(-1).mean(), model, steps=cfg["steps"], lr=cfg["lr"], ctx=ctx, desc=desc)


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def _plot_points(task: str) -> Tensor:
    """Where the fields are drawn: a 17 x 17 grid on the box, or on the source Gaussian's bulk (Mahalanobis <= 2.5)."""
    if task == "convex":
        return box_grid(-2.0, 2.0, 17, 2)
    sd = _S1.diagonal().sqrt()
    pts = _M1 + box_grid(-2.5, 2.5, 17, 2) * sd
    diff = pts - _M1
    maha = (diff @ torch.linalg.inv(_S1) * diff).sum(-1)
    return pts[maha <= 2.5**2]


FULL = {
    "seeds": 8,
    "n_train": 256,
    "hidden": 32,
    "deep_hidden": 16,
    "nodes": 8,
    "lr": 1e-2,
    "steps": 2000,
    "deep_steps": 2000,
    "grid": 41,
    "ablation": True,
}
QUICK = {**FULL, "seeds": 3, "steps": 1000, "deep_steps": 300, "grid": 25, "ablation": False}


def _deep_icgn(x: Tensor, y: Tensor, xt: Tensor, yt: Tensor, act: str, cfg: Config, ctx: Context, base: int) -> dict:
    """A two-layer ICGN on the convex task: its error and how far its Jacobian is from symmetric."""
    deep = ICGN(
        2, (cfg["deep_hidden"], cfg["deep_hidden"]), activation=act, nodes=cfg["nodes"], quadrature_tol=None,
        generator=ctx.generator(base),
    ).to(DTYPE)  # fmt: skip
    _train_field(deep, deep, x, y, {**cfg, "steps": cfg["deep_steps"]}, ctx, "convex deep ICGN")
    for_evaluation(deep)
    check = deep.integrability(xt)
    return {
        "hidden": [cfg["deep_hidden"], cfg["deep_hidden"]],
        "steps": cfg["deep_steps"],
        "params": param_count(deep),
        "rel_error": _rel_error(deep(xt).detach(), yt),
        "asymmetry_mean": float(check.asymmetry.mean()),
        "asymmetry_max": float(check.asymmetry.max()),
        "min_eig_sym_jacobian": float(check.min_eigenvalue.min()),
    }


def _task(task: str, t_idx: int, cfg: Config, ctx: Context, metrics: Metrics) -> tuple[dict, float, dict]:
    """Fit one task over the seeds; returns its metrics, the worst ICGN asymmetry, and the fields to draw."""
    act = TASKS[task]
    other = "softplus" if act != "softplus" else "sigmoid"
    errs: dict[str, list[float]] = {"icgn": [], "icnn": [], "icgn_other_activation": []}
    info: dict[str, Any] = {"icgn_activation": act, "icgn_min_eig_sym_jacobian": math.inf}
    worst_asym, panel = 0.0, {}
    for seed in range(cfg["seeds"]):
        base = 1000 * t_idx + 10 * seed
        x, y, xt, yt = _task_data(task, cfg, ctx.generator(base))
        icgn = ICGN(2, cfg["hidden"], activation=act, nodes=cfg["nodes"], quadrature_tol=None,
                    generator=ctx.generator(base + 1)).to(DTYPE)  # fmt: skip
        icnn = ICNN(2, _icnn_width(param_count(icgn), 2), generator=ctx.generator(base + 2)).to(DTYPE)
        _train_field(icgn, icgn, x, y, cfg, ctx, f"{task} ICGN {seed}")
        _train_field(icnn, icnn.gradient, x, y, cfg, ctx, f"{task} ICNN {seed}")
        for_evaluation(icgn)
        errs["icgn"].append(_rel_error(icgn(xt).detach(), yt))
        errs["icnn"].append(_rel_error(icnn.gradient(xt).detach(), yt))
        check = icgn.integrability(xt)
        worst_asym = max(worst_asym, float(check.asymmetry.max()))
        info["icgn_min_eig_sym_jacobian"] = min(info["icgn_min_eig_sym_jacobian"], float(check.min_eigenvalue.min()))
        info["params_icgn"], info["params_icnn"] = param_count(icgn), param_count(icnn)
        if cfg["ablation"]:
            alt = ICGN(2, cfg["hidden"], activation=other, nodes=cfg["nodes"], quadrature_tol=None,
                       generator=ctx.generator(base + 1)).to(DTYPE)  # fmt: skip
            _train_field(alt, alt, x, y, cfg, ctx, f"{task} ICGN-{other} {seed}")
            for_evaluation(alt)
            errs["icgn_other_activation"].append(_rel_error(alt(xt).detach(), yt))
        if seed == 0:
            pts = _plot_points(task)
            truth = convex_gradient(pts) if task == "convex" else _task_target(pts)
            with torch.no_grad():
                panel = {"truth": (pts, truth), "ICGN": (pts, icgn(pts)), "ICNN": (pts, icnn.gradient(pts))}
            if task == "convex":
                metrics["deep_icgn"] = _deep_icgn(x, y, xt, yt, act, cfg, ctx, base + 3)
    info["icgn"], info["icnn"] = _summary(errs["icgn"]), _summary(errs["icnn"])
    info["per_seed"] = {k: v for k, v in errs.items() if v}
    if errs["icgn_other_activation"]:
        info["ablation"] = {"icgn_activation": other, **_summary(errs["icgn_other_activation"])}
    return info, worst_asym, panel


def compute(cfg: Config, ctx: Context) -> Metrics:
    """Both tasks over the seeds: errors of the ICGN and the ICNN, the ICGN's Jacobian checks, the fields."""
    metrics: Metrics = {}
    panels: dict[str, dict[str, tuple[Tensor, Tensor]]] = {}
    worst_asym = 0.0
    with threads(1):
        for t_idx, task in enumerate(TASKS):
            metrics[task], asym, panels[task] = _task(task, t_idx, cfg, ctx, metrics)
            worst_asym = max(worst_asym, asym)
    metrics["one_layer_icgn_max_asymmetry"] = worst_asym
    metrics["_panels"] = panels
    return metrics


def _ratio_claim(task: str, info: dict[str, Any], cfg: Config) -> Claim:
    ratio = info["icgn"]["mean"] / info["icnn"]["mean"]
    detail = (
        f"mean relative error over {cfg['seeds']} seeds: ICGN ({info['icgn_activation']}, {info['params_icgn']} "
        f"params) {info['icgn']['mean']:.3g} ± {info['icgn']['std']:.2g} vs ICNN ({info['params_icnn']} params) "
        f"{info['icnn']['mean']:.3g} ± {info['icnn']['std']:.2g}; ratio {ratio:.3g} < 1 needed"
    )
    return Claim(f"{task}: mean error ICGN / ICNN", ratio < 1.0, ratio, 1.0, detail)


def claims(m: Metrics, cfg: Config) -> list[Claim]:
    return [_ratio_claim(task, m[task], cfg) for task in TASKS] + [
        Claim.at_most("one-layer ICGN: max relative asymmetry of Dg", m["one_layer_icgn_max_asymmetry"], ASYMMETRY_MAX)
    ]


def notes(m: Metrics, cfg: Config) -> str:
    text = " ".join(_ratio_claim(task, m[task], cfg).detail + "." for task in TASKS)
    if "deep_icgn" in m:
        d = m["deep_icgn"]
        text += (
            f" Two-layer ICGN (not integrable by construction) on the convex task: relative error {d['rel_error']:.3g}, "
            f"Jacobian asymmetry mean {d['asymmetry_mean']:.3g}, max {d['asymmetry_max']:.3g}."
        )
    for task in TASKS:
        if "ablation" in m[task]:
            a = m[task]["ablation"]
            text += f" Ablation, {task} with a {a['icgn_activation']} ICGN: {a['mean']:.3g} ± {a['std']:.2g}."
    return text


def plots(plt: Any, m: Metrics, cfg: Config) -> dict[str, Any]:
    panels = m["_panels"]
    fig, axes = plt.subplots(len(panels), 3, figsize=(16.5, 4.6 * len(panels)), squeeze=False)
    for row, (task, fields) in enumerate(panels.items()):
        pts, truth = fields["truth"]
        vmax = max(float((fields[n][1] - truth).norm(dim=-1).max()) for n in ("ICGN", "ICNN"))
        for col, name in enumerate(("truth", "ICGN", "ICNN")):
            ax = axes[row][col]
            vec = fields[name][1]
            if name != "truth":
                err = (vec - truth).norm(dim=-1)
                sc = ax.scatter(pts[:, 0], pts[:, 1], c=err, cmap="Reds", s=30, vmin=0, vmax=vmax)
                fig.colorbar(sc, ax=ax, label="|g(x) - truth(x)|")
                ax.quiver(pts[:, 0], pts[:, 1], truth[:, 0], truth[:, 1], color="0.65", angles="xy", width=0.005)
            color = "k" if name == "truth" else "C0"
            ax.quiver(pts[:, 0], pts[:, 1], vec[:, 0], vec[:, 1], color=color, angles="xy", width=0.003)
            ax.set_title(f"{task}: {name}" + ("" if name == "truth" else " (blue), truth (gray)"), fontsize=10)
            ax.set_aspect("equal")
    return {"icgn_vs_icnn_fields": fig}


EXPERIMENT = register(
    Experiment(
        "icgn-vs-icnn",
        paper="Input Convex Gradient Networks (Richter-Powell, Lorraine & Amos, 2021); ICNN (Amos et al., 2017)",
        summary="A one-layer ICGN fits a convex gradient and a Gaussian optimal transport map with lower error "
        "than the gradient of a one-layer ICNN with as many parameters (mean over seeds)",
        full=FULL,
        quick=QUICK,
        compute=compute,
        claims=claims,
        plots=plots,
        notes=notes,
        figures=("icgn_vs_icnn_fields",),
    )
)
