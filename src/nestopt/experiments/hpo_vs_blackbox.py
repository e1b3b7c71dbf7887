"""A few weight decays tuned by IFT hypergradients against Optuna's TPE and random search, same time budget.

The hyperparameters are one global weight decay and one per weight matrix of an MLP on MNIST-1D (four in
all). Every method gets the same wall-clock budget, the same network, initialization, batches and optimizer:

* **IFT**: one training run of ``train_steps`` steps in which :class:`~nestopt.BilevelTrainer` takes a
  hypergradient step (Neumann series) every ``inner_steps_per_outer`` training steps. (Further runs that
  start from the decays a run reached did not lower the validation loss further in our tests: the
  hypergradient of a warm-started run is greedy, and early in training it pushes the decays down.)
* **TPE** (Optuna) and **random search**: trials that each train a fresh network with fixed decays drawn
  log-uniformly in ``[10^low, 10^high]``, one after another until the budget is spent.

Seconds are CPU seconds of this process (``clock="process"``, the default): with one thread they equal the
wall-clock time on an idle machine, and other programs sharing the machine do not distort them;
``clock="wall"`` measures wall-clock time instead.

Every method evaluates the validation loss of its current network every ``eval_every`` training steps, and a
method's curve is the best validation loss seen so far against seconds since it started; a black-box trial
is thus scored by its best evaluation (early stopping), and a trial cut by the budget still counts what it saw.
Claim: IFT reaches the best validation loss TPE finds, and reaches it sooner than TPE does.

Optuna is optional (extra ``bench``); without it the experiment raises
:class:`~nestopt.errors.UnsupportedError` with the command that installs it.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from nestopt import data, hparams, hypergrad, linalg
from nestopt.bilevel import BilevelTrainer
from nestopt.data import Splits
from nestopt.errors import InvalidArgumentError, UnsupportedError
from nestopt.experiments._common import CE, IFT_PAPER, classifier, evaluate, quiet_solvers
from nestopt.experiments.registry import Claim, Config, Context, Experiment, KnownFailure, Metrics, register
from nestopt.hparams import Objective
from nestopt.profile import threads
from nestopt.tree import Tree

__all__: list[str] = []

FULL = {
    "n_train": 500,
    "n_val": 500,
    "n_test": 1000,
    "hidden": [128, 128],
    "batch_size": 64,
    "val_batch_size": 64,
    "inner_lr": 1e-3,
    "train_steps": 2000,
    "eval_every": 100,
    "inner_steps_per_outer": 10,
    "outer_lr": 0.1,
    "init_decay": 1e-4,
    "neumann_steps": 20,
    "neumann_alpha": 0.1,
    "log10_decay_range": [-7.0, -1.0],
    "budget_seconds": 60.0,
    "clock": "process",
    "threads": 1,
}
QUICK = {**FULL, "budget_seconds": 8.0}


def _families(net: torch.nn.Module, init: float) -> list[hparams.Family]:
    return [
        hparams.WeightDecay(net, per="global", init=init),
        hparams.WeightDecay(net, per="layer", init=init, include=lambda k: k.endswith("weight"), name="layer_decay"),
    ]


def _setup(d: Splits, cfg: Mapping[str, Any], seed: int) -> tuple[torch.nn.Module, list[hparams.Family]]:
    net = classifier(d, cfg["hidden"], seed + 1)
    return net, _families(net, cfg["init_decay"])


CLOCKS: dict[str, Callable[[], float]] = {"process": time.process_time, "wall": time.perf_counter}


class _Clock:
    """Seconds since a method started, and its best validation loss so far as ``(seconds, loss)`` points."""

    def __init__(self, budget: float, kind: str) -> None:
        if kind not in CLOCKS:
            raise InvalidArgumentError(f"clock must be one of {sorted(CLOCKS)}, got {kind!r}")
        self.now = CLOCKS[kind]
        self.budget, self.start = budget, self.now()
        self.points: list[tuple[float, float]] = []
        self.best = math.inf

    def elapsed(self) -> float:
        return self.now() - self.start

    def over(self) -> bool:
        return self.elapsed() >= self.budget

    def record(self, loss: float) -> None:
        """Count a validation loss seen now (not if the budget ran out while computing it)."""
        t = self.elapsed()
        if t > self.budget:
            return
        if math.isfinite(loss) and loss < self.best:
            self.best = loss
        self.points.append((t, self.best))


class _OutOfBudget(Exception):
    pass


def run_ift(d: Splits, cfg: Mapping[str, Any], ctx: Context) -> tuple[_Clock, dict[str, float]]:
    """One joint training run (cut short if the budget runs out); the validation loss every ``eval_every``
    steps. Returns the clock and the decays at the end."""
    clock = _Clock(cfg["budget_seconds"], cfg["clock"])
    net, families = _setup(d, cfg, ctx.seed)
    k = cfg["inner_steps_per_outer"]
    trainer = BilevelTrainer(
        net, CE, families,
        hypergrad=hypergrad.Implicit(solver=linalg.Neumann(steps=cfg["neumann_steps"], alpha=cfg["neumann_alpha"])),
        inner_optimizer=functools.partial(torch.optim.Adam, lr=cfg["inner_lr"]),
        outer_optimizer=functools.partial(torch.optim.Adam, lr=cfg["outer_lr"]),
        inner_steps_per_outer=k,
        seed=ctx.seed,
    )  # fmt: skip

    def callback(t: BilevelTrainer, r: dict[str, Any]) -> None:
        if t.inner_step % cfg["eval_every"] == 0:
            if clock.over():
                raise _OutOfBudget
            clock.record(evaluate(t.objective, t.params, d.val)["loss"])

    try:
        with quiet_solvers():
            trainer.fit(
                data.Loader(d.train, cfg["batch_size"], seed=ctx.seed + 2),
                data.Loader(d.val, cfg["val_batch_size"], seed=ctx.seed + 3),
                outer_steps=cfg["train_steps"] // k,
                eval_every=cfg["train_steps"],
                progress=ctx.show_progress,
                callback=callback,
            )
    except _OutOfBudget:
        pass
    return clock, {key: math.exp(float(v.detach())) for key, v in trainer.hparams.items()}


def _trial(d: Splits, cfg: Mapping[str, Any], ctx: Context, log10: Mapping[str, float], clock: _Clock) -> float:
    """Train a fresh network with fixed decays; returns its best validation loss (``inf`` if none was seen)."""
    net, families = _setup(d, cfg, ctx.seed)
    objective = Objective(net, CE, families)
    h: Tree = {key: torch.full_like(v, math.log(10.0) * log10[key]) for key, v in objective.init_hparams().items()}
    params = objective.params()
    opt = torch.optim.Adam(list(params.values()), lr=cfg["inner_lr"])
    loader = data.Loader(d.train, cfg["batch_size"], seed=ctx.seed + 2)
    best, step = math.inf, 0
    while step < cfg["train_steps"]:
        for batch in loader:
            loss = objective.inner_loss(params, h, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % cfg["eval_every"] == 0:
                if clock.over():
                    return best
                val = evaluate(objective, params, d.val)["loss"]
                best = min(best, val) if math.isfinite(val) else best
                clock.record(val)
            if step >= cfg["train_steps"]:
                break
    return best


def _keys(d: Splits, cfg: Mapping[str, Any], ctx: Context) -> list[str]:
    net, families = _setup(d, cfg, ctx.seed)
    return list(Objective(net, CE, families).init_hparams())


def run_blackbox(
    d: Splits, cfg: Mapping[str, Any], ctx: Context, suggest: Callable[[int], tuple[dict[str, float], Any]],
    tell: Callable[[Any, float], None],
) -> tuple[_Clock, int]:  # fmt: skip
    """Trials from ``suggest(i) -> (log10 decays, handle)`` until the budget is spent; ``tell(handle, value)``."""
    clock = _Clock(cfg["budget_seconds"], cfg["clock"])
    i = 0
    while not clock.over():
        log10, handle = suggest(i)
        value = _trial(d, cfg, ctx, log10, clock)
        tell(handle, value)
        i += 1
    return clock, i


def _import_optuna() -> Any:
    try:
        import optuna
    except ImportError as err:
        raise UnsupportedError(
            "the hpo-vs-blackbox experiment compares with Optuna, which is not installed: "
            "pip install 'nestopt[bench]' (or pip install optuna)"
        ) from err
    return optuna


def _time_to_reach(clock: _Clock, target: float) -> float:
    """Seconds until the best-so-far curve first reaches ``target`` (``inf`` if never)."""
    return next((t for t, v in clock.points if v <= target), math.inf)


def compute(cfg: Config, ctx: Context) -> Metrics:
    """IFT's run, then TPE's and random search's trials, each within the same budget of seconds."""
    optuna = _import_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    low, high = cfg["log10_decay_range"]
    with threads(cfg["threads"]):
        d = data.mnist1d(cfg["n_train"], cfg["n_val"], cfg["n_test"], seed=ctx.seed)
        keys = _keys(d, cfg, ctx)
        # first calls pay one-time costs (lazy initialization inside torch); keep them out of every clock
        warm = {**cfg, "train_steps": 2 * cfg["eval_every"], "budget_seconds": math.inf}
        run_ift(d, warm, ctx)
        _trial(d, warm, ctx, dict.fromkeys(keys, -4.0), _Clock(math.inf, cfg["clock"]))
        ift, ift_decays = run_ift(d, cfg, ctx)

        # Optuna's sampler takes a numpy seed (below 2**32)
        study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=ctx.seed % 2**32))

        def tpe_suggest(i: int) -> tuple[dict[str, float], Any]:
            trial = study.ask()
            return {k: trial.suggest_float(k, low, high) for k in keys}, trial

        def tpe_tell(trial: Any, value: float) -> None:
            study.tell(
                trial,
                value if math.isfinite(value) else None,
                state=None if math.isfinite(value) else optuna.trial.TrialState.FAIL,
            )

        tpe, tpe_trials = run_blackbox(d, cfg, ctx, tpe_suggest, tpe_tell)
        gen = ctx.generator(11)

        def random_suggest(i: int) -> tuple[dict[str, float], Any]:
            u = torch.rand(len(keys), generator=gen, dtype=torch.float64)
            return {k: low + (high - low) * float(x) for k, x in zip(keys, u)}, None

        rnd, rnd_trials = run_blackbox(d, cfg, ctx, random_suggest, lambda h, v: None)

    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return {
        "best_val_loss": {"ift": ift.best, "tpe": tpe.best, "random": rnd.best},
        "seconds_to_tpe_best": {
            k: _time_to_reach(c, tpe.best) for k, c in (("ift", ift), ("tpe", tpe), ("random", rnd))
        },
        "seconds_to_ift_best": {
            k: _time_to_reach(c, ift.best) for k, c in (("ift", ift), ("tpe", tpe), ("random", rnd))
        },
        "trials": {"tpe": tpe_trials, "random": rnd_trials},
        "ift_run_seconds": ift.points[-1][0] if ift.points else math.nan,
        "ift_decays": ift_decays,
        "tpe_best_decays": {k: 10.0**v for k, v in study.best_params.items()} if completed else {},
        "curves": {"ift": ift.points, "tpe": tpe.points, "random": rnd.points},
        "hyperparameters": len(keys),
    }


def claims(m: Metrics, cfg: Config) -> list[Claim]:
    best, seconds = m["best_val_loss"], m["seconds_to_tpe_best"]
    return [
        Claim.at_most("IFT best validation loss minus TPE's best", best["ift"] - best["tpe"], 0.0),
        Claim.at_most("seconds for IFT to reach TPE's best / seconds TPE took", seconds["ift"] / seconds["tpe"], 1.0),
    ]


def plots(plt: Any, m: Metrics, cfg: Config) -> dict[str, Any]:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    styles = {"ift": ("IFT (one run)", "tab:red"), "tpe": ("Optuna TPE", "tab:blue"),
              "random": ("random search", "tab:gray")}  # fmt: skip
    for key, (label, color) in styles.items():
        pts = [(t, v) for t, v in m["curves"][key] if math.isfinite(v)]
        if not pts:
            continue
        t, v = zip(*pts)
        ax.step([*t, cfg["budget_seconds"]], [*v, v[-1]], where="post", color=color, label=label)
        if key == "ift":
            ax.plot(t[-1], v[-1], "o", color=color, ms=5)  # where its training run ended
    ax.axhline(m["best_val_loss"]["tpe"], color="tab:blue", ls=":", lw=1)
    ax.set_xlabel("seconds")
    ax.set_ylabel("best validation loss so far")
    trials = m["trials"]
    ax.set_title(
        f"{m['hyperparameters']} weight decays, {cfg['budget_seconds']:g} s each "
        f"(TPE {trials['tpe']} trials, random {trials['random']})"
    )
    ax.grid(True, alpha=0.3)
    ax.legend()
    return {"best_val_vs_seconds": fig}


EXPERIMENT = register(
    Experiment(
        "hpo-vs-blackbox",
        paper=IFT_PAPER,
        summary=(
            "A global and per-layer weight decays tuned by IFT during one training run reach the best validation "
            "loss that Optuna's TPE finds under the same time budget (CPU seconds), and reach it sooner."
        ),
        full=FULL,
        quick=QUICK,
        compute=compute,
        claims=claims,
        plots=plots,
        figures=("best_val_vs_seconds",),
        # Given 60 s, TPE's ~40 trials end lower than any IFT run; IFT gets close far sooner (quick: IFT wins).
        known_failures=(
            KnownFailure("IFT best validation loss minus TPE's best", "docs/ift.md, findings", quick=False),
            # quick: TPE finishes two trials in the 8 s budget, and the ratio (0.86 alone) crosses 1 under the load
            # of a parallel test run (1.02 and 1.105 seen): a race within the machine's noise (docs/ift.md)
            KnownFailure("seconds for IFT to reach TPE's best", "docs/ift.md, findings"),
        ),
    )
)
