"""Timing and peak-memory measurement shared by the benchmarks.

Peak memory comes from the library's meter (:mod:`nestopt.profile`): on the CPU it replays the allocator's
events, which ``torch.profiler`` records with ``profile_memory=True`` (every allocation and free, backward
passes included), and the peak is the most bytes held at once by what the measured region allocated. Tensors
that existed before (the model, the data) are not counted: the figure is the extra memory an operation
needs. On CUDA, ``torch.cuda.max_memory_allocated`` gives the same figure.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from nestopt.profile import PeakMemory
from nestopt.profile import peak_memory as _peak_memory

__all__ = ["PeakMemory", "peak_memory", "time_it"]


def peak_memory(fn: Callable[[], Any], device: torch.device | str = "cpu") -> int:
    """Peak extra bytes allocated while ``fn()`` runs (its result is dropped before returning)."""
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
    return _peak_memory(fn, device=device)["extra"]


def time_it(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1, device: torch.device | str = "cpu") -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
