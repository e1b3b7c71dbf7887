"""Hypergradients in training: amortized solves against cold solves, and against TorchOpt and Betty.

The flagship's problem (``nestopt.experiments.flagship``): an MLP 40-300-300-10 on MNIST-1D (256 training
examples) with one weight decay per weight (105,610 hyperparameters), Adam steps on the weights, an Adam step
on the hyperparameters after each hypergradient, one thread. Every system runs **the same training loop**
(written out below: the same inner steps, batches, outer optimizer, initial weights and losses) and only
supplies the hypergradient of each outer step:

* nestopt, cold: Neumann 5 with the flagship's ``alpha`` (the reference), Neumann 5 with ``alpha="auto"``,
  CG 5, CG 2 on the damped Hessian :math:`H + I`;
* nestopt, amortized (:class:`nestopt.linalg.Amortized` through ``hypergrad.Implicit``): the single-loop mode
  (one Hessian-vector product per outer step, continuing from the previous iterate; exact Hessian and
  Gauss-Newton), and CG warm-started from the previous outer step's solution (exact Hessian or Gauss-Newton,
  damped or not, with or without a Nystrom preconditioner kept across outer steps);
* TorchOpt (``custom_root`` with its Neumann and CG solvers, CG also with its ``ridge`` damping) and Betty
  (``ImplicitProblem``, Neumann and CG; its CG takes no damping), cold, as they work;
* no hypergradient at all (the decays stay at their initial value): what the loop itself costs per outer step,
  the floor under every system's time.

How many inner steps to take between hypergradients is part of a configuration, as in single-loop methods:
every method runs with each of ``--inner-steps`` (default 10, the flagship's and the reference's, and 5).
The run is ``--outer-steps`` rounds of 10 inner steps, so a system taking 5 per outer step takes two outer
steps per round, and all have taken as many inner steps after every round. The systems advance in lockstep,
round by round, so that load changes on a shared machine hit all alike; only the loop's own work is timed
(wall clock and CPU time of this process); the validation loss on the whole validation set is evaluated
after every outer step, outside the timed region.

Targets (issue 17): the best amortized nestopt configuration reaches the final validation loss of the cold
Neumann-5 run in at most 0.6x its wall time, and at least 1.5x sooner than the best TorchOpt or Betty
configuration.

    python benchmarks/amortized.py [--quick] [--outer-steps 100] [--inner-steps 10 5] [--seed 0] [--threads 1]
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

import _peers
from _report import env_line, environment, parser, pyplot, write
from nestopt import data, hparams, hypergrad, linalg, tree
from nestopt.bilevel import BatchStream
from nestopt.experiments._common import CE, classifier
from nestopt.experiments.flagship import FULL as FLAGSHIP
from nestopt.hparams import Objective

TARGET_VS_COLD = 0.6
TARGET_VS_PEERS = 1.5
FLAGSHIP_INNER = FLAGSHIP["inner_steps_per_outer"]


def label(base: str, inner_steps: int) -> str:
    """A system's name: its method, and how many Adam steps on the weights it takes per outer step."""
    return f"{base}, {inner_steps} inner steps"


REFERENCE = label("nestopt Neumann 5 (cold)", FLAGSHIP_INNER)
FLOOR = label("no hypergradient (inner phase only)", FLAGSHIP_INNER)  # the loop's own cost: the outer step a no-op


@dataclass(frozen=True)
class System:
    """One configuration: who computes the hypergradient, with what, and the loop's inner steps per outer step."""

    name: str
    kind: str  # "nestopt", a peer's name, or "none" (no hypergradient)
    settings: Any
    inner_steps: int
    amortized: bool = False  # a nestopt configuration that reuses its solution across outer steps


def systems(alpha: float, quick: bool, inner_steps: Sequence[int]) -> list[System]:
    """Every configuration the benchmark runs: each method at each of ``inner_steps``, the reference and the
    floor at the flagship's 10 only. Every entry builds a fresh ``Implicit``, whose solution is per run."""
    implicit, gn = hypergrad.Implicit, "gauss-newton"

    def cg(steps: int, **kw: Any) -> linalg.CG:
        return linalg.CG(steps=steps, tol=0.0, **kw)

    cold: dict[str, Callable[[], hypergrad.Implicit]] = {
        "nestopt Neumann 5, alpha auto (cold)": lambda: implicit(solver=linalg.Neumann(steps=5, alpha="auto")),
        "nestopt CG 5 (cold)": lambda: implicit(solver=cg(5)),
        "nestopt CG 2, damping 1 (cold)": lambda: implicit(solver=cg(2, damping=1.0)),
    }
    amortized: dict[str, Callable[[], hypergrad.Implicit]] = {
        "nestopt single-loop (1 HVP)": lambda: implicit.single_loop(),
        "nestopt single-loop, Gauss-Newton": lambda: implicit.single_loop(curvature=gn),
        "nestopt CG 3, warm": lambda: implicit(solver=cg(3), reuse_solution=True),
        "nestopt CG 5, warm": lambda: implicit(solver=cg(5), reuse_solution=True),
        "nestopt CG 2, warm, damping 1": lambda: implicit(solver=cg(2, damping=1.0), reuse_solution=True),
        "nestopt CG 5, warm, Gauss-Newton": lambda: implicit(solver=cg(5, damping=0.01), reuse_solution=True,
                                                             curvature=gn),
        "nestopt CG 2, warm, Gauss-Newton": lambda: implicit(solver=cg(2, damping=0.01), reuse_solution=True,
                                                             curvature=gn),
        "nestopt CG 2, warm, Gauss-Newton, damping 1": lambda: implicit(solver=cg(2, damping=1.0),
                                                                        reuse_solution=True, curvature=gn),
        "nestopt CG 2, warm, Gauss-Newton, damping 0.5": lambda: implicit(solver=cg(2, damping=0.5),
                                                                          reuse_solution=True, curvature=gn),
        "nestopt CG 2 + Nystrom 10, warm, Gauss-Newton": lambda: implicit(
            solver=cg(2, damping=0.01, preconditioner=linalg.NystromPreconditioner(rank=10)),
            reuse_solution=True, curvature=gn),
    }  # fmt: skip
    peers: dict[str, list[tuple[Any, ...]]] = {
        # (solver, steps[, ridge]): TorchOpt's solve_cg takes a damping (its ridge); Betty's CG has none
        "torchopt": [("neumann", 5), ("neumann", 2), ("cg", 5), ("cg", 2), ("cg", 2, 1.0), ("cg", 2, 0.5)],
        "betty": [("neumann", 5), ("neumann", 2), ("cg", 5), ("cg", 2)],
    }
    if quick:
        peers = {"torchopt": [("neumann", 5), ("cg", 5)], "betty": [("neumann", 5), ("cg", 5)]}
    out = [
        System(REFERENCE, "nestopt", implicit(solver=linalg.Neumann(steps=5, alpha=alpha)), FLAGSHIP_INNER),
        System(FLOOR, "none", None, FLAGSHIP_INNER),
    ]
    for k in inner_steps:
        out += [System(label(name, k), "nestopt", make(), k) for name, make in cold.items()]
        out += [System(label(name, k), "nestopt", make(), k, amortized=True) for name, make in amortized.items()]
        for peer, configs in peers.items():
            for c in configs:
                method = f"{'Neumann' if c[0] == 'neumann' else 'CG'} {c[1]}" + (f", ridge {c[2]:g}" if c[2:] else "")
                out.append(System(label(f"{peer} {method}", k), peer, c, k))
    return out


@dataclass
class Run:
    """One system's copy of the training loop: model, optimizers, data streams, and its record."""

    system: System
    objective: Objective
    params: dict[str, torch.Tensor]
    hparams: dict[str, torch.Tensor]
    inner_opt: torch.optim.Optimizer
    outer_opt: torch.optim.Optimizer
    train: BatchStream
    val: BatchStream
    hypergradient: Callable[..., dict[str, torch.Tensor]]
    wall: float = 0.0
    cpu: float = 0.0
    curve: list[dict[str, float]] = field(default_factory=list)
    error: str = ""

    @property
    def name(self) -> str:
        return self.system.name


def build(system: System, d: data.Splits, cfg: dict[str, Any], seed: int) -> Run:
    net = classifier(d, cfg["hidden"], seed + 1)
    objective = Objective(net, CE, [hparams.WeightDecay(net, per="parameter", init=cfg["init_decay"])])
    params = objective.params()
    hp = {k: v.requires_grad_(True) for k, v in objective.init_hparams().items()}
    inner, outer = objective.inner_loss, objective.outer_loss
    kind, settings = system.kind, system.settings
    if kind == "none":
        fn = lambda params, hparams, train, val: {k: torch.zeros_like(v) for k, v in hparams.items()}
    elif kind == "nestopt":
        fn = _peers.nestopt_loop(settings, inner, outer)
    elif kind == "torchopt":
        fn = _peers.torchopt_loop(inner, outer, list(params), list(hp), *settings, alpha=cfg["neumann_alpha"])
    else:
        fn = _peers.betty_loop(inner, outer, params, hp, *settings, alpha=cfg["neumann_alpha"])
    return Run(
        system, objective, params, hp,
        torch.optim.Adam(list(params.values()), lr=cfg["inner_lr"]),
        torch.optim.Adam(list(hp.values()), lr=cfg["outer_lr"]),
        BatchStream(data.Loader(d.train, cfg["batch_size"], seed=seed + 2), "train"),
        BatchStream(data.Loader(d.val, len(d.val), seed=seed + 3), "val"),
        fn,
    )  # fmt: skip


def outer_step(run: Run, inner_steps: int) -> None:
    """The training loop every system shares: inner Adam steps, one hypergradient, one outer Adam step."""
    h = tree.detach(run.hparams)
    for _ in range(inner_steps):
        loss = run.objective.step_loss(run.params, h, run.train.next())
        run.inner_opt.zero_grad(set_to_none=True)
        loss.backward()
        run.inner_opt.step()
    run.inner_opt.zero_grad(set_to_none=True)
    grads = run.hypergradient(run.params, run.hparams, run.train.next(), run.val.next())
    run.outer_opt.zero_grad(set_to_none=True)
    for k, v in run.hparams.items():
        v.grad = grads[k].detach()
    run.outer_opt.step()
    run.outer_opt.zero_grad(set_to_none=True)


def validation_loss(run: Run, d: data.Splits) -> float:
    with torch.no_grad():
        s, n, _ = run.objective.evaluate_sums(run.params, run.hparams, (d.val.x, d.val.y))
    return s / n


def lockstep(runs: list[Run], d: data.Splits, rounds: int, round_steps: int) -> None:
    """``rounds`` rounds of ``round_steps`` inner steps: a system taking ``k`` inner steps per outer step takes
    ``round_steps // k`` outer steps in a round, so every system has taken as many inner steps at each round."""
    for run in runs:
        run.curve.append({"outer_step": 0, "seconds": 0.0, "cpu_seconds": 0.0, "val_loss": validation_loss(run, d)})
    for t in range(1, rounds + 1):
        for run in runs:
            for _ in range(round_steps // run.system.inner_steps):
                if run.error:
                    break
                wall, cpu = time.perf_counter(), time.process_time()
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        outer_step(run, run.system.inner_steps)
                except Exception as err:  # a system that crashes is reported, not fatal
                    run.error = f"failed: {type(err).__name__}: {err}"
                    break
                run.wall += time.perf_counter() - wall
                run.cpu += time.process_time() - cpu
                loss = validation_loss(run, d)
                step = run.curve[-1]["outer_step"] + 1
                if not math.isfinite(loss):
                    run.error = f"failed: the validation loss became {loss} at outer step {step}"
                run.curve.append({"outer_step": step, "seconds": run.wall, "cpu_seconds": run.cpu, "val_loss": loss})
        if t % 10 == 0:
            best = sorted(runs, key=lambda r: r.curve[-1]["val_loss"])[:4]
            print(f"round {t}/{rounds}, lowest validation losses: "
                  + ", ".join(f"{r.name} {r.curve[-1]['val_loss']:.4f}" for r in best), flush=True)  # fmt: skip


def time_to(curve: list[dict[str, float]], target: float, key: str) -> float | None:
    """The first time (``key``) at which the validation loss is at most ``target``; ``None`` if never."""
    return next((c[key] for c in curve if c["val_loss"] <= target), None)


def summarize(runs: list[Run]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows per system, and the targets in wall-clock and in CPU time (the less noisy check)."""
    ref = next(r for r in runs if r.name == REFERENCE)
    target = ref.curve[-1]["val_loss"]
    rows = []
    for r in runs:
        row: dict[str, Any] = {"system": r.system.kind, "config": r.name, "inner_steps": r.system.inner_steps,
                               "amortized": r.system.amortized, "status": r.error or "ok"}  # fmt: skip
        steps = r.curve[-1]["outer_step"] if r.curve else 0
        if steps:
            row.update(final_val_loss=r.curve[-1]["val_loss"], outer_steps=steps, seconds=r.wall, cpu_seconds=r.cpu,
                       per_outer_step=r.wall / steps, cpu_per_outer_step=r.cpu / steps,
                       time_to_target=time_to(r.curve, target, "seconds"),
                       cpu_to_target=time_to(r.curve, target, "cpu_seconds"),
                       steps_to_target=time_to(r.curve, target, "outer_step"))  # fmt: skip
        rows.append(row)
    tgt: dict[str, Any] = {"target_val_loss": target}
    for clock, key, total in (("wall", "time_to_target", ref.wall), ("cpu", "cpu_to_target", ref.cpu)):
        reached = [r for r in rows if r.get(key) is not None and r["status"] == "ok"]
        nestopt = [r for r in reached if r["system"] == "nestopt" and r["config"] != REFERENCE]
        peers = [r for r in reached if r["system"] not in ("nestopt", "none")]
        t = _compare([r for r in nestopt if r["amortized"]], peers, key, total)
        t["any_nestopt"] = _compare(nestopt, peers, key, total)  # cold ones included: not the target's, for context
        tgt[clock] = t
    return rows, tgt


def _compare(mine: list[dict[str, Any]], peers: list[dict[str, Any]], key: str, total: float) -> dict[str, Any]:
    """The fastest of ``mine`` to the target against the cold reference (``total`` seconds) and the fastest peer."""
    best = min(mine, key=lambda r: r[key], default=None)
    best_peer = min(peers, key=lambda r: r[key], default=None)
    t: dict[str, Any] = {"reference_seconds": total}
    if best is not None:
        t.update(best=best["config"], best_seconds=best[key], vs_cold=best[key] / total)
        t["met_vs_cold"] = t["vs_cold"] <= TARGET_VS_COLD
        if best_peer is not None:
            t.update(best_peer=best_peer["config"], best_peer_seconds=best_peer[key],
                     vs_peers=best_peer[key] / best[key])  # fmt: skip
        else:
            t.update(best_peer=None, vs_peers=math.inf, note="no peer configuration reached the target")
        t["met_vs_peers"] = t["vs_peers"] >= TARGET_VS_PEERS
    return t


def markdown(rows: list[dict[str, Any]], tgt: dict[str, Any], env: dict[str, Any], cmd: str, cfg: dict[str, Any]) -> list[str]:  # fmt: skip
    fmt = lambda v, f: "" if v is None else format(v, f)
    lines = [
        "# Hypergradients in training: amortized solves",
        "",
        f"`{cmd}`. The flagship's MLP 40-{'-'.join(map(str, cfg['hidden']))}-10 on MNIST-1D ({cfg['n_train']} training, "
        f"{cfg['n_val']} validation examples), one weight decay per weight, {cfg['outer_steps']} rounds of "
        f"{cfg['inner_steps_per_outer']} Adam steps on the weights: a system taking k inner steps per outer step "
        f"takes {cfg['inner_steps_per_outer']}/k outer steps per round. The same loop for every system, systems in "
        f"lockstep. {env_line(env)}",
        "",
        f"Target validation loss: the final one of `{REFERENCE}`, {tgt['target_val_loss']:.4f}, reached in "
        f"{tgt['wall']['reference_seconds']:.1f} s ({tgt['cpu']['reference_seconds']:.1f} CPU s). Wall-clock seconds "
        "are those of the lockstep run on a shared machine; CPU seconds (of this process, one thread) do not count "
        "the time other programs held the cores.",
        "",
        "| system | inner steps / outer | ms / outer step | CPU ms / outer step | final val loss | outer steps to target "
        "| s to target | CPU s to target | status |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ms = lambda v: None if v is None else 1e3 * v
        lines.append(
            f"| {r['config']} | {r['inner_steps']} | {fmt(ms(r.get('per_outer_step')), '.0f')} | {fmt(ms(r.get('cpu_per_outer_step')), '.0f')} | "
            f"{fmt(r.get('final_val_loss'), '.4f')} | {fmt(r.get('steps_to_target'), '.0f')} | "
            f"{fmt(r.get('time_to_target'), '.1f')} | {fmt(r.get('cpu_to_target'), '.1f')} | {r['status']} |"
        )
    lines += ["", "| target | clock | value | threshold | met |", "|---|---|---:|---:|---|"]
    for clock in ("wall", "cpu"):
        for what, t in (("best amortized", tgt[clock]), ("best nestopt, cold included", tgt[clock]["any_nestopt"])):
            if "vs_cold" not in t:
                lines.append(f"| no {what} configuration reached the target | {clock} | | | NO |")
                continue
            lines.append(f"| time to target: {what} ({t['best']}) / cold Neumann 5 | {clock} | {t['vs_cold']:.2f} | "
                         f"<= {TARGET_VS_COLD} | {'yes' if t['met_vs_cold'] else 'NO'} |")  # fmt: skip
            lines.append(f"| time to target: best peer ({t['best_peer']}) / {what} | {clock} | {t['vs_peers']:.2f} | "
                         f">= {TARGET_VS_PEERS} | {'yes' if t['met_vs_peers'] else 'NO'} |")  # fmt: skip
    lines.append("")
    lines.append("The targets are the amortized configurations' (cold ones are excluded; the second row of each pair "
                 "includes them for context).")  # fmt: skip
    return lines


def plot(runs: list[Run], tgt: dict[str, Any]) -> Any:
    """Validation loss against seconds: the reference, the fastest of each group to the target, the rest faint."""
    plt = pyplot()
    if plt is None:
        return None
    best = {REFERENCE: "k"}
    wall = tgt["wall"]
    for key, color in (("best", "C0"), ("best_peer", "C3")):
        if wall.get(key):
            best[wall[key]] = color
    if wall["any_nestopt"].get("best") and wall["any_nestopt"]["best"] not in best:
        best[wall["any_nestopt"]["best"]] = "C2"
    fig, ax = plt.subplots(figsize=(8, 5))
    for r in runs:
        if r.system.kind == "none" or r.name in best:
            continue
        ax.plot([c["seconds"] for c in r.curve], [c["val_loss"] for c in r.curve], color="0.8", lw=0.7, zorder=1)
    ax.plot([], [], color="0.8", lw=0.7, label="every other configuration")
    for r in runs:
        if r.name in best:
            role = ("reference" if r.name == REFERENCE else "fastest amortized" if r.name == wall.get("best")
                    else "fastest peer" if r.name == wall.get("best_peer") else "fastest nestopt")  # fmt: skip
            ax.plot([c["seconds"] for c in r.curve], [c["val_loss"] for c in r.curve], color=best[r.name], lw=1.8,
                    ls="-" if r.system.kind == "nestopt" else "--", label=f"{role}: {r.name}", zorder=2)  # fmt: skip
    ax.axhline(tgt["target_val_loss"], color="k", lw=0.8, ls=":", label="target (final loss of the reference)")
    ax.set_yscale("log")
    ax.set_xlabel("training seconds (wall clock, lockstep)")
    ax.set_ylabel("validation loss")
    ax.set_title("Validation loss against time, same loop, one weight decay per weight")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--outer-steps", type=int, default=100,
                    help=f"rounds of {FLAGSHIP_INNER} inner steps (the reference's outer steps)")  # fmt: skip
    ap.add_argument(
        "--inner-steps",
        type=int,
        nargs="+",
        default=[FLAGSHIP_INNER, 5],
        metavar="K",
        help=f"inner steps per outer step to run every method with (divisors of {FLAGSHIP_INNER})",
    )
    ap.add_argument("--seed", type=int, default=0, help="initial weights and batch order (the data stay the same)")
    ap.add_argument("--val", type=int, default=FLAGSHIP["n_val"], help="validation examples (the flagship's 32)")
    args = ap.parse_args()
    bad = [k for k in args.inner_steps if k < 1 or FLAGSHIP_INNER % k]
    if bad:
        ap.error(f"--inner-steps must divide {FLAGSHIP_INNER} (the steps of one round), got {bad}")
    env = environment(args.threads)
    cfg = {**FLAGSHIP, "outer_steps": args.outer_steps, "n_val": args.val, "inner_steps": args.inner_steps,
           "seed": args.seed}  # fmt: skip
    if args.quick:
        cfg.update(hidden=[32, 32], outer_steps=4, n_train=128, n_val=64)
    d = data.mnist1d(cfg["n_train"], cfg["n_val"], 10, seed=0)
    runs = []
    for system in systems(cfg["neumann_alpha"], args.quick, list(dict.fromkeys(args.inner_steps))):
        try:
            runs.append(build(system, d, cfg, seed=args.seed))
        except _peers.Unavailable as err:
            print(f"{system.name}: unavailable: {err}")
    lockstep(runs, d, cfg["outer_steps"], FLAGSHIP_INNER)
    rows, tgt = summarize(runs)
    cmd = "python benchmarks/amortized.py" + (" --quick" if args.quick else f" --outer-steps {cfg['outer_steps']}")
    if args.inner_steps != [FLAGSHIP_INNER, 5]:
        cmd += " --inner-steps " + " ".join(map(str, args.inner_steps))
    cmd += f" --seed {args.seed}" if args.seed else ""
    result = {"benchmark": "amortized", "environment": env, "command": cmd, "config": cfg, "rows": rows,
              "targets": tgt, "curves": {r.name: r.curve for r in runs}}  # fmt: skip
    write(args.out, "amortized", result, markdown(rows, tgt, env, cmd, cfg), plot(runs, tgt))


if __name__ == "__main__":
    main()
