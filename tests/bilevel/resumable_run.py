"""A bilevel run that checkpoints every outer step and resumes from its checkpoint: killed and restarted by
``test_checkpoints.py``. Prints ``step N`` after every outer step; saves the final state to ``--out``."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import nestopt
from nestopt import hparams, hypergrad, linalg, tree
from tests.bilevel.conftest import loaders, regularized_net, task


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(1)
    net = regularized_net()
    trainer = nestopt.BilevelTrainer(
        net, torch.nn.functional.cross_entropy,
        [hparams.WeightDecay(net, per="parameter", init=1e-2), hparams.LossReweighting(per="class", size=3)],
        hypergrad=hypergrad.Implicit(solver=linalg.CG(steps=5, damping=0.1), curvature="gauss-newton"),
        inner_optimizer=functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9),
        inner_scheduler=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=7, gamma=0.5),
        inner_steps_per_outer=3,
    )  # fmt: skip
    d = task()
    trainer.fit(
        *loaders(d)[:2], outer_steps=args.steps, checkpoint=args.checkpoint, checkpoint_every=1, resume=True,
        progress=False, callback=lambda t, r: print(f"step {r['outer_step']}", flush=True),
    )  # fmt: skip
    torch.save({**tree.clone(trainer.params), **tree.clone(trainer.buffers), **tree.clone(trainer.hparams)}, args.out)


if __name__ == "__main__":
    main()
