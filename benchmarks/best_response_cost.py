"""What a best-response step costs, in plain training steps: time and peak memory.

An MLP 40-512-512-10 with a dropout layer before each linear layer (about 289k parameters), batch 128 of
MNIST-1D. In one process, timed round-robin against one plain training step (forward, backward, SGD update)
of the same network:

* **STN training step**: the STN of the network (three dropout rates, perturbed per example), same update;
* **STN validation step**: ``hypergrad.BestResponse``'s hypergradient (eval mode, perturbed scales, entropy);
* **Delta-STN training step**: a base step and a linearized response step;
* **hypernetwork step**: a factorized linear hypernetwork (rank 8) generating all weights from one L2 decay
  per weight (289k hyperparameters), one training step at perturbed decays.

    python benchmarks/best_response_cost.py [--quick] [--repeats 5] [--threads 1] [--out benchmarks/results]

The STN paper's promise is about two matrix products per layer: an STN training step should cost about two
plain ones. Peak memory is the extra memory one step allocates (``nestopt.profile.PeakMemory``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from _report import env_line, environment, interleaved, parser, write
from nestopt import bestresponse, data, hparams, hypergrad, tree
from nestopt.hypergrad import Problem

CE = torch.nn.functional.cross_entropy


def network(hidden: int, seed: int = 0) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate([(40, hidden), (hidden, hidden), (hidden, 10)]):
        layers += [torch.nn.Dropout(0.1), torch.nn.Linear(a, b)]
        if i < 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def _problem(objective: hparams.Objective, h: dict, train: Any, val: Any) -> Problem:
    """A strategy's view of one outer step, whose inner steps are SGD updates of the objective's parameters."""
    params = objective.params()
    values = list(params.values())

    def inner_step(batch: Any, hh: dict) -> float:
        loss = objective.step_loss(params, hh, batch)
        grads = torch.autograd.grad(loss, values, allow_unused=True)  # None: a part a Delta-STN step leaves alone
        with torch.no_grad():
            for p, g in zip(values, grads):
                if g is not None:
                    p.add_(g, alpha=-0.01)
        return float(loss.detach())

    return Problem(objective.inner_loss, objective.outer_loss, objective.step_loss, params, h, lambda: train,
                   lambda: val, inner_step, 1, 0, 0, tuple(objective.families))  # fmt: skip


def _hparams(objective: hparams.Objective, strategy: hypergrad.BestResponse) -> dict:
    h = {k: v.requires_grad_(True) for k, v in objective.init_hparams().items()}
    extra = strategy.extra_hparams(tree.detach(h))
    return {**h, **{f"{strategy.name}/{k}": v.requires_grad_(True) for k, v in extra.items()}}


def _training(strategy: hypergrad.BestResponse, problem: Problem) -> Callable[[], None]:
    def run() -> None:  # one training step of the strategy (no warm-up, first step of a cycle)
        strategy.reset()
        strategy.inner_phase(problem)

    return run


def steps(hidden: int, batch_size: int) -> tuple[dict[str, Callable[[], Any]], int]:
    ds = data.mnist1d(n_train=max(batch_size, 500), n_val=max(batch_size, 500), n_test=10, seed=0)
    train = (ds.train.x[:batch_size], ds.train.y[:batch_size])
    val = (ds.val.x[:batch_size], ds.val.y[:batch_size])
    net = network(hidden)
    plain = hparams.Objective(net, CE, [])
    fns: dict[str, Callable[[], Any]] = {
        "plain training step": _training(
            hypergrad.BestResponse(scale=None, learn_scale=False, train_steps=1), _problem(plain, {}, train, val)
        )
    }
    for delta in (False, True):
        model = bestresponse.stn(net, [hparams.Dropout(net, init=0.1)], delta=delta)
        objective = hparams.Objective(model, CE, model.families)
        strategy = hypergrad.BestResponse(train_steps=1, delta=delta)
        problem = _problem(objective, _hparams(objective, strategy), train, val)
        fns["Delta-STN training step" if delta else "STN training step"] = _training(strategy, problem)
        if not delta:
            fns["STN validation step"] = functools.partial(strategy.hypergradient, problem)
    bare = torch.nn.Sequential(*[m for m in net if not isinstance(m, torch.nn.Dropout)])
    model = bestresponse.hypernet(bare, [hparams.WeightDecay(bare, per="parameter", init=1e-4)], "factorized", rank=8)
    objective = hparams.Objective(model, CE, model.families)
    local = bestresponse.hypernet_strategy("local", scale=0.5)
    fns["hypernetwork step"] = _training(local, _problem(objective, _hparams(objective, local), train, val))
    return fns, sum(p.numel() for p in plain.params().values())


def main() -> None:
    args = parser(__doc__).parse_args()
    env = environment(args.threads)
    hidden, batch = (64, 32) if args.quick else (512, 128)
    fns, n_params = steps(hidden, batch)
    timed = interleaved(fns, 1 if args.quick else args.repeats)
    base = timed["plain training step"]
    rows = [
        {"step": name, "system": "nestopt", "status": "ok", **r, "time_ratio": r["seconds"] / base["seconds"],
         "memory_ratio": r["peak_bytes"] / base["peak_bytes"]}
        for name, r in timed.items()
    ]  # fmt: skip
    table = [
        f"| {r['step']} | {r['seconds'] * 1e3:.2f} | {r['time_ratio']:.2f} | {r['peak_bytes'] / 2**20:.2f} | "
        f"{r['memory_ratio']:.2f} | {r['spread']:.2f} |"
        for r in rows
    ]
    md = [
        "# Best-response steps against a plain training step",
        "",
        f"MLP 40-{hidden}-{hidden}-10 with three dropout layers ({n_params:,} parameters), batch {batch} of MNIST-1D; "
        f"the hypernetwork generates all {n_params:,} weights from as many L2 decays. {env_line(env)}",
        "",
        "| step | ms | x plain step | peak extra MiB | x plain step | spread |",
        "|---|---|---|---|---|---|",
        *table,
    ]
    write(args.out, "best_response_cost", {"benchmark": "best_response_cost", "params": n_params, "batch": batch,
                                           "env": env, "rows": rows}, md)  # fmt: skip


if __name__ == "__main__":
    main()
