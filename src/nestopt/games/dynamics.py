"""Linear dynamics of game optimizers: augmented update operators, spectral radii, tuning by rate.

Near a fixed point :math:`\\theta^*` (exactly, for a quadratic game) the simultaneous gradient is linear,
:math:`\\xi(\\theta) = M (\\theta - \\theta^*)` with :math:`M` the game Jacobian (:func:`linearize`). Every method
here is then a linear map :math:`s_{t+1} = T s_t` on an *augmented* state :math:`s` (the error
:math:`e = \\theta - \\theta^*` plus whatever the method remembers), and its spectral radius
:math:`\\rho(T)` is the asymptotic convergence rate: :math:`\\|e_t\\| \\sim \\rho^t`.

==========================  ==========================  ===============================================
method                      state                       update (simultaneous)
==========================  ==========================  ===============================================
:func:`gda`                 :math:`e`                   :math:`e' = e - \\eta M e`
:func:`extragradient`       :math:`e`                   :math:`e' = e - \\eta M (e - \\eta M e)`
:func:`optimistic`          :math:`(e, e_{-1})`         :math:`e' = e - \\eta (2 M e - M e_{-1})`
:func:`momentum`            :math:`(e, \\mu)`             :math:`\\mu' = \\beta\\mu - M e,\\; e' = e + \\eta \\mu'`
:func:`complex_momentum`    :math:`(e, \\Re\\mu, \\Im\\mu)`  :math:`\\mu' = \\beta\\mu - M e,\\; e' = e + \\Re(\\eta\\alpha\\mu')`
==========================  ==========================  ===============================================

These match :class:`torch.optim.SGD`, :class:`~nestopt.optim.ExtraGradient`,
:class:`~nestopt.optim.OptimisticSGD`, :class:`~nestopt.optim.HeavyBall` and
:class:`~nestopt.optim.ComplexMomentum` step for step. With ``alternating=True`` (and the players' ``blocks``)
the players update in turn, each seeing the others' newest parameters: the operator is the product
:math:`T = T_n \\cdots T_1` of per-player updates.

:func:`search` finds the hyperparameters with the smallest spectral radius on a grid (refined around the
best point); :func:`measure_rate` runs the real optimizer on a game and fits the rate from its iterates.

Example:
    >>> import torch
    >>> from nestopt.games import dynamics, zoo
    >>> game = zoo.bilinear(dim=1, init=1.0, dtype=torch.float64)
    >>> M = dynamics.linearize(game)
    >>> float(dynamics.spectral_radius(dynamics.gda(M, 0.1)))   # sqrt(1 + 0.1^2): diverges
    1.004987562112089
    >>> import cmath
    >>> T = dynamics.complex_momentum(M, 0.55, cmath.rect(0.67, 1.16))   # converges
    >>> bool(dynamics.spectral_radius(T) < 0.95)
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from nestopt.errors import InvalidArgumentError, ShapeMismatchError, UnsupportedError
from nestopt.games.game import Game

__all__ = [
    "RateMeasurement",
    "RateSearch",
    "complex_momentum",
    "extragradient",
    "fit_rate",
    "gda",
    "linearize",
    "measure_rate",
    "momentum",
    "optimistic",
    "search",
    "spectral_radius",
]

Scalar = float | complex | Tensor


def linearize(game: Game, at: Sequence[Any] | None = None) -> Tensor:
    """The dense game Jacobian :math:`M` at ``at`` (default: the game's equilibrium, else its current point)."""
    if at is None:
        at = game.equilibrium
    return game.jacobian(at)


def _check_M(M: Tensor) -> Tensor:
    if not isinstance(M, Tensor) or M.dim() != 2 or M.shape[0] != M.shape[1]:
        raise ShapeMismatchError(f"M must be a square matrix, got {getattr(M, 'shape', M)!r}")
    return M


def _batch(value: Scalar, M: Tensor, name: str) -> Tensor:
    """A hyperparameter as a tensor of shape ``(...,)`` (float or complex) on M's device."""
    cdtype = torch.complex128 if M.dtype == torch.float64 else torch.complex64
    if isinstance(value, Tensor):
        t = value.to(device=M.device, dtype=cdtype if value.is_complex() else M.dtype)
    elif isinstance(value, complex):
        t = torch.tensor(value, dtype=cdtype, device=M.device)
    else:
        t = torch.tensor(float(value), dtype=M.dtype, device=M.device)
    if not bool(torch.isfinite(t).all()):
        raise InvalidArgumentError(f"{name} must be finite, got {value!r}")
    return t


def _masks(M: Tensor, alternating: bool, blocks: Sequence[slice] | None) -> list[Tensor]:
    d = M.shape[0]
    if not alternating:
        return [torch.ones(d, dtype=M.dtype, device=M.device)]
    if not blocks:
        raise InvalidArgumentError("alternating updates need blocks= (each player's slice, e.g. game.slices)")
    masks = []
    covered = torch.zeros(d, dtype=torch.bool)
    for b in blocks:
        m = torch.zeros(d, dtype=M.dtype, device=M.device)
        m[b] = 1
        covered[b] = True
        masks.append(m)
    if not bool(covered.all()):
        raise InvalidArgumentError(f"blocks {list(blocks)} do not cover all {d} coordinates")
    return masks


def _compose(steps: list[Tensor]) -> Tensor:
    out = steps[0]
    for s in steps[1:]:
        out = s @ out
    return out


def _eye(n: int, M: Tensor, batch: torch.Size) -> Tensor:
    return torch.eye(n, dtype=M.dtype, device=M.device).expand(*batch, n, n)


def gda(M: Tensor, lr: Scalar, *, alternating: bool = False, blocks: Sequence[slice] | None = None) -> Tensor:
    """Gradient descent(-ascent): :math:`T = I - \\eta M` (simultaneous) or the product of per-player steps."""
    M = _check_M(M)
    eta = _batch(lr, M, "lr")[..., None, None]
    d = M.shape[0]
    steps = [_eye(d, M, eta.shape[:-2]) - eta * (mask[:, None] * M) for mask in _masks(M, alternating, blocks)]
    return _compose(steps)


def extragradient(M: Tensor, lr: Scalar) -> Tensor:
    """Extragradient: :math:`T = I - \\eta M + \\eta^2 M^2` (simultaneous only)."""
    M = _check_M(M)
    eta = _batch(lr, M, "lr")[..., None, None]
    return _eye(M.shape[0], M, eta.shape[:-2]) - eta * M + eta**2 * (M @ M)


def optimistic(M: Tensor, lr: Scalar) -> Tensor:
    """Optimistic gradient on :math:`(e_t, e_{t-1})`: :math:`\\begin{pmatrix} I - 2\\eta M & \\eta M \\\\ I & 0\\end{pmatrix}`."""
    M = _check_M(M)
    eta = _batch(lr, M, "lr")[..., None, None]
    batch = eta.shape[:-2]
    eye = _eye(M.shape[0], M, batch)
    top = torch.cat([eye - 2 * eta * M, (eta * M).expand(*batch, *M.shape)], dim=-1)
    bottom = torch.cat([eye, torch.zeros_like(eye)], dim=-1)
    return torch.cat([top, bottom], dim=-2)


def momentum(
    M: Tensor, lr: Scalar, beta: Scalar, *, alternating: bool = False, blocks: Sequence[slice] | None = None
) -> Tensor:
    """Heavy-ball momentum with real :math:`\\beta` (negative allowed) on :math:`(e, \\mu)`."""
    M = _check_M(M)
    eta = _batch(lr, M, "lr")[..., None, None]
    b = _batch(beta, M, "beta")
    if b.is_complex():
        raise InvalidArgumentError("momentum() takes a real beta; use complex_momentum() for complex ones")
    b = b[..., None, None]
    eta, b = torch.broadcast_tensors(eta, b)
    batch, d = eta.shape[:-2], M.shape[0]
    eye, zero = _eye(d, M, batch), torch.zeros(*batch, d, d, dtype=M.dtype, device=M.device)
    steps = []
    for mask in _masks(M, alternating, blocks):
        P = torch.diag(mask)
        # first the buffer (mu' = beta mu - M e on the masked rows), then the parameters (e' = e + lr mu')
        R = torch.cat([torch.cat([eye, zero], -1), torch.cat([-(P @ M).expand_as(eye), eye + (b - 1) * P], -1)], -2)
        E = torch.cat([torch.cat([eye, eta * P], -1), torch.cat([zero, eye], -1)], -2)
        steps.append(E @ R)
    return _compose(steps)


def complex_momentum(
    M: Tensor,
    lr: Scalar,
    beta: Scalar,
    alpha: Scalar = 1.0,
    *,
    alternating: bool = False,
    blocks: Sequence[slice] | None = None,
) -> Tensor:
    """Complex momentum (Lorraine et al., 2022) on the real state :math:`(e, \\Re\\mu, \\Im\\mu)`.

    :math:`\\mu' = \\beta\\mu - M e`, :math:`e' = e + \\Re(\\eta\\,\\alpha\\,\\mu')`; ``lr`` is :math:`\\eta` and
    ``alpha`` the optional complex factor, as in :class:`~nestopt.optim.ComplexMomentum`.
    """
    M = _check_M(M)
    eta = _batch(lr, M, "lr")
    b = _batch(beta, M, "beta").to(torch.complex128 if M.dtype == torch.float64 else torch.complex64)
    a = _batch(alpha, M, "alpha").to(b.dtype)
    eta, b, a = torch.broadcast_tensors(eta.to(b.dtype), b, a)
    step = eta * a
    br, bi = b.real[..., None, None], b.imag[..., None, None]
    ar, ai = step.real[..., None, None], step.imag[..., None, None]
    batch, d = br.shape[:-2], M.shape[0]
    eye, zero = _eye(d, M, batch), torch.zeros(*batch, d, d, dtype=M.dtype, device=M.device)
    steps = []
    for mask in _masks(M, alternating, blocks):
        P = torch.diag(mask)
        R = torch.cat(
            [
                torch.cat([eye, zero, zero], -1),
                torch.cat([-(P @ M).expand_as(eye), eye + (br - 1) * P, -bi * P], -1),
                torch.cat([zero, bi * P, eye + (br - 1) * P], -1),
            ],
            -2,
        )
        E = torch.cat(
            [
                torch.cat([eye, ar * P, -ai * P], -1),
                torch.cat([zero, eye, zero], -1),
                torch.cat([zero, zero, eye], -1),
            ],
            -2,
        )
        steps.append(E @ R)
    return _compose(steps)


def spectral_radius(T: Tensor) -> Tensor:
    """:math:`\\rho(T) = \\max |\\lambda(T)|` for one operator or a batch ``(..., D, D)``."""
    if T.dim() < 2 or T.shape[-1] != T.shape[-2]:
        raise ShapeMismatchError(f"T must be square matrices (..., D, D), got shape {tuple(T.shape)}")
    return torch.linalg.eigvals(T).abs().amax(dim=-1)


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
        >>> M = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
        >>> res = search(lambda lr: extragradient(M, lr), {"lr": torch.linspace(0.05, 1.5, 30)})
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
    :math:`\\log d_t` over the part after ``burn_in`` (a fraction of the run), up to where it underflows."""
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
    alive = (tail > floor).nonzero()
    end = int(alive[-1]) + 1 if alive.numel() else 0
    tail = tail[:end]
    if tail.numel() < 3:
        raise InvalidArgumentError("too few distances above the floor after burn-in to fit a rate")
    t = torch.arange(tail.numel(), dtype=torch.float64)
    y = tail.log()
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
