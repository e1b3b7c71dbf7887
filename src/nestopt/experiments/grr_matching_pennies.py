"""Game Ridge Rider at a rotational equilibrium: complex eigenvectors and phase-dependent branches.

At the mixed equilibrium of matching pennies (logits 0, :func:`nestopt.games.zoo.matching_pennies`) the game
Jacobian is :math:`\\begin{pmatrix}0 & -1/4\\\\ 1/4 & 0\\end{pmatrix}`: a purely imaginary pair :math:`\\pm i/4`,
no real direction to branch along. Game Ridge Rider branches along :math:`\\mathrm{Re}(e^{i\\phi} v)` for eight
phases :math:`\\phi = k\\pi/4` at distance ``radius``, in matching pennies and in its mixture with the one-logit
IPD (:func:`nestopt.games.zoo.ipd_matching_pennies`, weight ``tau`` on the IPD), whose interior fixed point
(found by minimizing :math:`\\tfrac12\\|\\xi\\|^2`) is rotational as well, and runs two base optimizers from
every branch: naive simultaneous gradient descent and look-ahead (:class:`nestopt.games.LookAhead`,
:math:`\\alpha = 1`), both with learning rate ``lr``. A branch *converges* when it ends with
:math:`\\|\\xi\\| < 10^{-3}` (at the fixed point, or at a pure equilibrium), and *cycles* when its path winds at
least once around the fixed point over the second half of the run; anything else is "other".

Finding: the behaviour is set by the optimizer, not by the phase. Naive learning spirals out from every
phase to the same cycle along the edge of the square; look-ahead converges back from every phase. In the
mixture the interior equilibrium is rotational only for ``tau < 0.685`` (with :math:`\\gamma = 0.96`), and
there no pure equilibrium is stable (mutual tit-for-tat becomes stable only at ``tau > 0.685``, where the
interior equilibrium has left the square), so no second attractor exists for some phases to converge to.
The claim of phase-dependent behaviour is therefore a documented failure (see docs/diversity.md).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from nestopt.experiments._diversity_common import PAPER_GRR
from nestopt.experiments.registry import Claim, Config, Context, Experiment, KnownFailure, Metrics, register
from nestopt.games import LookAhead, zoo
from nestopt.games.diversity import find_fixed_point, game_ridge_rider
from nestopt.profile import threads

FULL = {"tau": 0.3, "gamma": 0.96, "radius": 0.1, "lr": 0.5, "steps": 4000, "record_every": 10, "phases": 8}
OPTIMIZERS = {"naive": None, "look-ahead": LookAhead(1.0)}
QUICK = {**FULL, "steps": 1000}


def _run_branches(
    make: Any, starts: list[dict[str, torch.Tensor]], cfg: Config, rule: Any
) -> tuple[list[Any], torch.Tensor]:
    """Simultaneous SGD (with ``rule``) from every start at once; the final points and the paths ``(T, B, 2)``."""
    keys = list(starts[0])
    game = make([torch.stack([s[k] for s in starts]) for k in keys], len(starts))
    opt = torch.optim.SGD(game.parameters(), lr=cfg["lr"])
    path = [torch.stack([game.state[k].detach().clone() for k in keys], dim=-1)]
    for t in range(cfg["steps"]):
        game.step(opt, rule=rule)
        if (t + 1) % cfg["record_every"] == 0:
            path.append(torch.stack([game.state[k].detach().clone() for k in keys], dim=-1))
    finals = [{k: game.state[k][i].detach().clone() for k in keys} for i in range(len(starts))]
    return finals, torch.stack(path)


def _behaviour(game: Any, path: torch.Tensor, center: torch.Tensor) -> str:
    """Name what one branch did from its recorded path ``(T, 2)``."""
    xi = game.value_and_xi(dict(zip(game.state, path[-1])))[1]
    p = torch.sigmoid(path[-1])
    if float(torch.stack(list(xi.values())).norm()) < 1e-3:
        if bool((p > 0.95).all()):
            return "converges to tit-for-tat"
        if bool((p < 0.05).all()):
            return "converges to mutual defection"
        if float((path[-1] - center).norm()) < 0.05:
            return "converges to the fixed point"
    rel = path[len(path) // 2 :] - center
    angle = torch.atan2(rel[:, 1], rel[:, 0])
    turns = float(torch.remainder(angle.diff() + math.pi, 2 * math.pi).sub(math.pi).sum().abs()) / (2 * math.pi)
    return "cycles" if turns >= 1.0 else "other"


def _study(name: str, make: Any, cfg: Config) -> dict[str, Any]:
    zero = torch.zeros((), dtype=torch.float64)
    single = make([zero, zero], None)
    keys = list(single.state)
    located = find_fixed_point(single, lr=0.05, steps=5000, tol=1e-11)
    phases = [2 * math.pi * k / cfg["phases"] for k in range(cfg["phases"])]
    center = torch.stack([located.params[k] for k in keys])
    out: dict[str, Any] = {"game": name, "fixed_point": center, "fixed_point_gradient_norm": located.gradient_norm}
    for opt_name, rule in OPTIMIZERS.items():
        recorded: dict[str, torch.Tensor] = {}

        def train(
            starts: list[dict[str, torch.Tensor]], rule: Any = rule, recorded: dict[str, torch.Tensor] = recorded
        ) -> list[dict[str, torch.Tensor]]:
            finals, recorded["path"] = _run_branches(make, starts, cfg, rule)
            return finals

        res = game_ridge_rider(single, located.params, locate="start", directions=1, phases=phases,
                               radius=cfg["radius"], train=train)  # fmt: skip
        paths = recorded["path"]
        behaviours = [_behaviour(single, paths[:, i], center) for i in range(paths.shape[1])]
        (lam,) = res.eigenvalues.tolist()
        out["eigenvalue"] = [complex(lam).real, complex(lam).imag]
        out[opt_name] = {
            "branches": [
                {"phase_over_pi": b.phase / math.pi, "behaviour": h} for b, h in zip(res.branches, behaviours)
            ],
            "behaviours": sorted(set(behaviours)),
        }
        out[f"_paths_{opt_name}"] = paths
    return out


def compute(cfg: Config, ctx: Context) -> Metrics:
    """Branch at the rotational fixed points of matching pennies and of its mixture with the small IPD."""

    def pennies(inits: list[torch.Tensor], n: int | None) -> Any:
        return zoo.matching_pennies(init=inits, batch_shape=() if n is None else (n,), dtype=torch.float64)

    def mixture(inits: list[torch.Tensor], n: int | None) -> Any:
        return zoo.ipd_matching_pennies(cfg["tau"], cfg["gamma"], init=inits, batch_shape=() if n is None else (n,),
                                        dtype=torch.float64)  # fmt: skip

    with threads(1):
        mp = _study("matching pennies", pennies, cfg)
        mix = _study(f"small IPD x matching pennies (tau = {cfg['tau']})", mixture, cfg)
    # the dense spectrum at the equilibrium, from its own Jacobian (not the branching code)
    game = zoo.matching_pennies(init=0.0, dtype=torch.float64)
    spectrum = torch.linalg.eigvals(game.jacobian())
    return {
        "matching_pennies": mp,
        "mixture": mix,
        "pennies_spectrum": [[float(z.real), float(z.imag)] for z in spectrum],
        "pennies_max_abs_real_part": float(spectrum.real.abs().max()),
        "pennies_min_abs_imag_part": float(spectrum.imag.abs().min()),
    }


def claims(m: Metrics, cfg: Config) -> list[Claim]:
    studies = (m["matching_pennies"], m["mixture"])
    per_phase = max(len(st[o]["behaviours"]) for st in studies for o in OPTIMIZERS)
    return [
        Claim.at_most(
            "matching pennies at its mixed equilibrium: |real part| of the Jacobian's eigenvalues",
            m["pennies_max_abs_real_part"],
            1e-6,
        ),
        Claim.at_least(
            "matching pennies at its mixed equilibrium: |imaginary part| (a complex pair)",
            m["pennies_min_abs_imag_part"],
            0.1,
        ),
        Claim.at_least(
            f"phase-dependent behaviour: most distinct behaviours over {cfg['phases']} phases "
            "(any game, any optimizer)",
            per_phase,
            2,
        ),
        Claim.holds(
            "naive learning cycles and look-ahead converges, from every phase, in both games",
            all(
                st["naive"]["behaviours"] == ["cycles"]
                and st["look-ahead"]["behaviours"] == ["converges to the fixed point"]
                for st in studies
            ),
            [[st["naive"]["behaviours"], st["look-ahead"]["behaviours"]] for st in studies],
        ),
    ]


def plots(plt: Any, m: Metrics, cfg: Config) -> dict[str, Any]:
    fig, axes = plt.subplots(2, 2, figsize=(11.5, 10))
    cmap = plt.get_cmap("hsv")
    for row, study in zip(axes, (m["matching_pennies"], m["mixture"])):
        for ax, opt_name in zip(row, OPTIMIZERS):
            paths = torch.sigmoid(study[f"_paths_{opt_name}"])
            for i, b in enumerate(study[opt_name]["branches"]):
                color = cmap(b["phase_over_pi"] / 2)
                ax.plot(paths[:, i, 0], paths[:, i, 1], color=color, lw=0.8, alpha=0.8,
                        label=f"phi = {b['phase_over_pi']:.2g} pi: {b['behaviour']}")  # fmt: skip
                ax.scatter(float(paths[0, i, 0]), float(paths[0, i, 1]), color=color, s=15)
            c = torch.sigmoid(study["fixed_point"])
            ax.scatter(float(c[0]), float(c[1]), marker="x", color="k", s=60, label="fixed point")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_aspect("equal")
            ax.set_xlabel("agent 1: probability of heads / tit-for-tat")
            ax.set_ylabel("agent 2: probability")
            lam = study["eigenvalue"]
            ax.set_title(f"{study['game']}, {opt_name}\neigenvalue {lam[0]:.1e} {lam[1]:+.3f}i", fontsize=9)
            ax.legend(fontsize=5, loc="lower right")
    fig.suptitle("branches along Re(exp(i phi) v) from a rotational fixed point")
    fig.tight_layout()
    return {"grr-matching-pennies": fig}


EXPERIMENT = register(
    Experiment(
        "grr-matching-pennies",
        paper=PAPER_GRR,
        summary=(
            "At the mixed equilibrium of matching pennies the game Jacobian has a complex eigenpair with zero real "
            "part (to 1e-6); branches along Re(exp(i phi) v) for several phases phi lead to phase-dependent "
            "behaviour (cycles or convergence) in the game mixing matching pennies with the small IPD."
        ),
        full=FULL,
        quick=QUICK,
        compute=compute,
        claims=claims,
        plots=plots,
        figures=("grr-matching-pennies",),
        known_failures=(KnownFailure("phase-dependent behaviour", "docs/diversity.md, grr-matching-pennies"),),
    )
)
