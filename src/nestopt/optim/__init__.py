"""Optimizers.

* :mod:`nestopt.optim.transforms`: small pure ``(init, update)`` gradient transformations and ``chain``
  (optax's design): momentum (real and complex), Adam moments (real and complex), RMS, optimism, weight
  decay, clipping, schedules, learning rates that are functions of the hyperparameters.
* :mod:`nestopt.optim.functional`: differentiable functional optimizers for unrolled hypergradients, each
  a chain of transforms (``sgd``, ``adam``, ``adamw``, ``rmsprop``, ``complex_momentum``, ``complex_adam``,
  ``optimistic_sgd``, ``optimistic_adam``, and ``from_transform`` for any chain).
* :class:`ComplexMomentum` and :class:`ComplexAdam`: momentum with a complex coefficient (Lorraine et al.,
  2022); parameters stay real.
* :class:`HeavyBall`: heavy-ball momentum of any real sign (negative momentum, which ``torch.optim.SGD``
  refuses).
* :class:`OptimisticSGD` and :class:`OptimisticAdam`: optimistic gradient methods.
* :class:`ExtraGradient`: extragradient around any base optimizer.

Every ``torch.optim`` optimizer here validates its arguments, keeps ``param_groups`` and ``state``,
round-trips through ``state_dict``, works with learning-rate schedulers, and has a for-loop, a
``_foreach`` (``foreach=True``) and a ``torch.compile``-fused (``fused=True``) path. All three, and the
functional optimizers, run the same kernels: each update formula is written once, against a small
tensor-list ``ops`` namespace with an out-of-place backend and two in-place ones.

Example:
    >>> import cmath, math, torch
    >>> from nestopt import optim
    >>> model = torch.nn.Linear(3, 1)
    >>> opt = optim.ComplexMomentum(model.parameters(), lr=0.01, beta=cmath.rect(0.9, math.pi / 8))
    >>> sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)
    >>> loss = model(torch.randn(4, 3)).pow(2).mean()
    >>> loss.backward()
    >>> opt.step()
    >>> sched.step()
    >>> fopt = optim.functional.sgd(lr=0.1)
    >>> params = {"w": torch.ones(2)}
    >>> params, state = fopt.update({"w": torch.ones(2)}, fopt.init(params), params, {})
    >>> params["w"]
    tensor([0.9000, 0.9000])
"""

from nestopt.optim import functional, transforms
from nestopt.optim.complex_momentum import ComplexAdam, ComplexMomentum
from nestopt.optim.extragradient import ExtraGradient
from nestopt.optim.heavy_ball import HeavyBall
from nestopt.optim.optimistic import OptimisticAdam, OptimisticSGD

__all__ = [
    "ComplexAdam",
    "ComplexMomentum",
    "ExtraGradient",
    "HeavyBall",
    "OptimisticAdam",
    "OptimisticSGD",
    "functional",
    "transforms",
]
