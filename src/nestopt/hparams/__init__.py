"""Hyperparameter families: what a bilevel trainer tunes, and how each enters the training loss.

=============================  ==========================================================  ================
family                         hyperparameters                                             enters through
=============================  ==========================================================  ================
:class:`WeightDecay`           log L2 coefficients: global, per layer or per weight        a penalty
:class:`DistilledData`         the inputs (and optionally soft labels) of a tiny data set  the batch
:class:`AugmentationNet`       the weights of a network that transforms training inputs    the inputs
:class:`LossReweighting`       one weight per training example or per class                the loss weights
:class:`LearningRate`          the log inner learning rate (unrolled hypergradients only)  the optimizer
:class:`Dropout`               one dropout rate per layer (best-response models)           sampling
:class:`Cutout`                length and number of zeroed spans / squares (discrete)      sampling
:class:`RandomShift`           the largest circular shift of the inputs (discrete)         sampling
:class:`AugmentationStrength`  std of input noise, range of input scaling                  the inputs
=============================  ==========================================================  ================

Families with a range (:class:`Interval`: weight decays, rates, counts, strengths) can be inputs of a
best-response model (:mod:`nestopt.bestresponse`), which tunes the ones that only act through sampling.

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
from nestopt.hparams.dropout import Dropout
from nestopt.hparams.interval import Interval
from nestopt.hparams.learning_rate import LearningRate
from nestopt.hparams.objective import Objective, ObjectiveLoss, model_mode
from nestopt.hparams.random_augmentation import AugmentationStrength, Cutout, RandomShift
from nestopt.hparams.reweighting import LossReweighting
from nestopt.hparams.weight_decay import WeightDecay

__all__ = [
    "AugmentationNet",
    "AugmentationStrength",
    "Cutout",
    "DistilledData",
    "Dropout",
    "Family",
    "Interval",
    "LearningRate",
    "LossReweighting",
    "Objective",
    "ObjectiveLoss",
    "RandomShift",
    "WeightDecay",
    "model_mode",
]
