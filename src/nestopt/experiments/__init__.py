"""Paper claims as experiments that run and check themselves: the application layer of nestopt.

Each module in this package is one experiment: ``compute`` (runs it, returns metrics), ``claims`` (metrics to
verdicts) and ``plots`` (metrics to figures), registered together with :func:`register`; the modules are
found automatically. Run them from Python with :func:`run` or from the shell::

    nestopt list
    nestopt show hypergrad-accuracy
    nestopt run hypergrad-accuracy --quick --out runs/acc

``import nestopt`` does not load this package.

Example:
    >>> from nestopt import experiments
    >>> "hypergrad-accuracy" in experiments.names()
    True
"""

from nestopt.experiments.registry import (
    SEED_RANGE,
    Claim,
    Context,
    Experiment,
    KnownFailure,
    get,
    names,
    register,
    run,
    to_json,
)

__all__ = ["SEED_RANGE", "Claim", "Context", "Experiment", "KnownFailure", "get", "names", "register", "run", "to_json"]
