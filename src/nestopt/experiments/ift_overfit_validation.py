"""Per-weight decay with a small validation set: many hyperparameters can overfit the validation set.

An MLP on MNIST-1D gets one weight-decay coefficient per weight (more than 100k hyperparameters), tuned
jointly with the weights by IFT hypergradients (Neumann series) on a validation set of a few dozen examples:

.. math::  \\min_\\lambda L_{val}(w^*(\\lambda)), \\qquad
           w^*(\\lambda) = \\arg\\min_w L_{train}(w) + \\sum_j e^{\\lambda_j} w_j^2 .

The baseline is the best single global decay: a sweep in which each coefficient trains the same model the
same way (same initialization, batches, optimizer and number of steps), scored by its best validation loss at
any evaluation point. The per-weight decays drive the validation loss far below that level while the test
loss does not follow (Lorraine et al., 2020, section 5.1).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import torch

from nestopt import data, hparams, hypergrad, linalg
from nestopt.bilevel import BilevelTrainer
from nestopt.data import Split, Splits
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
from nestopt.profile import threads

__all__ = ["best_global", "global_sweep", "tune_per_weight"]

FULL = {
    "n_train": 256,
    "n_val": 32,
    "n_test": 1000,
    "hidden": [300, 300],
    "batch_size": 64,
    "inner_lr": 1e-3,
    "inner_steps_per_outer": 10,
    "outer_steps": 300,
    "outer_lr": 0.1,
    "init_decay": 1e-3,
    "neumann_steps": 5,
    "neumann_alpha": 0.01,
    "global_decays": [1e-6, 1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 1.0],
    "eval_every": 10,
    "threads": 1,
}
QUICK = {**FULL, "outer_steps": 60, "eval_every": 5, "global_decays": [1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]}


def tune_per_weight(
    d: Splits, val: Split, cfg: Mapping[str, Any], ctx: Context
) -> tuple[BilevelTrainer, list[dict[str, Any]]]:
    """Train the MLP with one decay per weight tuned by IFT on ``val``; evaluation records every
    ``eval_every`` outer steps (and before the first): losses and accuracies on train, val and test."""
    net = classifier(d, cfg["hidden"], ctx.seed + 1)
    family = hparams.WeightDecay(net, per="parameter", init=cfg["init_decay"])
    solver = linalg.Neumann(steps=cfg["neumann_steps"], alpha=cfg["neumann_alpha"])
    trainer = BilevelTrainer(
        net, CE, [family],
        hypergrad=hypergrad.Implicit(solver=solver),
        inner_optimizer=functools.partial(torch.optim.Adam, lr=cfg["inner_lr"]),
        outer_optimizer=functools.partial(torch.optim.Adam, lr=cfg["outer_lr"]),
        inner_steps_per_outer=cfg["inner_steps_per_outer"],
        seed=ctx.seed,
    )  # fmt: skip
    parts = {"train": d.train, "val": val, "test": d.test}

    def snapshot(outer_step: int, inner_steps: int, seconds: float) -> dict[str, Any]:
        rec: dict[str, Any] = {"outer_step": outer_step, "inner_steps": inner_steps, "seconds": seconds}
        for name, part in parts.items():
            rec.update({f"{name}_{k}": v for k, v in evaluate(trainer.objective, trainer.params, part).items()})
        return rec

    records = [snapshot(0, 0, 0.0)]

    def callback(t: BilevelTrainer, r: dict[str, Any]) -> None:
        if t.outer_step % cfg["eval_every"] == 0 or t.outer_step == cfg["outer_steps"]:
            records.append(snapshot(t.outer_step, t.inner_step, r["seconds"]))

    with quiet_solvers():
        trainer.fit(
            data.Loader(d.train, cfg["batch_size"], seed=ctx.seed + 2),
            data.Loader(val, len(val), seed=ctx.seed + 3),
            outer_steps=cfg["outer_steps"],
            eval_every=cfg["outer_steps"],
            progress=ctx.show_progress,
            callback=callback,
        )
    return trainer, records


def global_sweep(d: Splits, parts: Mapping[str, Split], cfg: Mapping[str, Any], ctx: Context) -> list[dict[str, Any]]:
    """Train the same model the same way once per global decay in ``cfg["global_decays"]``, evaluating
    ``parts`` at the per-weight run's evaluation points; one ``{"decay", "records"}`` per coefficient."""
    k = cfg["inner_steps_per_outer"]
    out = []
    for c in ctx.progress(cfg["global_decays"], "global decays"):
        net = classifier(d, cfg["hidden"], ctx.seed + 1)
        objective = Objective(net, CE, [hparams.WeightDecay(net, per="global", init=c)])
        records = train_plain(
            objective,
            objective.init_hparams(),
            data.Loader(d.train, cfg["batch_size"], seed=ctx.seed + 2),
            steps=cfg["outer_steps"] * k,
            optimizer=functools.partial(torch.optim.Adam, lr=cfg["inner_lr"]),
            eval_every=cfg["eval_every"] * k,
            parts=parts,
        )
        out.append({"decay": c, "records": records})
    return out


def best_global(sweep: list[dict[str, Any]], val: str = "val") -> dict[str, Any]:
    """The (decay, evaluation point) with the lowest ``<val>_loss`` in a sweep, with all its figures."""
    best: dict[str, Any] = {}
    for run in sweep:
        for rec in run["records"]:
            if math.isfinite(rec[f"{val}_loss"]) and (not best or rec[f"{val}_loss"] < best[f"{val}_loss"]):
                best = {"decay": run["decay"], **rec}
    return best


def decay_histogram(trainer: BilevelTrainer) -> torch.Tensor:
    """log10 of every learned decay coefficient, flattened."""
    return torch.cat([v.detach().flatten() for v in trainer.hparams.values()]) / math.log(10)


def compute(cfg: Config, ctx: Context) -> Metrics:
    """The per-weight run and the sweep of global decays, with every evaluation record."""
    with threads(cfg["threads"]):
        d = data.mnist1d(cfg["n_train"], cfg["n_val"], cfg["n_test"], seed=ctx.seed)
        trainer, records = tune_per_weight(d, d.val, cfg, ctx)
        sweep = global_sweep(d, {"train": d.train, "val": d.val, "test": d.test}, cfg, ctx)
    best, final = best_global(sweep), records[-1]
    log_decays = decay_histogram(trainer)
    return {
        "hyperparameters": count(trainer.hparams),
        "per_weight": {
            "final": final,
            "curve": records,
            "solver_statuses": solver_statuses(trainer.history.column("status")),
        },
        "best_global": best,
        "global_sweep": [
            {"decay": r["decay"], "best_val_loss": min(x["val_loss"] for x in r["records"]), "final": r["records"][-1]}
            for r in sweep
        ],
        "validation_ratio": final["val_loss"] / best["val_loss"],
        "test_loss_excess": final["test_loss"] - best["test_loss"],
        "learned_log10_decay": {
            "init": math.log10(cfg["init_decay"]),
            "mean": float(log_decays.mean()),
            "min": float(log_decays.min()),
            "max": float(log_decays.max()),
        },
        "seconds_per_weight_run": final["seconds"],
        "_log_decays": log_decays,
    }


def claims(m: Metrics, cfg: Config) -> list[Claim]:
    n = m["hyperparameters"]
    return [
        Claim.holds(f"at least 100k hyperparameters ({n} per-weight decays)", n >= 100_000, n),
        Claim.at_most("validation loss: per-weight decays / best global decay", m["validation_ratio"], 0.5),
        Claim.at_least(
            "test loss: per-weight decays minus best global decay (does not follow)", m["test_loss_excess"], 0.0
        ),
    ]


def plots(plt: Any, m: Metrics, cfg: Config) -> dict[str, Any]:
    title = f"{m['hyperparameters']:,} per-weight decays, {cfg['n_val']} validation examples"
    return {"losses": plot_run(plt, m["per_weight"]["curve"], m["best_global"], m["_log_decays"], cfg, title=title)}


def plot_run(
    plt: Any,
    records: list[dict[str, Any]],
    best: dict[str, Any],
    log_decays: torch.Tensor | None,
    cfg: Mapping[str, Any],
    *,
    title: str,
    axes: Any = None,
) -> Any:
    """Train / validation / test loss against outer steps with the best global decay's levels as dashed
    lines (and, if ``log_decays`` is given, a histogram of the learned decays beside it)."""
    fig = None
    if axes is None:
        ncols = 2 if log_decays is not None else 1
        fig, axes = plt.subplots(1, ncols, figsize=(6.0 * ncols, 4.2), squeeze=False)
        axes = axes[0]
    ax = axes[0]
    steps = [r["outer_step"] for r in records]
    colors = {"train": "tab:blue", "val": "tab:orange", "test": "tab:green"}
    for part, color in colors.items():
        ax.plot(
            steps, [r[f"{part}_loss"] for r in records], color=color, marker="o", ms=3, label=f"{part} (per-weight)"
        )
        ax.axhline(
            best[f"{part}_loss"], color=color, ls="--", lw=1.2, label=f"{part} (best global decay {best['decay']:g})"
        )
    ax.set_yscale("log")
    ax.set_xlabel(f"outer step ({cfg['inner_steps_per_outer']} inner steps each)")
    ax.set_ylabel("cross-entropy")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    if log_decays is not None:
        ax2 = axes[1]
        ax2.hist(log_decays.numpy(), bins=60, color="tab:purple")
        ax2.axvline(math.log10(cfg["init_decay"]), color="k", ls="--", label="initial decay")
        ax2.set_yscale("log")
        ax2.set_xlabel("log10 learned decay coefficient")
        ax2.set_ylabel("weights")
        ax2.set_title("learned per-weight decays")
        ax2.legend(fontsize=8)
    if fig is not None:
        fig.tight_layout()
    return fig


EXPERIMENT = register(
    Experiment(
        "ift-overfit-validation",
        paper=IFT_PAPER,
        summary=(
            "With one weight decay per weight (>100k hyperparameters) tuned by IFT on a 32-example validation set, "
            "the validation loss falls far below the best single global decay's while the test loss does not "
            "follow."
        ),
        full=FULL,
        quick=QUICK,
        compute=compute,
        claims=claims,
        plots=plots,
        figures=("losses",),
    )
)
