"""Optimizers.

* :mod:`nestopt.optim.functional`: differentiable functional optimizers (``sgd``, ``adam``) for unrolled
  hypergradients.
* :class:`ComplexMomentum` and :class:`ComplexAdam`: momentum with a complex coefficient (Lorraine et al.,
  2022); parameters stay real.
* :class:`HeavyBall`: heavy-ball momentum of any real sign (negative momentum, which ``torch.optim.SGD``
  refuses).
* :class:`OptimisticSGD` and :class:`OptimisticAdam`: optimistic gradient methods.
* :class:`ExtraGradient`: extragradient around any base optimizer.

Every ``torch.optim`` optimizer here validates its arguments, keeps ``param_groups`` and ``state``,
round-trips through ``state_dict``, works with learning-rate schedulers, and has a for-loop and a
``_foreach`` kernel path (``foreach=`` flag).

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

from nestopt.optim import functional
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
]
