"""A local copy of the restructured experiment registry's API, for the best-response experiments.

The experiment registry is being restructured into one module per experiment with three functions
(``compute``, ``claims``, ``plots``) registered as an ``Experiment``; until that registry reaches this branch
the best-response experiments register here, with the same names and fields:

* :class:`Experiment` (``name, paper, summary, full, quick, compute, claims, plots, notes, figures,
  known_failures``), :class:`KnownFailure`, :func:`register`;
* :class:`Context` (``seed, quick, show_progress``; ``generator(offset)``, ``progress(iterable)``);
* :class:`~nestopt.experiments.registry.Claim`, re-exported;
* :func:`run`, which calls ``compute``, ``claims`` and ``plots`` and writes ``results.json`` and the figures.

Merging the restructured registry replaces the imports of this module by ``nestopt.experiments.registry``
and deletes it (and ``tests/bestresponse/test_experiments.py``, which the registry's own parametrized test
supersedes).
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from nestopt._progress import progress
from nestopt.errors import InvalidArgumentError
from nestopt.experiments.registry import Claim, to_json

__all__ = ["Claim", "Context", "Experiment", "KnownFailure", "get", "names", "register", "run"]

T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    """What ``compute`` gets besides its configuration."""

    seed: int = 0
    quick: bool = False
    show_progress: bool | None = None

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU ``torch.Generator`` seeded with ``seed + offset``."""
        return torch.Generator().manual_seed(self.seed + offset)

    def progress(self, iterable: Iterable[T], desc: str = "", total: int | None = None) -> progress[T]:
        return progress(iterable, total=total, desc=desc, enabled=self.show_progress)


@dataclass(frozen=True)
class KnownFailure:
    """A claim that fails as an honest, documented finding (``prefix`` of its name, where it is documented)."""

    prefix: str
    why: str
    quick: bool = True

    def matches(self, claim_name: str, quick: bool) -> bool:
        return claim_name.startswith(self.prefix) and (self.quick or not quick)


@dataclass(frozen=True)
class Experiment:
    """A paper claim that runs and checks itself (see the module docstring)."""

    name: str
    paper: str
    summary: str
    full: Mapping[str, Any]
    quick: Mapping[str, Any]
    compute: Callable[[dict[str, Any], Context], dict[str, Any]]
    claims: Callable[[dict[str, Any], dict[str, Any]], list[Claim]]
    plots: Callable[[Any, dict[str, Any], dict[str, Any]], Mapping[str, Any]] | None = None
    notes: Callable[[dict[str, Any], dict[str, Any]], str] | None = None
    figures: tuple[str, ...] = ()
    known_failures: tuple[KnownFailure, ...] = ()

    def __post_init__(self) -> None:
        if set(self.full) != set(self.quick):
            raise InvalidArgumentError(f"experiment {self.name!r}: full and quick need the same keys")

    def known_failure(self, claim_name: str, quick: bool) -> KnownFailure | None:
        return next((k for k in self.known_failures if k.matches(claim_name, quick)), None)


_REGISTRY: dict[str, Experiment] = {}
_MODULES = ("hypernet_ridge", "hypernet_weight_decay", "stn_dropout", "stn_schedule", "stn_vs_blackbox", "delta_stn")


def register(exp: Experiment) -> Experiment:
    _REGISTRY[exp.name] = exp
    return exp


def names() -> list[str]:
    """The best-response experiments (importing their modules registers them)."""
    for module in _MODULES:
        importlib.import_module(f"nestopt.experiments.{module}")
    return sorted(_REGISTRY)


def get(name: str) -> Experiment:
    names()
    if name not in _REGISTRY:
        raise InvalidArgumentError(f"no experiment {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def run(exp: str | Experiment, *, quick: bool = False, seed: int = 0, out_dir: str | Path | None = None,
        show_progress: bool | None = False) -> dict[str, Any]:  # fmt: skip
    """compute, claims, plots; writes ``results.json`` and ``NAME.png`` per figure into ``out_dir``."""
    exp = get(exp) if isinstance(exp, str) else exp
    cfg = dict(exp.quick if quick else exp.full)
    torch.manual_seed(seed)
    start = time.perf_counter()
    metrics = exp.compute(dict(cfg), Context(seed=seed, quick=quick, show_progress=show_progress))
    claims = [c.as_dict() for c in exp.claims(metrics, cfg)]
    for c in claims:
        known = None if c["passed"] else exp.known_failure(c["name"], quick)
        c["known_failure"] = None if known is None else known.why
    figures: list[str] = []
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if exp.plots is not None:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            for name, fig in exp.plots(plt, metrics, cfg).items():
                fig.savefig(out / f"{name}.png", dpi=110, bbox_inches="tight")
                plt.close(fig)
                figures.append(f"{name}.png")
    result = {
        "experiment": exp.name, "paper": exp.paper, "summary": exp.summary, "config": {**cfg, "quick": quick},
        "metrics": {k: v for k, v in to_json(metrics).items() if not k.startswith("_")}, "claims": claims,
        "notes": exp.notes(metrics, cfg) if exp.notes is not None else "", "figures": figures,
        "known_failures": [k.prefix for k in exp.known_failures], "seconds": time.perf_counter() - start,
    }  # fmt: skip
    if out is not None:
        (out / "results.json").write_text(json.dumps(result, indent=2))
    return result
