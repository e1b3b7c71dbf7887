"""Shared pieces of the experiments of composed nested problems: paper names, small networks, quiet solvers."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from nestopt.errors import SolverWarning

__all__ = ["MAML_PAPERS", "PRETRAIN_PAPER", "mlp", "quiet_solvers"]

PRETRAIN_PAPER = "Meta-Learning to Improve Pre-Training (Raghu, Lorraine, Kornblith, McDermott, Duvenaud, NeurIPS 2021)"
MAML_PAPERS = (
    "Model-Agnostic Meta-Learning (Finn et al., ICML 2017); Meta-Learning with Implicit Gradients "
    "(Rajeswaran et al., NeurIPS 2019)"
)


def mlp(sizes: Sequence[int], *, seed: int, activation: type[torch.nn.Module] = torch.nn.ReLU,
        dtype: torch.dtype = torch.float32) -> torch.nn.Sequential:  # fmt: skip
    """``Linear -> activation -> ... -> Linear`` over ``sizes``, initialized from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[torch.nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            layers.append(torch.nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(activation())
        return torch.nn.Sequential(*layers).to(dtype)


@contextmanager
def quiet_solvers() -> Iterator[None]:
    """Silence :class:`~nestopt.errors.SolverWarning` (the experiments count solver statuses instead)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SolverWarning)
        yield
