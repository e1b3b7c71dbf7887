"""Game Ridge Rider on a GAN learning 8 Gaussians on a ring: branches that cover different sets of modes.

A small GAN (:func:`nestopt.games.zoo.mixture_gan`, ReLU MLPs of width ``hidden``, latent dimension 4) starts
from its initialization. Game Ridge Rider climbs the finite-time Lyapunov exponent of simultaneous gradient
descent (learning rate ``map_lr``, one fixed data batch so that the map is deterministic, horizon
``horizon``) for ``ascent_steps`` Adam steps, takes the ``directions`` eigenpairs of the (dense) game
Jacobian with the smallest real part there, and branches along each (both signs; four phases for complex
pairs) at distance ``radius`` in parameter space. Every branch then trains with alternating Adam updates
(:math:`\\beta_1 = 0.5`, learning rate ``lr``) for ``steps`` steps, all branches at once as an ensemble, on the
same data stream; its generator's *mode set* is the set of modes holding at least 1% of 2500 samples within 3
standard deviations (:func:`nestopt.games.zoo.mode_coverage`). As a control, the same training runs from the
unperturbed bifurcation point and from as many random directions of the same radius; their mode sets are
reported, not claimed.
"""

from __future__ import annotations

from typing import Any

import torch

from nestopt import tree
from nestopt.experiments._diversity_common import PAPER_GRR
from nestopt.experiments.registry import Claim, Config, Context, Experiment, Metrics, register
from nestopt.games import zoo
from nestopt.games.diversity import game_ridge_rider
from nestopt.profile import threads

FULL = {"hidden": 24, "latent": 4, "batch_size": 128, "ascent_steps": 6, "horizon": 10, "map_lr": 0.05,
        "ascent_lr": 0.01, "directions": 3, "radius": 1.0, "lr": 3e-3, "steps": 2500, "samples": 2500}  # fmt: skip
QUICK = {**FULL, "ascent_steps": 3, "horizon": 6, "directions": 2, "steps": 1200}


def _gan(cfg: Config, ensemble: int, seed: int) -> Any:
    return zoo.mixture_gan("ring", latent_dim=cfg["latent"], hidden=cfg["hidden"], layers=2,
                           batch_size=cfg["batch_size"], ensemble=ensemble,
                           generator=torch.Generator().manual_seed(seed))  # fmt: skip


def _train(cfg: Config, starts: list[dict[str, torch.Tensor]], ctx: Context) -> tuple[Any, list[Any]]:
    """Alternating Adam from every start at once (an ensemble); the trained game and the final points."""
    game = _gan(cfg, len(starts), ctx.seed)
    with torch.no_grad():
        for k, v in game.state.items():
            v.copy_(torch.cat([s[k] for s in starts], dim=0))
    opts = [torch.optim.Adam(game.parameters(i), lr=cfg["lr"], betas=(0.5, 0.999)) for i in range(2)]
    data = ctx.generator(20)
    for _ in ctx.progress(range(cfg["steps"]), desc="branches"):
        game.step(opts, scheme="alternating", batch=game.info["sample_batch"](data))
    finals = [{k: v[i : i + 1].detach().clone() for k, v in game.state.items()} for i in range(len(starts))]
    return game, finals


def _mode_sets(cfg: Config, game: Any, ctx: Context) -> list[tuple[int, ...]]:
    samples = game.info["generate"](cfg["samples"], ctx.generator(30))
    out = []
    for s in samples:
        counts = zoo.mode_coverage(s, game.info["centers"], game.info["std"])["counts"]
        out.append(tuple(i for i, c in enumerate(counts) if c >= 0.01 * cfg["samples"]))
    return out


def compute(cfg: Config, ctx: Context) -> Metrics:
    """Locate, branch, train every branch and the controls, and read off the mode sets."""
    with threads(1):
        game = _gan(cfg, 1, ctx.seed)
        fixed = game.info["sample_batch"](ctx.generator(10))
        recorded: dict[str, Any] = {}

        def train(starts: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
            recorded["game"], finals = _train(cfg, starts, ctx)
            return finals

        res = game_ridge_rider(
            game, locate="lyapunov", batch=fixed, directions=cfg["directions"], radius=cfg["radius"], train=train,
            label=lambda g, p: (), show_progress=ctx.show_progress,
            bifurcation={"steps": cfg["ascent_steps"], "lr": cfg["ascent_lr"], "horizon": cfg["horizon"],
                         "map_lr": cfg["map_lr"]},
        )  # fmt: skip
        branch_sets = _mode_sets(cfg, recorded["game"], ctx)
        g = ctx.generator(40)
        x_star, spec = tree.flatten(res.point)
        controls = [res.point]
        for _ in res.branches:
            d = torch.randn(x_star.shape, generator=g, dtype=x_star.dtype)
            controls.append(tree.unflatten(x_star + cfg["radius"] * d / d.norm(), spec))
        control_game, _ = _train(cfg, controls, ctx)
        control_sets = _mode_sets(cfg, control_game, ctx)
    samples = recorded["game"].info["generate"](400, ctx.generator(50))
    located = res.located
    return {
        "bifurcation": located.as_dict() if located is not None else None,
        "eigenvalues": [[complex(z).real, complex(z).imag] for z in res.eigenvalues.tolist()],
        "branches": [{"branch": b.name, "modes": list(ms)} for b, ms in zip(res.branches, branch_sets)],
        "distinct_mode_sets": len(set(branch_sets)),
        "mode_sets": sorted({str(list(ms)) for ms in branch_sets}),
        "modes_covered_per_branch": [len(ms) for ms in branch_sets],
        "control_unperturbed_modes": list(control_sets[0]),
        "control_random_directions": [list(ms) for ms in control_sets[1:]],
        "control_distinct_mode_sets": len(set(control_sets[1:])),
        "_samples": samples,
        "_branch_names": [b.name for b in res.branches],
    }


def claims(m: Metrics, cfg: Config) -> list[Claim]:
    return [
        Claim.at_least(
            f"distinct mode sets over {len(m['branches'])} branches from the bifurcation point",
            m["distinct_mode_sets"],
            2,
        ),
        Claim.at_least("every branch's generator covers at least one mode", min(m["modes_covered_per_branch"]), 1),
    ]


def plots(plt: Any, m: Metrics, cfg: Config) -> dict[str, Any]:
    samples = m["_samples"]
    n = len(samples)
    cols = min(n, 6)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.8 * rows), squeeze=False)
    centers, _ = zoo.gaussian_mixture("ring")
    for ax, s, name, b in zip(axes.flat, samples, m["_branch_names"], m["branches"]):
        ax.scatter(s[:, 0], s[:, 1], s=2, alpha=0.5)
        ax.scatter(centers[:, 0], centers[:, 1], marker="x", color="tab:red", s=20)
        ax.set_xlim(-3, 3)
        ax.set_ylim(-3, 3)
        ax.set_aspect("equal")
        ax.set_title(f"{name}: modes {b['modes']}", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(f"Game Ridge Rider branches of a GAN: {m['distinct_mode_sets']} distinct mode sets")
    return {"grr-gan": fig}


EXPERIMENT = register(
    Experiment(
        "grr-gan",
        paper=PAPER_GRR,
        summary=(
            "On a GAN learning a 2-D mixture of 8 Gaussians, the branches that Game Ridge Rider takes from a "
            "bifurcation point give generators covering different sets of modes; the mode sets and how many are "
            "distinct are reported."
        ),
        full=FULL,
        quick=QUICK,
        compute=compute,
        claims=claims,
        plots=plots,
        figures=("grr-gan",),
    )
)
