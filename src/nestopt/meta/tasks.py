"""Few-shot tasks: a batch of tasks with their support and query sets, and the sinusoid task family.

A :class:`TaskBatch` holds ``T`` tasks as four tensors with a leading task dimension: support inputs and
targets ``[T, n_support, ...]`` and query inputs and targets ``[T, n_query, ...]``. Its shapes are checked
when it is built, so that a batch of inconsistent tasks fails with the shapes that differ instead of deep
inside a training step.

:class:`Sinusoid` is the regression benchmark of MAML (Finn et al., 2017): each task is
:math:`y = A \\sin(x - \\varphi)` with amplitude :math:`A \\sim U[0.1, 5]` and phase
:math:`\\varphi \\sim U[0, \\pi]`, inputs :math:`x \\sim U[-5, 5]`, made in code from a seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from nestopt import _rng
from nestopt._validate import positive_int, real
from nestopt.errors import InvalidArgumentError, ShapeMismatchError

__all__ = ["Sinusoid", "Task", "TaskBatch"]

Batch = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class Task:
    """One task: its ``support`` set ``(x, y)`` (to adapt on) and its ``query`` set ``(x, y)`` (to judge by)."""

    support: Batch
    query: Batch


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


@dataclass(frozen=True)
class TaskBatch:
    """``T`` tasks stacked along a leading dimension (see the module docstring).

    Attributes:
        support_x, support_y: ``[T, n_support, ...]``.
        query_x, query_y: ``[T, n_query, ...]``, inputs shaped like the support inputs past the example axis.
        info: per-task tensors ``[T, ...]`` describing the tasks (a sinusoid's amplitude and phase), if any.

    Example:
        >>> import torch
        >>> from nestopt import meta
        >>> batch = meta.TaskBatch(torch.zeros(4, 5, 1), torch.zeros(4, 5, 1), torch.zeros(4, 8, 1), torch.zeros(4, 8, 1))
        >>> len(batch), batch[0].query[0].shape
        (4, torch.Size([8, 1]))
        >>> meta.TaskBatch(torch.zeros(4, 5, 1), torch.zeros(3, 5, 1), torch.zeros(4, 8, 1), torch.zeros(4, 8, 1))
        Traceback (most recent call last):
        ...
        nestopt.errors.ShapeMismatchError: a task batch needs the same number of tasks in every tensor (its first dimension), got support_x [4, 5, 1], support_y [3, 5, 1], query_x [4, 8, 1], query_y [4, 8, 1]
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    info: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        named = {
            "support_x": self.support_x,
            "support_y": self.support_y,
            "query_x": self.query_x,
            "query_y": self.query_y,
        }
        for name, t in named.items():
            if not isinstance(t, Tensor):
                raise InvalidArgumentError(f"{name} must be a tensor, got {type(t).__name__}")
            if t.dim() < 2:
                raise ShapeMismatchError(f"{name} must be [tasks, examples, ...], got shape {list(t.shape)}")
        shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in named.items())
        if len({t.shape[0] for t in named.values()}) != 1:
            raise ShapeMismatchError(
                f"a task batch needs the same number of tasks in every tensor (its first dimension), got {shapes}"
            )
        for part in ("support", "query"):
            x, y = named[f"{part}_x"], named[f"{part}_y"]
            if x.shape[1] != y.shape[1]:
                raise ShapeMismatchError(f"{part}_x and {part}_y need as many examples each, got {shapes}")
        if self.support_x.shape[2:] != self.query_x.shape[2:] or self.support_y.shape[2:] != self.query_y.shape[2:]:
            raise ShapeMismatchError(f"support and query examples must have the same shapes, got {shapes}")
        for k, v in self.info.items():
            if not isinstance(v, Tensor) or v.dim() == 0 or v.shape[0] != self.support_x.shape[0]:
                raise ShapeMismatchError(f"info[{k!r}] must be a tensor with one entry per task, got {v!r}")

    def __len__(self) -> int:
        return int(self.support_x.shape[0])

    def __getitem__(self, i: int) -> Task:
        return Task((self.support_x[i], self.support_y[i]), (self.query_x[i], self.query_y[i]))

    def __iter__(self) -> Iterator[Task]:
        return (self[i] for i in range(len(self)))

    @classmethod
    def from_tasks(cls, tasks: Sequence[Task | tuple[Batch, Batch]]) -> TaskBatch:
        """Stack tasks ``Task(support, query)`` (or ``((xs, ys), (xq, yq))``) into a batch; their shapes must agree.

        Example:
            >>> import torch
            >>> from nestopt import meta
            >>> t = ((torch.zeros(5, 1), torch.zeros(5, 1)), (torch.zeros(8, 1), torch.zeros(8, 1)))
            >>> len(meta.TaskBatch.from_tasks([t, t]))
            2
        """
        if not tasks:
            raise InvalidArgumentError("from_tasks needs at least one task")
        parts: list[list[Tensor]] = [[], [], [], []]
        for i, task in enumerate(tasks):
            support, query = (task.support, task.query) if isinstance(task, Task) else task
            for j, t in enumerate((*support, *query)):
                if not isinstance(t, Tensor):
                    raise InvalidArgumentError(f"task {i} holds a {type(t).__name__}, not a tensor")
                first = parts[j][0] if parts[j] else t
                if t.shape != first.shape:
                    which = ("support_x", "support_y", "query_x", "query_y")[j]
                    raise ShapeMismatchError(
                        f"tasks of a batch must have the same shapes: task {i}'s {which} is {list(t.shape)} but "
                        f"task 0's is {list(first.shape)}"
                    )
                parts[j].append(t)
        sx, sy, qx, qy = (torch.stack(p) for p in parts)
        return cls(sx, sy, qx, qy)

    def to(self, *args: Any, **kwargs: Any) -> TaskBatch:
        """The batch with every tensor moved or converted (``torch.Tensor.to`` arguments)."""
        move = lambda t: t.to(*args, **kwargs) if t.is_floating_point() else t.to(device=kwargs.get("device"))
        return TaskBatch(
            move(self.support_x), move(self.support_y), move(self.query_x), move(self.query_y),
            info={k: move(v) for k, v in self.info.items()},
        )  # fmt: skip


class Sinusoid:
    """The few-shot sinusoid regression family: :math:`y = A \\sin(x - \\varphi)` (Finn et al., 2017).

    Args:
        amplitude: the range of :math:`A` (uniform).
        phase: the range of :math:`\\varphi` (uniform).
        x_range: the range of the inputs (uniform).
        shots: support examples per task.
        queries: query examples per task.
        dtype: the tensors' floating dtype.

    Example:
        >>> from nestopt import meta
        >>> tasks = meta.Sinusoid(shots=5, queries=10).sample(8, seed=0)
        >>> tasks.support_x.shape, tasks.query_y.shape, sorted(tasks.info)
        (torch.Size([8, 5, 1]), torch.Size([8, 10, 1]), ['amplitude', 'phase'])
        >>> bool(((tasks.info["amplitude"][:, None, None] * torch.sin(tasks.query_x - tasks.info["phase"][:, None, None]))
        ...       - tasks.query_y).abs().max() < 1e-6)
        True
    """

    def __init__(
        self,
        *,
        amplitude: tuple[float, float] = (0.1, 5.0),
        phase: tuple[float, float] = (0.0, math.pi),
        x_range: tuple[float, float] = (-5.0, 5.0),
        shots: int = 10,
        queries: int = 10,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        for name, (low, high) in (("amplitude", amplitude), ("phase", phase), ("x_range", x_range)):
            if real(f"{name}[0]", low) > real(f"{name}[1]", high):
                raise InvalidArgumentError(f"{name} must be a range (low, high) with low <= high, got {(low, high)}")
        self.amplitude, self.phase, self.x_range = amplitude, phase, x_range
        self.shots, self.queries = positive_int("shots", shots), positive_int("queries", queries)
        self.dtype = dtype

    def _uniform(self, n: tuple[int, ...], bounds: tuple[float, float], gen: torch.Generator) -> Tensor:
        low, high = bounds
        return low + (high - low) * torch.rand(n, generator=gen, dtype=self.dtype)

    def sample(self, n_tasks: int, *, seed: int) -> TaskBatch:
        """``n_tasks`` tasks drawn from ``seed`` (the same seed gives the same tasks)."""
        n = positive_int("n_tasks", n_tasks)
        gen = torch.Generator().manual_seed(int(seed))
        amp = self._uniform((n,), self.amplitude, gen)
        phase = self._uniform((n,), self.phase, gen)
        x = self._uniform((n, self.shots + self.queries, 1), self.x_range, gen)
        y = amp[:, None, None] * torch.sin(x - phase[:, None, None])
        s = self.shots
        return TaskBatch(x[:, :s], y[:, :s], x[:, s:], y[:, s:], info={"amplitude": amp, "phase": phase})

    def stream(self, n_tasks: int, *, seed: int) -> Iterator[TaskBatch]:
        """An endless stream of batches of ``n_tasks`` tasks; batch ``i`` depends only on ``(seed, i)``."""
        i = 0
        while True:
            yield self.sample(n_tasks, seed=_rng.derive(seed, "sinusoid", i))
            i += 1
