"""Timing and peak-memory measurement shared by the benchmarks.

Peak memory is measured in-process and exactly, on any device, by a ``TorchDispatchMode`` that sees every
tensor an operator creates (backward passes included) and weakly references its storage: the live total is
the sum of the storages created inside the measured region that are still alive, and the peak is its
maximum. Tensors that existed before (the model, the data) are not counted: the figure is the extra memory
an operation needs. On CUDA, ``torch.cuda.max_memory_allocated`` gives the same figure and is used instead.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["PeakMemory", "peak_memory", "time_it"]


class PeakMemory(TorchDispatchMode):
    """Track the peak bytes of tensor storages created inside the ``with`` block."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = 0
        self.peak = 0

    def _collect(self) -> None:
        dead = [k for k, (ref, _) in self.live.items() if ref.expired()]
        for k in dead:
            self.current -= self.live.pop(k)[1]

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        # an output that shares an input's storage (an in-place op, a view) allocated nothing new
        inputs = set()
        for t in tree_flatten((args, kwargs))[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                with contextlib.suppress(RuntimeError):  # functorch wrappers have no storage here
                    inputs.add(t.untyped_storage().data_ptr())
        out = func(*args, **(kwargs or {}))
        self._collect()
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                try:
                    storage = t.untyped_storage()
                    key = storage.data_ptr()
                except RuntimeError:  # a functorch wrapper: its real tensor is dispatched at a lower level
                    continue
                if key in self.live or key in inputs or storage.nbytes() == 0:
                    continue
                self.live[key] = (StorageWeakRef(storage), storage.nbytes())
                self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        return out


def peak_memory(fn: Callable[[], Any], device: torch.device | str = "cpu") -> int:
    """Peak extra bytes allocated while ``fn()`` runs (its result is dropped before returning)."""
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - base)
    with PeakMemory() as tracker:
        fn()
    return tracker.peak


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
