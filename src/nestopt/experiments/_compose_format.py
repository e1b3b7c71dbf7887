"""The experiment format ``compute(cfg, ctx) / claims(metrics, cfg) / plots(plt, metrics, cfg)`` registered with
``register(Experiment(...))``, adapted to the current registry.

Temporary: the registry is being restructured to take this format itself. When it does, the experiment modules
that import from here import the same names from :mod:`nestopt.experiments.registry` instead, and this file
goes away.
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
    """A paper claim: its description, two configurations and the three functions."""

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


def register(exp: Experiment) -> Experiment:
    """Register ``exp`` with the current registry (``nestopt run NAME`` runs it) and return it."""

    def fn(cfg: Config, ctx: Context) -> Outcome:
        metrics = exp.compute(cfg, ctx)
        plt = ctx.pyplot() if exp.plots is not None else None
        if plt is not None and exp.plots is not None:
            for name, fig in exp.plots(plt, metrics, cfg).items():
                ctx.savefig(fig, name)
        notes = exp.notes(metrics, cfg) if exp.notes is not None else ""
        kept = {k: v for k, v in metrics.items() if not k.startswith("_")}
        return Outcome(metrics=kept, claims=exp.claims(metrics, cfg), notes=notes)

    fn.__qualname__ = f"{exp.name}.compute"
    experiment(exp.name, paper=exp.paper, summary=exp.summary, full=exp.full, quick=exp.quick)(fn)
    return exp
