"""The memory buffer of previously sampled architectures (Adam & Lorraine, 2019).

After a few epochs of search, the architectures the controller samples are stored, ``store`` per epoch, until
the buffer holds ``capacity``; once it is full, each epoch's storing replaces ``replace`` entries chosen at
random instead (the paper: 1,000 per epoch, up to 10,000, then 100 replaced per epoch). From a later epoch,
every controller step adds the supervised loss (:func:`~nestopt.nas.supervised_loss`) on ``sample_size``
architectures drawn from it (the paper: 100).

Example:
    >>> import torch
    >>> from nestopt import nas
    >>> space = nas.CellSpace(nodes=3, ops=("tanh", "relu"))
    >>> buf = nas.MemoryBuffer(capacity=8, sample_size=4, replace=2, seed=0)
    >>> buf.add(space.sample_tokens(6, torch.Generator().manual_seed(0)))
    6
    >>> buf.add(space.sample_tokens(6, torch.Generator().manual_seed(1)))   # fills the last 2 slots
    2
    >>> buf.add(space.sample_tokens(6, torch.Generator().manual_seed(2)))   # full: replaces 2 at random
    2
    >>> len(buf), buf.sample().shape
    (8, torch.Size([4, 5]))
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from nestopt._validate import nonnegative_int, positive_int
from nestopt.errors import InvalidArgumentError, ShapeMismatchError

__all__ = ["MemoryBuffer"]


class MemoryBuffer:
    """A bounded store of token sequences with random replacement once full (see the module docstring).

    Args:
        capacity: the most sequences it holds (the paper: 10,000).
        sample_size: how many :meth:`sample` draws (the paper: 100); at most ``capacity``.
        replace: how many entries one :meth:`add` replaces once the buffer is full (the paper: 100).
        seed: seeds the choice of replaced entries and of samples.

    Raises:
        InvalidArgumentError: a capacity below the sample size (the buffer could never supply a sample).
    """

    def __init__(self, capacity: int = 10_000, sample_size: int = 100, replace: int = 100, *, seed: int = 0) -> None:
        self.capacity = positive_int("capacity", capacity)
        self.sample_size = positive_int("sample_size", sample_size)
        self.replace = nonnegative_int("replace", replace)
        if self.capacity < self.sample_size:
            raise InvalidArgumentError(
                f"the buffer size (capacity={self.capacity}) is below the sample size (sample_size="
                f"{self.sample_size}): it could never supply a sample; raise capacity or lower sample_size"
            )
        self.generator = torch.Generator().manual_seed(int(seed))
        self.tokens: Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.tokens is None else int(self.tokens.shape[0])

    @property
    def full(self) -> bool:
        return len(self) >= self.capacity

    def add(self, tokens: Tensor) -> int:
        """Store an epoch's sampled sequences: append until full; if already full, replace ``replace`` random
        entries with the first ``replace`` new ones. Returns how many were stored."""
        if tokens.dim() != 2 or tokens.shape[0] < 1:
            raise ShapeMismatchError(f"tokens must have shape (n, length) with n >= 1, got {tuple(tokens.shape)}")
        tokens = tokens.detach().to("cpu", torch.long)
        if self.tokens is None:
            self.tokens = tokens[: self.capacity].clone()
            return len(self)
        if tokens.shape[1] != self.tokens.shape[1]:
            raise ShapeMismatchError(
                f"tokens of length {tokens.shape[1]} do not fit a buffer of length {self.tokens.shape[1]}"
            )
        if not self.full:
            room = self.capacity - len(self)
            self.tokens = torch.cat([self.tokens, tokens[:room]])
            return min(room, tokens.shape[0])
        k = min(self.replace, tokens.shape[0])
        slots = torch.randperm(len(self), generator=self.generator)[:k]
        self.tokens[slots] = tokens[:k]
        return k

    def sample(self) -> Tensor:
        """``sample_size`` stored sequences drawn uniformly without replacement."""
        if len(self) < self.sample_size:
            raise InvalidArgumentError(
                f"the buffer holds {len(self)} architectures, fewer than sample_size={self.sample_size}: add more "
                "before sampling (start the supervised loss later than the storing)"
            )
        assert self.tokens is not None
        return self.tokens[torch.randperm(len(self), generator=self.generator)[: self.sample_size]]

    def state_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tokens = state["tokens"]
        self.generator.set_state(state["generator"])
