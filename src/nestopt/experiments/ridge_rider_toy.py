"""Ridge Rider on a 2-D surface whose global minima gradient descent from the saddle does not find.

The surface (:func:`nestopt.games.zoo.ridge_surface`) has a hill at the origin, two wide shallow wells on the
steep axis (y) and two narrow deep wells, the global minima, on the shallow axis (x). The origin is a
stationary point with Hessian eigenvalues about -6.0 (y) and -0.11 (x): two ridges, four directions. Exact
Ridge Rider (dense Hessian) rides each from the origin; plain gradient descent starts from 200 points drawn
around the origin (N(0, 0.05^2) per coordinate) and runs to convergence. A point ends at the minimum it is
within 0.05 of.
"""

from __future__ import annotations

from typing import Any

import torch

from nestopt.experiments._diversity_common import PAPER_RR, below
from nestopt.experiments.registry import Claim, Config, Context, Experiment, Metrics, register
from nestopt.games import zoo
from nestopt.games.diversity import ridge_rider
from nestopt.profile import threads

FULL = {"starts": 200, "radius": 0.05, "gd_lr": 0.02, "gd_steps": 4000, "ride_step": 0.02}
QUICK = {**FULL, "gd_steps": 2500, "ride_step": 0.05}


def _gradient_descent(surface: zoo.Surface, starts: torch.Tensor, lr: float, steps: int) -> torch.Tensor:
    """Plain gradient descent from every start at once (``(n, 2)``); keeps every 10th point."""
    x = starts.clone().requires_grad_(True)
    path = [x.detach().clone()]
    for t in range(steps):
        (g,) = torch.autograd.grad(surface.value(x).sum(), x)
        with torch.no_grad():
            x -= lr * g
        if (t + 1) % 10 == 0:
            path.append(x.detach().clone())
    return torch.stack(path)  # (steps / 10 + 1, n, 2)


def _landed(surface: zoo.Surface, points: torch.Tensor) -> list[int]:
    """The index of the minimum each point reached (within 0.05), -1 when none."""
    d = torch.cdist(points, surface.minima)
    near, idx = d.min(dim=1)
    return [int(i) if float(n) <= 0.05 else -1 for n, i in zip(near, idx)]


def compute(cfg: Config, ctx: Context) -> Metrics:
    """Ride every ridge from the saddle; gradient descent from random points around it."""
    surface = zoo.ridge_surface(dtype=torch.float64)
    with threads(1):
        res = ridge_rider(surface.loss, surface.start, step=cfg["ride_step"], descent_lr=cfg["gd_lr"],
                          descent_steps=cfg["gd_steps"], keep_path=True, show_progress=ctx.show_progress)  # fmt: skip
        starts = cfg["radius"] * torch.randn(cfg["starts"], 2, generator=ctx.generator(1), dtype=torch.float64)
        paths = _gradient_descent(surface, starts, cfg["gd_lr"], cfg["gd_steps"])
    leaves = res.leaves
    leaf_minima = _landed(surface, torch.stack([leaf.params["xy"] for leaf in leaves]))
    gd_minima = _landed(surface, paths[-1])
    counts = {i: gd_minima.count(i) for i in range(-1, len(surface.minima))}
    glob = set(surface.global_minima)
    return {
        "minima": surface.minima,
        "minimum_values": surface.values,
        "global_minima": list(glob),
        "ridge_rider": {
            "leaves": [
                {
                    "fingerprint": leaf.label,
                    "minimum": m,
                    "params": leaf.params["xy"],
                    "loss": leaf.loss,
                    "ride_eigenvalues": leaf.eigenvalues,
                    "ride_steps": len(leaf.losses) - 1,
                    "reason": leaf.reason,
                }
                for leaf, m in zip(leaves, leaf_minima)
            ],
            "minima_reached": sorted({m for m in leaf_minima if m >= 0}),
            "start_eigenvalues": res.root.eigenvalues,
            "info": res.info.as_dict(),
        },
        "gradient_descent": {
            "runs_per_minimum": {str(k): v for k, v in counts.items()},
            "fraction_global": sum(v for k, v in counts.items() if k in glob) / cfg["starts"],
            "fraction_unconverged": counts[-1] / cfg["starts"],
        },
        "_rides": [torch.stack([p["xy"] for p in leaf.path]) for leaf in leaves],
        "_gd_paths": paths[:, :12],
    }


def claims(m: Metrics, cfg: Config) -> list[Claim]:
    rr, gd = m["ridge_rider"], m["gradient_descent"]
    n = len(m["minima"])
    return [
        Claim.at_least("Ridge Rider: minima reached by its leaves (of all minima)", len(rr["minima_reached"]), n),
        Claim.holds(
            "Ridge Rider: its leaves include every global minimum",
            set(m["global_minima"]) <= set(rr["minima_reached"]),
            rr["minima_reached"],
        ),
        below(
            f"gradient descent from near the saddle: fraction of {cfg['starts']} starts reaching a global minimum",
            gd["fraction_global"],
            0.05,
        ),
    ]


def plots(plt: Any, m: Metrics, cfg: Config) -> dict[str, Any]:
    surface = zoo.ridge_surface(dtype=torch.float64)
    axis = torch.linspace(-3.5, 3.5, 241, dtype=torch.float64)
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")
    z = surface.value(torch.stack([gx, gy], dim=-1))
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    cs = ax.contourf(gx, gy, z, levels=40, cmap="viridis")
    fig.colorbar(cs, ax=ax, label="loss")
    for i, path in enumerate(m["_gd_paths"].unbind(1)):
        ax.plot(path[:, 0], path[:, 1], color="white", lw=0.8, alpha=0.8, label="gradient descent" if i == 0 else None)
    for i, (ride, leaf) in enumerate(zip(m["_rides"], m["ridge_rider"]["leaves"])):
        ax.plot(ride[:, 0], ride[:, 1], color="tab:red", lw=2.2, label="Ridge Rider rides" if i == 0 else None)
        ax.annotate(leaf["fingerprint"], ride[-1].tolist(), color="tab:red", fontsize=9, xytext=(4, 4),
                    textcoords="offset points")  # fmt: skip
    mins = m["minima"]
    glob = m["global_minima"]
    ax.scatter(mins[:, 0], mins[:, 1], marker="o", s=60, facecolors="none", edgecolors="k", label="local minima")
    ax.scatter(mins[glob, 0], mins[glob, 1], marker="*", s=180, color="gold", edgecolors="k", label="global minima")
    ax.set_aspect("equal")
    ax.set_title(f"gradient descent reaches a global minimum in {m['gradient_descent']['fraction_global']:.0%} "
                 f"of {cfg['starts']} starts")  # fmt: skip
    ax.legend(loc="lower left", fontsize=8)
    return {"ridge-rider-toy": fig}


EXPERIMENT = register(
    Experiment(
        "ridge-rider-toy",
        paper=PAPER_RR,
        summary=(
            "On a 2-D surface with easy and hard minima around a saddle, Ridge Rider's leaves reach every "
            "minimum, the global ones included, while plain gradient descent from near the saddle reaches a "
            "global minimum in under 5% of 200 starts."
        ),
        full=FULL,
        quick=QUICK,
        compute=compute,
        claims=claims,
        plots=plots,
        figures=("ridge-rider-toy",),
    )
)
