"""The problems every system is benchmarked on, built once and handed to each system unchanged.

``mlp_problem``: an MLP ``40-h-h-10`` (ReLU) on MNIST-1D with one weight-decay hyperparameter per parameter,

.. math::  L_{in}(w, \\lambda) = \\mathrm{CE}(f_w(x_{tr}), y_{tr}) + \\sum_i e^{\\lambda_i} w_i^2
                                + \\tfrac{\\delta}{2} \\|w - \\bar w\\|^2, \\qquad
           L_{out}(w) = \\mathrm{CE}(f_w(x_{val}), y_{val}),

trained for a few hundred SGD steps first, so that the Hessian is that of a partly trained network (the
point at which warm-started bilevel training computes its hypergradients). The Hessian of a partly trained
ReLU network is indefinite, and neither CG nor the Neumann series is meant for that; the proximal term
(iMAML's, with the anchor :math:`\\bar w` the pretrained weights, so it leaves the gradient there unchanged)
shifts the spectrum by :math:`\\delta`, chosen as 1.5 times the most negative eigenvalue found by power
iteration. Every system then solves the same positive-definite system. ``ridge_problem`` and
``logistic_problem`` have hypergradients known to machine precision (a closed form, and Newton's method
plus a dense solve).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call

from nestopt import data, linalg, tree
from nestopt.autodiff import DecayTerms, GaussNewtonLoss, linearize
from nestopt.nets import mlp
from nestopt.tree import Tree

__all__ = ["HIDDEN", "LinearProblem", "MLPProblem", "logistic_problem", "mlp_problem", "ridge_problem"]

# hidden width -> about 30k, 300k, 3M and 30M parameters (h^2 + 52 h + 10); 30M is for a GPU
HIDDEN = {"30k": 150, "300k": 520, "3M": 1700, "30M": 5450}


@dataclass
class MLPProblem:
    net: torch.nn.Module
    params: Tree  # the partly trained weights: the point of every hypergradient
    hparams: Tree  # log weight decays, one per parameter
    train: tuple[Tensor, Tensor]  # inner batch (also the Hessian batch)
    val: tuple[Tensor, Tensor]  # outer batch
    unroll_batches: list[tuple[Tensor, Tensor]]  # one inner batch per unrolled step (cycled)
    hidden: int
    lam_max: float  # largest Hessian eigenvalue (power iteration), proximal term included
    anchor: Tree = field(default_factory=dict)  # the proximal term's centre
    prox: float = 0.0  # the proximal term's weight delta
    lr: float = 0.05  # inner SGD step of the unrolled methods
    momentum: float = 0.9
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_params(self) -> int:
        return tree.numel(self.params)

    @property
    def alpha(self) -> float:
        """The Neumann step every system uses: 1 / lambda_max."""
        return 1.0 / self.lam_max

    def inner(self, p: Tree, h: Tree, batch: Any) -> Tensor:
        x, y = batch
        return torch.nn.functional.cross_entropy(functional_call(self.net, p, (x,)), y) + self.penalty(p, h)

    def penalty(self, p: Tree, h: Tree) -> Tensor:
        """The weight decays and the proximal term."""
        value = sum((h[k].exp() * p[k] ** 2).sum() for k in p)
        if self.prox:
            value = value + 0.5 * self.prox * sum(((p[k] - self.anchor[k]) ** 2).sum() for k in p)
        return value

    def outer(self, p: Tree, h: Tree, batch: Any) -> Tensor:
        x, y = batch
        return torch.nn.functional.cross_entropy(functional_call(self.net, p, (x,)), y)

    @property
    def inner_split(self) -> GaussNewtonLoss:
        """``inner`` as nestopt's users write it: the network's outputs, the cross-entropy and the penalties, the
        weight decays and the proximal term named (``autodiff.DecayTerms``, as ``hparams.Objective`` names its
        decays: the proximal term is a decay towards the anchor with the constant coefficient ``prox / 2``), so
        that nestopt takes their derivatives from their formulas; the same function as ``inner``, which the peers
        are given."""

        def rest(p: Tree, h: Tree, batch: Any) -> DecayTerms:
            decays: list[tuple[Tensor, ...]] = [(h[k], p[k]) for k in p]
            if self.prox:
                log_c = next(iter(p.values())).new_tensor(math.log(0.5 * self.prox))
                decays += [(log_c, p[k], self.anchor[k]) for k in p]
            return DecayTerms(decays, total=lambda: self.penalty(p, h))

        return GaussNewtonLoss(
            outputs=lambda p, h, batch: functional_call(self.net, p, (batch[0],)),
            head=lambda z, h, batch: torch.nn.functional.cross_entropy(z, batch[1]),
            rest=rest,
        )

    def batch(self, k: int) -> tuple[Tensor, Tensor]:
        return self.unroll_batches[k % len(self.unroll_batches)]

    def to(self, dtype: torch.dtype) -> MLPProblem:
        """The same problem in another dtype (for references computed in float64)."""
        cast = lambda t: t.to(dtype) if t.is_floating_point() else t
        return MLPProblem(
            net=self.net,
            params=tree.map(cast, self.params),
            hparams=tree.map(cast, self.hparams),
            train=(cast(self.train[0]), self.train[1]),
            val=(cast(self.val[0]), self.val[1]),
            unroll_batches=[(cast(x), y) for x, y in self.unroll_batches],
            hidden=self.hidden,
            lam_max=self.lam_max,
            anchor=tree.map(cast, self.anchor),
            prox=self.prox,
            lr=self.lr,
            momentum=self.momentum,
        )


def make_net(hidden: int, seed: int = 0) -> torch.nn.Module:
    """The benchmark network ``40-h-h-10`` (ReLU), initialized from ``seed``."""
    return mlp([40, hidden, hidden, 10], "relu", generator=torch.Generator().manual_seed(seed))


def mlp_problem(
    hidden: int,
    *,
    batch_size: int = 128,
    pretrain: int = 200,
    log_wd: float = -6.0,
    seed: int = 0,
    n_train: int = 2000,
    iterations: int = 20,
    device: str | torch.device = "cpu",
) -> MLPProblem:
    """Build the MLP problem at width ``hidden`` (float32, on ``device``): pretrain, then fix the proximal weight."""
    ds = data.mnist1d(n_train=n_train, n_val=batch_size, n_test=10, seed=seed)
    ds = data.Splits(*(data.Split(s.x.to(device), s.y.to(device)) for s in (ds.train, ds.val, ds.test)), ds.num_classes)
    net = make_net(hidden, seed).to(device)
    for p in net.parameters():
        p.requires_grad_(False)
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    hparams = {k: torch.full_like(v, log_wd) for k, v in params.items()}
    n = len(ds.train)
    batches = [(ds.train.x[i : i + batch_size], ds.train.y[i : i + batch_size]) for i in range(0, n, batch_size)]
    batches = [b for b in batches if len(b[1]) == batch_size]
    problem = MLPProblem(
        net=net,
        params=params,
        hparams=hparams,
        train=batches[0],
        val=(ds.val.x[:batch_size], ds.val.y[:batch_size]),
        unroll_batches=batches[1:],
        hidden=hidden,
        lam_max=1.0,
    )
    w = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    opt = torch.optim.SGD(list(w.values()), lr=0.05, momentum=0.9)
    for i in range(pretrain):
        opt.zero_grad()
        problem.inner(w, hparams, batches[i % len(batches)]).backward()
        opt.step()
    problem.params = {k: v.detach() for k, v in w.items()}
    problem.anchor = tree.clone(problem.params)
    top, bottom = extreme_eigenvalues(problem, iterations)
    problem.prox = 1.5 * max(0.0, -bottom) + 1e-3 * top
    problem.lam_max = 1.05 * (top + problem.prox)
    return problem


def extreme_eigenvalues(problem: MLPProblem, iterations: int = 20) -> tuple[float, float]:
    """The largest and the smallest Hessian eigenvalue (power iteration on H, then on top I - H)."""
    lin = linearize(problem.inner, problem.params, problem.hparams, problem.train)
    top = float(
        linalg.power_iteration(linalg.LinearOperator.hessian(lin), iterations=iterations, seed=1).eigenvalues[0]
    )
    flipped = linalg.LinearOperator(lambda v: tree.axpy(-1.0, lin.hvp(v), tree.scale(v, top)), problem.params)
    shifted = float(linalg.power_iteration(flipped, iterations=iterations, seed=1).eigenvalues[0])
    return top, top - shifted


def reference_implicit(
    problem: MLPProblem, *, steps: int = 400, tol: float = 1e-7, dtype: torch.dtype = torch.float64
) -> tuple[Tree, dict[str, Any]]:
    """A high-accuracy IFT hypergradient: CG (in ``dtype``) to a tight tolerance.

    Power iteration can miss part of the negative spectrum: if CG meets negative curvature, the proximal
    weight is doubled (on ``problem`` itself, before any system runs) until it does not.
    """
    import warnings

    from nestopt import hypergrad

    info: dict[str, Any] = {}
    for _ in range(8):
        q = problem.to(dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = hypergrad.implicit(
                q.inner, q.outer, q.params, q.hparams, q.train, q.val, solver=linalg.CG(steps=steps, tol=tol)
            )
        info = {
            "prox": problem.prox,
            "lambda_max": problem.lam_max,
            "status": res.info.status.value,
            "iterations": res.info.iterations,
            "residual": res.info.residual,
            "dtype": str(dtype).replace("torch.", ""),
        }
        if res.info.status.value != "negative_curvature":
            return tree.map(lambda t: t.to(torch.float32), res.grads), info
        problem.lam_max += problem.prox / 1.05
        problem.prox *= 2.0
    raise RuntimeError(f"the reference CG kept meeting negative curvature: {info}")


def cosine(a: Tree, b: Tree) -> float:
    """Cosine similarity of two trees as vectors, computed in float64."""
    a64 = tree.map(lambda t: t.double(), a)
    b64 = tree.map(lambda t: t.double(), {k: b[k] for k in a})
    return float(tree.dot(a64, b64) / (tree.norm(a64) * tree.norm(b64)))


def relative_error(a: Tree, ref: Tree) -> float:
    diff = tree.map(lambda x, y: x.double() - y.double(), {k: a[k] for k in ref}, ref)
    return float(tree.norm(diff) / tree.norm(tree.map(lambda t: t.double(), ref)))


@dataclass
class LinearProblem:
    """A linear model with per-feature penalties :math:`\\sum_i e^{\\lambda_i} w_i^2`, in float64."""

    kind: str  # "ridge" or "logistic"
    x_tr: Tensor
    y_tr: Tensor
    x_val: Tensor
    y_val: Tensor
    hparams: Tree
    params: Tree  # the inner solution to machine precision
    exact: Tree  # the exact hypergradient
    lam_max: float
    # what the unrolled systems need: the start of the unroll, a module holding ``w``, the inner SGD
    start: Tree = field(default_factory=dict)
    net: torch.nn.Module | None = None
    momentum: float = 0.9
    train: Any = None  # the losses close over the full data sets: batches are unused
    val: Any = None

    @property
    def alpha(self) -> float:
        return 1.0 / self.lam_max

    @property
    def lr(self) -> float:
        return 1.0 / self.lam_max

    def batch(self, k: int) -> Any:
        return None

    def unrolled_view(self) -> LinearProblem:
        """The same problem with ``params`` the start of the unroll (zeros) instead of the solution."""
        import dataclasses

        return dataclasses.replace(self, params=self.start)

    def _data_loss(self, w: Tensor, x: Tensor, y: Tensor) -> Tensor:
        return self._data_head(x @ w, y)

    def _data_head(self, z: Tensor, y: Tensor) -> Tensor:
        if self.kind == "ridge":
            return ((z - y) ** 2).mean()
        return torch.nn.functional.binary_cross_entropy_with_logits(z, y)

    def inner(self, p: Tree, h: Tree, batch: Any) -> Tensor:
        return self._data_loss(p["w"], self.x_tr, self.y_tr) + (h["log_l2"].exp() * p["w"] ** 2).sum()

    @property
    def inner_split(self) -> GaussNewtonLoss:
        """``inner`` with its decay named (``autodiff.DecayTerms``), as nestopt's users write it (see
        :attr:`MLPProblem.inner_split`)."""

        def rest(p: Tree, h: Tree, batch: Any) -> DecayTerms:
            return DecayTerms([(h["log_l2"], p["w"])], total=lambda: (h["log_l2"].exp() * p["w"] ** 2).sum())

        return GaussNewtonLoss(
            outputs=lambda p, h, batch: self.x_tr @ p["w"],
            head=lambda z, h, batch: self._data_head(z, self.y_tr),
            rest=rest,
        )

    def outer(self, p: Tree, h: Tree, batch: Any) -> Tensor:
        return self._data_loss(p["w"], self.x_val, self.y_val)


def _linear_data(n: int, d: int, seed: int, logistic: bool) -> tuple[Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2 * n, d, generator=g, dtype=torch.float64)
    x = x * torch.logspace(0, -1.5, d, dtype=torch.float64)  # unequal feature scales: a non-trivial spectrum
    w_true = torch.randn(d, generator=g, dtype=torch.float64) * (torch.rand(d, generator=g) < 0.3)
    z = x @ w_true * 3.0
    if logistic:
        y = (torch.rand(2 * n, generator=g, dtype=torch.float64) < torch.sigmoid(z)).to(torch.float64)
    else:
        y = z + 0.5 * torch.randn(2 * n, generator=g, dtype=torch.float64)
    return x[:n], y[:n], x[n:], y[n:]


def _exact(problem: LinearProblem) -> tuple[Tree, Tree, float]:
    """The inner solution (Newton to machine precision), the exact IFT hypergradient and lambda_max."""
    h = problem.hparams
    w = torch.zeros(problem.x_tr.shape[1], dtype=torch.float64)
    full_hessian = lambda w_: torch.func.hessian(lambda v: problem.inner({"w": v}, h, None))(w_)
    for _ in range(100):
        g = torch.func.grad(lambda v: problem.inner({"w": v}, h, None))(w)
        step = torch.linalg.solve(full_hessian(w), g)
        w = w - step
        if float(step.abs().max()) < 1e-15:
            break
    hess = full_hessian(w)
    g_out = torch.func.grad(lambda v: problem.outer({"w": v}, h, None))(w)
    x = torch.linalg.solve(hess, g_out)
    # d/dlambda of grad_w L_in = diag(2 e^lambda w): the mixed term
    exact = -(2.0 * h["log_l2"].exp() * w) * x
    return {"w": w}, {"log_l2": exact}, float(torch.linalg.eigvalsh(hess).max())


def ridge_problem(n: int = 400, d: int = 200, seed: int = 0) -> LinearProblem:
    """Ridge regression with per-feature penalties; closed-form solution and hypergradient."""
    x_tr, y_tr, x_val, y_val = _linear_data(n, d, seed, logistic=False)
    hp = {"log_l2": torch.full((d,), math.log(1e-3), dtype=torch.float64)}
    problem = LinearProblem("ridge", x_tr, y_tr, x_val, y_val, hp, {}, {}, 1.0)
    return _finish(problem)


def logistic_problem(n: int = 400, d: int = 200, seed: int = 0) -> LinearProblem:
    """Logistic regression with per-feature penalties, solved by Newton's method to machine precision."""
    x_tr, y_tr, x_val, y_val = _linear_data(n, d, seed, logistic=True)
    hp = {"log_l2": torch.full((d,), math.log(1e-3), dtype=torch.float64)}
    problem = LinearProblem("logistic", x_tr, y_tr, x_val, y_val, hp, {}, {}, 1.0)
    return _finish(problem)


def _finish(problem: LinearProblem) -> LinearProblem:
    problem.params, problem.exact, problem.lam_max = _exact(problem)
    problem.start = {"w": torch.zeros_like(problem.params["w"])}
    problem.net = _Weights(problem.start["w"])
    # the losses close over the data; the batches are handed to systems that insist on one
    problem.train, problem.val = (problem.x_tr, problem.y_tr), (problem.x_val, problem.y_val)
    return problem


class _Weights(torch.nn.Module):
    """A module holding the weight vector ``w`` (higher and TorchOpt's MetaSGD differentiate modules)."""

    def __init__(self, w: Tensor) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(w.clone(), requires_grad=False)
