"""Hyperparameter families: what a bilevel trainer tunes, and how each enters the training loss.

========================  ==========================================================  ================
family                    hyperparameters                                             enters through
========================  ==========================================================  ================
:class:`WeightDecay`      log L2 coefficients: global, per layer or per weight        a penalty
:class:`DistilledData`    the inputs (and optionally soft labels) of a tiny data set  the batch
:class:`AugmentationNet`  the weights of a network that transforms training inputs    the inputs
:class:`LossReweighting`  one weight per training example or per class                the loss weights
:class:`LearningRate`     the log inner learning rate (unrolled hypergradients only)  the optimizer
========================  ==========================================================  ================

Families compose: :class:`Objective` turns a model, a criterion and a list of families into the inner and
outer losses of :mod:`nestopt.hypergrad`.

Example:
    >>> import torch
    >>> from nestopt import hparams
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    >>> aug = hparams.AugmentationNet(torch.nn.Linear(4, 4))
    >>> obj = hparams.Objective(net, torch.nn.functional.cross_entropy, [hparams.WeightDecay(net), aug])
    >>> len(obj.init_hparams())
    6
"""

from nestopt.hparams.augmentation import AugmentationNet
from nestopt.hparams.base import Family
from nestopt.hparams.distillation import DistilledData
from nestopt.hparams.learning_rate import LearningRate
from nestopt.hparams.objective import Objective, ObjectiveLoss, model_mode
from nestopt.hparams.reweighting import LossReweighting
from nestopt.hparams.weight_decay import WeightDecay

__all__ = [
    "AugmentationNet",
    "DistilledData",
    "Family",
    "LearningRate",
    "LossReweighting",
    "Objective",
    "ObjectiveLoss",
    "WeightDecay",
    "model_mode",
]
