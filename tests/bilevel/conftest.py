"""Small problems for the trainer tests: a network with BatchNorm and Dropout on a synthetic task."""

from __future__ import annotations

import torch

from nestopt import data


def regularized_net(seed: int = 0, *, p: float = 0.3) -> torch.nn.Module:
    """A network with every kind of state a real model has: BatchNorm buffers and Dropout randomness."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 16),
        torch.nn.BatchNorm1d(16),
        torch.nn.ReLU(),
        torch.nn.Dropout(p),
        torch.nn.Linear(16, 3),
    )


def task(seed: int = 0) -> data.Splits:
    return data.synthetic_classification(n_train=96, n_val=64, n_test=64, dim=6, num_classes=3, seed=seed)


def loaders(d: data.Splits, bs: int = 32) -> tuple[data.Loader, data.Loader, data.Loader]:
    return data.Loader(d.train, bs, seed=1), data.Loader(d.val, bs, seed=2), data.Loader(d.test, 64, shuffle=False)
