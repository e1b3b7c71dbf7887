"""A Self-Tuning Network against Optuna's TPE and random search, on the same hyperparameters and CPU budget.

The hyperparameters: the three dropout rates of the ``stn-dropout`` MLP and one discrete augmentation
hyperparameter, the length of a zeroed span of the MNIST-1D signals (:class:`~nestopt.hparams.Cutout`, one
span of 0 to ``max_span`` samples). Every method gets the same CPU-second budget (this process's CPU time,
which other programs on the machine do not inflate):

* **STN**: one run (``stn-dropout``'s settings) tuning all four, trained until the budget is spent; its
  validation loss at the current hyperparameters is evaluated every ``eval_every`` outer steps;
* **TPE** (Optuna) and **random search**: trials that each train the plain network with fixed values (rates
  uniform in ``[0, max_rate)``, span length an integer in ``0..max_span``), one after another until the
  budget is spent, evaluating the validation loss every ``trial_eval_every`` training steps (a trial is
  scored by its best evaluation).

A method's curve is the best validation loss it has seen against CPU seconds. Claim: STN's best validation
loss is at most TPE's (and, beside it, at most random search's).

Optuna is optional (extra ``bench``): without it TPE is skipped (its metrics are ``None`` and its claim is not
made; the notes say how to install it) and STN is compared with random search only.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable
from typing import Any

import torch

from nestopt import data, hparams
from nestopt.experiments import stn_dropout
from nestopt.experiments._br_common import STN_PAPER, Clock, evaluate, loaders, mlp, stn_run, train_fixed
from nestopt.experiments.registry import Claim, Context, Experiment, register

FULL: dict[str, Any] = {
    **stn_dropout.FULL,
    "max_span": 10,
    "init_span": 2,
    "budget_seconds": 120.0,
    "eval_every": 100,
    "trial_steps": 2000,
    "trial_eval_every": 250,
}
QUICK: dict[str, Any] = {**stn_dropout.QUICK, "max_span": 10, "init_span": 2, "budget_seconds": 1.5,
                         "eval_every": 25, "trial_steps": 250, "trial_eval_every": 50}  # fmt: skip


INSTALL_OPTUNA = "TPE was skipped: Optuna is not installed (pip install 'nestopt[bench]', or pip install optuna)"


def _import_optuna() -> Any:
    """The ``optuna`` module, or ``None`` when it is not installed."""
    try:
        import optuna
    except ImportError:
        return None
    return optuna


class _OutOfBudget(Exception):
    pass


class _Curve:
    """The best validation loss seen so far, as ``(CPU seconds, loss)`` points, within a budget."""

    def __init__(self, budget: float) -> None:
        self.clock, self.budget = Clock(), budget
        self.points: list[tuple[float, float]] = []
        self.best = math.inf

    def over(self) -> bool:
        return self.clock() >= self.budget

    def record(self, loss: float) -> None:
        t = self.clock()
        if t <= self.budget:
            self.best = min(self.best, loss) if math.isfinite(loss) else self.best
            self.points.append((t, self.best))


def _trial(cfg: dict[str, Any], d: data.Splits, seed: int, rates: list[float], span: int, curve: _Curve) -> float:
    """Train the plain network with fixed values; its best validation loss (``inf`` if none was seen)."""
    net = mlp([40, cfg["hidden"], cfg["hidden"], 10], seed=seed, dropout=0.0)
    layers = [n for n, m in net.named_modules() if isinstance(m, torch.nn.Dropout)]
    cutout = hparams.Cutout(length=(0, cfg["max_span"]), holes=1, init_length=span)
    best = math.inf

    def callback(step: int) -> None:
        nonlocal best
        if step % cfg["trial_eval_every"] == 0:
            if curve.over():
                raise _OutOfBudget
            loss = evaluate(net, d.val)["loss"]
            best = min(best, loss)
            curve.record(loss)

    with contextlib.suppress(_OutOfBudget):
        train_fixed(net, [cutout], lambda i: (dict(zip(layers, rates)), cutout.initial()),
                    loaders(d, cfg["batch_size"], seed)[0], steps=cfg["trial_steps"],
                    optimizer=functools.partial(torch.optim.Adam, lr=cfg["lr"], foreach=True), callback=callback)  # fmt: skip
    return best


def _blackbox(cfg: dict[str, Any], d: data.Splits, seed: int,
              suggest: Callable[[], tuple[list[float], int, Any]], tell: Callable[[Any, float], None]) -> tuple[_Curve, int]:  # fmt: skip
    curve, trials = _Curve(cfg["budget_seconds"]), 0
    while not curve.over():
        rates, span, handle = suggest()
        tell(handle, _trial(cfg, d, seed, rates, span, curve))
        trials += 1
    return curve, trials


def _tpe(cfg: dict[str, Any], d: data.Splits, seed: int, optuna: Any) -> tuple[_Curve, int, dict[str, Any]]:
    """Optuna's TPE within the budget: its curve, its number of trials and its best values."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))

    def suggest() -> tuple[list[float], int, Any]:
        trial = study.ask()
        rates = [trial.suggest_float(f"rate{i}", 0.0, cfg["max_rate"]) for i in range(3)]
        return rates, trial.suggest_int("span", 0, cfg["max_span"]), trial

    def tell(trial: Any, value: float) -> None:
        finite = math.isfinite(value)
        study.tell(trial, value if finite else None, state=None if finite else optuna.trial.TrialState.FAIL)

    curve, trials = _blackbox(cfg, d, seed, suggest, tell)
    completed = any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    return curve, trials, study.best_params if completed else {}


def compute(cfg: dict[str, Any], ctx: Context) -> dict[str, Any]:
    optuna = _import_optuna()
    d = stn_dropout.splits(cfg, ctx.seed)
    high = cfg["max_rate"]
    with torch.random.fork_rng():
        torch.manual_seed(ctx.seed)
        _trial(
            {**cfg, "trial_steps": 20, "trial_eval_every": 10}, d, ctx.seed, [0.1] * 3, 1, _Curve(math.inf)
        )  # warm caches
        stn_curve = _Curve(cfg["budget_seconds"])
        cutout = hparams.Cutout(length=(0, cfg["max_span"]), holes=1, init_length=cfg["init_span"])
        # the STN trains until the budget is spent, as the black-box methods do
        run = stn_run({**cfg, "steps": 10**9}, d, ctx.seed, extra=[cutout], eval_every=cfg["eval_every"],
                      progress=ctx.show_progress, budget=cfg["budget_seconds"])  # fmt: skip
        for _, seconds, loss in run.evals:
            stn_curve.points.append((seconds, min(stn_curve.best, loss)))
            stn_curve.best = stn_curve.points[-1][1]
        tpe = _tpe(cfg, d, ctx.seed, optuna) if optuna is not None else None
        gen = ctx.generator(11)

        def random_suggest() -> tuple[list[float], int, Any]:
            u = torch.rand(4, generator=gen, dtype=torch.float64).tolist()
            return [high * v for v in u[:3]], min(int(u[3] * (cfg["max_span"] + 1)), cfg["max_span"]), None

        rnd, rnd_trials = _blackbox(cfg, d, ctx.seed, random_suggest, lambda h, v: None)
    h = {k: v.detach() for k, v in run.trainer.hparams.items()}
    stn_values = {**{k: float(v) for k, v in run.dropout.project(h).items()},
                  "cutout/length": float(cutout.project(h)["length"])}  # fmt: skip
    return {
        "best_val_loss": {"stn": stn_curve.best, "tpe": tpe[0].best if tpe else None, "random": rnd.best},
        "trials": {"tpe": tpe[1] if tpe else 0, "random": rnd_trials},
        "stn_seconds": run.seconds,
        "stn_final_values": stn_values,
        "tpe_best_values": tpe[2] if tpe else None,
        "_curves": {"stn": stn_curve.points, "tpe": tpe[0].points if tpe else [], "random": rnd.points},
    }


def claims(m: dict[str, Any], cfg: dict[str, Any]) -> list[Claim]:
    best = m["best_val_loss"]
    out = [
        Claim.at_most(
            "STN best validation loss minus random search's (same CPU budget)", best["stn"] - best["random"], 0.0
        )
    ]
    if best["tpe"] is not None:
        out.append(
            Claim.at_most("STN best validation loss minus TPE's (same CPU budget)", best["stn"] - best["tpe"], 0.0)
        )
    return out


def notes(m: dict[str, Any], cfg: dict[str, Any]) -> str:
    return INSTALL_OPTUNA if m["best_val_loss"]["tpe"] is None else ""


def plots(plt: Any, m: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    styles = {
        "stn": ("STN (one run)", "tab:red"),
        "tpe": ("Optuna TPE", "tab:blue"),
        "random": ("random search", "tab:gray"),
    }
    for key, (label, color) in styles.items():
        pts = [(t, v) for t, v in m["_curves"][key] if math.isfinite(v)]
        if pts:
            t, v = zip(*pts)
            ax.step([*t, cfg["budget_seconds"]], [*v, v[-1]], where="post", color=color, label=label)
    ax.set_xlabel("CPU seconds")
    ax.set_ylabel("best validation loss so far")
    trials = m["trials"]
    ax.set_title(f"3 dropout rates + span length (TPE {trials['tpe']} trials, random {trials['random']})")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return {"stn_vs_blackbox": fig}


EXPERIMENT = register(
    Experiment(
        "stn-vs-blackbox",
        paper=STN_PAPER,
        summary=(
            "On three dropout rates and one discrete augmentation length of an MNIST-1D MLP, one STN run reaches a "
            "best validation loss at most that of Optuna's TPE under the same CPU budget (random search beside)."
        ),
        full=FULL,
        quick=QUICK,
        compute=compute,
        claims=claims,
        plots=plots,
        notes=notes,
        figures=("stn_vs_blackbox",),
    )
)
