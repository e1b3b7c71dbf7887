"""Complex momentum on bilinear games: the best convergence rate against the phase of beta.

For :math:`\\min_x \\max_y x^\\top A y` with :math:`A = I` and :math:`A = \\mathrm{diag}(\\mathrm{linspace}(0.25, 4, 7))`,
the augmented operator of complex momentum (:mod:`nestopt.games.dynamics`) gives the convergence rate as
its spectral radius. For every phase :math:`\\arg\\beta \\in [0, \\pi]` the step size and :math:`|\\beta|` are
tuned for the smallest rate, for simultaneous and for alternating updates; the rates on :math:`A = I` are
then measured on :class:`~nestopt.optim.ComplexMomentum`'s real iterates and compared with the prediction.
On :math:`A = I` the phase is tuned too, for the best rate of all.

Tuning: a grid over :math:`\\log \\eta \\in [\\log \\eta_{min}, \\log \\eta_{max}]` and :math:`|\\beta|` (uniform on
:math:`[0, 0.9]`, dense towards 1 beyond), then Nelder-Mead from the best local minima of the grid. At the
optimum several eigenvalues coincide, so the rate has a cusp there (it grows like a root of the distance);
grid refinement stalls in such valleys and missed the alternating optima by up to 0.33 (at
:math:`\\arg\\beta = \\pi`, whose optimum needs :math:`|\\beta| \\approx 0.07`, below the old grid's smallest
non-zero magnitude, 0.26).

The game :math:`x^\\top A y` decouples along the singular vectors of :math:`A` (an orthogonal change of each
player's coordinates), and so does each operator, for simultaneous and alternating updates alike: its
spectral radius is the largest over one 2-by-2 game :math:`x y \\sigma_i` per singular value. The search runs
on those small blocks; every reported rate is that of the whole operator.
"""

from __future__ import annotations

import cmath
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from nestopt.errors import UnsupportedError
from nestopt.experiments._games_common import PAPER, grid_minima, nelder_mead
from nestopt.experiments.registry import Claim, Config, Context, Experiment, Metrics, register
from nestopt.games import Game, dynamics, zoo
from nestopt.optim import ComplexMomentum
from nestopt.profile import threads

SCHEMES = ("simultaneous", "alternating")
BLOCK_SLICES = (slice(0, 1), slice(1, 2))
MAX_MAGNITUDE = 1.0 - 1e-5
"""The largest |beta| tried: at |beta| = 1 the momentum buffer never decays."""
F64 = torch.float64


def _games() -> dict[str, Game]:
    return {
        "identity": zoo.bilinear(dim=1, init=1.0, dtype=F64),
        "spread": zoo.bilinear(zoo.spread_spectrum(dtype=F64), init=1.0),
    }


def _blocks(M: Tensor, slices: Sequence[slice]) -> list[Tensor]:
    """The 2-by-2 game Jacobians ``[[0, s], [-s, 0]]``, one per singular value ``s`` of ``A``, of a bilinear game
    whose Jacobian is ``M = [[0, A], [-A^T, 0]]``."""
    x, y = slices
    a = M[x, y]
    if bool(M[x, x].any()) or bool(M[y, y].any()) or not torch.equal(M[y, x], -a.T):
        raise UnsupportedError("the block decomposition needs a bilinear game, Jacobian [[0, A], [-A^T, 0]]")
    return [torch.tensor([[0.0, float(s)], [-float(s), 0.0]], dtype=M.dtype) for s in torch.linalg.svdvals(a)]


def _rates(blocks: list[Tensor], alternating: bool, log_lr: Tensor, mag: Tensor, phase: Tensor) -> Tensor:
    """The spectral radius of complex momentum at each ``(10**log_lr, mag * e^{i phase})``, the worst block's."""
    beta = torch.polar(mag, phase)
    return torch.stack(
        [
            dynamics.spectral_radius(
                dynamics.complex_momentum_operator(b, 10.0**log_lr, beta, alternating=alternating, blocks=BLOCK_SLICES)
            )
            for b in blocks
        ]
    ).amax(dim=0)


def _grid(blocks: list[Tensor], alternating: bool, phases: Tensor, cfg: Config) -> tuple[Tensor, Tensor, Tensor]:
    """The rate on a grid: ``(log10 lr axis, |beta| axis, rates (phase, lr, |beta|))``. The step size is
    log-spaced over ``[lr_min, lr_max]``; |beta| is uniform on [0, 0.9], then dense towards ``MAX_MAGNITUDE``
    (near arg beta = pi the best simultaneous rates need |beta| close to 1)."""
    n = cfg["grid"]
    log_lr = torch.linspace(math.log10(cfg["lr_min"]), math.log10(cfg["lr_max"]), n, dtype=F64)
    mag = torch.cat([torch.linspace(0.0, 0.9, n, dtype=F64), 1.0 - torch.logspace(-1.0, -5.0, n, dtype=F64)[1:]])
    P, L, G = torch.meshgrid(phases, log_lr, mag, indexing="ij")
    return log_lr, mag, _rates(blocks, alternating, L.flatten(), G.flatten(), P.flatten()).reshape(P.shape)


def _tune(blocks: list[Tensor], alternating: bool, phases: list[float], cfg: Config) -> list[dict[str, float]]:
    """For each phase, the step size and |beta| with the smallest rate: grid, then Nelder-Mead from the grid's
    ``starts`` best local minima (in log step size and |beta|)."""
    lo, hi = math.log10(cfg["lr_min"]), math.log10(cfg["lr_max"])
    ph = torch.tensor(phases, dtype=F64)
    log_lr, mag, coarse = _grid(blocks, alternating, ph, cfg)
    x0, step, owner = [], [], []
    dmag = torch.diff(mag)
    for k in range(len(phases)):
        for i, j in grid_minima(coarse[k], cfg["starts"]).tolist():
            x0.append([float(log_lr[i]), float(mag[j])])
            step.append([float(log_lr[1] - log_lr[0]), float(dmag[min(j, len(dmag) - 1)])])
            owner.append(k)
    problem_phase = ph[owner]

    def f(x: Tensor) -> Tensor:
        n, b, _ = x.shape
        return _rates(
            blocks, alternating, x[..., 0].flatten(), x[..., 1].flatten(), problem_phase.expand(n, b).flatten()
        ).reshape(n, b)

    bounds = torch.tensor([lo, 0.0], dtype=F64), torch.tensor([hi, MAX_MAGNITUDE], dtype=F64)
    x, value = nelder_mead(f, torch.tensor(x0, dtype=F64), torch.tensor(step, dtype=F64), *bounds, cfg["polish"])
    rows = []
    for k, phase in enumerate(phases):
        mine = [b for b, o in enumerate(owner) if o == k]
        best = min(mine, key=lambda b: float(value[b]))
        rows.append(
            {
                "phase": phase,
                "rate": float(value[best]),
                "lr": 10.0 ** float(x[best, 0]),
                "magnitude": float(x[best, 1]),
            }
        )
    return rows


OPTIMUM_PHASES = 33
"""Phases of the grid from which the optimum over the phase too is searched (in both modes)."""


def _optimum(blocks: list[Tensor], alternating: bool, rows: list[dict[str, float]], cfg: Config) -> dict[str, float]:
    """The best rate of all, the phase tuned too: Nelder-Mead in (log step size, |beta|, phase) from the
    ``2 * starts`` best local minima of a grid over all three, or the best tuned phase of ``rows`` if lower."""
    lo, hi = math.log10(cfg["lr_min"]), math.log10(cfg["lr_max"])
    ph = torch.linspace(0.0, math.pi, OPTIMUM_PHASES, dtype=F64)
    log_lr, mag, coarse = _grid(blocks, alternating, ph, cfg)
    minima = [
        (float(coarse[k, i, j]), [float(log_lr[i]), float(mag[j]), float(ph[k])])
        for k in range(OPTIMUM_PHASES)
        for i, j in grid_minima(coarse[k], cfg["starts"]).tolist()
    ]
    x0 = torch.tensor([x for _, x in sorted(minima)[: 2 * cfg["starts"]]], dtype=F64)
    step = torch.tensor([float(log_lr[1] - log_lr[0]), 0.05, float(ph[1] - ph[0])], dtype=F64).expand_as(x0)
    lower, upper = torch.tensor([lo, 0.0, 0.0], dtype=F64), torch.tensor([hi, MAX_MAGNITUDE, math.pi], dtype=F64)

    def f(x: Tensor) -> Tensor:
        n, b, _ = x.shape
        flat = x.reshape(n * b, 3)
        return _rates(blocks, alternating, flat[:, 0], flat[:, 1], flat[:, 2]).reshape(n, b)

    x, value = nelder_mead(f, x0, step, lower, upper, 2 * cfg["polish"])
    k = int(torch.argmin(value))
    found = {
        "rate": float(value[k]),
        "lr": 10.0 ** float(x[k, 0]),
        "magnitude": float(x[k, 1]),
        "phase": float(x[k, 2]),
    }
    return min([found, *rows], key=lambda r: r["rate"])


def _full_rate(M: Tensor, game: Game, row: dict[str, float], alternating: bool) -> float:
    """The rate of the whole operator at a tuned point (the search ran on the 2-by-2 blocks)."""
    beta = cmath.rect(row["magnitude"], row["phase"])
    T = dynamics.complex_momentum_operator(M, row["lr"], beta, alternating=alternating, blocks=game.slices)
    return float(dynamics.spectral_radius(T))


def _measure(game: Game, lr: float, beta: complex, scheme: str, rate: float, cap: int, seed: int) -> float:
    g = torch.Generator().manual_seed(seed)
    game.copy_([{k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in t.items()} for t in game.params])
    opts = [ComplexMomentum(game.parameters(i), lr=lr, beta=beta) for i in range(game.n_players)]
    # Long runs: at tuned hyperparameters eigenvalues often coincide, and the polynomial factor t^k of a
    # defective eigenvalue biases a rate fitted over a short window upwards by about k / t. But not below a
    # distance of 1e-150: the norm squares its entries, which underflow below 1e-154, so that smaller
    # distances come out inaccurate or exactly 0 (and log 0 would make the fitted rate NaN).
    steps = cap if rate >= 1 else max(40, min(cap, math.ceil(math.log(1e-150) / math.log(rate))))
    return dynamics.measure_rate(game, opts, steps=steps, scheme=scheme).rate


FULL = {"phases": 33, "grid": 40, "starts": 2, "polish": 150, "lr_min": 1e-3, "lr_max": 5.0, "measure_cap": 2000}
QUICK = {**FULL, "phases": 9, "grid": 24, "measure_cap": 600}


def compute(cfg: Config, ctx: Context) -> Metrics:
    """Tuned rates against the phase for both games and schemes, GDA's rates, and measured rates on A = I."""
    with threads(1):
        return _compute(cfg, ctx)


def _compute(cfg: Config, ctx: Context) -> Metrics:
    phases = torch.linspace(0.0, math.pi, cfg["phases"], dtype=torch.float64).tolist()
    lrs = torch.logspace(math.log10(cfg["lr_min"]), math.log10(cfg["lr_max"]), 200, dtype=torch.float64)
    metrics: Metrics = {"phases": phases}
    worst_gda = math.inf
    block_gap = 0.0
    for name, game in _games().items():
        M = dynamics.jacobian_matrix(game)
        blocks = _blocks(M, game.slices)
        gda_rates = dynamics.spectral_radius(dynamics.gda_operator(M, lrs))
        worst_gda = min(worst_gda, float(gda_rates.min()))
        entry: dict[str, Any] = {"gda_min_rate": float(gda_rates.min())}
        for scheme in ctx.progress(SCHEMES, desc=f"tune {name}"):
            alternating = scheme == "alternating"
            rows = _tune(blocks, alternating, phases, cfg)
            for r in rows:
                full = _full_rate(M, game, r, alternating)
                block_gap = max(block_gap, abs(full - r["rate"]))
                r["rate"] = full
            entry[scheme] = rows
            if name == "identity":
                entry[f"{scheme}_optimum"] = _optimum(blocks, alternating, rows, cfg)
        metrics[name] = entry
    metrics["block_decomposition_gap"] = block_gap

    # measured rates of the real optimizer on A = I, at every phase's tuned hyperparameters
    game = _games()["identity"]
    measured = []
    for k, phase in enumerate(ctx.progress(phases, desc="measure")):
        for scheme in SCHEMES:
            row = metrics["identity"][scheme][k]
            beta = cmath.rect(row["magnitude"], phase)
            rate = _measure(game, row["lr"], beta, scheme, row["rate"], cfg["measure_cap"], ctx.seed + k)
            measured.append({"phase": phase, "scheme": scheme, "predicted": row["rate"], "measured": rate})
    metrics["measured"] = measured

    def rates(scheme: str, game_name: str) -> list[float]:
        return [r["rate"] for r in metrics[game_name][scheme]]

    inner = [k for k, p in enumerate(phases) if 0 < p < math.pi]
    faster = [
        rates("alternating", g)[k] < rates("simultaneous", g)[k]
        for g in ("identity", "spread")
        for k, p in enumerate(phases)
        if p > 0
    ]
    metrics.update(
        worst_gda_rate=worst_gda,
        worst_simultaneous_rate_nonreal_beta=max(
            rates("simultaneous", g)[k] for g in ("identity", "spread") for k in inner
        ),
        fraction_alternating_faster=sum(faster) / len(faster),
        negative_beta={
            "simultaneous": min(rates("simultaneous", g)[-1] for g in ("identity", "spread")),
            "alternating": max(rates("alternating", g)[-1] for g in ("identity", "spread")),
        },
        # a rate that could not be measured (not finite) fails the claim instead of dropping out of the max
        max_rate_gap=max(
            abs(m["measured"] - m["predicted"]) if math.isfinite(m["measured"]) else math.inf for m in measured
        ),
    )
    return metrics


def claims(m: Metrics, cfg: Config) -> list[Claim]:
    worst_gda, worst_sim = m["worst_gda_rate"], m["worst_simultaneous_rate_nonreal_beta"]
    sim_negative, alt_negative = m["negative_beta"]["simultaneous"], m["negative_beta"]["alternating"]
    return [
        Claim.holds(
            "simultaneous GDA diverges for every step size (smallest predicted rate > 1)",
            worst_gda > 1.0,
            worst_gda,
            f"min over lr in [{cfg['lr_min']}, {cfg['lr_max']}] and both games of rho = {worst_gda:.10f}",
        ),
        Claim.holds(
            "complex momentum with non-real beta converges with simultaneous updates (worst best rate < 1)",
            worst_sim < 1.0,
            worst_sim,
            f"max over phases in (0, pi) and both games of the tuned rate = {worst_sim:.10f} "
            f"(1 - rho = {1 - worst_sim:.2e})",
        ),
        Claim.at_least(
            "fraction of phases where alternating converges faster than simultaneous",
            m["fraction_alternating_faster"],
            1.0,
        ),
        Claim.holds(
            "real negative beta converges only with alternating updates",
            sim_negative >= 1.0 - 1e-9 and alt_negative < 1.0,
            {"simultaneous": sim_negative, "alternating": alt_negative},
            f"tuned rate at arg(beta) = pi: simultaneous {sim_negative:.12f} (>= 1), alternating {alt_negative:.6f} (< 1)",
        ),
        Claim.at_most("max |measured - predicted| rate of ComplexMomentum on A = I", m["max_rate_gap"], 0.01),
    ]


def plots(plt: Any, m: Metrics, cfg: Config) -> dict[str, Any]:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    x = [p / math.pi for p in m["phases"]]
    for ax, name, title in zip(axes, ("identity", "spread"), ("A = I", "A = diag(linspace(0.25, 4, 7))")):
        for scheme, color in zip(SCHEMES, ("tab:red", "tab:blue")):
            ax.plot(x, [r["rate"] for r in m[name][scheme]], "-", color=color, label=f"{scheme}, predicted")
        if name == "identity":
            for scheme, color in zip(SCHEMES, ("tab:red", "tab:blue")):
                pts = [r for r in m["measured"] if r["scheme"] == scheme]
                ax.plot([r["phase"] / math.pi for r in pts], [r["measured"] for r in pts], "o", color=color,
                        mfc="none", label=f"{scheme}, measured")  # fmt: skip
                best = m["identity"][f"{scheme}_optimum"]
                ax.plot(best["phase"] / math.pi, best["rate"], "*", color=color, ms=12,
                        label=f"{scheme}, optimum {best['rate']:.4f}")  # fmt: skip
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_xlabel("arg(beta) / pi")
        ax.set_ylabel("best spectral radius (tuned lr, |beta|)")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.suptitle("Complex momentum on bilinear games: convergence rate against the phase of beta")
    fig.subplots_adjust(wspace=0.32)
    return {"rate_vs_phase": fig}


EXPERIMENT = register(
    Experiment(
        "complex-momentum-bilinear",
        paper=PAPER,
        summary=(
            "On bilinear games, simultaneous GDA diverges for every step size; complex momentum with non-real beta "
            "converges with simultaneous updates; alternating updates converge faster at the same phase; real "
            "negative momentum converges only with alternating updates; predicted rates match measured ones."
        ),
        full=FULL,
        quick=QUICK,
        compute=compute,
        claims=claims,
        plots=plots,
        figures=("rate_vs_phase",),
    )
)
