"""Measuring what computations cost: exact peak memory of tensor storages, and thread settings.

Peak memory
-----------

:class:`PeakMemory` measures the bytes a ``with`` block holds at its peak, in two ways.

* By default it reads the allocator: the block runs under ``torch.profiler`` with ``profile_memory=True``,
  whose allocation events (every allocation and free of the block, with its address and size) give the bytes
  allocated inside the block and still alive at every moment. Nothing about the computation changes.
* With ``trace=True`` it is a ``TorchDispatchMode``: it sees every tensor an operator returns (backward
  passes included), keeps a weak reference to its storage, sums the bytes of the storages still alive, and
  remembers where each was made, so that :meth:`PeakMemory.breakdown` can say which of them were alive at the
  peak: the tool for finding the temporaries that set a peak. But a Python dispatch mode changes what autograd
  does: while one is active, the engine sums the gradients that reach one tensor out of place instead of in
  the buffer of the first (``areAnyTensorSubclassLike`` is true under any mode), so a backward pass that
  accumulates, plain training's for instance, peaks higher under the tracker (by 0.49 network sizes for the
  ``ift-cost`` plain run) than without it. Use the default mode for figures and the traced one for the
  breakdown.

Tensors that existed before the measured region (the model, the data) are counted when handed to ``count=``
at construction, so that the peak can be the whole footprint of a training run, as
``torch.cuda.max_memory_allocated`` reports it on a GPU, and not only the extra memory the region needs:

.. math::  \\text{peak} = \\max_t \\sum_{s \\text{ alive at } t} \\text{bytes}(s), \\qquad
           \\text{extra} = \\text{peak} - \\text{baseline}

where ``baseline`` is the bytes of the counted tensors' storages when the region starts. The figures are
bytes requested from the allocator (default) or tensor-storage bytes (traced); allocator rounding and caching
are not modelled.

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
    ...     b = a + a  # a and b alive together: 8000 extra bytes
    ...     del a, b
    ...     c = torch.ones(500)
    >>> mem.baseline, mem.peak, mem.extra
    (4000, 12000, 8000)
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import types
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from nestopt.errors import UnsupportedError

__all__ = ["PeakMemory", "peak_memory", "threads"]


class PeakMemory:
    """The peak bytes held inside a ``with`` block: read from the allocator, or traced tensor by tensor.

    Args:
        count: tensors that exist before the block and belong to the measured footprint (model weights,
            data); their storages are counted for the whole block (traced: until they die; the allocator reports
            no free of memory it did not see allocated).
        trace: track tensor storages with a dispatch mode instead of reading the allocator, and remember where
            each was made, for :meth:`breakdown` (slower: a stack walk per operator; and autograd sums
            gradients out of place under it, see the module docstring).
        depth: with ``trace``, how many frames of the caller's stack name a storage's origin.

    Attributes:
        baseline: bytes of the ``count`` tensors when the block starts.
        peak: the largest total seen (the counted tensors plus what the block allocated and still held).
        extra: ``peak - baseline``: what the block needed beyond the counted tensors.

    Read the figures after the block (:attr:`current` also inside it with ``trace=True``). The allocator is read
    through ``torch.profiler``, so the default mode cannot run inside another profiler session.

    Example:
        >>> import torch
        >>> w = torch.ones(1000)
        >>> with PeakMemory(count=[w]) as mem:
        ...     y = (w + w).exp()  # w + w and its exp alive together
        >>> mem.baseline, mem.peak, mem.extra
        (4000, 12000, 8000)
        >>> with PeakMemory(count=[w], trace=True) as mem:
        ...     y = (w + w).exp()
        >>> [(what.split(" <- ")[0], nbytes) for what, nbytes in mem.breakdown()]
        [('counted', 4000), ('aten.add.Tensor', 4000), ('aten.exp.default', 4000)]
    """

    def __init__(self, *, count: Iterable[torch.Tensor] = (), trace: bool = False, depth: int = 2) -> None:
        self.trace = bool(trace)
        self._tracker = _StorageTracker(count=count, depth=depth) if self.trace else None
        self.baseline = self._tracker.baseline if self._tracker is not None else sum(_storages(count).values())
        self.peak = self.baseline
        self._end: int | None = None
        self._profiler: Any = None

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self._tracker is not None:
            self._tracker.__enter__()
            return self
        if torch.autograd.profiler._is_profiler_enabled:
            raise UnsupportedError(
                "PeakMemory reads the allocator through torch.profiler, which is already running here; use "
                "PeakMemory(trace=True) inside another profiler session"
            )
        profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True)
        with _quiet_stderr():
            profiler.__enter__()
        self._profiler = profiler
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._tracker is not None:
            self._tracker.__exit__(*exc)
            self.peak = self._tracker.peak
            return
        with _quiet_stderr():
            self._profiler.__exit__(*exc)
        self.peak, self._end = _replay(_allocations(self._profiler), self.baseline)
        self._profiler = None

    @property
    def current(self) -> int:
        """Bytes held now (traced), or at the end of the block (allocator: read after the block)."""
        if self._tracker is not None:
            return self._tracker.current
        if self._end is None:
            raise UnsupportedError("PeakMemory reads the allocator after the block; use trace=True to read it inside")
        return self._end

    @property
    def extra(self) -> int:
        return self.peak - self.baseline

    def breakdown(self) -> list[tuple[str, int]]:
        """With ``trace=True``: the storages alive at the peak, summed by origin, largest first.

        An origin is ``"op <- file:line function <- ..."``: the operator that made the storage and the
        innermost calling frames outside torch; ``"counted"`` are the tensors given to ``count``.
        """
        if self._tracker is None:
            raise RuntimeError("PeakMemory(trace=True) is needed for a breakdown")
        return self._tracker.breakdown()


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence the process's standard error (file descriptor 2) for the block: the profiler's native code prints
    a line on every start and stop."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _storages(tensors: Iterable[Any]) -> dict[int, int]:
    """The distinct storages of ``tensors`` (anything else ignored): address -> bytes."""
    out: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            storage = t.untyped_storage()
            if storage.nbytes():
                out[storage.data_ptr()] = storage.nbytes()
    return out


def _allocations(profiler: Any) -> list[tuple[int, int]]:
    """The allocation events of a finished profiler session, in time order: ``(address, bytes)``, the bytes
    negative for a free."""
    try:  # the event tree that torch.profiler's own memory timeline reads
        from torch._C._profiler import _EventType

        stack = list(profiler.profiler.kineto_results.experimental_event_tree())
    except (ImportError, AttributeError) as err:
        raise UnsupportedError(
            f"this torch's profiler does not expose its allocation events ({err}); use PeakMemory(trace=True)"
        ) from err
    found = []
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == _EventType.Allocation:
            f = node.extra_fields
            found.append((node.start_time_ns, f.allocation_id, f.ptr, f.alloc_size))
    found.sort()
    return [(ptr, size) for _, _, ptr, size in found]


def _replay(events: list[tuple[int, int]], baseline: int) -> tuple[int, int]:
    """The peak and final totals: the counted storages plus the allocations made in the block and not freed."""
    alive: dict[int, int] = {}
    current = peak = baseline
    for ptr, size in events:
        if size > 0:
            alive[ptr] = size
            current += size
        elif ptr in alive:  # a free of memory allocated before the block is not part of its total
            current -= alive.pop(ptr)
        peak = max(peak, current)
    return peak, current


class _StorageTracker(TorchDispatchMode):
    """:class:`PeakMemory`'s traced mode: live tensor storages, their peak, and where each was made."""

    def __init__(self, *, count: Iterable[torch.Tensor] = (), depth: int = 2) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self._current = 0
        self.peak = 0
        self.baseline = 0
        self.depth = int(depth)
        self._origin: dict[int, str] = {}
        self._at_peak: dict[str, int] = {}
        self._label = "counted"
        self.baseline += self.add(count)

    @property
    def current(self) -> int:
        self._collect()
        return self._current

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
        """The storages alive at the peak, summed by origin, largest first (see :meth:`PeakMemory.breakdown`)."""
        return sorted(self._at_peak.items(), key=lambda item: -item[1])

    def _new_peak(self) -> None:
        if self._current <= self.peak:
            return
        self.peak = self._current
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
        >>> peak_memory(lambda: (x + x).sum(), count=[x])  # x, x + x and the 4-byte sum alive together
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
