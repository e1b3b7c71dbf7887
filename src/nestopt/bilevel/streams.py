"""An endless, resumable stream of batches over a loader, epoch after epoch."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from typing import Any

from nestopt.errors import InvalidArgumentError, NestoptWarning

__all__ = ["BatchStream", "one_pass"]


class BatchStream:
    """Draw batches from ``loader`` forever, counting the epoch and the position within it.

    A :class:`nestopt.data.Loader` regenerates any epoch from its seed, so a restored stream continues with
    exactly the batches it would have drawn. Any other iterable is restored by skipping the batches already
    drawn from a fresh pass, which is exact only when its order does not change between passes.
    """

    def __init__(self, loader: Iterable[Any], name: str) -> None:
        self.loader, self.name = loader, name
        self.epoch, self.position = 0, 0
        self._it: Iterator[Any] | None = None

    def _open(self) -> Iterator[Any]:
        epoch_batches = getattr(self.loader, "epoch_batches", None)
        return iter(epoch_batches(self.epoch) if callable(epoch_batches) else self.loader)

    def next(self) -> Any:
        if self._it is None:
            self._it = self._open()
            for _ in range(self.position):
                next(self._it)
        try:
            batch = next(self._it)
        except StopIteration:
            if self.position == 0:
                raise InvalidArgumentError(f"the {self.name} loader is empty: it yielded no batch") from None
            self.epoch, self.position = self.epoch + 1, 0
            self._it = self._open()
            try:
                batch = next(self._it)
            except StopIteration:
                raise InvalidArgumentError(f"the {self.name} loader is empty: it yielded no batch") from None
        self.position += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._it = None
        if not callable(getattr(self.loader, "epoch_batches", None)) and (self.epoch or self.position):
            warnings.warn(
                f"resuming the {self.name} loader by skipping {self.position} batches of a fresh pass: exact only "
                "if its order is the same on every pass (nestopt.data.Loader resumes exactly)",
                NestoptWarning,
                stacklevel=3,
            )


def one_pass(loader: Iterable[Any]) -> Iterable[Any]:
    """One pass over a loader for evaluation, without disturbing a :class:`nestopt.data.Loader`'s epochs."""
    epoch_batches = getattr(loader, "epoch_batches", None)
    return epoch_batches(0) if callable(epoch_batches) else loader
