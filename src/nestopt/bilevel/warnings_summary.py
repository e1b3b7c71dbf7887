"""Solver warnings of a whole training run, summarized once with counts instead of one per outer step."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

from nestopt.errors import SolverWarning

__all__ = ["WarningTally"]


class WarningTally:
    """Solver warnings of a whole ``fit``, summarized once with counts instead of one per outer step."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.first: dict[str, str] = {}
        self.steps = 0

    @contextlib.contextmanager
    def record(self) -> Iterator[None]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SolverWarning)
            yield
        self.steps += 1
        for w in caught:
            if issubclass(w.category, SolverWarning):
                text = str(w.message)
                key = ":".join(text.split(":")[:2])
                self.counts[key] = self.counts.get(key, 0) + 1
                self.first.setdefault(key, text)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    def emit(self) -> None:
        for key, n in self.counts.items():
            warnings.warn(
                f"{key} in {n} of {self.steps} outer steps (first: {self.first[key]})", SolverWarning, stacklevel=3
            )
