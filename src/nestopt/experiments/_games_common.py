"""Helpers shared by the differentiable-games experiments."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["PAPER", "single_thread"]

PAPER = "Lorraine, Acuna, Vicol, Duvenaud. Complex Momentum for Optimization in Games. AISTATS 2022"


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch single-threaded inside the block (these experiments use tiny tensors; intra-op threads only
    add overhead, and on a shared machine OpenMP's spinning workers can slow small kernels enormously)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
