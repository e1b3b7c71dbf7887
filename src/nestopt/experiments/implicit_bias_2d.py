"""Two synthetic points, one overparameterized classifier: cold and warm start fit the points differently.

The picture of Vicol et al. (2022, figure 2): dataset distillation of a 2-D data set (two moons) into two
learned points, one per class. The inner problem trains an MLP on the two points alone; the outer loss is its
cross-entropy on the real points. An MLP can fit two points with countless decision boundaries, so the
boundary reached is the solvers' choice: cold start (the MLP restarts from the same initialization every
outer step) gives the boundary that ``K`` steps from that initialization draw through the final points; warm
start (the MLP keeps training across outer steps while the points move) gives one shaped by the whole path of
the points. Both runs take the same ``K`` unrolled steps per outer step and the same number of outer steps
(equal compute). Claims: each final classifier fits the points it was last trained on; the two boundaries
disagree on a clear share of the real points.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import Tensor

from nestopt import data, hparams, hypergrad
from nestopt.bilevel import BilevelTrainer
from nestopt.experiments._implicit_bias import PAPER
from nestopt.experiments.registry import Claim, Config, Context, Experiment, Metrics, register
from nestopt.nets import mlp
from nestopt.optim import functional
from nestopt.profile import threads

FULL = {
    "n_train": 300,
    "n_test": 300,
    "noise": 0.1,
    "hidden": 64,
    "unroll_steps": 10,
    "inner_lr": 0.2,
    "outer_lr": 0.05,
    "outer_steps": 300,
    "grid": 120,
    "threads": 1,
}
QUICK = {**FULL, "outer_steps": 120, "grid": 60}
CE = torch.nn.functional.cross_entropy


def two_moons(n: int, noise: float, gen: torch.Generator) -> data.Split:
    """Two interleaved half circles with Gaussian noise, standardized to about unit scale."""
    t = math.pi * torch.rand(n, generator=gen)
    y = torch.randint(2, (n,), generator=gen)
    upper = torch.stack([torch.cos(t), torch.sin(t)], 1)
    lower = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], 1)
    x = torch.where(y[:, None] == 1, lower, upper) + noise * torch.randn(n, 2, generator=gen)
    return data.Split((x - torch.tensor([0.5, 0.25])) / torch.tensor([0.87, 0.5]), y)


def _solve(train: data.Split, cfg: Config, seed: int, warm_start: bool) -> dict[str, Any]:
    """One distillation run; returns the final weights' model, the points they were trained on, the path of
    the points and the trainer."""
    family = hparams.DistilledData(1, (2,), 2, init=torch.tensor([[-0.5, 0.3], [0.5, -0.3]]))
    h = cfg["hidden"]
    net = mlp([2, h, h, 2], "tanh", generator=torch.Generator().manual_seed(seed))
    trainer = BilevelTrainer(
        net,
        CE,
        [family],
        hypergrad=hypergrad.Unrolled(optimizer=functional.sgd(lr=cfg["inner_lr"]), steps=cfg["unroll_steps"]),
        outer_optimizer=functools.partial(torch.optim.Adam, lr=cfg["outer_lr"]),
        warm_start=warm_start,
        seed=seed,
    )
    path = [trainer.hparams["distilled/x"].detach().clone()]
    trainer.fit(
        data.Loader(train, 2),
        data.Loader(train, len(train), shuffle=False),
        outer_steps=cfg["outer_steps"],
        eval_every=cfg["outer_steps"],
        progress=False,
        callback=lambda t, r: path.append(t.hparams["distilled/x"].detach().clone()),
    )
    # the final weights were trained on the points as they were before the last outer update
    return {"net": net, "points": path[-2], "path": torch.stack(path), "trainer": trainer}


@torch.no_grad()
def _predict(net: torch.nn.Module, x: Tensor) -> Tensor:
    return net.eval()(x).argmax(-1)


def compute(cfg: Config, ctx: Context) -> Metrics:
    """Cold and warm start on the same data, initialization and budget; their classifiers on the real data."""
    with threads(cfg["threads"]):
        gen = ctx.generator(1)
        train, test = two_moons(cfg["n_train"], cfg["noise"], gen), two_moons(cfg["n_test"], cfg["noise"], gen)
        runs = {name: _solve(train, cfg, ctx.seed, warm) for name, warm in (("cold", False), ("warm", True))}
        labels = torch.arange(2)
        k = cfg["unroll_steps"]
        out: Metrics = {}
        for name, r in runs.items():
            pred = _predict(r["net"], test.x)
            retrained = r["trainer"].retrain(data.Loader(train, 2), steps=k, test=data.Loader(test, len(test)))
            out[name] = {
                "fits_its_points": bool(torch.equal(_predict(r["net"], r["points"]), labels)),
                "test_accuracy": float((pred == test.y).float().mean()),
                "retrained_test_accuracy": retrained["test_accuracy"],
                "points": r["points"],
                "path_length": float((r["path"][1:] - r["path"][:-1]).norm(dim=-1).sum()),
            }
        disagreement = float(
            (_predict(runs["cold"]["net"], test.x) != _predict(runs["warm"]["net"], test.x)).float().mean()
        )
        lo, hi = float(test.x.min()) - 0.5, float(test.x.max()) + 0.5
        axis = torch.linspace(lo, hi, cfg["grid"])
        gx, gy = torch.meshgrid(axis, axis, indexing="xy")
        grid = torch.stack([gx.flatten(), gy.flatten()], 1)
        with torch.no_grad():
            surfaces = {n: torch.softmax(r["net"].eval()(grid), -1)[:, 1].reshape(gx.shape) for n, r in runs.items()}
    return {
        **out,
        "disagreement_on_test": disagreement,
        "_plot": {"axis": axis, "surfaces": surfaces, "test": test, "paths": {n: r["path"] for n, r in runs.items()}},
    }


def claims(m: Metrics, cfg: Config) -> list[Claim]:
    return [
        Claim.holds(
            "cold start: the final classifier fits the two synthetic points it was trained on",
            m["cold"]["fits_its_points"],
        ),
        Claim.holds(
            "warm start: the final classifier fits the two synthetic points it was trained on",
            m["warm"]["fits_its_points"],
        ),
        Claim.at_least(
            "the two boundaries differ on the real data: share of test points they classify differently",
            m["disagreement_on_test"],
            0.05,
        ),
    ]


def notes(m: Metrics, cfg: Config) -> str:
    c, w = m["cold"], m["warm"]
    return (
        f"Test accuracy on the real points: cold start {c['test_accuracy']:.3f}, warm start {w['test_accuracy']:.3f}; "
        f"a fresh network trained {cfg['unroll_steps']} steps on the final points: {c['retrained_test_accuracy']:.3f} "
        f"(cold start's), {w['retrained_test_accuracy']:.3f} (warm start's). The points travelled {c['path_length']:.2f} "
        f"(cold) and {w['path_length']:.2f} (warm); the boundaries disagree on {m['disagreement_on_test']:.1%} of the "
        "test points."
    )


def plots(plt: Any, m: Metrics, cfg: Config) -> dict[str, Any]:
    p = m["_plot"]
    axis, test = p["axis"].numpy(), p["test"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), sharey=True)
    for ax, name in zip(axes, ("cold", "warm")):
        ax.contourf(axis, axis, p["surfaces"][name].numpy(), levels=20, cmap="RdBu_r", alpha=0.35)
        ax.contour(axis, axis, p["surfaces"][name].numpy(), levels=[0.5], colors="k", linewidths=1.5)
        for c, color in ((0, "tab:blue"), (1, "tab:red")):
            pts = test.x[test.y == c]
            ax.scatter(pts[:, 0], pts[:, 1], s=8, color=color, alpha=0.6)
        path = p["paths"][name]
        for c, color in ((0, "navy"), (1, "darkred")):
            ax.plot(path[:, c, 0], path[:, c, 1], color=color, lw=1, alpha=0.7)
            ax.scatter(path[-2, c, 0], path[-2, c, 1], marker="*", s=350, color=color, edgecolor="w", zorder=5)
        ax.set_title(f"{name} start: test accuracy {m[name]['test_accuracy']:.2f}")
        ax.set_aspect("equal")
    fig.suptitle(
        "Two learned points (stars; lines: their path) and the decision boundary (black) of the final classifier; "
        f"the boundaries disagree on {m['disagreement_on_test']:.0%} of the test points",
        fontsize=10,
    )
    fig.tight_layout()
    return {"boundaries": fig}


EXPERIMENT = register(
    Experiment(
        "implicit-bias-2d",
        paper=PAPER,
        summary=(
            "Distilling a 2-D data set into two points for an overparameterized MLP: cold and warm start reach "
            "decision boundaries that both fit the learned points but differ on the real data."
        ),
        full=FULL,
        quick=QUICK,
        compute=compute,
        claims=claims,
        plots=plots,
        notes=notes,
        figures=("boundaries",),
    )
)
