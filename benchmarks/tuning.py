"""Tuning weight decays: nestopt hypergradients against Optuna's TPE and random search, same wall-clock budget.

An MLP 40-128-128-10 (ReLU) on 1000 MNIST-1D training points (it overfits), validated on 500. Four
hyperparameters, natural-log weight decays in [-12, 0]: one global, applied to every weight, and one per layer,

.. math::  L_{in}(w, \\lambda) = \\mathrm{CE}_{train}(w) + e^{\\lambda_0} \\|w\\|^2 + \\sum_{l=1}^{3} e^{\\lambda_l} \\|W_l\\|^2 .

Every method evaluates configurations the same way: train from the same initialization for ``T`` steps of SGD
(momentum 0.9, batch 128, the same batch order), then the validation cross-entropy. Methods:

* **nestopt**: hypergradient descent over trials. After each training run, ``hypergrad.implicit`` with
  ``linalg.Neumann(steps=20)`` at the trained weights (Hessian on 512 training points) gives
  :math:`\\nabla_\\lambda L_{val}`, and Adam (lr 0.5) moves the four log weight decays; it starts from
  :math:`\\lambda = -8` (a typical small default).
* **Optuna TPE** (``TPESampler``, seeded) and **random search** (uniform in the box), each trial a training run.

Every method gets the same wall-clock budget; the curve is the best validation loss found so far against
seconds, and the table also gives the test loss of each method's best configuration.

    python benchmarks/tuning.py [--quick] [--budget 60] [--seeds 0 1] [--threads 1]
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.func import functional_call

from _peers import peer_status
from _report import env_line, environment, parser, pyplot, write
from nestopt import data, hypergrad, linalg
from nestopt.nets import mlp
from nestopt.tree import Tree

LOW, HIGH, START = -12.0, 0.0, -8.0
NAMES = ["global", "layer1", "layer2", "layer3"]


class Task:
    """Training and evaluating one configuration; the same for every method."""

    def __init__(self, steps: int, seed: int, hidden: int = 128, n_train: int = 1000) -> None:
        ds = data.mnist1d(n_train=n_train, n_val=500, n_test=500, seed=seed)
        self.train, self.val, self.test = ds.train.as_tuple(), ds.val.as_tuple(), ds.test.as_tuple()
        self.net = mlp([40, hidden, hidden, 10], "relu", generator=torch.Generator().manual_seed(seed))
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.init = {k: v.detach().clone() for k, v in self.net.named_parameters()}
        self.layer = {k: int(k.split(".")[0]) // 2 for k in self.init}  # 0, 1, 2 for the three Linear layers
        g = torch.Generator().manual_seed(seed)
        self.order = [torch.randperm(n_train, generator=g)[:128] for _ in range(steps)]
        self.steps = steps
        self.hess_batch = (self.train[0][:512], self.train[1][:512])

    def penalty(self, p: Tree, lam: torch.Tensor) -> torch.Tensor:
        total = lam[0].exp() * sum((v**2).sum() for k, v in p.items() if k.endswith("weight"))
        for k, v in p.items():
            if k.endswith("weight"):
                total = total + lam[1 + self.layer[k]].exp() * (v**2).sum()
        return total

    def inner(self, p: Tree, h: Tree, batch: Any) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.cross_entropy(functional_call(self.net, p, (x,)), y) + self.penalty(p, h["lam"])

    def loss(self, p: Tree, batch: Any) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.cross_entropy(functional_call(self.net, p, (x,)), y)

    def outer(self, p: Tree, h: Tree, batch: Any) -> torch.Tensor:
        return self.loss(p, batch)

    def fit(self, lam: torch.Tensor) -> Tree:
        w = {k: v.clone().requires_grad_(True) for k, v in self.init.items()}
        opt = torch.optim.SGD(list(w.values()), lr=0.05, momentum=0.9)
        h = {"lam": lam.detach()}
        for idx in self.order:
            opt.zero_grad()
            self.inner(w, h, (self.train[0][idx], self.train[1][idx])).backward()
            opt.step()
        return {k: v.detach() for k, v in w.items()}

    def evaluate(self, w: Tree) -> tuple[float, float]:
        with torch.no_grad():
            return float(self.loss(w, self.val)), float(self.loss(w, self.test))


def run_method(name: str, task: Task, budget: float, seed: int) -> list[dict[str, Any]]:
    """Evaluate configurations until the budget is spent; one record per trial."""
    trials: list[dict[str, Any]] = []
    start = time.perf_counter()

    def record(lam: torch.Tensor, w: Tree) -> float:
        val, test = task.evaluate(w)
        if not math.isfinite(val):
            val = test = float("inf")
        trials.append({"seconds": time.perf_counter() - start, "val": val, "test": test, "lam": lam.tolist()})
        return val

    if name == "nestopt":
        lam = torch.full((4,), START)
        opt = torch.optim.Adam([lam.requires_grad_(True)], lr=0.5)
        solver = linalg.Neumann(steps=20, alpha=0.02)
        while time.perf_counter() - start < budget:
            w = task.fit(lam)
            record(lam, w)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = hypergrad.implicit(
                    task.inner, task.outer, w, {"lam": lam.detach()}, task.hess_batch, task.val, solver=solver
                )
            opt.zero_grad()
            lam.grad = res.grads["lam"]
            opt.step()
            with torch.no_grad():
                lam.clamp_(LOW, HIGH)
    elif name == "random":
        g = torch.Generator().manual_seed(seed)
        while time.perf_counter() - start < budget:
            lam = LOW + (HIGH - LOW) * torch.rand(4, generator=g)
            record(lam, task.fit(lam))
    elif name == "optuna TPE":
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)

        def objective(trial: Any) -> float:
            lam = torch.tensor([trial.suggest_float(n, LOW, HIGH) for n in NAMES])
            return record(lam, task.fit(lam))

        study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
        study.optimize(objective, timeout=budget)
    else:
        raise ValueError(name)
    best = math.inf
    for t in trials:
        best = min(best, t["val"])
        t["best_val"] = best
    return trials


def best_at(trials: list[dict[str, Any]], seconds: float) -> float:
    done = [t["val"] for t in trials if t["seconds"] <= seconds]
    return min(done) if done else math.inf


def markdown(results: dict[str, Any], budget: float, env: dict[str, Any], cmd: str, steps: int) -> list[str]:
    lines = [
        "# Tuning four weight decays under a wall-clock budget",
        "",
        f"`{cmd}`. MLP 40-128-128-10 on 1000 MNIST-1D training points, {steps} SGD steps per training run, "
        f"budget {budget:g} s per method and seed. {env_line(env)}",
        "",
        "Best validation loss found within the given share of the budget (median over seeds), the number of "
        "training runs, and the test loss of the configuration with the best validation loss.",
        "",
        "| method | status | runs | best val @25% | @50% | @100% | test loss of best | best log weight decays |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for method, res in results.items():
        if res["status"] != "ok":
            lines.append(f"| {method} | {res['status']} | | | | | | |")
            continue
        runs = res["runs"]
        cells = [statistics.median(best_at(r, f * budget) for r in runs) for f in (0.25, 0.5, 1.0)]
        bests = [min(r, key=lambda t: t["val"]) for r in runs]
        test = statistics.median(b["test"] for b in bests)
        n = statistics.median(len(r) for r in runs)
        lam = ", ".join(f"{x:.1f}" for x in bests[0]["lam"])
        lines.append(
            f"| {method} | ok | {n:g} | " + " | ".join(f"{c:.4f}" for c in cells) + f" | {test:.4f} | [{lam}] |"
        )
    return lines


def plot(results: dict[str, Any], budget: float) -> Any:
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    colors = {"nestopt": "C0", "optuna TPE": "C1", "random": "C2"}
    for method, res in results.items():
        if res["status"] != "ok":
            continue
        for i, trials in enumerate(res["runs"]):
            xs = [t["seconds"] for t in trials] + [budget]
            ys = [t["best_val"] for t in trials] + [trials[-1]["best_val"]]
            ax.step(xs, ys, where="post", color=colors[method], alpha=0.9, label=method if i == 0 else None)
    ax.set_xlabel("wall-clock seconds")
    ax.set_ylabel("best validation loss so far")
    ax.set_title("Tuning 4 weight decays: same budget for every method")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--budget", type=float, default=40.0, help="seconds per method and seed")
    ap.add_argument("--steps", type=int, default=300, help="SGD steps per training run")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = ap.parse_args()
    env = environment(args.threads)
    budget, steps, seeds = (1.0, 20, [0]) if args.quick else (args.budget, args.steps, args.seeds)
    methods: dict[str, Callable[[], str | None]] = {
        "nestopt": lambda: None,
        "optuna TPE": lambda: peer_status("optuna")[1],
        "random": lambda: None,
    }
    results: dict[str, Any] = {}
    for method, unavailable in methods.items():
        reason = unavailable()
        if reason:
            results[method] = {"status": f"unavailable: {reason}"}
            print(f"{method}: {results[method]['status']}")
            continue
        runs = []
        for seed in seeds:
            task = Task(steps, seed)
            task.fit(torch.full((4,), START))  # warm-up outside the budget: the first run pays one-time set-up
            runs.append(run_method(method, task, budget, seed))
            print(
                f"{method:<11} seed {seed}: {len(runs[-1])} runs, best val {runs[-1][-1]['best_val']:.4f}", flush=True
            )
        results[method] = {"status": "ok", "runs": runs}
    cmd = "python benchmarks/tuning.py" + (" --quick" if args.quick else f" --budget {args.budget:g}")
    result = {
        "benchmark": "tuning",
        "environment": env,
        "command": cmd,
        "budget": budget,
        "steps": steps,
        "results": results,
    }
    write(args.out, "tuning", result, markdown(results, budget, env, cmd, steps), plot(results, budget))


if __name__ == "__main__":
    main()
