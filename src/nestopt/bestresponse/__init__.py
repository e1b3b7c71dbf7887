"""Best-response hyperparameter optimization: models whose weights respond to their hyperparameters.

Instead of differentiating the solution of the inner problem, these methods learn the best-response function
:math:`\\lambda \\mapsto w^*(\\lambda)` jointly with the hyperparameters, in one training run, and descend the
validation loss through it (:class:`nestopt.hypergrad.BestResponse`). Two structures of the response:

=====================================  ======================================================================
model                                  response
=====================================  ======================================================================
:func:`hypernet`                       a hypernetwork generates all the weights: linear, factorized (thousands
                                       of hyperparameters) or MLP (:mod:`~nestopt.bestresponse.hypernets`);
                                       trained globally, locally or at the current values
                                       (:func:`hypernet_strategy`; Lorraine & Duvenaud, 2017)
:func:`stn`                            a Self-Tuning Network: each ``Linear``/``Conv2d`` layer's units gated by
                                       an affine map of the hyperparameters, about two matrix products per
                                       layer (:class:`StnLinear`, :class:`StnConv2d`; MacKay et al., 2019);
                                       ``delta=True`` for the centred, linearized Delta-STN (Bae & Grosse, 2020)
=====================================  ======================================================================

Because the validation loss is differentiated through the response only (in eval mode), hyperparameters that
act by sampling (dropout rates, discrete augmentation: :class:`nestopt.hparams.Dropout`,
:class:`~nestopt.hparams.Cutout`, ...) need no relaxation. Train a best-response model with
:class:`nestopt.BilevelTrainer`, passing ``model.families`` (their penalties then act on the response's
weights). :func:`schedule` reads the hyperparameters' values over a run from its history.

Example:
    >>> import functools, torch, nestopt
    >>> from nestopt import bestresponse, data, hparams, hypergrad
    >>> d = data.synthetic_classification(n_train=64, n_val=32, n_test=32, seed=0)
    >>> net = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Dropout(), torch.nn.Linear(32, 3))
    >>> model = bestresponse.stn(net, [hparams.Dropout(net, init=0.05)])
    >>> trainer = nestopt.BilevelTrainer(model, torch.nn.functional.cross_entropy, model.families,
    ...                                  hypergrad=hypergrad.BestResponse(train_steps=2),
    ...                                  inner_optimizer=functools.partial(torch.optim.SGD, lr=0.1))
    >>> history = trainer.fit(data.Loader(d.train, 32), data.Loader(d.val, 32), outer_steps=4, progress=False)
    >>> sched = bestresponse.schedule(history, model.families)
    >>> len(sched["dropout/2"])   # the rate after each outer step
    4
"""

from nestopt.bestresponse.hypernet_model import Hypernet, UniformPrior, hypernet, hypernet_strategy
from nestopt.bestresponse.hypernets import FactorizedHypernet, LinearHypernet, MLPHypernet
from nestopt.bestresponse.layers import Context, HyperDropout, StnConv2d, StnLinear
from nestopt.bestresponse.model import BestResponseModel, ResponseFamily
from nestopt.bestresponse.schedule import plot_schedule, schedule
from nestopt.bestresponse.space import HyperSpace
from nestopt.bestresponse.stn import STN, stn

__all__ = [
    "STN",
    "BestResponseModel",
    "Context",
    "FactorizedHypernet",
    "HyperDropout",
    "HyperSpace",
    "Hypernet",
    "LinearHypernet",
    "MLPHypernet",
    "ResponseFamily",
    "StnConv2d",
    "StnLinear",
    "UniformPrior",
    "hypernet",
    "hypernet_strategy",
    "plot_schedule",
    "schedule",
    "stn",
]
