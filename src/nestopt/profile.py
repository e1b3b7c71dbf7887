"""Measuring what computations cost: exact peak memory of tensor storages, and thread settings.

Peak memory
-----------

:class:`PeakMemory` is a ``TorchDispatchMode``: it sees every tensor an operator returns (backward passes
included), keeps a weak reference to its storage, and sums the bytes of the storages still alive. Tensors
that existed before the measured region (the model, the data) are counted when handed to :meth:`add` (or
``count=`` at construction), so that the peak can be the whole footprint of a training run, as
``torch.cuda.max_memory_allocated`` reports it on a GPU, and not only the extra memory the region needs:

.. math::  \\text{peak} = \\max_t \\sum_{s \\text{ alive at } t} \\text{bytes}(s), \\qquad
           \\text{extra} = \\text{peak} - \\text{baseline}

where ``baseline`` is the bytes of the counted tensors alive when the region starts. Allocator rounding and
caching are not modelled: the figures are tensor bytes, exactly.

With ``trace=True`` every storage remembers where it was made (the operator and the innermost frames of
nestopt or user code that called it), and :meth:`PeakMemory.breakdown` says which of them were alive at the
peak: the tool for finding the temporaries that set a peak.

:func:`peak_memory` measures a callable; on CUDA it uses ``torch.cuda.max_memory_allocated`` instead.

Threads
-------

:func:`threads` runs a block with a given number of intra-op threads: small models run fastest, and time most
steadily on a shared machine, on one thread.

Example:
    >>> import torch
    >>> from nestopt.profile import PeakMemory
    >>> w = torch.zeros(1000)  # 4000 bytes that exist before the region
    >>> with PeakMemory(count=[w]) as mem:
    ...     a = torch.ones(1000)
    ...     b = a * 2  # a and b alive together: 8000 extra bytes
    ...     del a, b
    ...     c = torch.ones(500)
    >>> mem.baseline, mem.peak, mem.extra
    (4000, 12000, 8000)
"""

from __future__ import annotations

import contextlib
import gc
import sys
import types
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["PeakMemory", "peak_memory", "threads"]


class PeakMemory(TorchDispatchMode):
    """Track the bytes of live tensor storages inside a ``with`` block and their peak.

    Args:
        count: tensors that exist before the block and belong to the measured footprint (model weights,
            data); their storages are counted until they die.
        trace: remember where each storage was made, for :meth:`breakdown` (slower: a stack walk per
            operator).
        depth: with ``trace``, how many frames of the caller's stack name a storage's origin.

    Attributes:
        baseline: bytes of the ``count`` tensors when they were added.
        current: bytes of the tracked storages alive now (storages freed since the last operator are dropped
            when it is read).
        peak: the largest ``current`` seen.
        extra: ``peak - baseline``: what the block needed beyond the counted tensors.

    Example:
        >>> import torch
        >>> w = torch.ones(1000)
        >>> with PeakMemory(count=[w], trace=True) as mem:
        ...     y = (w * 2).exp()
        >>> [(what.split(" <- ")[0], nbytes) for what, nbytes in mem.breakdown()]
        [('counted', 4000), ('aten.mul.Tensor', 4000), ('aten.exp.default', 4000)]
    """

    def __init__(self, *, count: Iterable[torch.Tensor] = (), trace: bool = False, depth: int = 2) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self._current = 0
        self.peak = 0
        self.baseline = 0
        self.trace, self.depth = bool(trace), int(depth)
        self._origin: dict[int, str] = {}
        self._at_peak: dict[str, int] = {}
        self._label = "counted"
        self.baseline += self.add(count)

    @property
    def current(self) -> int:
        self._collect()
        return self._current

    @property
    def extra(self) -> int:
        return self.peak - self.baseline

    def add(self, tensors: Iterable[Any]) -> int:
        """Count the storages of ``tensors`` (anything else is ignored) from now on; returns the bytes added."""
        added = 0
        self._label = "counted"
        for t in tensors:
            if isinstance(t, torch.Tensor):
                added += self._track(t)
        self._new_peak()
        return added

    def breakdown(self) -> list[tuple[str, int]]:
        """With ``trace=True``: the storages alive at the peak, summed by origin, largest first.

        An origin is ``"op <- file:line function <- ..."``: the operator that made the storage and the
        innermost calling frames outside torch; ``"counted"`` are the tensors given to ``count``/:meth:`add`.
        """
        if not self.trace:
            raise RuntimeError("PeakMemory(trace=True) is needed for a breakdown")
        return sorted(self._at_peak.items(), key=lambda item: -item[1])

    def _new_peak(self) -> None:
        if self._current <= self.peak:
            return
        self.peak = self._current
        if self.trace:
            sums: dict[str, int] = {}
            for key, (_, nbytes) in self.live.items():
                what = self._origin.get(key, "?")
                sums[what] = sums.get(what, 0) + nbytes
            self._at_peak = sums

    def _where(self, func: Any) -> str:
        frames: list[str] = []
        frame: types.FrameType | None = sys._getframe(2)
        while frame is not None and len(frames) < self.depth:
            path = frame.f_code.co_filename
            if "/torch/" not in path.replace("\\", "/") and path != __file__:
                frames.append(f"{Path(path).name}:{frame.f_lineno} {frame.f_code.co_name}")
            frame = frame.f_back
        return " <- ".join([str(func), *frames])

    def _track(self, t: torch.Tensor) -> int:
        if t.device.type == "meta":
            return 0
        try:
            storage = t.untyped_storage()
            key = storage.data_ptr()
        except (RuntimeError, NotImplementedError):  # a functorch wrapper: its real tensor is seen at a lower level
            return 0
        nbytes = storage.nbytes()
        if key in self.live or nbytes == 0:
            return 0
        self.live[key] = (StorageWeakRef(storage), nbytes)
        self._current += nbytes
        if self.trace:
            self._origin[key] = self._label
        return nbytes

    def _collect(self) -> None:
        dead = [k for k, (ref, _) in self.live.items() if ref.expired()]
        for k in dead:
            self._current -= self.live.pop(k)[1]
            self._origin.pop(k, None)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        # an output that shares an input's storage (an in-place op, a view) allocated nothing new
        inputs = set()
        for t in tree_flatten((args, kwargs))[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                with contextlib.suppress(RuntimeError, NotImplementedError):  # functorch wrappers have no storage
                    inputs.add(t.untyped_storage().data_ptr())
        out = func(*args, **(kwargs or {}))
        # storages freed since the last operator are dropped first: a new storage may reuse their address
        self._collect()
        if self.trace:
            self._label = self._where(func)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                with contextlib.suppress(RuntimeError, NotImplementedError):
                    if t.untyped_storage().data_ptr() in inputs:
                        continue
                self._track(t)
        self._new_peak()
        return out


def peak_memory(
    fn: Callable[[], Any], *, count: Iterable[torch.Tensor] = (), device: torch.device | str = "cpu"
) -> dict[str, int]:
    """Peak bytes while ``fn()`` runs: ``{"total", "baseline", "extra"}``.

    ``total`` is the peak of everything alive (the ``count`` tensors plus what ``fn`` allocates);
    ``extra`` is ``total - baseline``. On CUDA the figures come from ``torch.cuda.max_memory_allocated``
    (``baseline`` is then all memory allocated before the call, and ``count`` is not needed).

    Example:
        >>> import torch
        >>> from nestopt.profile import peak_memory
        >>> x = torch.zeros(256)
        >>> peak_memory(lambda: (x + 1).sum(), count=[x])  # x, x + 1 and the 4-byte sum alive together
        {'total': 2052, 'baseline': 1024, 'extra': 1028}
    """
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        total = int(torch.cuda.max_memory_allocated())
        return {"total": total, "baseline": base, "extra": total - base}
    with PeakMemory(count=count) as tracker:
        fn()
    return {"total": tracker.peak, "baseline": tracker.baseline, "extra": tracker.extra}


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (``n <= 0``: leave torch's setting), then restore.

    Example:
        >>> import torch
        >>> from nestopt.profile import threads
        >>> with threads(1):
        ...     torch.get_num_threads()
        1
    """
    old = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
