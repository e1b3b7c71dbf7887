"""The flagship: 105,610 weight decays, one per weight, tuned by hypergradients during a single training run.

An MLP on MNIST-1D (256 training examples) gets one decay coefficient per weight, tuned jointly with the
weights by :class:`~nestopt.BilevelTrainer` (implicit-function-theorem hypergradients, Neumann series). The
baseline is what one would otherwise do: a grid of single global decays, each a full training run of the same
network with the same initialization, batches and optimizer. It runs twice, with two validation sets:

* **1000 validation examples**: the per-weight decays beat every global decay of the grid on held-out test
  accuracy, at the cost of one training run instead of one run per grid point. (Not on test loss: the tuned
  network is more accurate but more confident than the heavily decayed network with the best loss.)
* **32 validation examples**: the same hyperparameters drive the validation loss far below the best global
  decay's while the test loss does not follow: with this many hyperparameters the validation set is data
  that can be overfitted (:mod:`nestopt.experiments.ift_overfit_validation`).

Times are CPU seconds of this process (one thread).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from nestopt import data
from nestopt.data import Split, Splits
from nestopt.experiments._common import IFT_PAPER, count
from nestopt.experiments.ift_overfit_validation import FULL as OVERFIT_FULL
from nestopt.experiments.ift_overfit_validation import best_global, global_sweep, plot_run, tune_per_weight
from nestopt.experiments.registry import Claim, Config, Context, Experiment, Metrics, register
from nestopt.profile import threads

__all__: list[str] = []

FULL = {**OVERFIT_FULL, "n_val": 32, "n_val_large": 1000}
QUICK = {**FULL, "outer_steps": 60, "eval_every": 5, "global_decays": [1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]}


def _splits(cfg: Mapping[str, Any], seed: int) -> tuple[Splits, Split]:
    """MNIST-1D with a small validation split and a large, disjoint one."""
    small, large = cfg["n_val"], cfg["n_val_large"]
    d = data.mnist1d(cfg["n_train"], small + large, cfg["n_test"], seed=seed)
    val_small = Split(d.val.x[:small], d.val.y[:small])
    val_large = Split(d.val.x[small:], d.val.y[small:])
    return Splits(d.train, val_small, d.test, d.num_classes), val_large


def _cpu(fn: Any) -> tuple[Any, float]:
    start = time.process_time()
    out = fn()
    return out, time.process_time() - start


def compute(cfg: Config, ctx: Context) -> Metrics:
    """The grid of global decays and the two per-weight runs (1000 and 32 validation examples), timed."""
    with threads(cfg["threads"]):
        d, val_large = _splits(cfg, ctx.seed)
        parts = {"train": d.train, "val": d.val, "val_large": val_large, "test": d.test}
        sweep, grid_seconds = _cpu(lambda: global_sweep(d, parts, cfg, ctx))
        (large_trainer, large), large_seconds = _cpu(lambda: tune_per_weight(d, val_large, cfg, ctx))
        (_small_trainer, small), small_seconds = _cpu(lambda: tune_per_weight(d, d.val, cfg, ctx))
    n_hparams = count(large_trainer.hparams)
    n_grid = len(cfg["global_decays"])
    best_large = best_global(sweep, "val_large")
    best_small = best_global(sweep, "val")
    final_large, final_small = large[-1], small[-1]
    rows = [
        {"run": f"global decay, best of {n_grid} by 1000-example validation", "hyperparameters": 1,
         "seconds": grid_seconds, "val_loss": best_large["val_large_loss"], "test_loss": best_large["test_loss"],
         "test_accuracy": best_large["test_accuracy"]},
        {"run": "per-weight decays by IFT, 1000-example validation", "hyperparameters": n_hparams,
         "seconds": large_seconds, "val_loss": final_large["val_loss"], "test_loss": final_large["test_loss"],
         "test_accuracy": final_large["test_accuracy"]},
        {"run": f"global decay, best of {n_grid} by 32-example validation", "hyperparameters": 1,
         "seconds": grid_seconds, "val_loss": best_small["val_loss"], "test_loss": best_small["test_loss"],
         "test_accuracy": best_small["test_accuracy"]},
        {"run": "per-weight decays by IFT, 32-example validation", "hyperparameters": n_hparams,
         "seconds": small_seconds, "val_loss": final_small["val_loss"], "test_loss": final_small["test_loss"],
         "test_accuracy": final_small["test_accuracy"]},
    ]  # fmt: skip
    return {
        "hyperparameters": n_hparams,
        "table": rows,
        "seconds": {"grid": grid_seconds, "per_weight_1000": large_seconds, "per_weight_32": small_seconds},
        "grid_best_test_accuracy": max(r["test_accuracy"] for run in sweep for r in run["records"]),
        "best_global": {"val_1000": best_large, "val_32": best_small},
        "curves": {"val_1000": large, "val_32": small},
        "grid": [{"decay": r["decay"], "final": r["records"][-1]} for r in sweep],
    }


def claims(m: Metrics, cfg: Config) -> list[Claim]:
    n_hparams, n_grid, seconds = m["hyperparameters"], len(cfg["global_decays"]), m["seconds"]
    final_large, final_small = m["curves"]["val_1000"][-1], m["curves"]["val_32"][-1]
    best_small = m["best_global"]["val_32"]
    return [
        Claim.holds(f"at least 100k hyperparameters ({n_hparams} per-weight decays)", n_hparams >= 100_000, n_hparams),
        Claim.at_least(
            f"1000-example validation: test accuracy, per-weight IFT minus the best of all {n_grid} global decays",
            final_large["test_accuracy"] - m["grid_best_test_accuracy"],
            0.0,
        ),
        Claim.at_most(
            f"CPU time: one per-weight IFT run / the {n_grid}-point global grid",
            seconds["per_weight_1000"] / seconds["grid"],
            1.0,
        ),
        Claim.at_most(
            "32-example validation: validation loss, per-weight IFT / best global decay",
            final_small["val_loss"] / best_small["val_loss"],
            0.5,
        ),
        Claim.at_least(
            "32-example validation: test loss, per-weight IFT minus best global decay (does not follow)",
            final_small["test_loss"] - best_small["test_loss"],
            0.0,
        ),
    ]


def notes(m: Metrics, cfg: Config) -> str:
    """The table of the four runs."""
    lines = [
        "| run | hyperparameters | CPU s | validation loss | test loss | test accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for r in m["table"]:
        lines.append(
            f"| {r['run']} | {r['hyperparameters']} | {r['seconds']:.1f} | {r['val_loss']:.3f} | "
            f"{r['test_loss']:.3f} | {r['test_accuracy']:.3f} |"
        )
    return "\n".join(lines)


def plots(plt: Any, m: Metrics, cfg: Config) -> dict[str, Any]:
    n_hparams, n_grid = m["hyperparameters"], len(cfg["global_decays"])
    large, small = m["curves"]["val_1000"], m["curves"]["val_32"]
    best_large, best_small = m["best_global"]["val_1000"], m["best_global"]["val_32"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.6))
    reference = {**best_large, "val_loss": best_large["val_large_loss"]}
    plot_run(plt, large, reference, None, cfg, title="1000 validation examples", axes=[axes[0]])
    plot_run(plt, small, best_small, None, cfg, title="32 validation examples: overfitted", axes=[axes[1]])
    ax = axes[2]
    for name, curve, color in (("1000", large, "tab:green"), ("32", small, "tab:olive")):
        steps = [r["outer_step"] for r in curve]
        ax.plot(steps, [r["test_accuracy"] for r in curve], color=color, marker="o", ms=3,
                label=f"per-weight IFT, {name} validation examples")  # fmt: skip
    ax.axhline(m["grid_best_test_accuracy"], color="k", ls="--", lw=1.2, label=f"best of the {n_grid} global decays")
    ax.set_xlabel(f"outer step ({cfg['inner_steps_per_outer']} inner steps each)")
    ax.set_ylabel("test accuracy")
    ax.set_title("held-out test accuracy")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(
        f"MNIST-1D MLP, {n_hparams:,} per-weight decays tuned by IFT in one training run "
        f"(dashed: the best of {n_grid} global decays)",
        fontsize=11,
    )
    fig.tight_layout()
    return {"flagship": fig}


EXPERIMENT = register(
    Experiment(
        "flagship",
        paper=IFT_PAPER,
        summary=(
            "105,610 per-weight decays tuned by IFT in one training run beat a grid of global decays on test "
            "accuracy (1000 validation examples) and overfit a 32-example validation set."
        ),
        full=FULL,
        quick=QUICK,
        compute=compute,
        claims=claims,
        plots=plots,
        notes=notes,
        figures=("flagship",),
    )
)
