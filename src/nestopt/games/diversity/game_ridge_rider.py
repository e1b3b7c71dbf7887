"""Game Ridge Rider: branch at a bifurcation point of a game along the eigenvectors of its Jacobian.

In a game the dynamics :math:`\\dot\\theta = -\\xi(\\theta)` are not a gradient flow, so branching points are
not only saddles of a loss, and the game Jacobian :math:`J = \\nabla_\\theta \\xi` has complex eigenvalues.
Game Ridge Rider (Lorraine et al., 2021, 2022):

1. *locate* a branching point :math:`\\theta^*`: the start itself, the nearest fixed point (minimizing
   :math:`\\tfrac12\\|\\xi\\|^2`), or a maximum of the finite-time Lyapunov exponent
   (:func:`~nestopt.games.diversity.find_bifurcation`);
2. take eigenvectors :math:`v` of :math:`J(\\theta^*)` (by default those of smallest real part: the most
   repelling for gradient descent) and branch along :math:`\\pm v` for a real pair and along
   :math:`\\mathrm{Re}(e^{i\\phi} v)` for several phases :math:`\\phi` for a complex pair. The complex
   eigenvector's own phase is arbitrary, so it is fixed first: :math:`v = a + ib` is rotated so that
   :math:`a \\perp b` and :math:`\\|a\\| \\ge \\|b\\|`; then :math:`\\phi = 0, \\pi/2, \\pi, 3\\pi/2` give
   :math:`a, -b, -a, b`, the axes of the ellipse :math:`\\mathrm{Re}(e^{i\\phi} v)` traces;
3. from :math:`\\theta^* + r\\, d / \\|d\\|` run the base game optimizer to its end, and label the outcome
   (a user function of the final parameters); branches with the same label are one outcome.

References:
    Lorraine, Vicol, Parker-Holder, Kachman, Metz, Foerster. Using Bifurcations for Diversity in
    Differentiable Games. ICML Workshop on Beyond First-Order Methods in ML Systems, 2021.
    Lorraine, Vicol, Parker-Holder, Kachman, Metz, Foerster. Lyapunov Exponents for Diversity in
    Differentiable Games. AAMAS 2022.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from nestopt import linalg, tree
from nestopt._progress import progress
from nestopt._validate import nonnegative, one_of, positive_int
from nestopt.errors import InvalidArgumentError
from nestopt.games.diversity._common import canonical_sign
from nestopt.games.diversity.bifurcation import BifurcationResult, find_bifurcation
from nestopt.games.diversity.saddle import SaddleResult, find_fixed_point
from nestopt.tree import Tree

if TYPE_CHECKING:
    from nestopt.games.game import Game, Params

__all__ = ["Branch", "GameRidgeRiderResult", "branch_directions", "game_ridge_rider"]

LOCATE = ("start", "fixed_point", "lyapunov")
DEFAULT_PHASES = (0.0, math.pi / 2, math.pi, 3 * math.pi / 2)


@dataclass
class Branch:
    """One branch: the eigenpair and phase it follows, where it started and where the optimizer took it.

    Attributes:
        index: the eigenpair's index in the order of ``which``.
        eigenvalue: the eigenvalue (complex).
        phase: :math:`\\phi` (0 or :math:`\\pi` for a real eigenvector).
        direction: the unit direction :math:`\\mathrm{Re}(e^{i\\phi} v) / \\|\\cdot\\|` (joint tree).
        start: :math:`\\theta^* + r\\, d` (joint tree).
        params: the final parameters (joint tree).
        losses: the players' final losses.
        label: the outcome's label.
        path: the parameters every ``record_every`` steps (joint trees), when recorded.
    """

    index: int
    eigenvalue: complex
    phase: float
    direction: Tree
    start: Tree
    params: Tree
    losses: list[float]
    label: Hashable
    path: list[Tree] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.index}@{self.phase / math.pi:.3g}pi"


@dataclass
class GameRidgeRiderResult:
    """The branching point, the eigenpairs branched on, every branch, and the distinct outcomes.

    Attributes:
        point: the branching point :math:`\\theta^*` (joint tree).
        eigenvalues: the eigenvalues branched on (complex, in the order of ``which``; one of each conjugate pair).
        branches: every branch.
        outcomes: label -> the branches that reached it, in the order first reached.
        located: how the point was found: a :class:`BifurcationResult`, a :class:`SaddleResult` or ``None``.
        grads, hvps: gradient and Jacobian-vector products spent (the base optimizer's gradients included).
    """

    point: Tree
    eigenvalues: Tensor
    branches: list[Branch]
    outcomes: dict[Hashable, list[Branch]]
    located: BifurcationResult | SaddleResult | None
    grads: int
    hvps: int

    @property
    def distinct(self) -> int:
        """How many distinct outcomes the branches reached."""
        return len(self.outcomes)


def _fix_phase(v: Tensor) -> Tensor:
    """Rotate a complex eigenvector so that its real and imaginary parts are orthogonal, the real part the
    longer one, and the real part signed by :func:`canonical_sign`."""
    a, b = v.real, v.imag
    # maximize ||Re(e^{i psi} v)||^2 = ((|a|^2 + |b|^2) + (|a|^2 - |b|^2) cos 2psi - 2 a.b sin 2psi) / 2
    psi = 0.5 * math.atan2(-2 * float(a @ b), float(a @ a - b @ b))
    w = v * complex(math.cos(psi), math.sin(psi))
    w = w / torch.linalg.vector_norm(w)
    return w if float(canonical_sign(w.real) @ w.real) > 0 else -w


def branch_directions(
    eigenvalues: Tensor, eigenvectors: Tensor, phases: Sequence[float] = DEFAULT_PHASES, *, real_tol: float = 1e-9
) -> list[tuple[int, complex, float, Tensor]]:
    """Unit branch directions ``(index, eigenvalue, phase, direction)``: :math:`\\pm v` for a real eigenvector,
    :math:`\\mathrm{Re}(e^{i\\phi} v)` for each phase for a complex one (``eigenvectors`` as rows, complex).

    Example:
        >>> import torch
        >>> J = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)   # eigenvalues +-i
        >>> vals, vecs = torch.linalg.eig(J)
        >>> dirs = branch_directions(vals[:1], vecs.T[:1])
        >>> [[round(x, 6) + 0.0 for x in d[3].tolist()] for d in dirs]   # a, -b, -a, b for v = a + ib
        [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]
    """
    out: list[tuple[int, complex, float, Tensor]] = []
    for i, (lam, v) in enumerate(zip(eigenvalues.tolist(), eigenvectors)):
        lam = complex(lam)
        if abs(lam.imag) <= real_tol * max(1.0, abs(lam)):
            d = canonical_sign(v.real / torch.linalg.vector_norm(v.real))
            out += [(i, lam, 0.0, d), (i, lam, math.pi, -d)]
            continue
        w = _fix_phase(v)
        for phi in phases:
            d = (w * complex(math.cos(phi), math.sin(phi))).real
            out.append((i, lam, float(phi), d / torch.linalg.vector_norm(d)))
    return out


def _eigenpairs(
    game: Game, point: Tree, batch: Any, count: int, which: str, max_dense: int, seed: int
) -> tuple[Tensor, Tensor]:
    """``count`` eigenpairs of :math:`J` at ``point`` selected by ``which``, one of each conjugate pair
    (the one with positive imaginary part); eigenvectors as complex rows. :func:`nestopt.linalg.eigs` asked
    for every eigenpair solves densely; beyond ``max_dense`` it runs Arnoldi for ``2 count + 1`` of them."""
    n = game.numel
    k = n if n <= max_dense else min(2 * count + 1, n - 2)
    res = linalg.eigs(game.jacobian_operator(point, batch), k, which=which, seed=seed)
    values = res.eigenvalues.to(torch.complex128)
    vectors = torch.stack([tree.flatten(v)[0] for v in res.eigenvectors]).to(torch.complex128)
    keep = [i for i in range(len(values)) if float(values[i].imag) >= -1e-12 * max(1.0, float(values[i].abs()))]
    return values[keep][:count], vectors[keep][:count]


def _default_label(game: Game, params: Tree) -> Hashable:
    return tuple(round(float(v), 2) for v in game.losses(params))


def game_ridge_rider(
    game: Game,
    start: Params | None = None,
    *,
    locate: str = "lyapunov",
    bifurcation: dict[str, Any] | None = None,
    directions: int = 2,
    which: str = "SR",
    phases: Sequence[float] = DEFAULT_PHASES,
    radius: float = 0.1,
    optimizer: Callable[[list[Tensor]], torch.optim.Optimizer] | None = None,
    steps: int = 500,
    scheme: str = "simultaneous",
    rule: Any = None,
    batch: Any = None,
    label: Callable[[Game, Tree], Hashable] | None = None,
    train: Callable[[list[Tree]], list[Tree]] | None = None,
    record_every: int = 0,
    max_dense: int = 2048,
    seed: int = 0,
    show_progress: bool | None = None,
) -> GameRidgeRiderResult:
    """Game Ridge Rider: locate a branching point, branch along Jacobian eigenvectors, run the optimizer, label.

    Args:
        game: the game; its state is restored when the search ends.
        start: where to start (default: the game's state).
        locate: ``"start"`` (branch at ``start``), ``"fixed_point"`` (minimize :math:`\\tfrac12\\|\\xi\\|^2`
            from ``start`` first, see :func:`~nestopt.games.diversity.find_saddle`) or ``"lyapunov"``
            (:func:`~nestopt.games.diversity.find_bifurcation` from ``start``).
        bifurcation: keyword arguments for :func:`~nestopt.games.diversity.find_bifurcation` (or, with
            ``locate="fixed_point"``, for :func:`~nestopt.games.diversity.find_fixed_point`).
        directions: how many eigenpairs to branch on (one of each conjugate pair counts once).
        which: which eigenpairs, as in :func:`nestopt.linalg.eigs` (``"SR"``: smallest real part first, the
            most repelling for gradient descent; ``"LM"``, ``"LI"``, ...).
        phases: the phases :math:`\\phi` for complex eigenvectors.
        radius: the distance :math:`r` from the branching point to each branch's start.
        optimizer: ``params -> torch.optim.Optimizer`` over all players (default: SGD, ``lr=0.1``).
        steps: optimizer steps per branch.
        scheme, rule: as in :meth:`nestopt.games.Game.step`.
        batch: a fixed batch, or a callable ``step -> batch`` (the same stream for every branch).
        label: ``label(game, params) -> hashable`` naming a branch's outcome (default: the final losses
            rounded to 2 decimals).
        train: ``train(starts) -> finals``: run the base optimizer from every branch's start and return the
            final points (joint trees), e.g. all branches at once as independent copies of a batched game;
            replaces the sequential loop over ``optimizer``, ``steps``, ``scheme``, ``rule`` and ``batch``.
        record_every: keep every ``record_every``-th point of each branch in ``Branch.path`` (0: none).
        max_dense: games up to this size take every eigenpair (dense), larger ones Arnoldi (:func:`nestopt.linalg.eigs`).
        seed: for the eigensolver's and the ascent's random vectors.
        show_progress: draw a progress bar over branches.

    Returns:
        A :class:`GameRidgeRiderResult`.

    Raises:
        UnsupportedError: the game Jacobian cannot be formed (losses autograd cannot differentiate twice).

    Example:
        >>> import torch
        >>> from nestopt.games import zoo
        >>> from nestopt.games.diversity import game_ridge_rider
        >>> game = zoo.small_ipd(0.6, init=0.6931, dtype=torch.float64)   # the mixed equilibrium
        >>> label = lambda g, p: "TFT" if float(p["agent1/logit"]) > 0.69 else "defect"
        >>> res = game_ridge_rider(game, locate="start", directions=1, steps=200, label=label,
        ...                        optimizer=lambda ps: torch.optim.SGD(ps, lr=1.0))
        >>> sorted(res.outcomes)
        ['TFT', 'defect']
    """
    one_of("locate", locate, LOCATE)
    positive_int("directions", directions)
    one_of("which", which, linalg.eigen.GENERAL_WHICH)
    nonnegative("radius", radius, positive=True)
    positive_int("steps", steps)
    saved = {k: v.detach().clone() for k, v in game.state.items()}
    grads0, hvps0 = game.counter.grads, game.counter.hvps
    label_fn = label or _default_label
    make_opt = optimizer or (lambda ps: torch.optim.SGD(ps, lr=0.1))
    fixed_batch = None if callable(batch) else batch
    try:
        base = tree.detach(game.state if start is None else game._joint_tree(start, "start"))
        located: BifurcationResult | SaddleResult | None = None
        if locate == "lyapunov":
            located = find_bifurcation(game, base, batch=fixed_batch, seed=seed, **dict(bifurcation or {}))
            point = located.params
        elif locate == "fixed_point":
            located = find_fixed_point(game, base, batch=fixed_batch, **dict(bifurcation or {}))
            point = located.params
        else:
            point = base
        values, vectors = _eigenpairs(game, point, fixed_batch, directions, which, max_dense, seed)
        spec = tree.flatten(point)[1]
        x_star = tree.flatten(point)[0]
        plan = branch_directions(values, vectors, phases)
        starts = [tree.unflatten(x_star + radius * d.to(x_star.dtype), spec) for _, _, _, d in plan]
        paths: list[list[Tree]] = [[] for _ in plan]
        if train is not None:
            finals = [tree.detach(f) for f in train(starts)]
            if len(finals) != len(starts):
                raise InvalidArgumentError(f"train returned {len(finals)} points for {len(starts)} branch starts")
        else:
            finals = []
            for begin, path in progress(list(zip(starts, paths)), desc="game ridge rider", enabled=show_progress):
                game.copy_(begin)
                opt = make_opt(game.parameters())
                path += [tree.clone(game.state)] if record_every else []
                for t in range(steps):
                    game.step(opt, scheme=scheme, rule=rule, batch=batch(t) if callable(batch) else batch)
                    if record_every and (t + 1) % record_every == 0:
                        path.append(tree.clone(game.state))
                finals.append(tree.clone(game.state))
        branches: list[Branch] = []
        outcomes: dict[Hashable, list[Branch]] = {}
        for (index, lam, phi, d), begin, final, path in zip(plan, starts, finals, paths):
            losses = [float(v) for v in game.losses(final, fixed_batch)]
            b = Branch(index, lam, phi, tree.unflatten(d.to(x_star.dtype), spec), begin, final, losses,
                       label_fn(game, final), path)  # fmt: skip
            branches.append(b)
            outcomes.setdefault(b.label, []).append(b)
        return GameRidgeRiderResult(point, values, branches, outcomes, located, game.counter.grads - grads0,
                                    game.counter.hvps - hvps0)  # fmt: skip
    finally:
        game.copy_(saved)
