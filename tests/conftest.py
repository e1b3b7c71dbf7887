"""Shared test fixtures. Derivative tests run in float64.

Every test runs single-threaded: the tensors here are small and gain nothing from intra-op threads, and on
a shared, oversubscribed machine OpenMP's spinning workers can make small kernels a hundred times slower.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads() -> Iterator[None]:
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def f64():
    """Run the test with float64 as the default dtype and restore the previous default afterwards."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch.float64
    torch.set_default_dtype(old)
