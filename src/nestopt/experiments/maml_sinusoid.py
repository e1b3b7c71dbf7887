"""Few-shot sinusoid regression: MAML, first-order MAML and iMAML against pre-training on all tasks.

Every learner trains the same ReLU network (1-40-40-1, as in MAML) from the same initialization on the same
stream of task batches (:class:`nestopt.meta.Sinusoid`: amplitude in [0.1, 5], phase in [0, pi], 10 shots) for
the same number of outer steps with Adam. The baseline trains the network on the pooled examples of the same
tasks (joint pre-training), then fine-tunes it like MAML does: ``inner_steps`` SGD steps on the support set.
Each is scored by the mean squared error on the query sets of held-out tasks after adapting on their support
sets (iMAML by its own proximal adaptation).

Memory: :class:`nestopt.profile.PeakMemory` measures the peak bytes of one meta-gradient (forward and backward
of :meth:`~nestopt.meta.MetaLearner.meta_loss`) as the number of inner steps grows. MAML keeps every step's
graph; iMAML adapts without a graph and solves a fixed-size linear system at the end.
"""

from __future__ import annotations

import itertools
import statistics
from typing import Any

import torch
import torch.nn.functional as F

from nestopt import linalg, meta
from nestopt.experiments._common import quiet_solvers
from nestopt.experiments._meta_common import MAML_PAPERS
from nestopt.experiments.registry import Claim, Config, Context, Experiment, Metrics, register
from nestopt.nets import mlp
from nestopt.profile import PeakMemory

__all__: list[str] = []

LEARNERS = ("maml", "fomaml", "imaml")
FULL = {
    "hidden": [40, 40], "shots": 10, "queries": 10, "tasks_per_batch": 5, "outer_steps": 300, "outer_lr": 3e-3,
    "inner_steps": 3, "inner_lr": 0.02, "imaml_lam": 2.0, "imaml_inner_lr": 0.01, "imaml_inner_steps": 10, "cg_steps": 5,
    "test_tasks": 200, "seeds": 5, "memory_steps": [1, 2, 4, 8, 16],
}  # fmt: skip
QUICK = {**FULL, "outer_steps": 40, "imaml_inner_steps": 5, "test_tasks": 50, "seeds": 1, "memory_steps": [1, 8]}


def _learner(kind: str, model: torch.nn.Module, cfg: Config, steps: int | None = None) -> meta.MetaLearner:
    k = cfg["inner_steps"] if steps is None else steps
    if kind == "maml":
        return meta.MAML(model, F.mse_loss, inner_lr=cfg["inner_lr"], inner_steps=k)
    if kind == "fomaml":
        return meta.FOMAML(model, F.mse_loss, inner_lr=cfg["inner_lr"], inner_steps=k)
    return meta.IMAML(
        model, F.mse_loss, lam=cfg["imaml_lam"], inner_lr=cfg["imaml_inner_lr"],
        inner_steps=cfg["imaml_inner_steps"] if steps is None else steps, solver=linalg.CG(steps=cfg["cg_steps"]),
    )  # fmt: skip


def _train(kind: str, cfg: Config, family: meta.Sinusoid, seed: int) -> torch.nn.Module:
    model = mlp([1, *cfg["hidden"], 1], generator=seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["outer_lr"])
    stream = family.stream(cfg["tasks_per_batch"], seed=seed)
    learner = None if kind == "pretrain" else _learner(kind, model, cfg)
    for _ in range(cfg["outer_steps"]):
        tasks = next(stream)
        opt.zero_grad()
        if learner is None:  # joint pre-training on every example of the same tasks
            x, y = torch.cat([tasks.support_x, tasks.query_x], 1), torch.cat([tasks.support_y, tasks.query_y], 1)
            F.mse_loss(model(x), y).backward()
        else:
            learner.meta_loss(tasks).backward()
        opt.step()
    return model


def _peak_memory(kind: str, cfg: Config, tasks: meta.TaskBatch, steps: int) -> int:
    model = mlp([1, *cfg["hidden"], 1], generator=0)
    learner = _learner(kind, model, cfg, steps=steps)
    with PeakMemory(count=model.parameters()) as mem:
        learner.meta_loss(tasks).backward()
    return mem.peak


def compute(cfg: Config, ctx: Context) -> Metrics:
    """Post-adaptation query MSE of each learner and of the baseline per seed; peak memory against steps."""
    family = meta.Sinusoid(shots=cfg["shots"], queries=cfg["queries"])
    test = family.sample(cfg["test_tasks"], seed=ctx.seed + 10_000)
    mse: dict[str, list[float]] = {k: [] for k in ("pretrain", *LEARNERS)}
    before: dict[str, list[float]] = {k: [] for k in mse}
    with quiet_solvers():
        for s in ctx.progress(range(cfg["seeds"]), "seeds"):
            for kind in mse:
                model = _train(kind, cfg, family, ctx.seed + s)
                # the baseline adapts like MAML: inner_steps SGD steps at inner_lr
                scored = _learner("maml" if kind == "pretrain" else kind, model, cfg).evaluate(test)
                mse[kind].append(scored["after"])
                before[kind].append(scored["before"])
        batch = family.sample(cfg["tasks_per_batch"], seed=ctx.seed + 20_000)
        memory = {kind: [_peak_memory(kind, cfg, batch, k) for k in cfg["memory_steps"]] for kind in ("maml", "imaml")}
    return {
        "post_adaptation_mse": mse,
        "pre_adaptation_mse": before,
        "mean_post_adaptation_mse": {k: statistics.mean(v) for k, v in mse.items()},
        "peak_memory_bytes": memory,
        "memory_steps": cfg["memory_steps"],
    }


def _growth(values: list[int]) -> float:
    return values[-1] / values[0]


def claims(m: Metrics, cfg: Config) -> list[Claim]:
    mean = m["mean_post_adaptation_mse"]
    n, ks = cfg["seeds"], m["memory_steps"]
    out = [
        Claim.at_most(
            f"{kind}: post-adaptation MSE below pre-training + fine-tuning ({mean['pretrain']:.3g}), mean of {n} seeds",
            mean[kind],
            mean["pretrain"],
        )
        for kind in LEARNERS
    ]
    maml, imaml = m["peak_memory_bytes"]["maml"], m["peak_memory_bytes"]["imaml"]
    out.append(Claim.at_most(f"iMAML: peak memory at {ks[-1]} inner steps / at {ks[0]}", _growth(imaml), 1.05))
    out.append(
        Claim.holds(
            f"MAML: peak memory grows with the inner steps {ks} (and at least doubles)",
            all(b > a for a, b in itertools.pairwise(maml)) and _growth(maml) >= 2.0,
            value=maml,
        )
    )
    return out


def plots(plt: Any, m: Metrics, cfg: Config) -> dict[str, Any]:
    fig, (a, b) = plt.subplots(1, 2, figsize=(10.5, 3.8))
    names = ["pretrain", *LEARNERS]
    labels = ["pre-train +\nfine-tune", "MAML", "first-order\nMAML", "iMAML"]
    values = m["post_adaptation_mse"]
    means = [statistics.mean(values[k]) for k in names]
    errs = [statistics.stdev(values[k]) if len(values[k]) > 1 else 0.0 for k in names]
    a.bar(labels, means, yerr=errs, color=["0.6", "C0", "C1", "C2"], capsize=4)
    for i, k in enumerate(names):
        a.scatter([i] * len(values[k]), values[k], color="k", s=8, zorder=3)
    a.set_ylabel("query MSE after adaptation")
    a.set_title(f"held-out sinusoid tasks ({cfg['shots']} shots, {cfg['seeds']} seeds)")
    ks = m["memory_steps"]
    for kind, label in (("maml", "MAML"), ("imaml", "iMAML")):
        b.plot(ks, [v / 1e6 for v in m["peak_memory_bytes"][kind]], "o-", label=label)
    b.set_xscale("log", base=2)
    b.set_xlabel("inner steps")
    b.set_ylabel("peak memory of a meta-gradient (MB)")
    b.set_title("PeakMemory, one task batch")
    b.legend()
    b.grid(True, alpha=0.3)
    return {"maml_sinusoid": fig}


EXPERIMENT = register(
    Experiment(
        "maml-sinusoid",
        paper=MAML_PAPERS,
        summary=(
            "On few-shot sinusoid regression MAML, first-order MAML and iMAML reach a lower post-adaptation MSE "
            "than pre-training on all tasks then fine-tuning; iMAML's peak memory does not grow with the number "
            "of inner steps while MAML's does (measured)."
        ),
        full=FULL,
        quick=QUICK,
        compute=compute,
        claims=claims,
        plots=plots,
        figures=("maml_sinusoid",),
    )
)
