"""Finite-time Lyapunov exponents of naive learning in the one-logit IPD, and ascent on them to a bifurcation.

Each agent of :func:`nestopt.games.zoo.small_ipd` plays tit-for-tat with probability :math:`\\sigma(\\theta_i)`,
else always defects; naive learners (simultaneous gradient steps, learning rate 1) reach mutual tit-for-tat when
the opponent plays it with probability above :math:`(1-\\gamma)/\\gamma`, mutual defection below. With the
discount :math:`\\gamma = 0.6` (a short horizon) that threshold is 2/3, so defection has the larger basin; with
the zoo's default 0.96 it is 1/24 and tit-for-tat's basin holds almost every start. The top finite-time
exponent (horizon ``horizon``, one tangent along (1, 1)/sqrt(2)) is mapped over a grid of logits (all grid
points advance together, as independent copies of one game), gradient ascent (Adam) on it starts from the
origin (both agents at 1/2), and Game Ridge Rider branches from the ascent's end along the two eigenvectors of
the game Jacobian there (each in both signs, radius ``radius``) and runs naive learning. The basins come from
naive learning on the grid. "Next to the boundary" is measured along the diagonal direction (1, 1)/sqrt(2)
(the first branch direction here): the distance from the ascent's end to the nearest point from which naive
learning reaches the other outcome (a scan in steps of 0.005), compared with the branching radius. The
exponent's ridge approaches the boundary (the stable manifold of the mixed equilibrium) as the horizon
grows, so the full run uses a longer one. Random starts: N(0, 1) logits.
"""

from __future__ import annotations

from typing import Any

import torch

from nestopt.experiments._diversity_common import PAPER_LYAPUNOV, more_than, train_copies
from nestopt.experiments.registry import Claim, Config, Context, Experiment, Metrics, register
from nestopt.games import zoo
from nestopt.games.diversity import find_bifurcation, game_ridge_rider, lyapunov
from nestopt.profile import threads

FULL = {"gamma": 0.6, "lr": 1.0, "horizon": 100, "grid": 81, "span": 4.0, "ascent_steps": 40, "ascent_lr": 0.05,
        "radius": 0.25, "learn_steps": 1000, "random_starts": 200}  # fmt: skip
QUICK = {**FULL, "grid": 41, "ascent_steps": 15, "ascent_lr": 0.12, "horizon": 80, "learn_steps": 400}
TANGENT = torch.tensor([1.0, 1.0], dtype=torch.float64) / 2**0.5


def _outcome(p: dict[str, torch.Tensor]) -> str:
    a, b = (float(torch.sigmoid(v)) for v in p.values())
    return "tit-for-tat" if a > 0.9 and b > 0.9 else ("mutual defection" if a < 0.1 and b < 0.1 else "other")


def _batched(gamma: float) -> Any:
    return lambda inits: zoo.small_ipd(gamma, init=inits, batch_shape=(len(inits[0]),), dtype=torch.float64)


def compute(cfg: Config, ctx: Context) -> Metrics:
    """Exponent and basin maps, the ascent from the origin, the branches, naive learning from random starts."""
    gamma, lr = cfg["gamma"], cfg["lr"]
    axis = torch.linspace(-cfg["span"], cfg["span"], cfg["grid"], dtype=torch.float64)
    ga, gb = torch.meshgrid(axis, axis, indexing="ij")
    grid = [{"agent1/logit": a, "agent2/logit": b} for a, b in zip(ga.reshape(-1), gb.reshape(-1))]
    with threads(1):
        copies = zoo.small_ipd(gamma, init=[ga.reshape(-1), gb.reshape(-1)], batch_shape=(ga.numel(),),
                               dtype=torch.float64)  # fmt: skip
        heat = lyapunov(copies, steps=cfg["horizon"], lr=lr, copies=True, tangents=TANGENT).exponent
        basins = [_outcome(p) for p in train_copies(_batched(gamma), grid, cfg["learn_steps"], lr)]
        game = zoo.small_ipd(gamma, init=0.0, dtype=torch.float64)
        ascent = find_bifurcation(game, steps=cfg["ascent_steps"], lr=cfg["ascent_lr"], horizon=cfg["horizon"],
                                  map_lr=lr, tangents=TANGENT, show_progress=ctx.show_progress)  # fmt: skip
        grr = game_ridge_rider(game, ascent.params, locate="start", directions=2, radius=cfg["radius"],
                               label=lambda g, p: _outcome(p),
                               train=lambda starts: train_copies(_batched(gamma), starts, cfg["learn_steps"], lr))  # fmt: skip
        g = ctx.generator(7)
        starts = [{"agent1/logit": torch.randn((), generator=g, dtype=torch.float64),
                   "agent2/logit": torch.randn((), generator=g, dtype=torch.float64)}
                  for _ in range(cfg["random_starts"])]  # fmt: skip
        random = [_outcome(p) for p in train_copies(_batched(gamma), starts, cfg["learn_steps"], lr)]
        end = torch.tensor([float(v) for v in ascent.params.values()], dtype=torch.float64)
        shifts = torch.arange(-400, 401, dtype=torch.float64) * 0.005
        line = [{"agent1/logit": end[0] + s * TANGENT[0], "agent2/logit": end[1] + s * TANGENT[1]} for s in shifts]
        along = [_outcome(p) for p in train_copies(_batched(gamma), line, cfg["learn_steps"], lr)]
    ascent_outcome = along[400]
    crossing = [abs(float(s)) for s, o in zip(shifts, along) if o not in (ascent_outcome, "other")]
    distance = min(crossing) if crossing else float("inf")
    saddle = float(torch.log(torch.tensor((1 - gamma) / (2 * gamma - 1))))
    return {
        "saddle_logit": saddle,
        "exponent_at_origin": ascent.start_exponent,
        "ascent": {
            "end": end,
            "exponent": ascent.exponent,
            "iterations": ascent.iterations,
            "outcome_from_end": ascent_outcome,
            "distance_to_boundary": distance,
        },
        "branches": [
            {"branch": b.name, "eigenvalue": [b.eigenvalue.real, b.eigenvalue.imag], "outcome": b.label}
            for b in grr.branches
        ],
        "branch_outcomes": sorted(str(k) for k in grr.outcomes),
        "random_starts": {o: random.count(o) for o in ("mutual defection", "tit-for-tat", "other")},
        "fraction_defection_from_random_starts": random.count("mutual defection") / len(random),
        "max_exponent_on_grid": float(heat.max()),
        "_heat": heat.reshape(ga.shape),
        "_basins": torch.tensor([{"tit-for-tat": 1.0, "mutual defection": -1.0}.get(o, 0.0) for o in basins]).reshape(
            ga.shape
        ),
        "_axis": axis,
        "_path": torch.stack([torch.stack([p["agent1/logit"], p["agent2/logit"]]) for p in ascent.path]),
        "_branch_starts": torch.stack(
            [torch.stack([b.start["agent1/logit"], b.start["agent2/logit"]]) for b in grr.branches]
        ),
    }


def claims(m: Metrics, cfg: Config) -> list[Claim]:
    a = m["ascent"]
    return [
        Claim.at_least("exponent ascent from the origin: exponent gain", a["exponent"] - m["exponent_at_origin"], 0.01),
        Claim.at_most(
            "ascent end: distance to the basin boundary along (1, 1) (at most the branching radius)",
            a["distance_to_boundary"],
            cfg["radius"],
        ),
        Claim.holds(
            "branches from the ascent's end reach both mutual defection and tit-for-tat",
            {"mutual defection", "tit-for-tat"} <= set(m["branch_outcomes"]),
            m["branch_outcomes"],
        ),
        more_than(
            f"naive learning from {cfg['random_starts']} random starts: fraction ending in mutual defection",
            m["fraction_defection_from_random_starts"],
            0.5,
        ),
    ]


def plots(plt: Any, m: Metrics, cfg: Config) -> dict[str, Any]:
    axis = m["_axis"]
    ext = [float(axis[0]), float(axis[-1]), float(axis[0]), float(axis[-1])]
    fig, ax = plt.subplots(figsize=(6.8, 5.6))
    im = ax.imshow(m["_heat"].T, origin="lower", extent=ext, cmap="magma", aspect="equal")
    fig.colorbar(im, ax=ax, label=f"top finite-time Lyapunov exponent (T = {cfg['horizon']})")
    ax.contour(axis, axis, m["_basins"].T, levels=[0.0], colors="cyan", linewidths=1.2)
    path = m["_path"]
    ax.plot(path[:, 0], path[:, 1], "w.-", ms=3, lw=1, label="exponent ascent from the origin")
    starts = m["_branch_starts"]
    for b, s in zip(m["branches"], starts):
        color = {"tit-for-tat": "lime", "mutual defection": "tab:red"}.get(b["outcome"], "white")
        ax.scatter(float(s[0]), float(s[1]), color=color, edgecolors="k", s=40, zorder=3)
    ax.scatter([], [], color="lime", edgecolors="k", label="branch -> tit-for-tat")
    ax.scatter([], [], color="tab:red", edgecolors="k", label="branch -> mutual defection")
    ax.plot([], [], color="cyan", label="basin boundary (naive learning)")
    ax.set_xlabel("agent 1 logit (tit-for-tat)")
    ax.set_ylabel("agent 2 logit (tit-for-tat)")
    ax.set_title(f"small IPD (gamma = {cfg['gamma']}): exponent, basins and branches")
    ax.legend(loc="upper left", fontsize=7)
    return {"lyapunov-small-ipd": fig}


EXPERIMENT = register(
    Experiment(
        "lyapunov-small-ipd",
        paper=PAPER_LYAPUNOV,
        summary=(
            "In the one-logit IPD, gradient ascent on the finite-time Lyapunov exponent from the origin ends next "
            "to the boundary between the basins of mutual defection and tit-for-tat; the branches from there "
            "reach both outcomes, while naive learning from random starts ends in mutual defection in most runs."
        ),
        full=FULL,
        quick=QUICK,
        compute=compute,
        claims=claims,
        plots=plots,
        figures=("lyapunov-small-ipd",),
    )
)
