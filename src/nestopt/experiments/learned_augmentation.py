"""A data-augmentation network learned by IFT hypergradients, on a small training set.

The model trains on :math:`x + T_\\lambda(x + \\sigma\\varepsilon)` where :math:`T_\\lambda` is a small network
whose weights are hyperparameters (its last layer starts at zero: no augmentation), and the validation loss on
clean inputs steers :math:`\\lambda` (Lorraine et al., 2020, section 5.3). Both runs train the same network
from the same initialization on the same batches for the same number of steps; the baseline trains without
augmentation. Fixed Gaussian input noise of the same :math:`\\sigma` is reported too, as a hand-designed
reference. The claim reads test accuracy at the end of training; the metrics also give it at the evaluation
point with the best validation accuracy (early stopping), for every run alike.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Mapping
from typing import Any

import torch

from nestopt import data, hparams, hypergrad, linalg
from nestopt.bilevel import BilevelTrainer
from nestopt.data import Splits
from nestopt.experiments._common import (
    CE,
    IFT_PAPER,
    classifier,
    count,
    evaluate,
    quiet_solvers,
    solver_statuses,
    train_plain,
)
from nestopt.experiments.registry import Claim, Config, Context, Experiment, Metrics, register
from nestopt.hparams import Objective
from nestopt.nets import mlp
from nestopt.profile import threads

__all__: list[str] = []

FULL = {
    "n_train": 200,
    "n_val": 2000,
    "n_test": 1000,
    "hidden": [128, 128],
    "aug_hidden": 64,
    "noise": 1.0,
    "centered": True,
    "batch_size": 32,
    "val_batch_size": 200,
    "inner_lr": 1e-3,
    "inner_steps_per_outer": 10,
    "outer_steps": 300,
    "outer_lr": 0.01,
    "neumann_steps": 5,
    "neumann_alpha": 0.01,
    "eval_every": 10,
    "seeds": 3,
    "threads": 1,
}
QUICK = {**FULL, "outer_steps": 150, "seeds": 2}


def _augmenter(dim: int, hidden: int, seed: int) -> torch.nn.Sequential:
    net = mlp([dim, hidden, dim], "tanh", generator=seed)
    last = net[-1]
    assert isinstance(last, torch.nn.Linear)
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    return net


def _summary(records: list[dict[str, Any]]) -> dict[str, float]:
    best = max(records, key=lambda r: r["val_accuracy"])
    return {
        "final_test_accuracy": records[-1]["test_accuracy"],
        "final_test_loss": records[-1]["test_loss"],
        "final_val_loss": records[-1]["val_loss"],
        "final_val_accuracy": records[-1]["val_accuracy"],
        "early_stopped_test_accuracy": best["test_accuracy"],
    }


def _run_seed(d: Splits, cfg: Mapping[str, Any], seed: int, ctx: Context) -> dict[str, Any]:
    dim, k = d.input_shape[0], cfg["inner_steps_per_outer"]
    parts = {"val": d.val, "test": d.test}
    train = functools.partial(data.Loader, d.train, cfg["batch_size"], seed=seed + 2)
    adam = functools.partial(torch.optim.Adam, lr=cfg["inner_lr"])

    net = classifier(d, cfg["hidden"], seed + 1)
    family = hparams.AugmentationNet(
        _augmenter(dim, cfg["aug_hidden"], seed + 5), noise=cfg["noise"], centered=cfg["centered"], seed=seed + 6
    )
    trainer = BilevelTrainer(
        net, CE, [family],
        hypergrad=hypergrad.Implicit(solver=linalg.Neumann(steps=cfg["neumann_steps"], alpha=cfg["neumann_alpha"])),
        inner_optimizer=adam,
        outer_optimizer=functools.partial(torch.optim.Adam, lr=cfg["outer_lr"]),
        inner_steps_per_outer=k,
        seed=seed,
    )  # fmt: skip
    learned: list[dict[str, Any]] = []

    def callback(t: BilevelTrainer, r: dict[str, Any]) -> None:
        if t.outer_step % cfg["eval_every"] == 0:
            rec: dict[str, Any] = {"step": t.inner_step}
            for name, part in parts.items():
                rec.update({f"{name}_{m}": v for m, v in evaluate(t.objective, t.params, part).items()})
            learned.append(rec)

    with quiet_solvers():
        trainer.fit(
            train(),
            data.Loader(d.val, cfg["val_batch_size"], seed=seed + 3),
            outer_steps=cfg["outer_steps"],
            eval_every=cfg["outer_steps"],
            progress=ctx.show_progress,
            callback=callback,
        )
    steps = cfg["outer_steps"] * k
    plain_net = classifier(d, cfg["hidden"], seed + 1)
    plain_obj = Objective(plain_net, CE)
    plain = train_plain(
        plain_obj, {}, train(), steps=steps, optimizer=adam, eval_every=cfg["eval_every"] * k, parts=parts
    )
    noise_net = classifier(d, cfg["hidden"], seed + 1)
    noisy = hparams.AugmentationNet(torch.nn.Identity(), residual=False, noise=cfg["noise"], seed=seed + 6)
    noise_obj = Objective(noise_net, CE, [noisy])
    noise = train_plain(
        noise_obj, {}, train(), steps=steps, optimizer=adam, eval_every=cfg["eval_every"] * k, parts=parts
    )
    return {
        "seed": seed,
        "learned": _summary(learned),
        "none": _summary(plain),
        "gaussian_noise": _summary(noise),
        "curves": {"learned": learned, "none": plain, "gaussian_noise": noise},
        "hyperparameters": count(trainer.hparams),
        "solver_statuses": solver_statuses(trainer.history.column("status")),
        "inner_steps": trainer.inner_step,
    }


def compute(cfg: Config, ctx: Context) -> Metrics:
    """Per seed: the learned augmentation, no augmentation and Gaussian noise, trained alike."""
    runs = []
    with threads(cfg["threads"]):
        d = data.mnist1d(cfg["n_train"], cfg["n_val"], cfg["n_test"], seed=ctx.seed)
        for s in ctx.progress(range(cfg["seeds"]), "seeds"):
            runs.append(_run_seed(d, cfg, ctx.seed + 100 * s, ctx))

    def stat(kind: str, key: str) -> dict[str, float]:
        values = [r[kind][key] for r in runs]
        return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}

    table = {kind: {key: stat(kind, key) for key in runs[0][kind]} for kind in ("learned", "none", "gaussian_noise")}
    return {
        "summary": table,
        "test_accuracy_gain": table["learned"]["final_test_accuracy"]["mean"]
        - table["none"]["final_test_accuracy"]["mean"],
        "early_stopped_test_accuracy_gain": table["learned"]["early_stopped_test_accuracy"]["mean"]
        - table["none"]["early_stopped_test_accuracy"]["mean"],
        "hyperparameters": runs[0]["hyperparameters"],
        "per_seed": [{k: v for k, v in r.items() if k != "curves"} for r in runs],
        "_curves": [r["curves"] for r in runs],
    }


def claims(m: Metrics, cfg: Config) -> list[Claim]:
    table, runs = m["summary"], m["per_seed"]
    per_seed_gain = [r["learned"]["final_test_accuracy"] - r["none"]["final_test_accuracy"] for r in runs]
    val_ratio = table["learned"]["final_val_loss"]["mean"] / table["none"]["final_val_loss"]["mean"]
    gain = m["test_accuracy_gain"]
    return [
        Claim.at_most("validation loss: learned augmentation / none (the hypergradient works)", val_ratio, 1.0),
        Claim.holds(
            f"test accuracy above no augmentation (mean of {len(runs)} seeds, end of training)", gain > 0, value=gain
        ),
        Claim.holds(
            "test accuracy above no augmentation at every seed",
            min(per_seed_gain) > 0,
            value=[round(g, 4) for g in per_seed_gain],
        ),
    ]


def plots(plt: Any, m: Metrics, cfg: Config) -> dict[str, Any]:
    return {"augmentation": _plot(plt, m["_curves"], cfg)}


def _plot(plt: Any, runs: list[dict[str, Any]], cfg: Mapping[str, Any]) -> Any:
    """Validation loss and test accuracy against training steps; ``runs`` holds each seed's curves."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    styles = {"learned": ("tab:red", "learned augmentation (IFT)"), "none": ("k", "no augmentation"),
              "gaussian_noise": ("tab:blue", f"Gaussian noise sigma={cfg['noise']:g}")}  # fmt: skip
    for kind, (color, label) in styles.items():
        for i, r in enumerate(runs):
            curve = r[kind]
            steps = [c["step"] for c in curve]
            lab = label if i == 0 else None
            axes[0].plot(steps, [c["val_loss"] for c in curve], color=color, alpha=0.8, lw=1.2, label=lab)
            axes[1].plot(steps, [c["test_accuracy"] for c in curve], color=color, alpha=0.8, lw=1.2, label=lab)
    axes[0].set_ylabel("validation loss (clean inputs)")
    axes[0].set_yscale("log")
    axes[1].set_ylabel("test accuracy")
    for ax in axes:
        ax.set_xlabel("inner (training) steps")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"MNIST-1D, {cfg['n_train']} training examples, {len(runs)} seeds", fontsize=10)
    fig.tight_layout()
    return fig


EXPERIMENT = register(
    Experiment(
        "learned-augmentation",
        paper=IFT_PAPER,
        summary=(
            "An augmentation network tuned by IFT hypergradients on 200 MNIST-1D training examples gives a higher "
            "test accuracy than training without augmentation (same network, steps and batches)."
        ),
        full=FULL,
        quick=QUICK,
        compute=compute,
        claims=claims,
        plots=plots,
        figures=("augmentation",),
    )
)
