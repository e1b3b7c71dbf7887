"""Approximate Ridge Rider (Lanczos on Hessian-vector products) on a small MLP on scikit-learn's digits.

A tanh MLP 64 -> ``hidden`` -> 10 (float64) on ``n_train`` training images, full-batch cross-entropy. Its
maximally invariant saddle is known in closed form: every weight and hidden bias zero and the output bias the
log class frequencies (the gradient vanishes exactly and every hidden unit is interchangeable). There the
Hessian couples the two weight matrices only, with eigenvalues :math:`\\pm\\sigma_k` (the singular values of
the input-label cross-covariance), each repeated once per hidden unit. Approximate Ridge Rider takes the
``ridges`` most negative eigenpairs by Lanczos, rides each in both signs (re-tracking warm-started from the
previous eigenvector, so the ride follows one direction through the repeated eigenvalues) and finishes every
leaf with plain full-batch gradient descent. Plain training is the same network from PyTorch's default
initialization trained by the same gradient descent for the same number of steps. The best leaf is chosen by
validation accuracy; two leaves are *distinct* when their test predictions differ on at least 1% of the test
images. The two signs of a ridge give the same function here (tanh is odd, so negating both weight matrices
changes nothing), which the disagreement table shows.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch

from nestopt import data
from nestopt.experiments._diversity_common import PAPER_RR
from nestopt.experiments.registry import Claim, Config, Context, Experiment, Metrics, register
from nestopt.games.diversity import ridge_rider
from nestopt.games.diversity._common import FlatLoss
from nestopt.games.diversity.ridge_rider import descend
from nestopt.profile import threads

FULL = {"n_train": 1000, "hidden": 32, "ridges": 4, "step": 0.1, "max_ride_steps": 60, "descent_steps": 2000,
        "descent_lr": 0.5, "track_restarts": 2}  # fmt: skip
QUICK = {**FULL, "n_train": 300, "hidden": 16, "ridges": 3, "max_ride_steps": 20, "descent_steps": 500}
F64 = torch.float64


def _forward(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]


def _accuracy(p: dict[str, torch.Tensor], part: data.Split) -> float:
    return float((_forward(p, part.x).argmax(1) == part.y).double().mean())


def _default_init(hidden: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """``torch.nn.Linear``'s default initialization: uniform in +-1/sqrt(fan_in)."""

    def u(*shape: int, fan_in: int) -> torch.Tensor:
        return (torch.rand(*shape, generator=g, dtype=F64) * 2 - 1) / math.sqrt(fan_in)

    return {"w1": u(64, hidden, fan_in=64), "b1": u(hidden, fan_in=64), "w2": u(hidden, 10, fan_in=hidden),
            "b2": u(10, fan_in=hidden)}  # fmt: skip


def _distinct(disagree: list[list[float]], threshold: float) -> int:
    """Greedy count of leaves that differ from every earlier representative by at least ``threshold``."""
    reps: list[int] = []
    for i in range(len(disagree)):
        if all(disagree[i][j] >= threshold for j in reps):
            reps.append(i)
    return len(reps)


def compute(cfg: Config, ctx: Context) -> Metrics:
    """Ridge Rider from the saddle; plain training from the default initialization."""
    d = data.digits(n_train=cfg["n_train"], n_val=397, n_test=400, seed=ctx.seed, dtype=F64)
    x, y = d.train.x, d.train.y

    def loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(_forward(p, x), y)

    h = cfg["hidden"]
    freq = torch.bincount(y, minlength=10).to(F64) / len(y)
    saddle = {"w1": torch.zeros(64, h, dtype=F64), "b1": torch.zeros(h, dtype=F64), "w2": torch.zeros(h, 10, dtype=F64),
              "b2": freq.log()}  # fmt: skip
    with threads(1):
        res = ridge_rider(loss, saddle, mode="approximate", ridges=cfg["ridges"], max_depth=1, step=cfg["step"],
                          max_ride_steps=cfg["max_ride_steps"], descent_steps=cfg["descent_steps"],
                          descent_lr=cfg["descent_lr"], grad_tol=1e-7,
                          lanczos={"track_restarts": cfg["track_restarts"]}, show_progress=ctx.show_progress)  # fmt: skip
        init = _default_init(h, ctx.generator(5))
        flat = FlatLoss(loss, init)
        plain_x, plain_loss, _ = descend(flat, flat.flat(init), steps=cfg["descent_steps"], lr=cfg["descent_lr"],
                                         grad_tol=1e-7)  # fmt: skip
    plain = flat.tree(plain_x)
    leaves = res.leaves
    preds = [_forward(leaf.params, d.test.x).argmax(1) for leaf in leaves]
    disagree = [[float((a != b).double().mean()) for b in preds] for a in preds]
    val = [_accuracy(leaf.params, d.val) for leaf in leaves]
    best = max(range(len(leaves)), key=lambda i: val[i])
    pairs = list(itertools.combinations(range(len(leaves)), 2))
    return {
        "start_gradient_norm": res.info.start_gradient_norm,
        "start_eigenvalues": res.root.eigenvalues,
        "leaves": [
            {"fingerprint": leaf.label, "ride_steps": len(leaf.losses) - 1, "reason": leaf.reason,
             "ride_eigenvalues": [leaf.eigenvalues[0], leaf.eigenvalues[-1]], "train_loss": leaf.loss,
             "val_accuracy": v, "test_accuracy": _accuracy(leaf.params, d.test)}
            for leaf, v in zip(leaves, val)
        ],
        "disagreement": disagree,
        "mean_pairwise_disagreement": sum(disagree[i][j] for i, j in pairs) / len(pairs),
        "distinct_solutions": _distinct(disagree, 0.01),
        "best_leaf": leaves[best].label,
        "best_leaf_test_accuracy": _accuracy(leaves[best].params, d.test),
        "plain": {"train_loss": plain_loss, "val_accuracy": _accuracy(plain, d.val),
                  "test_accuracy": _accuracy(plain, d.test)},
        "info": res.info.as_dict(),
    }  # fmt: skip


def claims(m: Metrics, cfg: Config) -> list[Claim]:
    gap = m["plain"]["test_accuracy"] - m["best_leaf_test_accuracy"]
    return [
        Claim.at_least(
            "distinct solutions among the leaves (test predictions differ on at least 1%)", m["distinct_solutions"], 3
        ),
        Claim.at_most(
            "plain training's test accuracy minus the best leaf's (chosen by validation), in points", 100 * gap, 2.0
        ),
    ]


def plots(plt: Any, m: Metrics, cfg: Config) -> dict[str, Any]:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.4))
    names = [leaf["fingerprint"] for leaf in m["leaves"]]
    im = ax1.imshow(torch.tensor(m["disagreement"]) * 100, cmap="viridis")
    ax1.set_xticks(range(len(names)), names)
    ax1.set_yticks(range(len(names)), names)
    fig.colorbar(im, ax=ax1, label="test predictions that differ (%)")
    ax1.set_title("pairwise disagreement between leaves")
    accs = [100 * leaf["test_accuracy"] for leaf in m["leaves"]]
    ax2.bar(range(len(names)), accs, color="tab:red", label="Ridge Rider leaves")
    ax2.axhline(100 * m["plain"]["test_accuracy"], color="k", ls="--", label="plain training")
    ax2.set_xticks(range(len(names)), names)
    ax2.set_ylim(min([*accs, 100 * m["plain"]["test_accuracy"]]) - 3, 100)
    ax2.set_ylabel("test accuracy (%)")
    ax2.set_title(f"best leaf by validation: {m['best_leaf']}")
    ax2.legend(fontsize=8, loc="lower right")
    return {"ridge-rider-digits": fig}


EXPERIMENT = register(
    Experiment(
        "ridge-rider-digits",
        paper=PAPER_RR,
        summary=(
            "Approximate Ridge Rider (Lanczos on Hessian-vector products) on a small MLP on scikit-learn's digits "
            "finds several distinct solutions (pairwise prediction disagreement reported), the best within 2 "
            "points of the test accuracy of plain training of the same network."
        ),
        full=FULL,
        quick=QUICK,
        compute=compute,
        claims=claims,
        plots=plots,
        figures=("ridge-rider-digits",),
    )
)
