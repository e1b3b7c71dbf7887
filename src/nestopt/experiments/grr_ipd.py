"""Game Ridge Rider in the iterated prisoner's dilemma: two outcomes from a start where naive learning finds one.

Two memory-one agents (:func:`nestopt.games.zoo.ipd`, exact discounted values, :math:`\\gamma = 0.96`) start
from a mildly reciprocal policy, tit-for-tat's logits scaled by ``scale`` (``scale = 1``: cooperate with
probability 0.73 after the opponent cooperated, 0.27 after it defected); naive learning (simultaneous gradient
steps, learning rate 1) from there ends in mutual defection. Game Ridge Rider climbs the finite-time Lyapunov
exponent of naive learning from that start (:func:`~nestopt.games.diversity.find_bifurcation`), takes the
``directions`` eigenpairs of the game Jacobian with the smallest real part there, branches along each (both
signs; four phases for complex pairs) at distance ``radius``, and runs naive learning from every branch (all
branches at once, as independent copies of one batched game). Outcomes are named by
:func:`nestopt.games.zoo.ipd_outcome`: mutual defection (average rewards per step below -1.9), reciprocating
(both above -1.1 and both policies cooperating less after a defection, reciprocity at least 0.25),
cooperating, or mixed. As a control, naive learning also runs from ``controls`` random points at the same
distance ``radius`` from the start itself (random directions, no exponent ascent, no eigenvectors); their
outcomes are reported, not claimed.
"""

from __future__ import annotations

from typing import Any

import torch

from nestopt.experiments._diversity_common import PAPER_GRR, train_copies
from nestopt.experiments.registry import Claim, Config, Context, Experiment, Metrics, register
from nestopt.games import zoo
from nestopt.games.diversity import game_ridge_rider
from nestopt.profile import threads

FULL = {"gamma": 0.96, "scale": 1.0, "lr": 1.0, "steps": 1000, "ascent_steps": 20, "ascent_lr": 0.1,
        "horizon": 30, "directions": 4, "radius": 0.5, "controls": 16}  # fmt: skip
QUICK = {**FULL, "steps": 600, "ascent_steps": 8, "horizon": 20, "directions": 3}


def _label(cfg: Config) -> Any:
    return lambda game, p: zoo.ipd_outcome(p["agent1/logits"], p["agent2/logits"], cfg["gamma"])


def _rewards(p: dict[str, torch.Tensor], gamma: float) -> list[float]:
    v1, v2 = zoo.ipd_values(p["agent1/logits"], p["agent2/logits"], gamma)
    return [float((1 - gamma) * v1), float((1 - gamma) * v2)]


def compute(cfg: Config, ctx: Context) -> Metrics:
    """Naive learning from the start; Game Ridge Rider from the same start."""
    gamma = cfg["gamma"]
    tft = torch.tensor(zoo.IPD_STRATEGIES["tit_for_tat"], dtype=torch.float64) * 2 - 1
    start = cfg["scale"] * tft

    def batched(inits: list[torch.Tensor]) -> Any:
        return zoo.ipd(gamma, init=inits, batch_shape=(len(inits[0]),), dtype=torch.float64)

    def train(starts: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        return train_copies(batched, starts, cfg["steps"], cfg["lr"])

    with threads(1):
        game = zoo.ipd(gamma, init=[start, start], dtype=torch.float64)
        naive = train([dict(game.state)])[0]
        res = game_ridge_rider(
            game, locate="lyapunov", directions=cfg["directions"], radius=cfg["radius"], label=_label(cfg),
            train=train, show_progress=ctx.show_progress,
            bifurcation={"steps": cfg["ascent_steps"], "lr": cfg["ascent_lr"], "horizon": cfg["horizon"],
                         "map_lr": cfg["lr"], "show_progress": ctx.show_progress},
        )  # fmt: skip
        g = ctx.generator(3)
        dirs = [torch.randn(10, generator=g, dtype=torch.float64) for _ in range(cfg["controls"])]
        near = [{"agent1/logits": start + cfg["radius"] * d[:5] / d.norm(),
                 "agent2/logits": start + cfg["radius"] * d[5:] / d.norm()} for d in dirs]  # fmt: skip
        controls = [_label(cfg)(game, p) for p in train(near)]
    label = _label(cfg)
    probs = {name: torch.sigmoid(v).tolist() for name, v in naive.items()}
    return {
        "naive_from_start": {"outcome": label(game, naive), "rewards": _rewards(naive, gamma), "policies": probs},
        "bifurcation": res.located.as_dict() if res.located is not None else None,
        "eigenvalues": [[complex(z).real, complex(z).imag] for z in res.eigenvalues.tolist()],
        "branches": [
            {
                "branch": b.name,
                "outcome": b.label,
                "rewards": _rewards(b.params, gamma),
                "reciprocity": [float(zoo.reciprocity(torch.sigmoid(b.params[k]))) for k in b.params],
            }
            for b in res.branches
        ],
        "outcomes": {str(k): len(v) for k, v in res.outcomes.items()},
        "distinct_outcomes": res.distinct,
        "control_outcomes": {o: controls.count(o) for o in sorted(set(controls))},
        "grads": res.grads,
        "hvps": res.hvps,
        "_history": res.located.history if res.located is not None else [],
    }


def claims(m: Metrics, cfg: Config) -> list[Claim]:
    outcomes = set(m["outcomes"])
    return [
        Claim.holds(
            "naive learning from the start reaches mutual defection",
            m["naive_from_start"]["outcome"] == "mutual defection",
            m["naive_from_start"]["outcome"],
        ),
        Claim.at_least("Game Ridge Rider: distinct outcomes from the same start", m["distinct_outcomes"], 2),
        Claim.holds(
            "Game Ridge Rider finds mutual defection and a reciprocating outcome",
            {"mutual defection", "reciprocating"} <= outcomes,
            sorted(outcomes),
        ),
    ]


def plots(plt: Any, m: Metrics, cfg: Config) -> dict[str, Any]:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax1.plot(m["_history"], "o-", color="tab:purple")
    ax1.set_xlabel("ascent iteration")
    ax1.set_ylabel(f"top finite-time exponent (T = {cfg['horizon']})")
    ax1.set_title("climbing the exponent from the start")
    colors = {"mutual defection": "tab:red", "reciprocating": "tab:green", "cooperating": "tab:blue",
              "mixed": "tab:gray"}  # fmt: skip
    for b in m["branches"]:
        r = b["rewards"]
        ax2.scatter(r[0], r[1], color=colors.get(b["outcome"], "k"), s=50, alpha=0.8, edgecolors="k")
    n = m["naive_from_start"]["rewards"]
    ax2.scatter(n[0], n[1], marker="*", s=250, color="gold", edgecolors="k", label="naive learning from the start")
    for name, color in colors.items():
        ax2.scatter([], [], color=color, edgecolors="k", label=f"branch: {name}")
    ax2.set_xlabel("agent 1: average reward per step")
    ax2.set_ylabel("agent 2: average reward per step")
    ax2.set_title(f"{len(m['branches'])} branches, {m['distinct_outcomes']} distinct outcomes")
    ax2.legend(fontsize=7, loc="lower right")
    return {"grr-ipd": fig}


EXPERIMENT = register(
    Experiment(
        "grr-ipd",
        paper=PAPER_GRR,
        summary=(
            "In the iterated prisoner's dilemma, Game Ridge Rider finds at least two distinct outcomes (mutual "
            "defection and a reciprocating one) from a start from which naive learning reaches only mutual defection."
        ),
        full=FULL,
        quick=QUICK,
        compute=compute,
        claims=claims,
        plots=plots,
        figures=("grr-ipd",),
    )
)
