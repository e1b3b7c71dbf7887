"""Neural architecture search as nested optimization: a cell space with its own ground truth, weight
sharing, ENAS and its controller analysis, and DARTS through nestopt's hypergradients.

=============================  ==========================================================================
piece                          what it is
=============================  ==========================================================================
:class:`CellSpace`             ENAS-style cells: each node picks an activation and an earlier node;
                               encoding, enumeration, uniform sampling
similarity measures            :func:`shared_activations`, :func:`shared_connections`, ...;
                               :func:`embedding_correlation` (Spearman) of embeddings against them
:class:`CellNetwork`           one architecture as a stand-alone classifier
:class:`Supernet`              the weight-sharing network: any child, or DARTS's continuous relaxation
:class:`GroundTruth`           test accuracies of architectures trained from scratch, cached on disk
:class:`Controller`            ENAS's LSTM policy over architectures
:func:`reinforce_loss`         REINFORCE with a :class:`MovingAverage` baseline and an entropy bonus
:class:`MemoryBuffer`          past architectures, for the :func:`supervised_loss` of Adam & Lorraine
:func:`analyse_controller`     hidden-state spread, Spearman correlation with graph similarity, conditioning
:func:`random_search`          random search with weight sharing (Li & Talwalkar, 2019)
:func:`enas`                   ENAS with weight sharing, optionally with the memory buffer
:func:`darts`                  DARTS: :class:`ArchitectureWeights` as hyperparameters of a BilevelTrainer
=============================  ==========================================================================

Example:
    >>> import torch
    >>> from nestopt import nas
    >>> space = nas.CellSpace(nodes=4)
    >>> len(space)   # 4 activations ** 4 nodes * 3! orderings of previous nodes
    1536
    >>> a, b = space.sample(2, torch.Generator().manual_seed(0))
    >>> 0 <= nas.graph_similarity(a, b) <= 2 * space.nodes - 1
    True

References:
    Adam & Lorraine, "Understanding Neural Architecture Search Techniques", arXiv:1904.00438, 2019.
    Pham et al., "Efficient Neural Architecture Search via Parameter Sharing", ICML 2018.
    Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019.
    Li & Talwalkar, "Random Search and Reproducibility for Neural Architecture Search", UAI 2019.
"""

from nestopt.nas.analysis import ControllerAnalysis, analyse_controller
from nestopt.nas.buffer import MemoryBuffer
from nestopt.nas.controller import Controller, Rollout
from nestopt.nas.darts import ArchitectureWeights, DartsConfig, DartsResult, FirstOrder, darts
from nestopt.nas.ground_truth import GroundTruth, Score, TrainBudget, accuracy, train_from_scratch
from nestopt.nas.networks import CellNetwork, Supernet
from nestopt.nas.reinforce import MovingAverage, reinforce_loss, supervised_loss
from nestopt.nas.search import ENASConfig, SearchResult, SharedTraining, enas, random_search, shared_accuracy
from nestopt.nas.similarity import (
    SIMILARITIES,
    activations_in_common,
    embedding_correlation,
    graph_similarity,
    rank,
    relative_spread,
    shared_activations,
    shared_connections,
    spearman,
)
from nestopt.nas.space import OPS, Architecture, CellSpace

__all__ = [
    "OPS",
    "SIMILARITIES",
    "Architecture",
    "ArchitectureWeights",
    "CellNetwork",
    "CellSpace",
    "Controller",
    "ControllerAnalysis",
    "DartsConfig",
    "DartsResult",
    "ENASConfig",
    "FirstOrder",
    "GroundTruth",
    "MemoryBuffer",
    "MovingAverage",
    "Rollout",
    "Score",
    "SearchResult",
    "SharedTraining",
    "Supernet",
    "TrainBudget",
    "accuracy",
    "activations_in_common",
    "analyse_controller",
    "darts",
    "embedding_correlation",
    "enas",
    "graph_similarity",
    "random_search",
    "rank",
    "reinforce_loss",
    "relative_spread",
    "shared_accuracy",
    "shared_activations",
    "shared_connections",
    "spearman",
    "supervised_loss",
    "train_from_scratch",
]
