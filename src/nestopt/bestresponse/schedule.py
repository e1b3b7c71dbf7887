"""Hyperparameter schedules: the values a run's hyperparameters took, outer step by outer step.

:class:`nestopt.BilevelTrainer` records the unconstrained tensors of every small family after each outer step
(``history.column("hparams/<key>")``); :func:`schedule` maps them through their family's projection into
the hyperparameters' own units (a dropout rate, a cutout length), and :func:`plot_schedule` draws them. A
best-response run adapts its hyperparameters as training goes, so the result is a schedule rather than one
value (MacKay et al., 2019, section 5: schedules that beat any fixed value).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from nestopt.errors import InvalidArgumentError
from nestopt.hparams.base import Family

__all__ = ["plot_schedule", "schedule"]


def schedule(history: Any, families: Sequence[Family] | Family) -> dict[str, list[float | list[float]]]:
    """``{key: [value after outer step 1, 2, ...]}`` in each hyperparameter's own units.

    Args:
        history: a run's :class:`~nestopt.bilevel.History` (anything with ``column(key)``).
        families: the families whose schedules to read (keys the history did not record are left out).

    Raises:
        InvalidArgumentError: the history recorded none of the families' keys (families larger than the
            trainer records every step).
    """
    fams = [families] if isinstance(families, Family) else list(families)
    out: dict[str, list[float | list[float]]] = {}
    for f in fams:
        ranges = f.intervals()
        for k in f.init():
            column = history.column(f"hparams/{f.key(k)}")
            if not column or all(isinstance(v, float) and math.isnan(v) for v in column):
                continue
            interval = ranges.get(k)
            values: list[float | list[float]] = []
            for v in column:
                t = torch.tensor(v, dtype=torch.float64)
                p = interval.project(t) if interval is not None else t
                values.append(float(p) if p.dim() == 0 else p.tolist())
            out[f.key(k)] = values
    if not out:
        keys = [f.key(k) for f in fams for k in f.init()]
        raise InvalidArgumentError(f"the history recorded none of {keys[:6]}: only small families are recorded")
    return out


def plot_schedule(
    plt: Any, history: Any, families: Sequence[Family] | Family, *, ax: Any = None, title: str = ""
) -> Any:
    """Draw :func:`schedule` (scalar hyperparameters) against the outer step; returns the figure.

    Args:
        plt: ``matplotlib.pyplot``.
        history, families: as for :func:`schedule`.
        ax: the axes to draw on (default: a new figure).
        title: the axes' title.
    """
    sched = schedule(history, families)
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.0, 3.8))
    else:
        fig = ax.figure
    for key, values in sched.items():
        if values and isinstance(values[0], float):
            ax.plot(range(1, len(values) + 1), values, label=key)
    ax.set_xlabel("outer step")
    ax.set_ylabel("value")
    ax.set_title(title or "hyperparameter schedule")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return fig
