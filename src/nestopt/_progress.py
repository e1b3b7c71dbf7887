"""A small progress bar for long loops (no dependency beyond the standard library).

It draws on standard error when that is a terminal, or when ``NESTOPT_PROGRESS=1``; elsewhere (CI logs,
pipes) it stays silent. ``NESTOPT_PROGRESS=0`` silences it everywhere.

Example:
    >>> from nestopt._progress import progress
    >>> sum(progress(range(3), desc="demo", enabled=False))
    3
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

__all__ = ["progress", "progress_enabled"]


def progress_enabled() -> bool:
    """Whether bars draw by default here: ``NESTOPT_PROGRESS`` if set, else whether stderr is a terminal."""
    flag = os.environ.get("NESTOPT_PROGRESS")
    if flag is not None:
        return flag not in ("", "0", "false", "no")
    return sys.stderr.isatty()


def _fmt_seconds(s: float) -> str:
    s = max(0, int(s))
    return f"{s // 60:d}:{s % 60:02d}"


class _Bar:
    def __init__(self, total: int | None, desc: str, width: int = 24) -> None:
        self.total, self.desc, self.width = total, desc, width
        self.start = self.last = time.perf_counter()
        self.postfix = ""

    def draw(self, n: int, final: bool = False) -> None:
        now = time.perf_counter()
        if not final and now - self.last < 0.1:
            return
        self.last = now
        elapsed = now - self.start
        if self.total:
            frac = min(1.0, n / self.total)
            filled = int(frac * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            eta = elapsed / n * (self.total - n) if n else 0.0
            line = f"{self.desc} [{bar}] {n}/{self.total} {_fmt_seconds(elapsed)}<{_fmt_seconds(eta)}"
        else:
            line = f"{self.desc} {n} it {_fmt_seconds(elapsed)}"
        if self.postfix:
            line += f" {self.postfix}"
        sys.stderr.write("\r" + line[:160].ljust(80))
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()


class progress(Iterable[T]):
    """Wrap an iterable and draw a bar as it is consumed; ``set_postfix`` adds a short status text.

    Args:
        iterable: what to iterate over.
        total: its length when ``len()`` does not know it.
        desc: a label in front of the bar.
        enabled: force the bar on or off; ``None`` follows :func:`progress_enabled`.
    """

    def __init__(
        self, iterable: Iterable[T], total: int | None = None, desc: str = "", enabled: bool | None = None
    ) -> None:
        self._it = iterable
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self._bar = _Bar(total, desc) if (progress_enabled() if enabled is None else enabled) else None

    def set_postfix(self, text: str) -> None:
        if self._bar is not None:
            self._bar.postfix = text

    def __iter__(self) -> Iterator[T]:
        n = 0
        for item in self._it:
            yield item
            n += 1
            if self._bar is not None:
                self._bar.draw(n)
        if self._bar is not None:
            self._bar.draw(n, final=True)
