"""Tuning game optimizers by their predicted rate, and measuring the rate of a real run."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from nestopt.errors import InvalidArgumentError, UnsupportedError
from nestopt.games.dynamics.operators import spectral_radius
from nestopt.games.game import Game

__all__ = ["RateMeasurement", "RateSearch", "fit_rate", "measure_rate", "search"]


@dataclass
class RateSearch:
    """The result of :func:`search`: the best hyperparameters, their spectral radius, and the grid scanned."""

    best: dict[str, float]
    rate: float
    evaluated: int

    def as_dict(self) -> dict[str, Any]:
        return {"best": self.best, "rate": self.rate, "evaluated": self.evaluated}


def search(
    build: Callable[..., Tensor],
    grid: Mapping[str, Sequence[float] | Tensor],
    *,
    refine: int = 2,
    chunk: int = 4096,
) -> RateSearch:
    """The hyperparameters with the smallest spectral radius of ``build(**hyperparameters)``.

    Scans the Cartesian product of ``grid`` (``build`` receives 1-d tensors of equal length and returns the
    batch of operators), then ``refine`` times re-scans a grid of the same size spanning the neighbours of
    the best point (geometrically for a positive geometric axis, linearly otherwise).

    Example:
        >>> import torch
        >>> from nestopt.games.dynamics import extragradient_operator
        >>> M = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
        >>> res = search(lambda lr: extragradient_operator(M, lr), {"lr": torch.linspace(0.05, 1.5, 30)})
        >>> round(res.best["lr"], 2), round(res.rate, 3)   # |1 - lr^2 - i lr| is smallest at lr = 1/sqrt(2)
        (0.71, 0.866)
    """
    names = list(grid)
    axes = [torch.as_tensor(grid[n], dtype=torch.float64).flatten() for n in names]
    if not names or any(a.numel() == 0 for a in axes):
        raise InvalidArgumentError("grid needs at least one hyperparameter with at least one value")
    evaluated = 0
    best_point: list[float] = []
    best_rate = math.inf
    for round_ in range(refine + 1):
        mesh = torch.meshgrid(*axes, indexing="ij")
        flat = [m.reshape(-1) for m in mesh]
        rates = []
        for start in range(0, flat[0].numel(), chunk):
            values = {n: f[start : start + chunk] for n, f in zip(names, flat)}
            rates.append(spectral_radius(build(**values)).to(torch.float64).cpu())
        rate = torch.cat(rates)
        rate = torch.where(torch.isfinite(rate), rate, torch.full_like(rate, math.inf))
        evaluated += rate.numel()
        k = int(torch.argmin(rate))
        if float(rate[k]) < best_rate:
            best_rate = float(rate[k])
            best_point = [float(f[k]) for f in flat]
        if round_ == refine:
            break
        idx = torch.unravel_index(torch.tensor(k), tuple(a.numel() for a in axes))
        new_axes = []
        for a, pos in zip(axes, idx):
            j = int(pos)
            if a.numel() == 1:
                new_axes.append(a)
                continue
            lo, hi = float(a[max(j - 1, 0)]), float(a[min(j + 1, a.numel() - 1)])
            geometric = bool((a > 0).all()) and a.numel() > 2 and bool(torch.allclose(a[1:] / a[:-1], a[1] / a[0]))
            if geometric:
                new_axes.append(torch.logspace(math.log10(lo), math.log10(hi), a.numel(), dtype=torch.float64))
            else:
                new_axes.append(torch.linspace(lo, hi, a.numel(), dtype=torch.float64))
        axes = new_axes
    return RateSearch(dict(zip(names, best_point)), best_rate, evaluated)


def fit_rate(distances: Sequence[float] | Tensor, *, burn_in: float = 0.5, floor: float = 1e-250) -> float:
    """The geometric rate of a sequence of distances: :math:`\\exp` of the least-squares slope of
    :math:`\\log d_t` against :math:`t` over the part after ``burn_in`` (a fraction of the run).

    Only distances above ``floor`` enter the fit, each at its own step :math:`t`: a fast run whose distance
    underflows to 0 (at the end, or in between non-zero values) is fitted on what is left. The sequence is
    cut at its first non-finite value.

    Example:
        >>> round(fit_rate([1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125]), 6)
        0.5
    """
    d = torch.as_tensor(distances, dtype=torch.float64)
    if d.dim() != 1 or d.numel() < 4:
        raise InvalidArgumentError("distances must be a sequence of at least 4 values")
    if not bool(torch.isfinite(d).all()):
        bad = int((~torch.isfinite(d)).nonzero()[0])
        d = d[:bad]
        if d.numel() < 4:
            raise InvalidArgumentError("distances became non-finite within the first 4 steps")
    start = int(burn_in * (d.numel() - 1))
    tail = d[start:]
    alive = tail > floor
    if int(alive.sum()) < 3:
        raise InvalidArgumentError("too few distances above the floor after burn-in to fit a rate")
    t = torch.arange(tail.numel(), dtype=torch.float64)[alive]
    y = tail[alive].log()
    slope = ((t - t.mean()) * (y - y.mean())).sum() / ((t - t.mean()) ** 2).sum()
    return float(slope.exp())


@dataclass
class RateMeasurement:
    """The rate fitted from a real optimizer's iterates, with the distances it came from."""

    rate: float
    distances: list[float]

    def as_dict(self) -> dict[str, Any]:
        return {"rate": self.rate, "distances": self.distances}


def measure_rate(
    game: Game,
    optimizers: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
    *,
    steps: int,
    scheme: str = "simultaneous",
    burn_in: float = 0.5,
) -> RateMeasurement:
    """Run ``optimizers`` on ``game`` for ``steps`` steps and fit the rate of :math:`\\|\\theta_t - \\theta^*\\|`.

    The game must know its equilibrium. The game's parameters are left at the last iterate.
    """
    if game.equilibrium is None:
        raise UnsupportedError("measure_rate needs a game with a known equilibrium")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 4:
        raise InvalidArgumentError(f"steps must be an integer >= 4, got {steps!r}")
    distances = [game.distance()]
    for _ in range(steps):
        game.step(optimizers, scheme=scheme)
        distances.append(game.distance())
        if not math.isfinite(distances[-1]) or distances[-1] > 1e200:
            break
    return RateMeasurement(fit_rate(distances, burn_in=burn_in), distances)
