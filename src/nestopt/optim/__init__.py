"""Optimizers: differentiable functional ones for unrolling (:mod:`nestopt.optim.functional`) and
``torch.optim.Optimizer`` subclasses.

Example:
    >>> import torch
    >>> from nestopt.optim import functional
    >>> opt = functional.sgd(lr=0.1)
    >>> params = {"w": torch.ones(2)}
    >>> state = opt.init(params)
    >>> params, state = opt.update({"w": torch.ones(2)}, state, params, {})
    >>> params["w"]
    tensor([0.9000, 0.9000])
"""

from nestopt.optim import functional

__all__ = ["functional"]
