"""The augmented linear operators of game optimizers near a fixed point, and their spectral radius."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from nestopt.errors import InvalidArgumentError, ShapeMismatchError
from nestopt.games.game import Game

__all__ = [
    "complex_momentum_operator",
    "extragradient_operator",
    "gda_operator",
    "jacobian_matrix",
    "momentum_operator",
    "optimistic_operator",
    "spectral_radius",
]

Scalar = float | complex | Tensor


def jacobian_matrix(game: Game, at: Any = None) -> Tensor:
    """The game Jacobian :math:`M` at ``at`` as a dense ``numel x numel`` matrix (``game.jacobian``).

    ``at`` is a point of the game (a joint tree or one tree per player); by default the game's equilibrium,
    else its current state. (:meth:`Game.linearize <nestopt.games.Game.linearize>` returns the linearization
    *object*, for products with the Jacobian; this returns the matrix the operators below are built from.)

    Example:
        >>> from nestopt.games import zoo
        >>> jacobian_matrix(zoo.bilinear(dim=1, init=1.0)).tolist()
        [[0.0, 1.0], [-1.0, 0.0]]
    """
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


def gda_operator(M: Tensor, lr: Scalar, *, alternating: bool = False, blocks: Sequence[slice] | None = None) -> Tensor:
    """Gradient descent(-ascent): :math:`T = I - \\eta M` (simultaneous) or the product of per-player steps.

    Returns:
        ``T`` of shape ``(*lr.shape, d, d)`` acting on the error :math:`e` (one operator per step size when
        ``lr`` is a tensor); ``alternating=True`` needs ``blocks`` (the players' slices, ``game.slices``).
    """
    M = _check_M(M)
    eta = _batch(lr, M, "lr")[..., None, None]
    d = M.shape[0]
    steps = [_eye(d, M, eta.shape[:-2]) - eta * (mask[:, None] * M) for mask in _masks(M, alternating, blocks)]
    return _compose(steps)


def extragradient_operator(M: Tensor, lr: Scalar) -> Tensor:
    """Extragradient: :math:`T = I - \\eta M + \\eta^2 M^2` (simultaneous only).

    Returns:
        ``T`` of shape ``(*lr.shape, d, d)`` acting on :math:`e`.
    """
    M = _check_M(M)
    eta = _batch(lr, M, "lr")[..., None, None]
    return _eye(M.shape[0], M, eta.shape[:-2]) - eta * M + eta**2 * (M @ M)


def optimistic_operator(M: Tensor, lr: Scalar) -> Tensor:
    """Optimistic gradient on :math:`(e_t, e_{t-1})`: :math:`\\begin{pmatrix} I - 2\\eta M & \\eta M \\\\ I & 0\\end{pmatrix}`.

    Returns:
        ``T`` of shape ``(*lr.shape, 2d, 2d)`` acting on the stacked state :math:`(e_t, e_{t-1})`.
    """
    M = _check_M(M)
    eta = _batch(lr, M, "lr")[..., None, None]
    batch = eta.shape[:-2]
    eye = _eye(M.shape[0], M, batch)
    top = torch.cat([eye - 2 * eta * M, (eta * M).expand(*batch, *M.shape)], dim=-1)
    bottom = torch.cat([eye, torch.zeros_like(eye)], dim=-1)
    return torch.cat([top, bottom], dim=-2)


def momentum_operator(
    M: Tensor, lr: Scalar, beta: Scalar, *, alternating: bool = False, blocks: Sequence[slice] | None = None
) -> Tensor:
    """Heavy-ball momentum with real :math:`\\beta` (negative allowed) on :math:`(e, \\mu)`.

    Returns:
        ``T`` of shape ``(*batch, 2d, 2d)`` (``lr`` and ``beta`` broadcast) acting on :math:`(e, \\mu)`, where
        :math:`\\mu` is minus :class:`~nestopt.optim.HeavyBall`'s ``momentum_buffer``.
    """
    M = _check_M(M)
    eta = _batch(lr, M, "lr")[..., None, None]
    b = _batch(beta, M, "beta")
    if b.is_complex():
        raise InvalidArgumentError(
            "momentum_operator takes a real beta; use complex_momentum_operator for a complex one"
        )
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


def complex_momentum_operator(
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

    Returns:
        ``T`` of shape ``(*batch, 3d, 3d)`` (``lr``, ``beta`` and ``alpha`` broadcast) acting on
        :math:`(e, \\Re\\mu, \\Im\\mu)`: ComplexMomentum's ``momentum_real`` and ``momentum_imag`` buffers.
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
