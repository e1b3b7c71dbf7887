"""Progress bars for long loops, drawn by ``tqdm.auto`` (a widget in notebooks, text in a terminal).

A bar draws on standard error when that is a terminal; elsewhere (CI logs, pipes) it stays silent unless
``NESTOPT_PROGRESS=1``. ``NESTOPT_PROGRESS=0`` silences every bar, even one asked for with ``enabled=True``.

Example:
    >>> from nestopt._progress import progress
    >>> sum(progress(range(3), desc="demo", enabled=False))
    3
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

__all__ = ["progress", "progress_enabled"]

_OFF = ("0", "false", "no", "off")


def progress_enabled(enabled: bool | None = None) -> bool:
    """Whether a bar draws: never with ``NESTOPT_PROGRESS=0``; else ``enabled`` if given; else with
    ``NESTOPT_PROGRESS`` set to anything else; else when standard error is a terminal."""
    flag = os.environ.get("NESTOPT_PROGRESS", "").strip().lower()
    if flag in _OFF:
        return False
    if enabled is not None:
        return enabled
    return bool(flag) or sys.stderr.isatty()


class progress(Generic[T]):
    """Wrap an iterable in a progress bar that advances as it is consumed.

    Args:
        iterable: what to iterate over.
        total: its length when ``len()`` does not know it.
        desc: a label in front of the bar.
        enabled: force the bar on or off; ``None`` follows :func:`progress_enabled`.
    """

    def __init__(
        self, iterable: Iterable[T], total: int | None = None, desc: str = "", enabled: bool | None = None
    ) -> None:
        self._bar = tqdm(
            iterable, total=total, desc=desc or None, disable=not progress_enabled(enabled), dynamic_ncols=True
        )

    def set_postfix(self, text: str) -> None:
        """Show ``text`` after the bar (a status such as the latest loss)."""
        self._bar.set_postfix_str(text, refresh=False)

    def __iter__(self) -> Iterator[T]:
        return iter(self._bar)
