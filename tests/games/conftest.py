"""Run these tests single-threaded: tiny tensors gain nothing from intra-op threads, and on a shared,
oversubscribed machine OpenMP's spinning workers can make small kernels a hundred times slower."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
