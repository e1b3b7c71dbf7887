"""Solving a sequence of slowly changing linear systems: warm starts and estimates kept across solves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nestopt import tree
from nestopt._validate import nonnegative_int, positive_int
from nestopt.errors import InvalidArgumentError
from nestopt.linalg.base import LinearOperator, Solution, Solver
from nestopt.tree import Tree

__all__ = ["Amortized"]


@dataclass
class Amortized(Solver):
    """A solver for a sequence of systems :math:`A_t x = b_t` that change little from one to the next.

    A bilevel training run solves one such system per outer step (the Hessian and the outer gradient at the
    current weights); solving each from scratch, as other libraries do, pays full price every time. This
    wrapper carries work across the solves of ``solver``:

    * ``reuse_solution``: each solve starts from the previous solution (the next system's solution is close
      to it), with the safeguard of every iterative solver: a guess worse than zero is discarded. With few
      iterations per solve the iterates accumulate across solves: the single-loop bilevel methods (SOBA,
      AmIGO) are ``Amortized(Neumann(steps=0), ...)`` (one Richardson step per system) or a CG step.
    * what the solver estimates from the operator (:meth:`Solver.prepare`: a Nystrom preconditioner for
      :class:`~nestopt.linalg.CG`, the automatic step of :class:`~nestopt.linalg.Neumann`) is computed on the
      first system and kept, then refreshed every ``refresh`` solves on the current one.

    Products spent on a refresh are counted in the ``hvp_calls`` of the solve that made it. The wrapper
    keeps a reference to the last solution (no copy): do not modify a returned value in place. A solve that
    fails (diverged, negative curvature, breakdown) is not kept: the next one starts from zero.

    Args:
        solver: the solver applied to each system.
        reuse_solution: warm-start each solve from the previous solution.
        refresh: re-estimate the solver's preparation every this many solves.
        seed: seeds the preparations' randomness (the ``i``-th refresh uses ``seed + i``).

    Example:
        >>> import torch
        >>> from nestopt import linalg
        >>> A = torch.diag(torch.linspace(1.0, 4.0, 50, dtype=torch.float64))
        >>> solver = linalg.Amortized(linalg.Neumann(steps=0, alpha="auto"), refresh=100)
        >>> b = {"x": torch.ones(50, dtype=torch.float64)}
        >>> for t in range(60):   # one Richardson step per system: the iterates converge across solves
        ...     sol = solver.solve(linalg.LinearOperator.from_matrix(A), b)
        >>> float(sol.info.initial_residual) < 1e-6, sol.info.warm_start, sol.info.hvp_calls
        (True, True, 1)
    """

    solver: Solver
    reuse_solution: bool = True
    refresh: int = 10
    seed: int = 0
    _previous: Tree | None = field(default=None, init=False, repr=False, compare=False)
    _prepared: Solver | None = field(default=None, init=False, repr=False, compare=False)
    _since: int = field(default=0, init=False, repr=False, compare=False)
    _builds: int = field(default=0, init=False, repr=False, compare=False)
    _ready_spent: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.solver, Solver) or isinstance(self.solver, Amortized):
            raise InvalidArgumentError(f"solver must be a nestopt.linalg solver (not Amortized), got {self.solver!r}")
        positive_int("refresh", self.refresh)
        nonnegative_int("seed", self.seed)

    def solve(self, op: LinearOperator, b: Tree, x0: Tree | None = None) -> Solution:
        """Solve ``op x = b``, starting from ``x0`` or (with ``reuse_solution``) the previous solution."""
        if not isinstance(op, LinearOperator):
            raise InvalidArgumentError(f"op must be a nestopt.linalg.LinearOperator, got {type(op).__name__}")
        spent = self._ready_spent + self._refresh_if_due(op)
        self._ready_spent = 0
        if x0 is None and self.reuse_solution and self._previous is not None:
            same = set(self._previous) == set(b) and all(self._previous[k].shape == b[k].shape for k in b)
            x0 = self._previous if same else None
        assert self._prepared is not None  # made by the refresh
        sol = self._prepared.solve(op, b, x0)
        sol.info.hvp_calls += spent
        self._since += 1
        if self.reuse_solution:
            self._previous = None if sol.info.status.failed else tree.detach(sol.value)
        return sol

    __call__ = solve

    def ready(self, op: LinearOperator) -> Amortized:
        """Make the refresh that the next solve is due (its products are counted in that solve); ``self``."""
        if not isinstance(op, LinearOperator):
            raise InvalidArgumentError(f"op must be a nestopt.linalg.LinearOperator, got {type(op).__name__}")
        self._ready_spent += self._refresh_if_due(op)
        return self

    def _refresh_if_due(self, op: LinearOperator) -> int:
        """Prepare the solver on ``op`` if there is no preparation or it is ``refresh`` solves old; the products."""
        if self._prepared is not None and self._since < self.refresh:
            return 0
        before = op.calls
        self._prepared = self.solver.prepare(op, seed=self.seed + self._builds)
        self._builds += 1
        self._since = 0
        return op.calls - before

    def reset(self) -> None:
        """Forget the previous solution and the preparation (a new sequence of systems begins)."""
        self._previous, self._prepared, self._since, self._builds = None, None, 0, 0
        self._ready_spent = 0

    def state_dict(self) -> dict[str, Any]:
        """The previous solution, the preparation and the counters (tensors and plain values)."""
        prepared = None if self._prepared is None or self.solver.prepared else self._prepared.prepared_state()
        return {"previous": self._previous, "prepared": prepared, "since": self._since, "builds": self._builds,
                "has_prepared": self._prepared is not None}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self._previous = None if state["previous"] is None else dict(state["previous"])
        self._since, self._builds = int(state["since"]), int(state["builds"])
        if not state["has_prepared"]:
            self._prepared = None
        elif self.solver.prepared:
            self._prepared = self.solver
        else:
            self._prepared = self.solver.load_prepared(state["prepared"] or {})
