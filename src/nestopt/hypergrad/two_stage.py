"""Hypergradients through two stages: implicit through pre-training, unrolled through fine-tuning.

Pre-training solves :math:`\\theta^*(\\lambda) = \\arg\\min_\\theta L_{PT}(\\theta, \\lambda)`; fine-tuning then
takes ``K`` steps of a differentiable optimizer on :math:`L_{FT}` from :math:`w_0 = (\\theta^*, \\psi_0)`, where
:math:`\\psi_0` is a fresh fine-tuning head, and the hyperparameters are judged by the validation loss of the
fine-tuned weights (Raghu et al., 2021):

.. math::  \\min_\\lambda\\; L_{val}\\big(w_K(\\theta^*(\\lambda), \\lambda), \\lambda\\big).

Its hypergradient composes the two VJP primitives. :func:`~nestopt.hypergrad.unrolled_vjp` pulls the
validation gradient back through the fine-tuning steps to the hyperparameters and to the pre-trained
weights, :math:`g = \\partial L_{val} / \\partial \\theta^*` (through the unroll and directly, for pre-trained
weights that fine-tuning keeps fixed); :func:`~nestopt.hypergrad.implicit_vjp` pulls :math:`g` back through
pre-training:

.. math::  \\frac{dL_{val}}{d\\lambda} = \\underbrace{-\\frac{\\partial^2 L_{PT}}{\\partial\\lambda\\,\\partial\\theta}\\,
           H_{PT}^{-1} g}_{\\text{stage 1}} + \\underbrace{\\Big(\\frac{\\partial w_K}{\\partial \\lambda}\\Big)^{\\!\\top}
           \\frac{\\partial L_{val}}{\\partial w_K} + \\frac{\\partial L_{val}}{\\partial\\lambda}}_{\\text{stage 2}}.

The paper's estimator is ``solver=linalg.Neumann(steps=N, alpha=pretrain_lr, on_growth="continue")``:
:math:`H_{PT}^{-1} g \\approx \\alpha \\sum_{j \\le N} (I - \\alpha H_{PT})^j g` with ``N = 1`` and ``K = 1``.

:class:`TwoStage` is the estimator as a :class:`~nestopt.hypergrad.Strategy`; it needs a
:class:`TwoStageProblem` (the fine-tuning loss, the live head and fine-tuning batches besides the usual
problem), which :class:`nestopt.bilevel.PretrainFinetuneTrainer` builds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from nestopt import tree
from nestopt._validate import positive_int
from nestopt.autodiff import CURVATURES, DEFAULT_HVP_MODE, Counter, Curvature, HVPMode, LossFn, check_tree
from nestopt.errors import InvalidArgumentError, UnsupportedError
from nestopt.hypergrad._outer import outer_gradients
from nestopt.hypergrad.implicit import _check_solver, default_solver, implicit_vjp
from nestopt.hypergrad.result import HypergradInfo, HypergradResult, VJPResult
from nestopt.hypergrad.strategy import Problem, Strategy
from nestopt.hypergrad.unrolled import check_optimizer, unrolled_vjp
from nestopt.linalg import Solver
from nestopt.optim.functional import FunctionalOptimizer
from nestopt.tree import Tree

__all__ = ["TwoStage", "TwoStageProblem", "TwoStageResult", "two_stage"]

Finetuned = str | Sequence[str]


@dataclass
class TwoStageResult(HypergradResult):
    """A two-stage hypergradient: ``grads`` (keys of ``hparams``), ``info`` (both stages), and the pieces.

    Besides the attributes of :class:`~nestopt.hypergrad.HypergradResult` (where ``params`` are the fine-tuned
    weights and ``inner_losses`` the fine-tuning losses), it has these.

    Attributes:
        head_grads: :math:`\\partial L_{val} / \\partial \\psi_0`, the gradient w.r.t. the head's initial weights.
        pretrained_cotangent: :math:`g = \\partial L_{val} / \\partial \\theta^*`, the cotangent the fine-tuning
            stage puts on the pre-trained weights (the paper's ``d_val_loss_d_theta``).
        stage1: the :class:`~nestopt.hypergrad.VJPResult` of the implicit pull-back through pre-training.
        stage2: the :class:`~nestopt.hypergrad.VJPResult` of the unrolled pull-back through fine-tuning.
    """

    head_grads: Tree = field(default_factory=dict)
    pretrained_cotangent: Tree = field(default_factory=dict)
    stage1: VJPResult | None = None
    stage2: VJPResult | None = None


def _finetuned_keys(finetune: Finetuned, pretrained: Tree, head: Tree) -> list[str]:
    """The keys fine-tuning updates: the head's, plus the pre-trained ones named by ``finetune``."""
    if isinstance(finetune, str):
        if finetune not in ("head", "all"):
            raise InvalidArgumentError(
                f"finetune must be 'head', 'all' or a list of pre-trained parameter names, got {finetune!r}"
            )
        chosen = list(pretrained) if finetune == "all" else []
    else:
        chosen = list(finetune)
        unknown = sorted(set(chosen) - set(pretrained))
        if unknown:
            raise InvalidArgumentError(
                f"finetune names {unknown}, which are not pre-trained parameters (those are {sorted(pretrained)})"
            )
    keys = [*head, *[k for k in pretrained if k in set(chosen)]]
    if not keys:
        raise InvalidArgumentError(
            "nothing is fine-tuned: head is empty and finetune='head'; pass the fine-tuning head's parameters, or "
            "finetune='all' (or a list of pre-trained parameter names) to fine-tune pre-trained weights"
        )
    return keys


def _check_disjoint(pretrained: Tree, head: Tree, hparams: Tree) -> None:
    shared = sorted(set(pretrained) & set(head))
    if shared:
        raise InvalidArgumentError(
            f"parameters {shared} appear both in pretrained and in head, which must be disjoint: the head holds "
            "only the parameters that fine-tuning adds; to fine-tune pre-trained weights as well, name them in "
            "finetune=[...] (or finetune='all') instead"
        )
    clash = sorted(set(hparams) & (set(pretrained) | set(head)))
    if clash:
        raise InvalidArgumentError(
            f"hyperparameters {clash} share their names with parameters; the trees of parameters and "
            "hyperparameters must have disjoint keys"
        )


def _check_steps(steps: Any) -> int:
    if isinstance(steps, int) and not isinstance(steps, bool) and steps == 0:
        raise InvalidArgumentError(
            "steps (fine-tuning steps) must be a positive integer, got 0: a two-stage hypergradient "
            "differentiates at least one fine-tuning step (without fine-tuning use hypergrad.implicit)"
        )
    return positive_int("steps", steps)


class _Split:
    """Fine-tuning seen as an unroll over the fine-tuned keys, with the fixed pre-trained weights passed
    next to the hyperparameters (so that their cotangent comes back with the hyperparameters')."""

    def __init__(self, hparams: Tree, pretrained: Tree, trained: list[str]) -> None:
        self.hkeys = list(hparams)
        self.order = list(pretrained)
        self.fixed = [k for k in pretrained if k not in set(trained)]

    def extended(self, hparams: Tree, pretrained: Tree) -> Tree:
        return {**hparams, **{k: pretrained[k] for k in self.fixed}}

    def wrap(self, loss: LossFn) -> LossFn:
        def wrapped(p: Tree, ext: Tree, batch: Any) -> torch.Tensor:
            weights = {k: (p[k] if k in p else ext[k]) for k in self.order}
            weights.update((k, v) for k, v in p.items() if k not in weights)
            return loss(weights, {k: ext[k] for k in self.hkeys}, batch)

        return wrapped


class _OuterAtEnd:
    """The cotangent of the fine-tuning unroll: the validation gradient at the fine-tuned weights (it also
    keeps the validation loss and its gradients w.r.t. the hyperparameters and the fixed weights)."""

    def __init__(self, outer: LossFn, ext: Tree, batch: Any) -> None:
        self.outer, self.ext, self.batch = outer, ext, batch
        self.counter = Counter()
        self.value = float("nan")
        self.direct: Tree = {}
        self.unused: tuple[str, ...] = ()

    def __call__(self, w_final: Tree) -> Tree:
        self.value, g_w, self.direct, self.unused = outer_gradients(
            self.outer, w_final, self.ext, self.batch, self.counter
        )
        return g_w


def _info(stage1: VJPResult, stage2: VJPResult, outer: _OuterAtEnd, trained: list[str], steps: int) -> HypergradInfo:
    s1, s2 = stage1.info, stage2.info
    worst = s2 if s2.status.failed and not s1.status.failed else s1
    return HypergradInfo(
        method="two-stage",
        status=worst.status,
        iterations=s1.iterations,
        residual=s1.residual,
        hvp_calls=s1.hvp_calls,
        grad_calls=s1.grad_calls + s2.grad_calls + outer.counter.grads,
        outer_loss=outer.value,
        inner_grad_norm=s1.inner_grad_norm,
        message=worst.message,
        solve=s1.solve,
        extra={
            "stage1": s1.as_dict(),
            "stage2": s2.as_dict(),
            "finetune_steps": steps,
            "finetuned": trained,
            "finetune_grad_norm": s2.inner_grad_norm,
        },
    )


def two_stage(
    pretrain_loss: LossFn,
    finetune_loss: LossFn,
    outer_loss: LossFn,
    pretrained: Tree,
    head: Tree,
    hparams: Tree,
    pretrain_batch: Any,
    finetune_batches: Any,
    outer_batch: Any,
    *,
    optimizer: FunctionalOptimizer,
    steps: int,
    finetune: Finetuned = "head",
    solver: Solver | None = None,
    hessian_batch: Any = None,
    hvp_mode: HVPMode = DEFAULT_HVP_MODE,
    curvature: Curvature = "hessian",
    checkpoint: bool = False,
    opt_state: dict[str, Any] | None = None,
    seed: int | None = None,
    throw: bool = False,
) -> TwoStageResult:
    """The hypergradient of the validation loss after fine-tuning a pre-trained model (see the module docs).

    Args:
        pretrain_loss: ``(pretrained, hparams, batch) -> scalar``: the stage-1 loss, of the pre-trained
            parameters only.
        finetune_loss: ``(weights, hparams, batch) -> scalar``, where ``weights`` holds the pre-trained
            parameters and the head's (``{**pretrained, **head}``, fine-tuned ones at their current values).
        outer_loss: ``(weights, hparams, batch) -> scalar``: the validation loss of the fine-tuned weights.
        pretrained: :math:`\\theta^*`, the (approximate) pre-training solution; it is not modified.
        head: :math:`\\psi_0`, the initial weights of the parameters that only fine-tuning has (a new
            classifier); disjoint from ``pretrained``. May be empty when ``finetune`` names pre-trained weights.
        hparams: the hyperparameters :math:`\\lambda`; their keys differ from the parameters'.
        pretrain_batch: batch of the stage-1 gradient and mixed term (and Hessian, unless ``hessian_batch``).
        finetune_batches: one fine-tuning batch per step: a list, an iterator or a callable ``k -> batch``.
        outer_batch: the validation batch.
        optimizer: the differentiable fine-tuning optimizer (:mod:`nestopt.optim.functional`).
        steps: fine-tuning steps ``K >= 1``, all differentiated.
        finetune: what fine-tuning updates besides the head: ``"head"`` (only the head; the pre-trained
            weights stay fixed, as in the paper's head-only unroll), ``"all"``, or a list of pre-trained names.
        solver: the stage-1 linear solver (default :func:`~nestopt.hypergrad.default_solver`).
        hessian_batch: batch of the stage-1 Hessian products, if not ``pretrain_batch``.
        hvp_mode: how stage-1 Hessian products are formed.
        curvature: ``"hessian"`` or ``"gauss-newton"`` for the stage-1 solve.
        checkpoint: unroll fine-tuning with logarithmic memory (see :func:`~nestopt.hypergrad.unrolled_vjp`).
        opt_state: the fine-tuning optimizer's initial state.
        seed: seeds the randomness of both stages' loss evaluations.
        throw: raise instead of warning when the fine-tuning unroll diverges.

    Returns:
        A :class:`TwoStageResult`; ``info.extra`` has each stage's diagnostics (``"stage1"``, ``"stage2"``).

    Raises:
        InvalidArgumentError: ``pretrained`` and ``head`` share parameters, a hyperparameter is named like a
            parameter, ``steps`` is not a positive integer, or nothing is fine-tuned.
        UnsupportedError: the pre-training loss's gradient depends on none of the hyperparameters (then
            pre-training does not depend on them: differentiate fine-tuning alone with
            :func:`~nestopt.hypergrad.unrolled`), or a hyperparameter enters none of the three losses.

    Example:
        >>> import torch
        >>> from nestopt import hypergrad, linalg
        >>> from nestopt.optim import functional
        >>> pt = lambda p, h, b: 0.5 * ((p["enc"] - h["target"]) ** 2).sum()        # enc* = target
        >>> ft = lambda p, h, b: 0.5 * ((p["enc"] * p["head"] - 1.0) ** 2).sum()
        >>> val = lambda p, h, b: 0.5 * ((p["enc"] * p["head"] - 2.0) ** 2).sum()
        >>> res = hypergrad.two_stage(
        ...     pt, ft, val, {"enc": torch.ones(2)}, {"head": torch.ones(2)}, {"target": torch.ones(2)},
        ...     None, [None], None, optimizer=functional.sgd(lr=0.1), steps=1, solver=linalg.CG(steps=5))
        >>> res.grads["target"], res.info.method   # (e h1 - 2)(h1 + e dh1/de) = -1 * (1 - 0.1)
        (tensor([-0.9000, -0.9000]), 'two-stage')
    """
    pretrained = check_tree(pretrained, "pretrained")
    head = dict(head) if not head else check_tree(head, "head")
    hparams = check_tree(hparams, "hparams")
    _check_disjoint(pretrained, head, hparams)
    steps = _check_steps(steps)
    optimizer = check_optimizer(optimizer)
    solver = _check_solver(solver)
    trained = _finetuned_keys(finetune, pretrained, head)
    split = _Split(hparams, pretrained, trained)
    ext = split.extended(tree.detach(hparams), tree.detach(pretrained))
    w0 = {k: (head[k] if k in head else pretrained[k]) for k in trained}
    at_end = _OuterAtEnd(split.wrap(outer_loss), ext, outer_batch)
    stage2 = unrolled_vjp(
        split.wrap(finetune_loss), tree.detach(w0), ext, finetune_batches, at_end,
        optimizer=optimizer, steps=steps, checkpoint=checkpoint, opt_state=opt_state, seed=seed, throw=throw,
    )  # fmt: skip
    assert stage2.params0 is not None  # untruncated
    ct_pretrained = {
        k: stage2.params0[k] if k in stage2.params0 else stage2.hparams[k] + at_end.direct[k] for k in pretrained
    }
    stage1 = implicit_vjp(
        pretrain_loss, tree.detach(pretrained), hparams, pretrain_batch, ct_pretrained, solver=solver,
        hessian_batch=hessian_batch, hvp_mode=hvp_mode, seed=seed, curvature=curvature,
    )  # fmt: skip
    if set(stage1.unused) == set(hparams):
        raise UnsupportedError(
            f"the pre-training loss's gradient depends on none of the hyperparameters {sorted(hparams)}, so "
            "pre-training does not depend on them and stage 1 contributes nothing: check pretrain_loss, or "
            "differentiate the fine-tuning stage alone with hypergrad.unrolled"
        )
    unusable = sorted(set(stage1.unused) & set(stage2.unused) & set(at_end.unused))
    if unusable:
        raise UnsupportedError(
            f"hyperparameters {unusable} enter neither the pre-training gradient, the fine-tuning steps nor the "
            "validation loss: their hypergradient would be a silent zero"
        )
    grads = {k: stage1.hparams[k] + stage2.hparams[k] + at_end.direct[k] for k in hparams}
    return TwoStageResult(
        grads,
        _info(stage1, stage2, at_end, trained, steps),
        params=stage2.params,
        opt_state=stage2.opt_state,
        inner_losses=stage2.inner_losses,
        head_grads={k: stage2.params0[k] for k in head},
        pretrained_cotangent=ct_pretrained,
        stage1=stage1,
        stage2=stage2,
    )


@dataclass(kw_only=True)
class TwoStageProblem(Problem):
    """A :class:`~nestopt.hypergrad.Problem` of pre-training then fine-tuning, as a two-stage loop hands it on.

    ``inner_loss``/``step_loss`` are the pre-training loss, ``params`` the live pre-trained parameters,
    ``inner_step`` one pre-training step of the loop's optimizer, ``next_train`` a pre-training batch,
    ``outer_loss`` the validation loss of fine-tuned weights and ``next_val`` a validation batch.

    Besides the problem's attributes, it has these.

    Attributes:
        finetune_loss: ``(weights, hparams, batch) -> scalar``, as for :func:`two_stage`.
        head: the live fine-tuning head (the loop's tensors).
        next_finetune: the next fine-tuning batch.
    """

    finetune_loss: LossFn
    head: Tree
    next_finetune: Callable[[], Any]

    def set_head(self, values: Tree) -> None:
        """Copy ``values`` into the live head (the fine-tuned head, to continue from)."""
        with torch.no_grad():
            for k, p in self.head.items():
                p.copy_(values[k])


@dataclass
class TwoStage(Strategy):
    """The two-stage estimator as a strategy: pre-training steps by the loop, then :func:`two_stage`.

    Each outer step the loop's pre-training optimizer takes ``problem.steps`` steps; then ``steps``
    fine-tuning steps of ``optimizer`` are unrolled from the current pre-trained weights and head, the
    hypergradient is formed at the current weights, and the live head continues from the fine-tuned one
    (as in the paper, where the head is carried over from the unroll).

    Args:
        optimizer: the differentiable fine-tuning optimizer.
        steps: fine-tuning steps per hypergradient (the paper: 1).
        solver: the stage-1 solver; the paper's is ``linalg.Neumann(steps=1, alpha=pretrain_lr,
            on_growth="continue")`` (default :func:`~nestopt.hypergrad.default_solver`).
        finetune: what fine-tuning updates besides the head (see :func:`two_stage`).
        hvp_mode, curvature, checkpoint, throw: as for :func:`two_stage`.

    Example:
        >>> from nestopt import hypergrad, linalg
        >>> from nestopt.optim import functional
        >>> s = hypergrad.TwoStage(functional.sgd(lr=0.1), steps=1,
        ...                        solver=linalg.Neumann(steps=1, alpha=1e-3, on_growth="continue"))
        >>> s.name, s.uses_inner_optimizer
        ('two-stage', True)
    """

    optimizer: FunctionalOptimizer
    steps: int = 1
    solver: Solver = field(default_factory=default_solver)
    finetune: Finetuned = "head"
    hvp_mode: HVPMode = DEFAULT_HVP_MODE
    curvature: Curvature = "hessian"
    checkpoint: bool = False
    throw: bool = False
    name = "two-stage"

    def __post_init__(self) -> None:
        check_optimizer(self.optimizer)
        _check_steps(self.steps)
        _check_solver(self.solver)
        if self.curvature not in CURVATURES:
            raise InvalidArgumentError(f"curvature must be one of {CURVATURES}, got {self.curvature!r}")

    def hypergradient(self, problem: Problem) -> HypergradResult:
        if not isinstance(problem, TwoStageProblem):
            raise UnsupportedError(
                "the two-stage strategy needs a TwoStageProblem (a fine-tuning loss, head and batches besides "
                "the pre-training problem): use it with nestopt.bilevel.PretrainFinetuneTrainer"
            )
        res = two_stage(
            problem.inner_loss, problem.finetune_loss, problem.outer_loss, tree.detach(problem.params),
            tree.detach(problem.head), problem.hparams, problem.next_train(),
            [problem.next_finetune() for _ in range(self.steps)], problem.next_val(), optimizer=self.optimizer,
            steps=self.steps, finetune=self.finetune, solver=self.solver, hvp_mode=self.hvp_mode,
            curvature=self.curvature, checkpoint=self.checkpoint, seed=problem.seed, throw=self.throw,
        )  # fmt: skip
        assert res.params is not None
        problem.set_head({k: res.params[k] for k in problem.head})
        return res
