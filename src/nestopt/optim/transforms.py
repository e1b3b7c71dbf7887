"""Gradient transformations: small pure ``(init, update)`` pieces that compose into optimizers.

Every optimizer of :mod:`nestopt.optim.functional` is a :func:`chain` of these (optax's design): for
instance ``adamw = chain(scale_by_adam(b1, b2, eps), add_decayed_weights(wd), scale_by_learning_rate(lr))``.
A transform maps the incoming updates (gradients, for the first one) to new updates::

    state = t.init(params)
    updates, state = t.update(updates, state, params, hparams)
    params = apply_updates(params, updates)

All of them are out of place and differentiable (autograd, ``torch.func.jvp``, ``vmap``), so any chain can
be unrolled for hypergradients (:func:`nestopt.optim.functional.from_transform`). Coefficients may be
numbers, tensors, per-parameter trees (where linear: learning rates, scales, weight decays) or functions of
the hyperparameters, ``lr=lambda h: h["log_lr"].exp()``: that is how an optimizer setting becomes a
hyperparameter. States hold only dicts, tuples, tensors and ints (``torch.load(weights_only=True)`` reads
them back). The formulas themselves live in one place, shared with the in-place ``torch.optim`` classes.

=================================  =================================================================
transform                          update
=================================  =================================================================
:func:`scale`                      :math:`c\\,u`
:func:`scale_by_learning_rate`     :math:`-\\eta\\,u`
:func:`scale_by_schedule`          :math:`f(t)\\,u`, :math:`t` the number of updates so far
:func:`add_decayed_weights`        :math:`u + \\lambda w`
:func:`clip_by_global_norm`        :math:`u\\,c / \\max(\\|u\\|, c)`
:func:`clip`                       :math:`\\mathrm{clamp}(u, -c, c)`
:func:`trace`                      heavy-ball (or Nesterov) momentum, any real sign
:func:`scale_by_complex_momentum`  :math:`\\mu \\leftarrow \\beta\\mu - u`, :math:`-\\Re(\\alpha\\mu)`
:func:`scale_by_adam`              Adam's bias-corrected direction
:func:`scale_by_complex_adam`      Adam with a complex first-moment coefficient
:func:`scale_by_rms`               RMSprop (optionally centered)
:func:`scale_by_optimism`          :math:`u_t + \\gamma (u_t - u_{t-1})`
=================================  =================================================================

Example:
    >>> import torch
    >>> from nestopt.optim import functional, transforms
    >>> opt = functional.from_transform(transforms.chain(
    ...     transforms.clip_by_global_norm(1.0),
    ...     transforms.scale_by_adam(),
    ...     transforms.scale_by_schedule(lambda step: 1.0 / (1 + step)),
    ...     transforms.scale_by_learning_rate(lambda h: h["log_lr"].exp()),
    ... ))
    >>> params, hparams = {"w": torch.ones(3)}, {"log_lr": torch.tensor(-2.0)}
    >>> state = opt.init(params)
    >>> params, state = opt.update({"w": torch.ones(3)}, state, params, hparams)
    >>> opt.uses_hparams, params["w"].shape
    (True, torch.Size([3]))

References:
    DeepMind et al. The DeepMind JAX Ecosystem (optax), 2020.
"""

from nestopt.optim._checks import Coefficient
from nestopt.optim._scale_by import (
    scale_by_adam,
    scale_by_complex_adam,
    scale_by_complex_momentum,
    scale_by_optimism,
    scale_by_rms,
    trace,
)
from nestopt.optim._transform import (
    Transform,
    add_decayed_weights,
    apply_updates,
    chain,
    clip,
    clip_by_global_norm,
    identity,
    scale,
    scale_by_learning_rate,
    scale_by_schedule,
)

__all__ = [
    "Coefficient",
    "Transform",
    "add_decayed_weights",
    "apply_updates",
    "chain",
    "clip",
    "clip_by_global_norm",
    "identity",
    "scale",
    "scale_by_adam",
    "scale_by_complex_adam",
    "scale_by_complex_momentum",
    "scale_by_learning_rate",
    "scale_by_optimism",
    "scale_by_rms",
    "scale_by_schedule",
    "trace",
]
