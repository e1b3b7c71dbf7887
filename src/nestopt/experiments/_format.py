"""The experiment format being adopted (``compute`` / ``claims`` / ``plots`` registered as one ``Experiment``),
adapted to the registry of this branch.

Temporary: the diversity experiments are written against the new format's API (``Claim``, ``Config``,
``Context``, ``Experiment``, ``KnownFailure``, ``Metrics``, ``register``). When the new registry lands,
their imports become ``from nestopt.experiments.registry import ...`` and this module goes away.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from nestopt._progress import progress
from nestopt.experiments.registry import Claim, Outcome, experiment
from nestopt.experiments.registry import Context as _RunContext

__all__ = ["Claim", "Config", "Context", "Experiment", "KnownFailure", "Metrics", "register"]

T = TypeVar("T")
Metrics = dict[str, Any]
Config = dict[str, Any]


@dataclass(frozen=True)
class Context:
    """What ``compute`` gets besides its configuration: the seed, the mode and the progress setting."""

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
    """A claim that fails as an honest, documented finding (``prefix`` of its name, ``why``: where documented)."""

    prefix: str
    why: str
    quick: bool = True

    def matches(self, claim_name: str, quick: bool) -> bool:
        return claim_name.startswith(self.prefix) and (self.quick or not quick)


@dataclass(frozen=True)
class Experiment:
    """A paper claim: description, full and quick configurations, ``compute``, ``claims`` and ``plots``."""

    name: str
    paper: str
    summary: str
    full: Mapping[str, Any]
    quick: Mapping[str, Any]
    compute: Callable[[Config, Context], Metrics]
    claims: Callable[[Metrics, Config], list[Claim]]
    plots: Callable[[Any, Metrics, Config], Mapping[str, Any]] | None = None
    notes: Callable[[Metrics, Config], str] | None = None
    figures: tuple[str, ...] = ()
    known_failures: tuple[KnownFailure, ...] = ()

    def known_failure(self, claim_name: str, quick: bool) -> KnownFailure | None:
        return next((k for k in self.known_failures if k.matches(claim_name, quick)), None)


REGISTERED: dict[str, Experiment] = {}


def register(exp: Experiment) -> Experiment:
    """Register ``exp`` with this branch's registry (``nestopt run NAME`` runs it) and return it."""

    def run(cfg: Config, ctx: _RunContext) -> Outcome:
        metrics = exp.compute(cfg, Context(ctx.seed, ctx.quick, ctx.show_progress))
        claims = exp.claims(metrics, cfg)
        plt = ctx.pyplot() if exp.plots is not None else None
        if exp.plots is not None and plt is not None:
            for name, fig in exp.plots(plt, metrics, cfg).items():
                ctx.savefig(fig, name)
        notes = exp.notes(metrics, cfg) if exp.notes is not None else ""
        known = [f"known finding ({k.why}): {c.name}" for c in claims if not c.passed
                 for k in [exp.known_failure(c.name, ctx.quick)] if k is not None]  # fmt: skip
        notes = "\n\n".join([n for n in (notes, "\n".join(known)) if n])
        return Outcome(metrics={k: v for k, v in metrics.items() if not k.startswith("_")}, claims=claims, notes=notes)

    run.__qualname__ = f"{exp.name}.run"
    experiment(exp.name, paper=exp.paper, summary=exp.summary, full=exp.full, quick=exp.quick)(run)
    REGISTERED[exp.name] = exp
    return exp
