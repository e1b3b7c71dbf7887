"""The benchmark scripts import their helpers by module name, as ``python benchmarks/x.py`` does."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))


@pytest.fixture(autouse=True)
def _keep_threads():
    """Benchmarks fix the thread count; restore it for the tests that follow."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
