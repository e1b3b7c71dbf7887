"""Best-response hypergradients: differentiate the validation loss through a model of the best response.

Instead of solving the inner problem and differentiating its solution, a *best-response model* learns the
map :math:`\\lambda \\mapsto w^*(\\lambda)` itself: its weights condition on the hyperparameters (a
hypernetwork :math:`w_\\phi(\\lambda)`, or the gated units of a Self-Tuning Network). Training alternates

.. math::  \\phi \\leftarrow \\phi - \\alpha \\nabla_\\phi\\, L_T\\big(w_\\phi(\\tilde\\lambda), \\tilde\\lambda\\big)
           \\quad (T_{train} \\text{ times}), \\qquad
           (\\lambda, \\sigma) \\leftarrow \\mathrm{OuterOpt}\\Big(\\nabla\\big[L_V(w_\\phi(\\tilde\\lambda))
           - \\tau\\, H(\\sigma)\\big]\\Big) \\quad (T_{val} \\text{ times}),

with :math:`\\tilde\\lambda = \\lambda + \\sigma \\odot \\varepsilon`, :math:`\\varepsilon \\sim N(0, I)`,
drawn per example for the families that accept it (dropout rates, augmentation) and per batch otherwise,
and :math:`H(\\sigma) = \\sum \\log \\sigma + \\text{const}` the entropy of the perturbation. Training steps
run the model in train mode with the regularizers applied at :math:`\\tilde\\lambda`; the validation loss runs
in eval mode (no dropout, no augmentation), so its gradient reaches :math:`\\lambda` only through the
response: dropout rates and discrete counts need no relaxation.

**Delta-STN** (``delta=True``; Bae & Grosse, 2020) centres the response at the current hyperparameters,
:math:`w(\\lambda) = w_0 + \\Phi(\\lambda - \\lambda_0)`, trains the base weights :math:`w_0` at the
unperturbed :math:`\\lambda_0` and the response :math:`\\Phi` at :math:`\\tilde\\lambda` (with :math:`w_0`
held fixed and, in a Delta-STN model, the output linearized in :math:`\\Phi`).

**The model's side.** The strategy only builds hyperparameter trees; the model reads them
(``conditions_on_hparams = True``, see :mod:`nestopt.bestresponse`). A tree handed to the model holds the
families' keys (perturbed or not, with a leading batch dimension when perturbed per example) and, for a
centred (Delta) model, the centre :math:`\\lambda_0` of each key under :func:`centre_key`; a centred model
that finds no centre is at :math:`\\lambda_0` itself and uses its base weights only.

References:
    Lorraine, Duvenaud. Stochastic Hyperparameter Optimization through Hypernetworks. 2017.
    MacKay, Vicol, Lorraine, Duvenaud, Grosse. Self-Tuning Networks. ICLR 2019.
    Bae, Grosse. Delta-STN: Efficient Bilevel Optimization for Neural Networks using Structured Response
    Jacobians. NeurIPS 2020.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from nestopt import tree
from nestopt._validate import nonnegative, nonnegative_int, positive_int
from nestopt.autodiff import raw_vjp
from nestopt.errors import InvalidArgumentError, NonFiniteError, UnsupportedError
from nestopt.hparams.base import Family
from nestopt.hypergrad.result import HypergradInfo, HypergradResult
from nestopt.hypergrad.strategy import Problem, Strategy
from nestopt.linalg.base import Status
from nestopt.tree import Tree

__all__ = ["BestResponse", "centre_key", "inverse_softplus"]

CENTRE_SUFFIX = "@centre"


def centre_key(key: str) -> str:
    """The key under which a tree handed to a centred best-response model holds the centre of ``key``."""
    return key + CENTRE_SUFFIX


def inverse_softplus(value: float) -> float:
    """:math:`\\log(e^x - 1)`: the unconstrained value whose softplus is ``value`` (> 0)."""
    return value + math.log(-math.expm1(-value))


def _batch_size(batch: Any) -> int:
    first = batch[0] if isinstance(batch, tuple | list) and batch else batch
    if not isinstance(first, Tensor) or first.dim() == 0:
        raise InvalidArgumentError("a best-response strategy needs batches whose first tensor has a batch dimension")
    return int(first.shape[0])


@dataclass
class BestResponse(Strategy):
    """Best-response hyperparameter optimization (hypernetworks, Self-Tuning Networks, Delta-STN) as a strategy.

    The model must condition on the hyperparameters (``conditions_on_hparams = True``): an STN from
    :func:`nestopt.bestresponse.stn` or a hypernetwork-backed model from :func:`nestopt.bestresponse.hypernet`.
    Its parameters (the response) are trained by the loop's inner optimizer; the perturbation scales, when
    learned, are outer variables under ``"best_response/scale/<key>"`` (softplus-parameterized). See the
    module docstring for the algorithm.

    Args:
        scale: the perturbation's standard deviation :math:`\\sigma` in the unconstrained space (its initial
            value when learned; paper default 0.5), or ``None`` for the *simplified* variant, which trains
            the response at the current hyperparameters without perturbing them.
        learn_scale: tune :math:`\\sigma` with the hyperparameters (the validation loss is then evaluated at
            perturbed hyperparameters too, minus the entropy bonus); otherwise it stays fixed.
        entropy_weight: :math:`\\tau`, the weight of the entropy bonus (paper default 1e-3).
        train_steps: :math:`T_{train}`, training steps per cycle (paper default 2).
        val_steps: :math:`T_{val}`, hyperparameter steps per cycle: one per outer step, the training steps
            taken in the first outer step of each cycle (paper default 1).
        warmup: training steps at the initial hyperparameters before the first hyperparameter step (taken in
            the first outer step).
        delta: Delta-STN: a base step at the unperturbed hyperparameters and a response step at perturbed ones
            in every training step (the model must be centred: ``bestresponse.stn(..., delta=True)``).
        per_example: perturb the families that accept it (:attr:`~nestopt.hparams.Family.per_example`) once
            per example; otherwise every hyperparameter once per batch (a hypernetwork needs this).
        sample: ``values -> values``: draws the hyperparameters of each training step instead of perturbing
            them, from torch's global generator (the *global* hypernetwork: a fixed distribution
            :math:`p(\\lambda)`); needs ``learn_scale=False``.

    Example:
        >>> import functools, torch, nestopt
        >>> from nestopt import bestresponse, data, hparams, hypergrad
        >>> d = data.synthetic_classification(n_train=64, n_val=32, n_test=32, seed=0)
        >>> net = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Dropout(), torch.nn.Linear(16, 3))
        >>> model = bestresponse.stn(net, [hparams.Dropout(net)])
        >>> trainer = nestopt.BilevelTrainer(model, torch.nn.functional.cross_entropy, model.families,
        ...                                  hypergrad=hypergrad.BestResponse(),
        ...                                  inner_optimizer=functools.partial(torch.optim.SGD, lr=0.1))
        >>> history = trainer.fit(data.Loader(d.train, 32), data.Loader(d.val, 32), outer_steps=3, progress=False)
        >>> sorted(trainer.hparams)
        ['best_response/scale/dropout/2', 'dropout/2']
    """

    scale: float | None = 0.5
    learn_scale: bool = True
    entropy_weight: float = 1e-3
    train_steps: int = 2
    val_steps: int = 1
    warmup: int = 0
    delta: bool = False
    per_example: bool = True
    sample: Callable[[Tree], Tree] | None = None
    name = "best_response"
    differentiates = frozenset({"loss", "sampling"})

    def __post_init__(self) -> None:
        if self.scale is not None and (
            isinstance(self.scale, bool) or not isinstance(self.scale, int | float) or not self.scale > 0
            or not math.isfinite(self.scale)
        ):  # fmt: skip
            raise InvalidArgumentError(
                f"scale (the perturbation's sigma) must be a finite positive number, got {self.scale!r}; for the "
                "simplified variant, which trains at the current hyperparameters unperturbed, pass scale=None"
            )
        self.train_steps = positive_int("train_steps", self.train_steps)
        self.val_steps = positive_int("val_steps", self.val_steps)
        self.warmup = nonnegative_int("warmup", self.warmup)
        self.entropy_weight = nonnegative("entropy_weight", self.entropy_weight)
        if self.sample is not None and not callable(self.sample):
            raise InvalidArgumentError(f"sample must be a function values -> values, got {self.sample!r}")
        if self.learn_scale and (self.scale is None or self.sample is not None):
            raise InvalidArgumentError(
                "learn_scale=True tunes the perturbation's scale, which needs a perturbation: give scale > 0 "
                "(and no sample), or pass learn_scale=False"
            )
        if self.delta and self.scale is None and self.sample is None:
            raise InvalidArgumentError("delta=True trains the response at perturbed hyperparameters: give scale > 0")
        self.fixed_steps = self.train_steps
        self.reset()

    # -- the protocol --------------------------------------------------------------------------------
    def extra_hparams(self, hparams: Tree) -> Tree:
        if not self.learn_scale or self.scale is None:
            return {}
        raw = inverse_softplus(float(self.scale))
        return {f"scale/{k}": torch.full_like(v, raw) for k, v in hparams.items()}

    def reset(self) -> None:
        self._cycle = 0
        self._warm = False

    def state_dict(self) -> dict[str, Any]:
        return {"cycle": self._cycle, "warm": self._warm}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._cycle, self._warm = int(state["cycle"]), bool(state["warm"])

    def inner_phase(self, problem: Problem) -> list[float]:
        if self._cycle != 0:  # a later hyperparameter step of the cycle: no training steps
            return []
        steps = problem.steps + (0 if self._warm else self.warmup)
        self._warm = True
        h = tree.detach(problem.hparams)
        values = {k: h[k] for k in self._keys(h)}
        losses: list[float] = []
        for _ in range(steps):
            batch = problem.next_train()
            tilde = self._training_values(values, h, _batch_size(batch), problem.families)
            if not self.delta:
                losses.append(problem.inner_step(batch, {**h, **tilde}))
                continue
            losses.append(problem.inner_step(batch, h))  # base weights, at the centre
            centres = {centre_key(k): v for k, v in values.items()}
            losses.append(problem.inner_step(batch, {**h, **tilde, **centres}))  # the response
        return losses

    def hypergradient(self, problem: Problem) -> HypergradResult:
        live = problem.hparams
        keys = self._keys(live)
        batch = problem.next_val()
        entropy: Tensor | None = None
        with torch.enable_grad():
            values = {k: live[k] for k in keys}
            tilde = values
            if self.learn_scale:
                sigma = {k: F.softplus(live[self._scale_key(k)]) for k in keys}
                tilde = self._perturb(values, sigma, _batch_size(batch), problem.families)
                entropy = torch.stack(
                    [(s.log() + 0.5 * math.log(2 * math.pi * math.e)).sum() for s in sigma.values()]
                ).sum()
            h = {**live, **tilde}
            if self.delta:
                h.update({centre_key(k): v.detach() for k, v in values.items()})
            loss = problem.outer_loss(tree.detach(problem.params), h, batch)
            objective = loss if entropy is None else loss - self.entropy_weight * entropy
            if not bool(torch.isfinite(objective.detach())):
                raise NonFiniteError(f"the validation loss through the best response is {float(objective.detach())}")
            got = raw_vjp([objective], list(live.values()))
        unused = [k for k, g in zip(live, got) if g is None and k in values]
        if unused:
            raise UnsupportedError(
                f"the validation loss does not depend on the hyperparameters {unused}: the model does not condition "
                "on them. Build the best-response model with every family the trainer tunes (bestresponse.stn(model, "
                "families) or bestresponse.hypernet(...)), and pass model.families to the trainer"
            )
        grads = {k: torch.zeros_like(v) if g is None else g.detach() for (k, v), g in zip(live.items(), got)}
        trained = self._cycle == 0
        self._cycle = (self._cycle + 1) % self.val_steps
        info = HypergradInfo(
            method="best-response", status=Status.EXACT, iterations=0, residual=None, hvp_calls=0, grad_calls=1,
            outer_loss=float(loss.detach()),
            extra={"entropy": None if entropy is None else float(entropy.detach()), "trained": trained,
                   "delta": self.delta},
        )  # fmt: skip
        return HypergradResult(grads, info)

    # -- helpers ---------------------------------------------------------------------------------------
    def _scale_key(self, key: str) -> str:
        return f"{self.name}/scale/{key}"

    def _keys(self, hparams: Tree) -> list[str]:
        """The families' keys: every key but this strategy's own."""
        return [k for k in hparams if not k.startswith(f"{self.name}/")]

    def _per_example_keys(self, values: Tree, families: Sequence[Family]) -> set[str]:
        if not self.per_example:
            return set()
        return {f.key(k) for f in families if f.per_example for k in f.own(values)}

    def _perturb(
        self, values: Tree, sigma: Mapping[str, Tensor | float], batch: int, families: Sequence[Family]
    ) -> Tree:
        per_example = self._per_example_keys(values, families)
        out: Tree = {}
        for k, v in values.items():
            shape = (batch, *v.shape) if k in per_example else v.shape
            out[k] = v + sigma[k] * torch.randn(shape, dtype=v.dtype, device=v.device)
        return out

    def _training_values(self, values: Tree, h: Tree, batch: int, families: Sequence[Family]) -> Tree:
        """The hyperparameters of one training step: sampled, perturbed, or (simplified) as they are."""
        if self.sample is not None:
            drawn = self.sample(values)
            if not isinstance(drawn, dict) or set(drawn) != set(values):
                raise InvalidArgumentError(f"sample must return a tree with the keys {sorted(values)}, got {drawn!r}")
            return {k: v.detach() for k, v in drawn.items()}
        if self.scale is None:
            return values
        sigma: dict[str, Tensor | float] = (
            {k: F.softplus(h[self._scale_key(k)]) for k in values} if self.learn_scale
            else dict.fromkeys(values, float(self.scale))
        )  # fmt: skip
        return self._perturb(values, sigma, batch, families)
