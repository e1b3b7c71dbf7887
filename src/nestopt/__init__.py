"""nestopt: nested optimization in PyTorch.

Hypergradients (implicit differentiation, unrolling, forward mode, two stages), bilevel training loops,
meta-learning (MAML, iMAML), and optimization in differentiable games, on one functional core: parameters
and hyperparameters are ``dict[str, Tensor]`` trees and every loss is ``loss(params, hparams, batch) -> scalar``.

Example:
    >>> import torch, nestopt
    >>> from nestopt import hypergrad, linalg
    >>> x, y = torch.randn(40, 3, dtype=torch.float64), torch.randn(40, dtype=torch.float64)
    >>> inner = lambda p, h, b: ((b[0] @ p["w"] - b[1]) ** 2).mean() + (h["l2"].exp() * p["w"] ** 2).sum()
    >>> outer = lambda p, h, b: ((b[0] @ p["w"] - b[1]) ** 2).mean()
    >>> w = {"w": torch.zeros(3, dtype=torch.float64)}
    >>> res = hypergrad.implicit(inner, outer, w, {"l2": torch.zeros(3, dtype=torch.float64)},
    ...                          (x, y), (x, y), solver=linalg.CG(steps=10))
    >>> sorted(res.grads)
    ['l2']

The paper experiments live in :mod:`nestopt.experiments`, which ``import nestopt`` does not load; the
``nestopt`` command runs them.
"""

from nestopt import (
    autodiff,
    bilevel,
    data,
    distributed,
    errors,
    games,
    hparams,
    hypergrad,
    jacobian,
    linalg,
    meta,
    nas,
    nets,
    optim,
    profile,
    tree,
)
from nestopt.bilevel import BilevelTrainer

__version__ = "0.1.0"

__all__ = [
    "BilevelTrainer",
    "__version__",
    "autodiff",
    "bilevel",
    "data",
    "distributed",
    "errors",
    "games",
    "hparams",
    "hypergrad",
    "jacobian",
    "linalg",
    "meta",
    "nas",
    "nets",
    "optim",
    "profile",
    "tree",
]
