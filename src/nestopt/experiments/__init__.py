"""Paper claims as experiments that run and check themselves.

Each module in this package registers one or more experiments with :func:`experiment`; they are found
automatically. Run them from Python with :func:`run` or from the shell::

    nestopt list
    nestopt run hypergrad-accuracy --quick --out runs/acc

Example:
    >>> from nestopt import experiments
    >>> "hypergrad-accuracy" in experiments.names()
    True
"""

from nestopt.experiments.registry import Claim, Context, Experiment, Outcome, experiment, get, names, run, to_json

__all__ = ["Claim", "Context", "Experiment", "Outcome", "experiment", "get", "names", "run", "to_json"]
