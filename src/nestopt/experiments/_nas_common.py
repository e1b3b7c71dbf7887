"""Shared pieces of the NAS experiments: the space and data, the cached ground truth, search settings.

Private: the experiment modules use these so that "the same space, data and ground truth" means the same code.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

import torch

from nestopt import _rng, data, nas
from nestopt.experiments.registry import Config, Context

__all__ = [
    "DARTS_PAPER",
    "ENAS_KEYS",
    "NAS_PAPER",
    "SEARCH_KEYS",
    "SPACE_KEYS",
    "TRUTH_KEYS",
    "enas_config",
    "ground_truth",
    "mean_sd",
    "percentile",
    "sample",
    "setup",
    "shared_training",
    "truth_summary",
]

NAS_PAPER = "Understanding Neural Architecture Search Techniques (Adam & Lorraine, 2019)"
DARTS_PAPER = "DARTS: Differentiable Architecture Search (Liu et al., ICLR 2019)"

SPACE_KEYS = {"nodes": 5, "n_train": 4000, "n_val": 1000, "n_test": 1000}
"""The space and the data every NAS experiment uses in its full run."""
TRUTH_KEYS = {"gt_steps": 1000, "gt_batch_size": 128, "gt_lr": 3e-3, "width": 32}
"""How the ground truth trains each architecture in the full run (``width`` is the supernets' too)."""
SEARCH_KEYS = {"epochs": 20, "steps_per_epoch": 100, "batch_size": 128, "lr": 3e-3, "candidates": 100}
"""The shared-weight budget of a search in the full run (:class:`nestopt.nas.SharedTraining`)."""
ENAS_KEYS = {"controller_steps": 20, "controller_batch": 10, "controller_lr": 3.5e-3, "entropy_weight": 1e-4}
"""ENAS's controller training in the full run (:class:`nestopt.nas.ENASConfig`)."""


def setup(cfg: Config, ctx: Context) -> tuple[nas.CellSpace, data.Splits]:
    """The search space and MNIST-1D, split by the run's seed."""
    space = nas.CellSpace(nodes=cfg["nodes"])
    return space, data.mnist1d(cfg["n_train"], cfg["n_val"], cfg["n_test"], seed=ctx.seed)


def ground_truth(cfg: Config, ctx: Context, space: nas.CellSpace, splits: data.Splits, *, offset: int = 0,
                 name: str = "ground_truth") -> nas.GroundTruth:  # fmt: skip
    """The ground truth of the run (seed ``ctx.seed + offset``), cached as ``NAME.json`` in the run folder."""
    budget = nas.TrainBudget(
        steps=cfg["gt_steps"], batch_size=cfg["gt_batch_size"], lr=cfg["gt_lr"], width=cfg["width"]
    )
    cache = None if ctx.out_dir is None else ctx.out_dir / f"{name}.json"
    return nas.GroundTruth(space, splits, budget, seed=ctx.seed + offset, cache=cache)


def sample(space: nas.CellSpace, n: int, ctx: Context, what: str) -> list[nas.Architecture]:
    """``n`` architectures drawn uniformly, seeded by the run's seed and ``what``."""
    return space.sample(n, torch.Generator().manual_seed(_rng.derive(ctx.seed, what))) if n else []


def shared_training(cfg: Config) -> nas.SharedTraining:
    return nas.SharedTraining(
        epochs=cfg["epochs"], steps_per_epoch=cfg["steps_per_epoch"], batch_size=cfg["batch_size"], lr=cfg["lr"],
        candidates=cfg["candidates"], width=cfg["width"],
    )  # fmt: skip


def enas_config(cfg: Config, **extra: Any) -> nas.ENASConfig:
    return nas.ENASConfig(
        controller_steps=cfg["controller_steps"], controller_batch=cfg["controller_batch"], lr=cfg["controller_lr"],
        entropy_weight=cfg["entropy_weight"], **extra,
    )  # fmt: skip


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def percentile(value: float, table: Sequence[float]) -> float:
    """The fraction of ``table`` strictly below ``value`` plus half the ties (``nan`` for an empty table)."""
    if not table:
        return math.nan
    below = sum(v < value for v in table) + 0.5 * sum(v == value for v in table)
    return below / len(table)


def truth_summary(scores: Sequence[nas.Score]) -> dict[str, Any]:
    """Mean, spread and extremes of a ground-truth sample, and its training cost."""
    acc = [s.test_accuracy for s in scores]
    if not acc:
        return {"size": 0}
    mean, sd = mean_sd(acc)
    return {
        "size": len(acc), "mean": mean, "sd": sd, "min": min(acc), "median": statistics.median(acc), "max": max(acc),
        "best": max(scores, key=lambda s: s.test_accuracy).arch,
        "cpu_seconds_per_architecture": statistics.fmean(s.cpu_seconds for s in scores),
        "seconds_per_architecture": statistics.fmean(s.seconds for s in scores),
    }  # fmt: skip
