"""Meta-learning on plain ``nn.Module``: MAML, first-order MAML and iMAML, task batches, the sinusoid family.

=========================  ==================================================================
name                       what
=========================  ==================================================================
:class:`MAML`              second-order MAML through :func:`~nestopt.hypergrad.unrolled_solution`
:class:`FOMAML`            first-order MAML
:class:`IMAML`             implicit MAML: proximal adaptation, CG through
                           :func:`~nestopt.hypergrad.implicit_solution`
:class:`TaskBatch`         tasks' support and query sets with a leading task dimension
:class:`Sinusoid`          the few-shot sinusoid regression family (amplitude and phase per task)
:func:`bind`               a module called at given tensors (``torch.func.functional_call``)
=========================  ==================================================================

Example:
    >>> import torch
    >>> from nestopt import meta
    >>> net = torch.nn.Sequential(torch.nn.Linear(1, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    >>> maml = meta.MAML(net, torch.nn.functional.mse_loss, inner_lr=0.01, inner_steps=1)
    >>> opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    >>> stream = meta.Sinusoid(shots=10).stream(5, seed=0)
    >>> for _ in range(3):
    ...     opt.zero_grad()
    ...     maml.meta_loss(next(stream)).backward()
    ...     opt.step()
    >>> sorted(maml.evaluate(meta.Sinusoid().sample(4, seed=1)))
    ['after', 'before']
"""

from nestopt.meta.learners import FOMAML, IMAML, MAML, MetaLearner
from nestopt.meta.module import BoundModule, bind, buffers_of, parameters_of
from nestopt.meta.tasks import Sinusoid, Task, TaskBatch

__all__ = [
    "FOMAML",
    "IMAML",
    "MAML",
    "BoundModule",
    "MetaLearner",
    "Sinusoid",
    "Task",
    "TaskBatch",
    "bind",
    "buffers_of",
    "parameters_of",
]
