"""Dataset distillation: one learned example per class trains a fresh model better than a real one.

Every input value of a tiny synthetic training set (one example per class) is a hyperparameter. The inner
problem trains a network on those examples alone; the outer loss is the network's loss on real training data:

.. math::  \\min_{\\tilde x} \\; \\mathbb{E}_{w_0} \\, L_{real}\\big(w_K(\\tilde x, w_0)\\big), \\qquad
           w_{k+1} = w_k - \\eta\\, \\mathrm{SGDM}\\big(\\nabla_w L(w_k; \\tilde x, \\tilde y)\\big)

The hypergradient differentiates the ``K`` training steps (``Unrolled``), and every outer step restarts the
network from a new random initialization (``warm_start=False``), so the distilled examples must teach any
network, not one (Wang et al., 2018; Lorraine et al., 2020, section 5.2). With ``start_from_real`` the
distilled set starts as the very real examples that the baseline trains on (one random example per class),
so the gain is what the hypergradient added. The test trains fresh networks that the distillation never
saw, on the distilled set and on those real examples, with the same optimizer and steps (the real examples
also get ten times as many steps; the better is kept). Each seed repeats everything: the real draw, the
distillation and the fresh networks.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from nestopt import data, hparams, hypergrad
from nestopt.bilevel import BilevelTrainer
from nestopt.data import Splits
from nestopt.experiments._common import CE, IFT_PAPER, classifier
from nestopt.experiments.registry import Claim, Config, Context, Experiment, Metrics, register
from nestopt.optim import functional
from nestopt.profile import threads
from nestopt.tree import Tree

__all__: list[str] = []

FULL = {
    "n_train": 4000,
    "n_test": 1000,
    "hidden": [100],
    "unroll_steps": 20,
    "inner_lr": 0.1,
    "momentum": 0.9,
    "outer_steps": 600,
    "outer_lr": 0.05,
    "batch_size": 256,
    "start_from_real": True,
    "init_scale": 1.0,
    "seeds": 5,
    "eval_inits": 3,
    "threads": 1,
}
QUICK = {**FULL, "outer_steps": 150, "seeds": 3}


def _net(d: Splits, cfg: Mapping[str, Any], seed: int) -> torch.nn.Sequential:
    return classifier(d, cfg["hidden"], seed)


def _params(net: torch.nn.Module) -> Tree:
    return {k: v.detach() for k, v in net.named_parameters()}


def train_fresh(x: Tensor, y: Tensor, d: Splits, cfg: Mapping[str, Any], seed: int, steps: int) -> float:
    """Test accuracy of a network initialized from ``seed`` and trained on ``(x, y)`` for ``steps`` full-batch
    SGD-with-momentum steps (the optimizer the distillation unrolls)."""
    net = _net(d, cfg, seed)
    opt = torch.optim.SGD(net.parameters(), lr=cfg["inner_lr"], momentum=cfg["momentum"])
    for _ in range(steps):
        loss = CE(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float((net(d.test.x).argmax(-1) == d.test.y).float().mean())


def one_real_per_class(d: Splits, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """One training example of each class, drawn at random."""
    idx = []
    for c in range(d.num_classes):
        members = torch.nonzero(d.train.y == c).flatten()
        idx.append(members[torch.randint(len(members), (1,), generator=gen)])
    index = torch.cat(idx)
    return d.train.x[index], d.train.y[index]


def distill(
    d: Splits, start: Tensor | None, cfg: Mapping[str, Any], seed: int, ctx: Context
) -> tuple[Tensor, Tensor, list[float]]:
    """Learn one example per class, starting from ``start`` (or noise); returns the inputs, their labels and
    the outer-loss curve."""
    family = hparams.DistilledData(1, d.input_shape, d.num_classes, init=start, init_scale=cfg["init_scale"], seed=seed)
    net = _net(d, cfg, seed)
    trainer = BilevelTrainer(
        net, CE, [family],
        hypergrad=hypergrad.Unrolled(
            optimizer=functional.sgd(lr=cfg["inner_lr"], momentum=cfg["momentum"]), steps=cfg["unroll_steps"]
        ),
        outer_optimizer=functools.partial(torch.optim.Adam, lr=cfg["outer_lr"]),
        warm_start=False,
        # a new network at every outer step: the distilled set must train any initialization
        init=lambda step: _params(_net(d, cfg, (1_000_003 * (seed + 1) + step) % 2**64)),
        seed=seed,
    )  # fmt: skip
    history = trainer.fit(
        data.Loader(d.train, d.num_classes, seed=seed),  # only its count matters: the family replaces the batch
        data.Loader(d.train, cfg["batch_size"], seed=seed + 1),
        outer_steps=cfg["outer_steps"],
        eval_every=cfg["outer_steps"],
        progress=ctx.show_progress,
    )
    x, y = family.dataset(trainer.hparams)
    return x, y, [float(v) for v in history.column("outer_loss")]


def compute(cfg: Config, ctx: Context) -> Metrics:
    """Per seed: distil, then train fresh networks on the distilled and on the real examples."""
    k = cfg["unroll_steps"]
    per_seed = []
    first: dict[str, Any] = {}
    with threads(cfg["threads"]):
        # the real training data is the outer objective; the validation split is not used
        d = data.mnist1d(cfg["n_train"], 10, cfg["n_test"], seed=ctx.seed)
        for s in ctx.progress(range(cfg["seeds"]), "seeds"):
            seed = ctx.seed + 100 * s
            xr, yr = one_real_per_class(d, torch.Generator().manual_seed(seed + 7))
            x, y, curve = distill(d, xr if cfg["start_from_real"] else None, cfg, seed, ctx)
            fresh = [seed + 50_000 + i for i in range(cfg["eval_inits"])]  # networks the distillation never saw
            acc_d = statistics.fmean(train_fresh(x, y, d, cfg, f, k) for f in fresh)
            acc_r_same = statistics.fmean(train_fresh(xr, yr, d, cfg, f, k) for f in fresh)
            acc_r_long = statistics.fmean(train_fresh(xr, yr, d, cfg, f, 10 * k) for f in fresh)
            per_seed.append(
                {
                    "seed": seed,
                    "distilled": acc_d,
                    "real": max(acc_r_same, acc_r_long),
                    "real_same_steps": acc_r_same,
                    "real_10x_steps": acc_r_long,
                    "outer_loss_first": curve[0],
                    "outer_loss_last": curve[-1],
                }
            )
            if s == 0:
                first = {"seed": seed, "x": x, "x_real": xr}
    dist = [r["distilled"] for r in per_seed]
    real = [r["real"] for r in per_seed]
    return {
        "distilled_accuracy": {"mean": statistics.fmean(dist), "sd": statistics.stdev(dist), "per_seed": dist},
        "real_accuracy": {"mean": statistics.fmean(real), "sd": statistics.stdev(real), "per_seed": real},
        "gain": statistics.fmean(dist) - statistics.fmean(real),
        "chance": 1.0 / d.num_classes,
        "per_seed": per_seed,
        "hyperparameters": int(first["x"].numel()),
        # for the figure: seed 0's distilled and real signals, and four other real signals of each class
        "_first": first,
        "_others": [d.train.x[d.train.y == c][:4] for c in range(d.num_classes)],
    }


def claims(m: Metrics, cfg: Config) -> list[Claim]:
    dist, real = m["distilled_accuracy"], m["real_accuracy"]
    return [
        Claim.at_least(
            f"test accuracy gain, distilled minus real (mean of {len(dist['per_seed'])} seeds)", m["gain"], 0.05
        ),
        Claim.at_least(
            "separation: (distilled mean - sd) - (real mean + sd)",
            (dist["mean"] - dist["sd"]) - (real["mean"] + real["sd"]),
            0.0,
        ),
        Claim.holds(
            "distilled beats real at every seed",
            all(a > b for a, b in zip(dist["per_seed"], real["per_seed"])),
            value=[round(a - b, 4) for a, b in zip(dist["per_seed"], real["per_seed"])],
        ),
    ]


def plots(plt: Any, m: Metrics, cfg: Config) -> dict[str, Any]:
    first, others = m["_first"], m["_others"]
    n = len(others)
    fig, axes = plt.subplots(2, (n + 1) // 2, figsize=(13, 5.2), sharex=True)
    t = range(first["x"].shape[-1])
    start = "the start and the baseline" if cfg["start_from_real"] else "the baseline"
    for c, ax in enumerate(axes.flat[:n]):
        for i, r in enumerate(others[c]):
            ax.plot(t, r.numpy(), color="0.75", lw=0.8, label="other real examples" if i == 0 else None)
        ax.plot(t, first["x_real"][c].numpy(), color="k", lw=1.2, ls="--", label=f"real example ({start})")
        ax.plot(t, first["x"][c].numpy(), color="tab:red", lw=1.8, label="distilled")
        ax.set_title(f"class {c}", fontsize=9)
        ax.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=6, loc="upper left")
    dist, real = m["distilled_accuracy"], m["real_accuracy"]
    fig.suptitle(
        f"MNIST-1D, one learned signal per class (seed {first['seed']}). Fresh networks reach test accuracy "
        f"{dist['mean']:.3f} ± {dist['sd']:.3f} on them vs {real['mean']:.3f} ± {real['sd']:.3f} on one real "
        f"signal per class ({len(m['per_seed'])} seeds)",
        fontsize=10,
    )
    fig.tight_layout()
    return {"distilled": fig}


EXPERIMENT = register(
    Experiment(
        "dataset-distillation",
        paper=IFT_PAPER,
        summary=(
            "One learned example per class (MNIST-1D) trains fresh networks to a clearly higher test accuracy than "
            "one random real example per class (mean and spread over several seeds)."
        ),
        full=FULL,
        quick=QUICK,
        compute=compute,
        claims=claims,
        plots=plots,
        figures=("distilled",),
    )
)
