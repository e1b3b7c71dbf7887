"""What every hypergradient estimator returns: the hypergradient and its diagnostics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nestopt.linalg.base import SolveInfo, Status
from nestopt.tree import Tree

__all__ = ["HypergradInfo", "HypergradResult", "VJPResult"]


@dataclass
class HypergradInfo:
    """Diagnostics of a hypergradient.

    Attributes:
        method: ``"implicit"``, ``"unrolled"``, ``"forward"``, or the name of another strategy.
        status: the linear solve's status for ``implicit``; for unrolled and forward mode ``EXACT`` (the exact
            derivative of the unrolled objective) or ``DIVERGED`` (the unroll blew up: the derivative is exact
            but describes a run that went astray).
        iterations: solver iterations (implicit) or differentiated inner steps (unrolled, forward).
        residual: the solve's relative residual when known.
        hvp_calls: Hessian-vector products spent.
        grad_calls: gradient evaluations spent (inner and outer).
        outer_loss: the outer loss at the returned parameters.
        inner_grad_norm: :math:`\\|\\nabla_w L_{in}\\|` at the parameters used (implicit) or at the last
            unrolled step: the IFT assumes it is zero, so a large value warns that the inner problem is not
            solved.
        message: what went wrong, if anything.
        solve: the full :class:`~nestopt.linalg.SolveInfo` of the linear solve (implicit only).
        extra: method-specific counters (mixed products, JVPs, recomputed steps...).
    """

    method: str
    status: Status
    iterations: int
    residual: float | None
    hvp_calls: int
    grad_calls: int
    outer_loss: float
    inner_grad_norm: float | None = None
    message: str = ""
    solve: SolveInfo | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        parts = [f"{self.method}: {self.status.value}", f"{self.iterations} iterations"]
        if self.residual is not None:
            parts.append(f"residual {self.residual:.2e}")
        parts += [f"{self.hvp_calls} HVPs", f"{self.grad_calls} gradients", f"outer loss {self.outer_loss:.6g}"]
        if self.inner_grad_norm is not None:
            parts.append(f"inner gradient norm {self.inner_grad_norm:.2e}")
        text = ", ".join(parts)
        return f"{text} ({self.message})" if self.message and self.status.failed else text

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "status": self.status.value,
            "iterations": self.iterations,
            "residual": self.residual,
            "hvp_calls": self.hvp_calls,
            "grad_calls": self.grad_calls,
            "outer_loss": self.outer_loss,
            "inner_grad_norm": self.inner_grad_norm,
            "message": self.message,
            **self.extra,
        }


@dataclass
class HypergradResult:
    """A hypergradient ``grads`` (a tree with the keys of ``hparams``) and its ``info``.

    Unrolled and forward-mode estimators also return the inner parameters after the unroll in ``params``
    (and the functional optimizer's state in ``opt_state``), so that a training loop can continue from them,
    and the inner loss of every unrolled step in ``inner_losses``.
    """

    grads: Tree
    info: HypergradInfo
    params: Tree | None = None
    opt_state: dict[str, Any] | None = None
    inner_losses: list[float] | None = None


@dataclass
class VJPResult:
    """What a vector-Jacobian product through an inner problem returns: cotangents as trees.

    Attributes:
        hparams: the cotangent on the hyperparameters (a tree with their keys).
        info: diagnostics, as for a hypergradient (``outer_loss`` is ``nan``: no outer loss is involved).
        params0: the cotangent on the initial inner parameters (unrolled, without truncation), else ``None``.
        params: the inner parameters the computation ended at (unrolled), else ``None``.
        opt_state: the functional optimizer's final state (unrolled), else ``None``.
        solution: the solution :math:`H^{-1} v` of the linear system (implicit), e.g. to warm-start the next
            solve, else ``None``.
        unused: the hyperparameters the computation never read (their cotangent is exactly zero).
        inner_losses: the inner loss of every unrolled step (unrolled), else ``None``.
    """

    hparams: Tree
    info: HypergradInfo
    params0: Tree | None = None
    params: Tree | None = None
    opt_state: dict[str, Any] | None = None
    solution: Tree | None = None
    unused: tuple[str, ...] = ()
    inner_losses: list[float] | None = None
