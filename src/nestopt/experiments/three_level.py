"""Three levels: the proximal strength of task adaptation, above meta-learning an initialization, above adaptation.

* level 3 (each task): ``K`` gradient steps on :math:`L_s(\\phi) + \\tfrac{e^{\\rho}}{2}\\|\\phi - \\theta\\|^2` from
  :math:`\\phi_0 = \\theta` (iMAML's proximal regularizer, unrolled);
* level 2: the meta-initialization :math:`\\theta^*(\\rho) = \\arg\\min_\\theta M(\\theta, \\rho)`, the mean query loss of
  the adapted weights over the training tasks (plus a small ridge);
* level 1: the log proximal strength :math:`\\rho`, judged by the same mean query loss over held-out tasks,
  :math:`V(\\rho) = \\tfrac1m \\sum_j L_{q,j}(\\phi_j(\\theta^*(\\rho), \\rho))`: the level-2 problem's validation loss.

The pattern: level 3 is written with :func:`nestopt.hypergrad.unrolled_solution`, which keeps the unroll in the
graph, so :math:`M` is an ordinary loss ``(params=theta, hparams={rho}, batch=tasks)``, twice differentiable;
level 2 is then the inner problem of an ordinary bilevel problem, and the top-level hypergradient is
``hypergrad.implicit(M, V, theta_star, {rho}, train_tasks, val_tasks)``: the direct term :math:`\\partial V /
\\partial\\rho` (through the held-out tasks' adaptation) plus the implicit VJP of :math:`\\theta^*` (Hessian-vector
products of :math:`M` through every task's unroll). Each level adds one VJP.

The model is linear in fixed random Fourier features of the input, so that :math:`M` is quadratic in
:math:`\\theta` for a fixed :math:`\\rho` and Newton's method solves level 2 to machine precision: the
finite-difference check of :math:`dV/d\\rho` needs :math:`\\theta^*(\\rho \\pm \\varepsilon)` exactly.
"""

from __future__ import annotations

from typing import Any

import torch

from nestopt import autodiff, hypergrad, linalg, meta, tree
from nestopt.experiments._meta_common import MAML_PAPERS
from nestopt.experiments.registry import Claim, Config, Context, Experiment, Metrics, register
from nestopt.optim import functional
from nestopt.tree import Tree

__all__: list[str] = []

FULL = {"features": 12, "train_tasks": 16, "val_tasks": 16, "shots": 10, "queries": 10, "inner_steps": 5,
        "inner_lr": 0.1, "ridge": 1e-3, "log_prox0": 2.0, "outer_steps": 30, "outer_lr": 0.3, "fd_eps": 1e-4,
        "grid": [-4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]}  # fmt: skip
QUICK = {**FULL, "features": 8, "train_tasks": 4, "val_tasks": 4, "outer_steps": 6, "grid": [-1.0, 1.0]}
D = torch.float64


class _Problem:
    """The three levels of the module docstring, as nestopt losses of ``(theta, {"log_prox": rho}, tasks)``."""

    def __init__(self, cfg: Config, ctx: Context) -> None:
        g, f = ctx.generator(), cfg["features"]
        omega, shift = 1.5 * torch.randn(f, generator=g, dtype=D), 2 * torch.pi * torch.rand(f, generator=g, dtype=D)
        feat = lambda x: torch.cos(x * omega + shift)
        family = meta.Sinusoid(shots=cfg["shots"], queries=cfg["queries"], dtype=D)

        def tasks(n: int, seed: int) -> meta.TaskBatch:
            t = family.sample(n, seed=seed)
            return meta.TaskBatch(feat(t.support_x), t.support_y, feat(t.query_x), t.query_y)

        self.train, self.val = tasks(cfg["train_tasks"], ctx.seed + 1), tasks(cfg["val_tasks"], ctx.seed + 2)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)
            self.model = torch.nn.Linear(f, 1).to(D)
        self.theta0 = tree.detach(dict(self.model.named_parameters()))
        self.steps, self.ridge = cfg["inner_steps"], cfg["ridge"]
        self.optimizer = functional.sgd(lr=cfg["inner_lr"])

    def mse(self, p: Tree, batch: Any) -> torch.Tensor:
        x, y = batch
        return ((meta.bind(self.model, p)(x) - y) ** 2).mean()

    def adaptation_loss(self, p: Tree, h: Tree, batch: Any) -> torch.Tensor:  # level 3; h holds theta and rho
        prox = torch.stack([((p[k] - h[k]) ** 2).sum() for k in p]).sum()
        return self.mse(p, batch) + 0.5 * h["log_prox"].exp() * prox

    def validation(self, theta: Tree, h: Tree, tasks: meta.TaskBatch) -> torch.Tensor:
        """Mean query loss after adaptation: level 2's data term, and level 1's objective on held-out tasks."""
        losses = []
        for task in tasks:
            phi = hypergrad.unrolled_solution(
                self.adaptation_loss, theta, {**theta, "log_prox": h["log_prox"]}, [task.support] * self.steps,
                optimizer=self.optimizer, steps=self.steps,
            )  # fmt: skip
            losses.append(self.mse(phi, task.query))
        return torch.stack(losses).mean()

    def level2(self, theta: Tree, h: Tree, tasks: meta.TaskBatch) -> torch.Tensor:
        ridge = torch.stack([(v**2).sum() for v in theta.values()]).sum()
        return self.validation(theta, h, tasks) + 0.5 * self.ridge * ridge

    def solve(self, h: Tree, start: Tree) -> tuple[Tree, float]:
        """Level 2 by Newton's method on the exact Hessian (quadratic in theta: converges in one step)."""
        theta = tree.clone(start)
        for _ in range(4):
            lin = autodiff.linearize(self.level2, theta, tree.detach(h), self.train)
            grad_norm = float(tree.norm(lin.grad))
            if grad_norm < 1e-12:
                break
            hess = linalg.materialize(linalg.LinearOperator.hessian(lin))
            vec, spec = tree.flatten(theta)
            theta = tree.unflatten(vec - torch.linalg.solve(hess, tree.flatten(lin.grad)[0]), spec)
        return theta, grad_norm

    def value(self, log_prox: float, start: Tree) -> tuple[float, Tree]:
        h = {"log_prox": torch.tensor(log_prox, dtype=D)}
        theta, _ = self.solve(h, start)
        with torch.no_grad():
            return float(self.validation(theta, h, self.val)), theta

    def hypergradient(self, h: Tree, theta: Tree, solver: linalg.Solver) -> hypergrad.HypergradResult:
        return hypergrad.implicit(self.level2, self.validation, theta, h, self.train, self.val, solver=solver)


def compute(cfg: Config, ctx: Context) -> Metrics:
    """Finite differences of the top-level hypergradient, then tuning the proximal strength by it."""
    prob = _Problem(cfg, ctx)
    rho0 = cfg["log_prox0"]
    h = {"log_prox": torch.tensor(rho0, dtype=D, requires_grad=True)}
    theta, grad_norm = prob.solve(h, prob.theta0)
    exact = prob.hypergradient(h, theta, linalg.Exact())
    eps = cfg["fd_eps"]
    fd = (prob.value(rho0 + eps, theta)[0] - prob.value(rho0 - eps, theta)[0]) / (2 * eps)
    analytic = float(exact.grads["log_prox"])

    opt = torch.optim.Adam([h["log_prox"]], lr=cfg["outer_lr"])
    trajectory = [{"log_prox": rho0, "val_loss": exact.info.outer_loss, "hypergradient": analytic}]
    for _ in ctx.progress(range(cfg["outer_steps"]), "outer steps"):
        res = prob.hypergradient(h, theta, linalg.CG(steps=cfg["features"] + 1, tol=1e-12))
        opt.zero_grad()
        h["log_prox"].grad = res.grads["log_prox"]
        opt.step()
        theta, _ = prob.solve(h, theta)  # warm-started
        trajectory.append(
            {
                "log_prox": float(h["log_prox"].detach()),
                "val_loss": float("nan"),
                "hypergradient": float(res.grads["log_prox"]),
            }
        )
        trajectory[-2]["val_loss"] = res.info.outer_loss
    final, _ = prob.value(float(h["log_prox"].detach()), theta)
    trajectory[-1]["val_loss"] = final
    grid = [{"log_prox": r, "val_loss": prob.value(r, theta)[0]} for r in ctx.progress(cfg["grid"], "grid")]
    return {
        "log_prox0": rho0,
        "level2_grad_norm": grad_norm,
        "hypergradient": analytic,
        "finite_difference": fd,
        "relative_error": abs(analytic - fd) / abs(fd),
        "solve_status": exact.info.status.value,
        "hvp_calls": exact.info.hvp_calls,
        "val_loss_initial": trajectory[0]["val_loss"],
        "val_loss_tuned": final,
        "log_prox_tuned": float(h["log_prox"].detach()),
        "trajectory": trajectory,
        "grid": grid,
    }


def claims(m: Metrics, cfg: Config) -> list[Claim]:
    return [
        Claim.at_most(
            f"top-level hypergradient vs central differences (eps {cfg['fd_eps']:g}), relative error",
            m["relative_error"],
            1e-5,
        ),
        Claim.at_most(
            f"tuning the proximal strength ({cfg['outer_steps']} Adam steps) lowers the level-2 validation loss "
            f"from {m['val_loss_initial']:.4g}",
            m["val_loss_tuned"],
            m["val_loss_initial"],
        ),
    ]


def plots(plt: Any, m: Metrics, cfg: Config) -> dict[str, Any]:
    fig, ax = plt.subplots(figsize=(6.2, 4.0))
    grid = sorted(m["grid"], key=lambda p: p["log_prox"])
    ax.plot(
        [p["log_prox"] for p in grid], [p["val_loss"] for p in grid], "o-", color="0.6", label="V(rho), level 2 solved"
    )
    traj = m["trajectory"]
    ax.plot(
        [p["log_prox"] for p in traj],
        [p["val_loss"] for p in traj],
        ".-",
        color="C0",
        label="tuning by the hypergradient",
    )
    ax.scatter([traj[0]["log_prox"]], [traj[0]["val_loss"]], color="C3", zorder=3, label="start")
    ax.set_xlabel("log proximal strength rho (level 1)")
    ax.set_ylabel("held-out query MSE after adaptation")
    ax.set_yscale("log")
    ax.set_title(f"three levels: hypergradient rel. error {m['relative_error']:.1e} vs finite differences")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return {"three_level": fig}


EXPERIMENT = register(
    Experiment(
        "three-level",
        paper=MAML_PAPERS,
        summary=(
            "A hyperparameter above a bilevel problem (the proximal strength of task adaptation, above meta-learning "
            "an initialization): its hypergradient, composed of an unrolled level in the graph and an implicit one, "
            "matches finite differences to 1e-5 in float64, and tuning it lowers the level-2 validation loss."
        ),
        full=FULL,
        quick=QUICK,
        compute=compute,
        claims=claims,
        plots=plots,
        figures=("three_level",),
    )
)
