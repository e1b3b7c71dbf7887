"""A local copy of the experiment format that the registry is moving to, over the registry of this branch.

The NAS experiments are written in the new format (``compute(cfg, ctx) -> metrics``, ``claims(metrics, cfg)``,
``plots(plt, metrics, cfg)``, registered with ``register(Experiment(...))``, honest findings declared as
:class:`KnownFailure`). Until the restructured registry is merged, this module adapts that format to
:func:`nestopt.experiments.registry.experiment`. When it is merged, the NAS modules import these names from
``nestopt.experiments.registry`` instead and this file goes; the new ``Context`` then needs the output folder
(``ctx.out_dir``), where the NAS experiments cache their ground truth.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nestopt.experiments.registry import Claim, Context, Outcome, experiment

__all__ = ["Claim", "Config", "Context", "Experiment", "KnownFailure", "Metrics", "register"]

Metrics = dict[str, Any]
Config = dict[str, Any]


@dataclass(frozen=True)
class KnownFailure:
    """A claim that fails as an honest, documented finding (``prefix``: the start of the claim's name)."""

    prefix: str
    why: str
    quick: bool = True

    def matches(self, claim_name: str, quick: bool) -> bool:
        return claim_name.startswith(self.prefix) and (self.quick or not quick)


@dataclass(frozen=True)
class Experiment:
    """An experiment in the new format: a description, two configurations and three functions."""

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


def register(exp: Experiment) -> Experiment:
    """Register ``exp`` with this branch's registry and return it."""

    def fn(cfg: Config, ctx: Context) -> Outcome:
        metrics = exp.compute(cfg, ctx)
        claims = exp.claims(metrics, cfg)
        plt = ctx.pyplot() if exp.plots is not None else None
        if exp.plots is not None and plt is not None:
            for name, fig in exp.plots(plt, metrics, cfg).items():
                ctx.savefig(fig, name)
        notes = exp.notes(metrics, cfg) if exp.notes is not None else ""
        known = [(c.name, exp.known_failure(c.name, ctx.quick)) for c in claims if not c.passed]
        lines = [f"Known finding ({k.why}): {name}" for name, k in known if k is not None]
        return Outcome(
            metrics={k: v for k, v in metrics.items() if not k.startswith("_")},
            claims=claims,
            notes="\n\n".join([notes, *lines]).strip(),
        )

    fn.__qualname__ = f"{exp.compute.__module__}.{exp.name}"
    experiment(exp.name, paper=exp.paper, summary=exp.summary, full=exp.full, quick=exp.quick)(fn)
    return exp
