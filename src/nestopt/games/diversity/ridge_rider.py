"""Ridge Rider (Parker-Holder et al., NeurIPS 2020): diverse solutions by following Hessian eigenvectors.

At a saddle :math:`\\theta_0` every eigenvector :math:`e_i` of the Hessian :math:`H` with :math:`\\lambda_i < 0` is a
*ridge*, in both directions. A *ride* steps along its ridge and re-tracks it:

.. math::

    \\theta \\leftarrow \\theta + \\alpha\\, e, \\qquad e \\leftarrow \\arg\\max_{e_j} \\; e_j^\\top e_{\\text{prev}}
    \\quad (\\text{eigenvectors } e_j \\text{ of } H(\\theta), \\text{ signed to overlap positively}),

and ends when the tracked eigenvalue turns non-negative, the loss stops falling, or the ridge is lost
(no eigenvector overlaps the previous one by more than ``min_overlap``). At its end the ride branches
again on the ridges found there (an archive searched breadth- or depth-first), or, with no negative
eigenvalue left, finishes with plain gradient descent: a *leaf*, one solution, named by its fingerprint,
the sequence of ridge labels (``"0+"``: ridge 0 in its canonical sign) from the start.

Start at a saddle: the maximally invariant one, where the symmetries of the problem are unbroken, is found
by :func:`~nestopt.games.diversity.find_saddle`. A start that is not near a stationary point warns with its
gradient norm; a start with no negative eigenvalue says so and returns the descent solution.

References:
    Parker-Holder, Metz, Resnick, Hu, Lerer, Letcher, Peysakhovich, Pacchiano, Foerster. Ridge Rider:
    Finding Diverse Solutions by Following Eigenvectors of the Hessian. NeurIPS 2020.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from nestopt._progress import progress
from nestopt._validate import in_range, nonnegative, nonnegative_int, one_of, positive_int
from nestopt.autodiff import Counter
from nestopt.games.diversity._common import FlatLoss, warn
from nestopt.games.diversity.ridges import Curvature, Ridge
from nestopt.tree import Tree

__all__ = ["Ride", "RidgeRiderInfo", "RidgeRiderResult", "descend", "ridge_rider"]

SEARCHES = ("breadth", "depth")


@dataclass
class Ride:
    """A node of the tree of rides.

    Attributes:
        fingerprint: the ridge labels from the start to this ride (the root's is ``()``).
        start: where the ride began (a tree).
        end: where the ride ended, before any descent (the root: the start).
        params: a leaf's solution (after plain descent), else ``end``.
        loss: the loss at ``params``.
        eigenvalues: the tracked eigenvalue at each step of the ride (the root: the spectrum at the start).
        losses: the loss at each step of the ride.
        overlaps: :math:`|e^\\top e_{\\text{prev}}|` at each re-tracking.
        reason: why the ride ended: ``"eigenvalue"``, ``"loss"``, ``"lost"``, ``"max_steps"`` (``"start"`` at the root).
        children: the rides that branched from its end.
        hvps: Hessian-vector products this ride spent.
        descent_steps: a leaf's plain-descent steps (0 otherwise).
        stopped: for a leaf, why it is one: ``"minimum"`` (no negative eigenvalue at the end),
            ``"max_depth"`` or ``"budget"``; ``""`` for a ride that branched.
        order: when the search rode it (1 for the first ride; 0 for the root).
        path: the points of the ride (joint trees, the start first), with ``keep_path=True``.
    """

    fingerprint: tuple[str, ...]
    start: Tree
    end: Tree
    params: Tree
    loss: float
    eigenvalues: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    overlaps: list[float] = field(default_factory=list)
    reason: str = "start"
    children: list[Ride] = field(default_factory=list)
    hvps: int = 0
    descent_steps: int = 0
    stopped: str = ""
    order: int = 0
    path: list[Tree] = field(default_factory=list)

    @property
    def is_leaf(self) -> bool:
        return not self.children and bool(self.stopped)

    @property
    def label(self) -> str:
        """The fingerprint as one string, ``"0+/1-"`` (``"root"`` for the root)."""
        return "/".join(self.fingerprint) or "root"

    def walk(self) -> Iterator[Ride]:
        """This ride and every ride below it, depth-first."""
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass
class RidgeRiderInfo:
    """Diagnostics of a search: products spent, rides, leaves, and what stopped it.

    ``status`` is ``"complete"`` (the archive was emptied), ``"budget"`` (``max_rides`` reached with ridges
    left unexplored) or ``"no_ridges"`` (no negative eigenvalue at the start: the result is the descent
    solution).
    """

    mode: str
    search: str
    status: str
    message: str
    rides: int
    leaves: int
    unexplored: int
    hvps: int
    grads: int
    start_gradient_norm: float
    unconverged_eigensolves: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RidgeRiderResult:
    """The tree of rides: :attr:`root` (the start), :attr:`leaves` (the solutions), :attr:`info`."""

    root: Ride
    info: RidgeRiderInfo

    @property
    def rides(self) -> list[Ride]:
        """Every ride (not the root), in the order the search rode them."""
        return sorted((r for r in self.root.walk() if r is not self.root), key=lambda r: r.order)

    @property
    def leaves(self) -> list[Ride]:
        """The solutions, depth-first (with ``info.status == "no_ridges"``: the root, after descent)."""
        return [r for r in self.root.walk() if r.is_leaf]


def descend(flat: FlatLoss, x: Tensor, *, steps: int, lr: float, grad_tol: float) -> tuple[Tensor, float, int]:
    """Plain gradient descent from ``x``: ``(point, loss, steps taken)``; stops at gradient norm ``grad_tol``."""
    value = flat.value(x)
    for n in range(steps):
        value, g = flat.value_and_grad(x)
        if float(g.norm()) <= grad_tol:
            return x, value, n
        x = x - lr * g
    return x, flat.value(x), steps


def ridge_rider(
    loss: Callable[[Tree], Tensor],
    start: Mapping[str, Tensor],
    *,
    mode: str = "exact",
    step: float = 0.05,
    max_ride_steps: int = 200,
    search: str = "breadth",
    max_depth: int = 4,
    max_rides: int = 64,
    ridges: int | None = None,
    negative_tol: float = 1e-8,
    loss_tol: float = 0.0,
    min_overlap: float = 0.5,
    descent_steps: int = 2000,
    descent_lr: float = 0.01,
    grad_tol: float = 1e-6,
    stationary_tol: float = 1e-3,
    max_exact: int = 2048,
    lanczos: Mapping[str, Any] | None = None,
    seed: int = 0,
    keep_path: bool = False,
    show_progress: bool | None = None,
) -> RidgeRiderResult:
    """Ridge Rider: ride every negative-curvature eigenvector from ``start``, branch, and collect the leaves.

    Args:
        loss: ``loss(tree) -> scalar`` over a tree of parameters shaped like ``start``.
        start: the saddle to start from (see :func:`~nestopt.games.diversity.find_saddle`).
        mode: ``"exact"`` (dense Hessian, every eigenpair) or ``"approximate"`` (Lanczos on Hessian-vector
            products, the ``ridges`` most negative eigenpairs, re-tracking warm-started from the previous
            eigenvector).
        step: the ride's step :math:`\\alpha` along the ridge.
        max_ride_steps: steps per ride at most.
        search: ``"breadth"`` (the archive is a queue) or ``"depth"`` (a stack).
        max_depth: rides along one branch at most; a ride at this depth ends in descent.
        max_rides: rides in all at most (the search budget); ridges left in the archive are counted in
            ``info.unexplored``.
        ridges: at most this many ridges (each in both signs) at each branching point, the most negative
            first (default: every negative eigenvalue in exact mode, 4 in approximate mode, where this many
            eigenpairs are computed).
        negative_tol: an eigenvalue counts as negative below ``-negative_tol``.
        loss_tol: the ride ends when a step lowers the loss by no more than this (the step is undone).
        min_overlap: the ride ends ("lost") when no eigenvector overlaps the previous one by more.
        descent_steps, descent_lr, grad_tol: the plain gradient descent that finishes each leaf.
        stationary_tol: warn when the gradient norm at ``start`` exceeds this.
        max_exact: the largest problem for the exact mode.
        lanczos: ``krylov_size``, ``max_restarts``, ``tol`` for :func:`nestopt.linalg.eigsh` at branching
            points, and ``track_size`` (10), ``track_restarts`` (5) for the re-tracking cycles
            (:class:`~nestopt.games.diversity.ridges.Curvature`).
        seed: of Lanczos's random starting vectors.
        keep_path: keep every point of every ride in ``Ride.path`` (for plots of small problems).
        show_progress: draw a progress bar over rides (``None``: when stderr is a terminal).

    Returns:
        A :class:`RidgeRiderResult`: the tree of rides; ``leaves`` carry ``params``, ``loss`` and
        ``fingerprint``; every ride carries its eigenvalues and losses along the way; ``info`` the
        Hessian-vector products and gradients spent.

    Example:
        >>> import torch
        >>> from nestopt.games.diversity import ridge_rider
        >>> loss = lambda p: ((p["w"] ** 2 - 1) ** 2).sum()     # a saddle at 0, minima at (+-1, +-1)
        >>> res = ridge_rider(loss, {"w": torch.zeros(2, dtype=torch.float64)}, step=0.1)
        >>> sorted(tuple(leaf.params["w"].round().tolist()) for leaf in res.leaves)[:2]
        [(-1.0, -1.0), (-1.0, -1.0)]
        >>> len({tuple(leaf.params["w"].round().tolist()) for leaf in res.leaves}), res.info.status
        (4, 'complete')

    References:
        Parker-Holder et al. Ridge Rider: Finding Diverse Solutions by Following Eigenvectors of the Hessian.
        NeurIPS 2020.
    """
    began = time.perf_counter()
    counter = Counter()
    flat = FlatLoss(loss, start, counter)
    one_of("search", search, SEARCHES)
    nonnegative("step", step, positive=True)
    positive_int("max_ride_steps", max_ride_steps)
    positive_int("max_depth", max_depth)
    positive_int("max_rides", max_rides)
    nonnegative("loss_tol", loss_tol)
    in_range("min_overlap", min_overlap, 0.0, 1.0)
    nonnegative_int("descent_steps", descent_steps)
    nonnegative("descent_lr", descent_lr)
    nonnegative("grad_tol", grad_tol)
    nonnegative("stationary_tol", stationary_tol)
    curv = Curvature(flat, mode, k=ridges, negative_tol=negative_tol, max_exact=max_exact, seed=seed,
                     **dict(lanczos or {}))  # fmt: skip
    x0 = flat.flat(start)
    found, spectrum, grad0 = curv.ridges(x0)
    g0 = float(grad0.norm())
    if g0 > stationary_tol:
        warn(
            f"ridge_rider: the start is not near a stationary point: its gradient norm is {g0:.3g} "
            f"(stationary_tol={stationary_tol:g}); Ridge Rider branches at saddles, so start from one (find_saddle)"
        )
    value0 = flat.value(x0)
    root = Ride((), flat.tree(x0), flat.tree(x0), flat.tree(x0), value0, eigenvalues=spectrum.tolist(),
                hvps=counter.hvps)  # fmt: skip

    def descend_leaf(node: Ride, x: Tensor, why: str) -> None:
        xd, value, n = descend(flat, x, steps=descent_steps, lr=descent_lr, grad_tol=grad_tol)
        node.params, node.loss, node.descent_steps, node.stopped = flat.tree(xd), value, n, why

    def finish(status: str, message: str, rides: int, unexplored: int) -> RidgeRiderResult:
        info = RidgeRiderInfo(mode, search, status, message, rides, 0, unexplored, counter.hvps, counter.grads, g0,
                              curv.unconverged, time.perf_counter() - began)  # fmt: skip
        result = RidgeRiderResult(root, info)
        info.leaves = len(result.leaves)
        return result

    if not found:
        lowest = float(spectrum.min()) if len(spectrum) else float("nan")
        message = (
            f"no negative eigenvalue to branch on at the start (smallest computed eigenvalue {lowest:.3g}, "
            f"negative_tol={negative_tol:g}): the start is a minimum, not a saddle; returning the descent solution"
        )
        warn(f"ridge_rider: {message}")
        descend_leaf(root, x0, "minimum")
        return finish("no_ridges", message, 0, 0)

    archive: collections.deque[tuple[Ride, Ridge, int]] = collections.deque()

    def push(parent: Ride, ridges_found: list[Ridge], depth: int) -> None:
        # a stack pops the last entry first: push in reverse so that both searches ride "0+" first
        archive.extend((parent, r, depth) for r in (ridges_found if search == "breadth" else reversed(ridges_found)))

    push(root, found, 1)
    rides = 0

    def pending() -> Iterator[tuple[Ride, Ridge, int]]:
        nonlocal rides
        while archive and rides < max_rides:
            rides += 1
            yield archive.popleft() if search == "breadth" else archive.pop()

    bar = progress(pending(), desc=f"ridge rider ({mode})", enabled=show_progress)
    for parent, ridge, depth in bar:
        hvps_before = counter.hvps
        x = flat.flat(parent.end)
        e, lam = ridge.vector, ridge.eigenvalue
        value = flat.value(x)
        eigenvalues, losses, overlaps = [lam], [value], []
        path = [x] if keep_path else []
        reason = "max_steps"
        for _ in range(max_ride_steps):
            x_new = x + step * e
            value_new = flat.value(x_new)
            if value_new > value - loss_tol:
                reason = "loss"
                break
            x, value = x_new, value_new
            if keep_path:
                path.append(x)
            lam, e, overlap = curv.track(x, e)
            eigenvalues.append(lam)
            losses.append(value)
            overlaps.append(overlap)
            if overlap < min_overlap:
                reason = "lost"
                break
            if lam >= -negative_tol:
                reason = "eigenvalue"
                break
        node = Ride((*parent.fingerprint, ridge.label), parent.end, flat.tree(x), flat.tree(x), value,
                    eigenvalues, losses, overlaps, reason, order=rides, path=[flat.tree(p) for p in path])  # fmt: skip
        parent.children.append(node)
        bar.set_postfix(f"{node.label}: {reason}, loss {value:.4g}")
        if depth >= max_depth:
            descend_leaf(node, x, "max_depth")
        else:
            children, _, _ = curv.ridges(x)
            if children:
                push(node, children, depth + 1)
            else:
                descend_leaf(node, x, "minimum")
        node.hvps = counter.hvps - hvps_before
    unexplored = len(archive)
    for parent, _ridge, _depth in archive:  # the budget ran out: finish the branch points left with descent
        if not parent.children and not parent.stopped and parent is not root:
            descend_leaf(parent, flat.flat(parent.end), "budget")
    if unexplored:
        message = f"stopped at max_rides={max_rides} with {unexplored} ridges left in the archive"
        warn(f"ridge_rider: {message}; raise max_rides to explore them")
        return finish("budget", message, rides, unexplored)
    return finish("complete", f"{rides} rides, archive emptied", rides, 0)
