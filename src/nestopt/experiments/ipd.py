"""Naive learners and LOLA in the iterated prisoner's dilemma with exact discounted values.

Two memory-one agents (5 logits each, :func:`nestopt.games.zoo.ipd`, :math:`\\gamma = 0.96`) start from random
logits and learn with exact gradients: either both naively (each follows the gradient of its own value) or
both with LOLA (:class:`nestopt.games.LOLA`, look-ahead :math:`\\alpha = 1`, learning rate 1, as in Foerster et
al., 2018). The average reward per step, :math:`(1-\\gamma) V_i`, is -2 under mutual defection and -1 under
mutual cooperation. Many seeds are trained at once as independent copies in one game.

From random logits (N(0, 1)) a small fraction of naive runs (about 1% over many seeds) lock into mutual
cooperation, where the unvisited states get no gradient; the claim on naive learners therefore uses the
median over seeds (the typical run), and the metrics report the mean and the fraction ending in mutual
defection as well.
"""

from __future__ import annotations

from typing import Any

import torch

from nestopt.experiments.registry import Claim, Config, Context, Experiment, Metrics, register
from nestopt.games import LOLA, zoo
from nestopt.profile import threads

PAPER_LOLA = (
    "Foerster, Chen, Al-Shedivat, Whiteson, Abbeel, Mordatch. Learning with Opponent-Learning Awareness. AAMAS 2018"
)
STATE_NAMES = ("start", "CC", "CD", "DC", "DD")


def _reward(game: Any, gamma: float) -> torch.Tensor:
    """Average reward per step of both agents, per seed: ``(S, 2)``."""
    v1, v2 = zoo.ipd_values(game.params[0]["logits"], game.params[1]["logits"], gamma)
    return (1 - gamma) * torch.stack([v1, v2], dim=-1)


def _reciprocity(p: torch.Tensor) -> torch.Tensor:
    """P(C | the opponent cooperated) - P(C | it defected), own-side states: TFT 1, always-defect 0."""
    return 0.5 * (p[..., 1] + p[..., 3]) - 0.5 * (p[..., 2] + p[..., 4])


def _train(learner: str, cfg: Config, ctx: Context) -> dict[str, Any]:
    game = zoo.ipd(cfg["gamma"], batch_shape=(cfg["seeds"],), generator=ctx.generator(1), dtype=torch.float64)
    opt = torch.optim.SGD(game.parameters(), lr=cfg["lr"])
    rule = LOLA(cfg["lookahead"]) if learner == "LOLA" else None
    curve = [_reward(game, cfg["gamma"]).mean(dim=1)]
    for _ in ctx.progress(range(cfg["steps"]), desc=learner):
        game.step(opt, rule=rule)
        curve.append(_reward(game, cfg["gamma"]).mean(dim=1))
    probs = torch.stack([torch.sigmoid(game.params[i]["logits"]) for i in range(2)], dim=1)  # (S, 2, 5)
    final = curve[-1]
    return {
        "curve": torch.stack(curve),  # (steps + 1, S)
        "reward_per_seed": final,
        "reward": float(final.mean()),
        "median_reward": float(final.median()),
        "fraction_defecting": float((final < -1.9).double().mean()),
        "cooperation_probabilities": probs.mean(dim=(0, 1)),
        "reciprocity_per_seed": _reciprocity(probs).mean(dim=1),
        "reciprocity": float(_reciprocity(probs).mean()),
    }


FULL = {"seeds": 100, "steps": 500, "lr": 1.0, "lookahead": 1.0, "gamma": 0.96}
QUICK = {**FULL, "seeds": 20, "steps": 200}
LEARNERS = ("naive", "LOLA")


def compute(cfg: Config, ctx: Context) -> Metrics:
    """Train both learner pairs over the seeds; rewards, reciprocity and the final policies."""
    with threads(1):
        runs = {learner: _train(learner, cfg, ctx) for learner in LEARNERS}
    metrics: Metrics = {
        learner: {
            "reward": r["reward"],
            "median_reward": r["median_reward"],
            "fraction_mutual_defection": r["fraction_defecting"],
            "reward_per_seed": r["reward_per_seed"],
            "reciprocity": r["reciprocity"],
            "reciprocity_per_seed": r["reciprocity_per_seed"],
            "cooperation_probabilities": dict(zip(STATE_NAMES, r["cooperation_probabilities"].tolist())),
        }
        for learner, r in runs.items()
    }
    metrics["_curves"] = {learner: r["curve"] for learner, r in runs.items()}
    return metrics


def claims(m: Metrics, cfg: Config) -> list[Claim]:
    naive, lola = m["naive"], m["LOLA"]
    return [
        Claim.at_most(
            "naive learners: |average reward per step + 2| (median over seeds)", abs(naive["median_reward"] + 2), 0.05
        ),
        Claim.at_least("LOLA reward minus naive reward (mean over seeds)", lola["reward"] - naive["reward"], 0.5),
        Claim.at_least(
            "LOLA reciprocity P(C|opponent C) - P(C|opponent D) (mean over seeds)", lola["reciprocity"], 0.5
        ),
    ]


def plots(plt: Any, m: Metrics, cfg: Config) -> dict[str, Any]:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    colors = ("tab:gray", "tab:green")
    for learner, color in zip(LEARNERS, colors):
        curve = m["_curves"][learner]
        steps = range(curve.shape[0])
        ax1.plot(steps, curve.mean(dim=1), color=color, label=f"{learner} (mean)")
        ax1.fill_between(steps, curve.min(dim=1).values, curve.max(dim=1).values, color=color, alpha=0.2)
    ax1.axhline(-1, color="k", lw=0.6, ls=":")
    ax1.axhline(-2, color="k", lw=0.6, ls=":")
    ax1.set_xlabel("training step")
    ax1.set_ylabel("average reward per step (both agents)")
    ax1.set_title("reward (band: min to max over seeds)")
    ax1.legend()
    width = 0.38
    for k, (learner, color) in enumerate(zip(LEARNERS, colors)):
        xs = [i + (k - 0.5) * width for i in range(5)]
        probs = m[learner]["cooperation_probabilities"]
        ax2.bar(xs, [probs[s] for s in STATE_NAMES], width=width, color=color, label=learner)
    ax2.set_xticks(range(5), [f"P(C|{s})" for s in STATE_NAMES])
    ax2.set_ylim(0, 1)
    ax2.set_title("final policies (mean over seeds and agents)")
    ax2.legend()
    return {"ipd": fig}


EXPERIMENT = register(
    Experiment(
        "ipd",
        paper=PAPER_LOLA,
        summary=(
            "In the iterated prisoner's dilemma naive learners end in mutual defection (average reward per step "
            "near -2); LOLA learners reach tit-for-tat-like reciprocity with clearly higher reward, over seeds."
        ),
        full=FULL,
        quick=QUICK,
        compute=compute,
        claims=claims,
        plots=plots,
        figures=("ipd",),
    )
)
