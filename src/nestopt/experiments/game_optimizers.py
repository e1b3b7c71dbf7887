"""Every game optimizer on a cooperative/adversarial mixture game and on Dirac-GAN.

Each method gets the same budget of gradient evaluations (a Jacobian-vector product counts as two, the
performance model of nestopt) and its best hyperparameters from a small search: the methods whose linear
dynamics :mod:`nestopt.games.dynamics` knows are tuned by their predicted rate on the game's linearization at
the equilibrium, then the step size is scaled down by up to 4x if the nonlinear game prefers it; the others
(Adam variants and the game-aware rules) try a small grid of step sizes. The distance to the equilibrium is
recorded against gradient evaluations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from nestopt.experiments._games_common import PAPER
from nestopt.experiments.registry import Claim, Config, Context, Experiment, Metrics, register
from nestopt.games import Game, dynamics, rules, zoo
from nestopt.optim import ComplexAdam, ComplexMomentum, ExtraGradient, HeavyBall, OptimisticAdam, OptimisticSGD
from nestopt.profile import threads

HParams = dict[str, float]


@dataclass(frozen=True)
class Method:
    name: str
    scheme: str
    make: Callable[[Game, HParams], list[torch.optim.Optimizer]]
    configs: Callable[[torch.Tensor, Game, Config], list[HParams]]
    rule: Callable[[HParams], rules.Rule] | None = None


def _per_player(cls: Any, **kw: Any) -> Callable[[Game, HParams], list[torch.optim.Optimizer]]:
    def make(game: Game, c: HParams) -> list[torch.optim.Optimizer]:
        args = {k: (v(c) if callable(v) else v) for k, v in kw.items()}
        return [cls(game.parameters(i), **args) for i in range(game.n_players)]

    return make


def _spectral(build: Callable[..., torch.Tensor], grid: dict[str, torch.Tensor]) -> Callable[..., list[HParams]]:
    """Configurations: the predicted-rate optimum, then its step size halved and quartered."""

    def configs(M: torch.Tensor, game: Game, cfg: Config) -> list[HParams]:
        best = dynamics.search(lambda **h: build(M, game, **h), grid, refine=cfg["refine"]).best
        return [{**best, "lr": best["lr"] * s} for s in (1.0, 0.5, 0.25)]

    return configs


def _lr_grid(values: tuple[float, ...]) -> Callable[..., list[HParams]]:
    """A fixed grid of step sizes; the quick run skips the smallest one."""
    return lambda M, game, cfg: [{"lr": v} for v in (values[1:] if cfg["quick_grid"] else values)]


LR = torch.logspace(-2, 1, 24)
MAG = torch.linspace(0.0, 0.95, 12)
PHASE = torch.linspace(0.0, math.pi, 13)
REAL_BETA = torch.linspace(-0.9, 0.9, 19)


def _cm(alternating: bool) -> Callable[..., list[HParams]]:
    return _spectral(
        lambda M, g, lr, mag, phase: dynamics.complex_momentum_operator(
            M, lr, torch.polar(mag, phase), alternating=alternating, blocks=g.slices
        ),
        {"lr": LR, "mag": MAG, "phase": PHASE},
    )


METHODS = [
    Method("GDA (simultaneous)", "simultaneous", _per_player(torch.optim.SGD, lr=lambda c: c["lr"]),
           _spectral(lambda M, g, lr: dynamics.gda_operator(M, lr), {"lr": LR})),
    Method("GDA (alternating)", "alternating", _per_player(torch.optim.SGD, lr=lambda c: c["lr"]),
           _spectral(lambda M, g, lr: dynamics.gda_operator(M, lr, alternating=True, blocks=g.slices), {"lr": LR})),
    Method("extragradient", "simultaneous",
           lambda g, c: [ExtraGradient(torch.optim.SGD(g.parameters(), lr=c["lr"]))],
           _spectral(lambda M, g, lr: dynamics.extragradient_operator(M, lr), {"lr": LR})),
    Method("optimistic GDA", "simultaneous", _per_player(OptimisticSGD, lr=lambda c: c["lr"]),
           _spectral(lambda M, g, lr: dynamics.optimistic_operator(M, lr), {"lr": LR})),
    Method("real momentum (simultaneous)", "simultaneous",
           _per_player(HeavyBall, lr=lambda c: c["lr"], momentum=lambda c: c["beta"]),
           _spectral(lambda M, g, lr, beta: dynamics.momentum_operator(M, lr, beta), {"lr": LR, "beta": REAL_BETA})),
    Method("real momentum (alternating)", "alternating",
           _per_player(HeavyBall, lr=lambda c: c["lr"], momentum=lambda c: c["beta"]),
           _spectral(lambda M, g, lr, beta: dynamics.momentum_operator(M, lr, beta, alternating=True, blocks=g.slices),
                     {"lr": LR, "beta": REAL_BETA})),
    Method("complex momentum (simultaneous)", "simultaneous",
           _per_player(ComplexMomentum, lr=lambda c: c["lr"], beta=lambda c: (c["mag"], c["phase"])), _cm(False)),
    Method("complex momentum (alternating)", "alternating",
           _per_player(ComplexMomentum, lr=lambda c: c["lr"], beta=lambda c: (c["mag"], c["phase"])), _cm(True)),
    Method("Adam", "simultaneous", _per_player(torch.optim.Adam, lr=lambda c: c["lr"], betas=(0.5, 0.999)),
           _lr_grid((0.003, 0.01, 0.03, 0.1))),
    Method("ComplexAdam", "simultaneous",
           _per_player(ComplexAdam, lr=lambda c: c["lr"], betas=((0.8, math.pi / 2), 0.999)),
           _lr_grid((0.003, 0.01, 0.03, 0.1))),
    Method("OptimisticAdam", "simultaneous",
           _per_player(OptimisticAdam, lr=lambda c: c["lr"], betas=(0.5, 0.999)), _lr_grid((0.003, 0.01, 0.03, 0.1))),
    Method("consensus", "simultaneous", _per_player(torch.optim.SGD, lr=lambda c: c["lr"]),
           _lr_grid((0.03, 0.1, 0.3, 1.0)), lambda c: rules.Consensus(1.0)),
    Method("SGA", "simultaneous", _per_player(torch.optim.SGD, lr=lambda c: c["lr"]),
           _lr_grid((0.03, 0.1, 0.3, 1.0)), lambda c: rules.SGA(1.0)),
    Method("LookAhead", "simultaneous", _per_player(torch.optim.SGD, lr=lambda c: c["lr"]),
           _lr_grid((0.03, 0.1, 0.3, 1.0)), lambda c: rules.LookAhead(c["lr"])),
    Method("LOLA", "simultaneous", _per_player(torch.optim.SGD, lr=lambda c: c["lr"]),
           _lr_grid((0.03, 0.1, 0.3, 1.0)), lambda c: rules.LOLA(c["lr"])),
    Method("SOS", "simultaneous", _per_player(torch.optim.SGD, lr=lambda c: c["lr"]),
           _lr_grid((0.03, 0.1, 0.3, 1.0)), lambda c: rules.SOS(c["lr"])),
]  # fmt: skip


def _games() -> dict[str, Callable[[], Game]]:
    A = torch.diag(torch.linspace(0.5, 2.0, 4, dtype=torch.float64))
    return {
        "mixture": lambda: zoo.mixture(0.8, A, init=1.0),
        "dirac-gan": lambda: zoo.dirac_gan(init=1.0, dtype=torch.float64),
    }


def _evals(game: Game) -> float:
    """Gradient evaluations so far: a full xi is one, a Jacobian-vector product two."""
    return game.counter.grads / game.n_players + 2 * game.counter.hvps


def _run(make_game: Callable[[], Game], method: Method, config: HParams, budget: int) -> dict[str, Any]:
    game = make_game()
    opts = method.make(game, config)
    rule = method.rule(config) if method.rule is not None else None
    start = game.distance()
    trace = [(0.0, start)]
    while _evals(game) < budget:
        game.step(opts, scheme=method.scheme, rule=rule)
        d = game.distance()
        trace.append((_evals(game), d))
        if not math.isfinite(d) or d > 1e6:
            break
    final = trace[-1][1] if math.isfinite(trace[-1][1]) else math.inf
    return {"config": config, "relative_distance": final / start, "trace": trace}


def _reach(trace: list[tuple[float, float]], start: float, level: float) -> float:
    """Gradient evaluations until the distance first drops below ``level * start`` (inf if never)."""
    for evals, d in trace:
        if d <= level * start:
            return evals
    return math.inf


FULL = {"budget": 2000, "refine": 3, "quick_grid": False}
QUICK = {"budget": 600, "refine": 1, "quick_grid": True}
LEVEL = 1e-3
"""The claims compare gradient evaluations until the distance falls to this fraction of the initial one."""


def compute(cfg: Config, ctx: Context) -> Metrics:
    """Every method on both games at its best configuration: final distance and evaluations to 1e-3."""
    results: dict[str, dict[str, Any]] = {}
    with threads(1):
        for game_name, make_game in _games().items():
            probe = make_game()
            M = dynamics.jacobian_matrix(probe)
            results[game_name] = {}
            for method in ctx.progress(METHODS, desc=game_name):
                runs = [_run(make_game, method, c, cfg["budget"]) for c in method.configs(M, probe, cfg)]
                best = min(runs, key=lambda r: r["relative_distance"])
                best["all_relative_distances"] = [r["relative_distance"] for r in runs]
                results[game_name][method.name] = best
    metrics: Metrics = {
        game: {
            m: {
                "config": r["config"],
                "relative_distance": r["relative_distance"],
                "all_relative_distances": r["all_relative_distances"],
                "evals_to_1e-3": _reach(r["trace"], r["trace"][0][1], LEVEL),
            }
            for m, r in per.items()
        }
        for game, per in results.items()
    }
    metrics["_traces"] = {game: {m: r["trace"] for m, r in per.items()} for game, per in results.items()}
    return metrics


def claims(m: Metrics, cfg: Config) -> list[Claim]:
    dirac, mix = m["dirac-gan"], m["mixture"]
    no_progress = min(
        min(dirac[name]["all_relative_distances"]) for name in ("GDA (simultaneous)", "real momentum (simultaneous)")
    )
    cm_mix = mix["complex momentum (simultaneous)"]["evals_to_1e-3"]
    gda_mix = mix["GDA (simultaneous)"]["evals_to_1e-3"]
    return [
        Claim.at_least(
            "Dirac-GAN: simultaneous GDA and real momentum make no progress (best final/initial distance)",
            no_progress,
            1.0,
        ),
        Claim.at_most(
            "Dirac-GAN: simultaneous complex momentum final/initial distance",
            dirac["complex momentum (simultaneous)"]["relative_distance"],
            LEVEL,
        ),
        Claim.holds(
            "mixture game: simultaneous complex momentum reaches 1e-3 of the initial distance in fewer gradient "
            "evaluations than simultaneous GDA",
            cm_mix < gda_mix,
            {"complex momentum": cm_mix, "GDA": gda_mix},
            f"gradient evaluations to 1e-3: complex momentum {cm_mix:g}, GDA {gda_mix:g}",
        ),
    ]


def plots(plt: Any, m: Metrics, cfg: Config) -> dict[str, Any]:
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    cmap = plt.get_cmap("tab20")
    for ax, (game, per) in zip(axes, m["_traces"].items()):
        for k, (name, trace) in enumerate(per.items()):
            evals = [t[0] for t in trace]
            dist = [max(t[1], 1e-16) for t in trace]
            style = "--" if "alternating" in name else (":" if k >= len(per) - 5 else "-")
            ax.semilogy(evals, dist, style, color=cmap(k), lw=2.2 if "omplex" in name else 1.3, label=name)
        ax.set_xlabel("gradient evaluations (a Jacobian-vector product counts 2)")
        ax.set_ylabel("distance to the equilibrium")
        ax.set_title(game)
        ax.set_ylim(1e-12, 1e3)
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle("Game optimizers at their best hyperparameters, same gradient budget")
    return {"distance_vs_evaluations": fig}


EXPERIMENT = register(
    Experiment(
        "game-optimizers",
        paper=PAPER,
        summary=(
            "Every game optimizer on a cooperative/adversarial mixture game and Dirac-GAN, same gradient budget: "
            "with simultaneous updates GDA and real momentum make no progress on Dirac-GAN while complex momentum "
            "converges with one gradient per step; on the mixture game it needs fewer gradient evaluations than "
            "GDA."
        ),
        full=FULL,
        quick=QUICK,
        compute=compute,
        claims=claims,
        plots=plots,
        figures=("distance_vs_evaluations",),
    )
)
