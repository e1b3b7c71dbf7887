"""Small classic games: bilinear, cooperative/adversarial mixture, tandem, Dirac-GAN, matching pennies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from nestopt.errors import InvalidArgumentError, ShapeMismatchError
from nestopt.games.game import Game
from nestopt.tree import Tree

__all__ = ["bilinear", "dirac_gan", "make_init", "matching_pennies", "mixture", "spread_spectrum", "tandem"]

Init = float | Sequence[Tensor] | None


def make_init(
    init: Init,
    shapes: Sequence[tuple[int, ...]],
    *,
    generator: torch.Generator | None,
    dtype: torch.dtype | None,
    device: torch.device | str | None = None,
    scale: float = 1.0,
) -> list[Tensor]:
    """Initial tensors: ``init`` copied, or filled with the number ``init``, or ``scale * N(0, 1)``."""
    dtype = dtype if dtype is not None else torch.get_default_dtype()
    if init is None:
        return [(scale * torch.randn(s, generator=generator, dtype=dtype)).to(device=device) for s in shapes]
    if isinstance(init, int | float):
        return [torch.full(s, float(init), dtype=dtype, device=device) for s in shapes]
    given = list(init)
    if len(given) != len(shapes):
        raise InvalidArgumentError(f"init must have {len(shapes)} tensors, got {len(given)}")
    out = []
    for t, s in zip(given, shapes):
        t = torch.as_tensor(t, dtype=dtype, device=device).clone()
        if tuple(t.shape) != tuple(s):
            raise ShapeMismatchError(f"init tensor has shape {tuple(t.shape)}, expected {tuple(s)}")
        out.append(t)
    return out


def spread_spectrum(n: int = 7, low: float = 0.25, high: float = 4.0, *, dtype: torch.dtype | None = None) -> Tensor:
    """``diag(linspace(low, high, n))``: a bilinear coupling with a spread of singular values."""
    return torch.diag(torch.linspace(low, high, n, dtype=dtype if dtype is not None else torch.get_default_dtype()))


def _coupling(A: Tensor | None, dim: int, dtype: torch.dtype | None) -> Tensor:
    if A is None:
        return torch.eye(dim, dtype=dtype if dtype is not None else torch.get_default_dtype())
    if not isinstance(A, Tensor) or A.dim() != 2:
        raise InvalidArgumentError(f"A must be a matrix (2-d tensor), got {A!r}")
    return A if dtype is None else A.to(dtype)


def bilinear(
    A: Tensor | None = None,
    *,
    dim: int = 1,
    init: Init = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
) -> Game:
    """The bilinear zero-sum game :math:`\\min_x \\max_y x^\\top A y`.

    :math:`L_x = x^\\top A y`, :math:`L_y = -x^\\top A y`; the Jacobian :math:`\\begin{pmatrix}0 & A\\\\ -A^\\top &
    0\\end{pmatrix}` has eigenvalues :math:`\\pm i\\sigma_k(A)`: purely rotational, so simultaneous gradient
    descent-ascent diverges for every step size. The equilibrium is 0 (for nonsingular ``A``).

    Args:
        A: the coupling (default the ``dim x dim`` identity; :func:`spread_spectrum` gives
            ``diag(linspace(0.25, 4, 7))``).
        dim: size of the identity when ``A`` is not given.
        init: the starting point: a number (every entry), two tensors, or ``None`` for N(0, 1) draws.
        generator: for the random start.
        dtype: dtype of the parameters (default: ``A``'s, else torch's default).

    Example:
        >>> game = bilinear(spread_spectrum(), init=1.0)
        >>> game.sizes
        [7, 7]
    """
    A = _coupling(A, dim, dtype)
    x0, y0 = make_init(init, [(A.shape[0],), (A.shape[1],)], generator=generator, dtype=A.dtype)

    def losses(p: list[Tree], batch: Any) -> list[Tensor]:
        v = p[0]["x"] @ A @ p[1]["y"]
        return [v, -v]

    eq = [{"x": torch.zeros_like(x0)}, {"y": torch.zeros_like(y0)}]
    return Game([{"x": x0}, {"y": y0}], losses, names=["x", "y"], equilibrium=eq, info={"A": A})


def mixture(
    gamma: float = 0.5,
    A: Tensor | None = None,
    *,
    dim: int = 1,
    init: Init = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
) -> Game:
    """A game between purely cooperative (:math:`\\gamma = 0`) and purely adversarial (:math:`\\gamma = 1`).

    .. math::

        L_x = \\gamma\\, x^\\top A y + \\tfrac{1-\\gamma}{2}\\, x^\\top S x, \\qquad
        L_y = -\\gamma\\, x^\\top A y + \\tfrac{1-\\gamma}{2}\\, y^\\top S y, \\qquad S = \\tfrac12 (A + A^\\top).

    The Jacobian :math:`\\begin{pmatrix}(1-\\gamma) S & \\gamma A\\\\ -\\gamma A^\\top & (1-\\gamma) S\\end{pmatrix}`
    has, for diagonal :math:`A = \\mathrm{diag}(\\sigma)`, the eigenvalues :math:`\\sigma_k ((1-\\gamma) \\pm i\\gamma)`:
    a rotation mixed with a contraction. ``A`` needs a positive-definite symmetric part; the equilibrium is 0.

    Example:
        >>> game = mixture(0.75, spread_spectrum(), init=1.0)
        >>> game.jacobian().shape
        torch.Size([14, 14])
    """
    if isinstance(gamma, bool) or not isinstance(gamma, int | float) or not 0.0 <= gamma <= 1.0:
        raise InvalidArgumentError(f"gamma must be in [0, 1], got {gamma!r}")
    A = _coupling(A, dim, dtype)
    if A.shape[0] != A.shape[1]:
        raise ShapeMismatchError(f"the mixture game needs a square A, got shape {tuple(A.shape)}")
    S = 0.5 * (A + A.T)
    x0, y0 = make_init(init, [(A.shape[0],), (A.shape[1],)], generator=generator, dtype=A.dtype)
    g = float(gamma)

    def losses(p: list[Tree], batch: Any) -> list[Tensor]:
        x, y = p[0]["x"], p[1]["y"]
        v = x @ A @ y
        return [g * v + 0.5 * (1 - g) * (x @ S @ x), -g * v + 0.5 * (1 - g) * (y @ S @ y)]

    eq = [{"x": torch.zeros_like(x0)}, {"y": torch.zeros_like(y0)}]
    return Game([{"x": x0}, {"y": y0}], losses, names=["x", "y"], equilibrium=eq, info={"A": A, "gamma": g})


def tandem(*, init: Init = None, generator: torch.Generator | None = None, dtype: torch.dtype | None = None) -> Game:
    """The tandem game: :math:`L_1 = (x+y)^2 - 2x`, :math:`L_2 = (x+y)^2 - 2y`.

    Its fixed points form the line :math:`x + y = 1`; all are stable. LOLA's shaping term drags the players
    off that line (towards :math:`x + y \\ne 1`), which SOS avoids (Letcher et al., 2019). No unique
    equilibrium, so :meth:`Game.distance` is unavailable; :attr:`Game.info` holds ``"fixed_line"``.

    Example:
        >>> game = tandem(init=0.0)
        >>> [float(g["x"]) for g in game.xi()[:1]]
        [-2.0]
    """
    x0, y0 = make_init(init, [(), ()], generator=generator, dtype=dtype)

    def losses(p: list[Tree], batch: Any) -> list[Tensor]:
        x, y = p[0]["x"], p[1]["y"]
        s = (x + y) ** 2
        return [s - 2 * x, s - 2 * y]

    return Game([{"x": x0}, {"y": y0}], losses, names=["x", "y"], info={"fixed_line": "x + y = 1"})


def dirac_gan(
    *,
    init: Init = 1.0,
    non_saturating: bool = False,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
) -> Game:
    """Dirac-GAN (Mescheder et al., 2018): real data at 0, the generator a point mass at :math:`\\theta`.

    The discriminator :math:`D(x) = \\sigma(\\psi x)` maximizes
    :math:`V(\\theta, \\psi) = \\log D(0) + \\log(1 - D(\\theta)) = -\\log 2 - \\mathrm{softplus}(\\psi\\theta)`; the
    generator minimizes :math:`V` (or, with ``non_saturating=True``, :math:`\\mathrm{softplus}(-\\psi\\theta)`).
    The unique equilibrium is :math:`\\theta = \\psi = 0`, where the Jacobian
    :math:`\\begin{pmatrix}0 & -1/2\\\\ 1/2 & 0\\end{pmatrix}` is a pure rotation.

    Example:
        >>> game = dirac_gan()
        >>> game.names
        ['generator', 'discriminator']
    """
    theta0, psi0 = make_init(init, [(), ()], generator=generator, dtype=dtype)

    def losses(p: list[Tree], batch: Any) -> list[Tensor]:
        t = p[1]["psi"] * p[0]["theta"]
        value = -F.softplus(t) - F.softplus(torch.zeros_like(t))
        gen = F.softplus(-t) if non_saturating else value
        return [gen, -value]

    eq = [{"theta": torch.zeros_like(theta0)}, {"psi": torch.zeros_like(psi0)}]
    return Game([{"theta": theta0}, {"psi": psi0}], losses, names=["generator", "discriminator"], equilibrium=eq)


def matching_pennies(
    *,
    init: Init = None,
    batch_shape: tuple[int, ...] = (),
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
) -> Game:
    """Matching pennies in mixed strategies, parameterized by logits.

    Player 1 plays heads with probability :math:`p = \\sigma(\\theta_1)` and wins (+1) on a match; player 2
    plays heads with :math:`q = \\sigma(\\theta_2)` and wins on a mismatch. With the payoff matrix
    :math:`M = \\begin{pmatrix}1 & -1\\\\ -1 & 1\\end{pmatrix}` (rows: player 1's heads/tails),
    :math:`L_1 = -(p, 1-p) M (q, 1-q)^\\top = -L_2`. The unique Nash equilibrium is :math:`p = q = 1/2`
    (logits 0). :attr:`Game.info` holds the payoff matrices ``"payoffs"`` (player 1's, player 2's). With
    ``batch_shape`` the logits get leading dimensions: that many independent copies (losses summed).

    Example:
        >>> game = matching_pennies(init=0.0)
        >>> float(game.hamiltonian())
        0.0
    """
    t1, t2 = make_init(init, [batch_shape, batch_shape], generator=generator, dtype=dtype)
    M = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=t1.dtype)

    def losses(p: list[Tree], batch: Any) -> list[Tensor]:
        a, b = torch.sigmoid(p[0]["logit"]), torch.sigmoid(p[1]["logit"])
        v = (2 * a - 1) * (2 * b - 1)  # x^T M y for x = (a, 1 - a), y = (b, 1 - b)
        return [-v.sum(), v.sum()]

    eq = [{"logit": torch.zeros_like(t1)}, {"logit": torch.zeros_like(t2)}]
    return Game(
        [{"logit": t1}, {"logit": t2}], losses, names=["matcher", "mismatcher"], equilibrium=eq,
        info={"payoffs": (M, -M)},
    )  # fmt: skip
