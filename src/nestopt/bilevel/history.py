"""The record of a bilevel run: one dict per outer step."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["History"]


class History:
    """Per-outer-step records (train / validation / test losses and accuracies, hypergradient norm, solver
    diagnostics, elapsed seconds), and the results of retraining from scratch
    (:meth:`nestopt.BilevelTrainer.retrain`) in :attr:`retrains`.

    Example:
        >>> h = History([{"outer_step": 1, "val_loss": 0.5}, {"outer_step": 2}])
        >>> h.column("val_loss")
        [0.5, nan]
        >>> h.last("val_loss")
        0.5
    """

    def __init__(
        self, records: list[dict[str, Any]] | None = None, retrains: list[dict[str, Any]] | None = None
    ) -> None:
        self.records: list[dict[str, Any]] = records or []
        self.retrains: list[dict[str, Any]] = retrains or []

    def append(self, record: dict[str, Any]) -> None:
        self.records.append(record)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.records[i]

    def column(self, key: str) -> list[Any]:
        """The values of ``key`` across outer steps (``nan`` where a step did not record it)."""
        return [r.get(key, math.nan) for r in self.records]

    def last(self, key: str) -> Any:
        """The most recent recorded value of ``key``."""
        for r in reversed(self.records):
            if key in r:
                return r[key]
        raise KeyError(f"no outer step recorded {key!r}")

    def as_dict(self) -> dict[str, list[Any]]:
        keys: list[str] = []
        for r in self.records:
            keys += [k for k in r if k not in keys]
        return {k: self.column(k) for k in keys}
