"""Data-parallel bilevel training: tune one weight decay per weight of an MLP on several processes.

Run it with ``torchrun`` (gloo on CPU, NCCL when every process has a GPU)::

    torchrun --standalone --nproc_per_node=2 examples/distributed_bilevel.py
    torchrun --standalone --nproc_per_node=2 examples/distributed_bilevel.py --mode local   # biased, cheaper
    python examples/distributed_bilevel.py                                                 # one process

Every rank builds the same model and trainer. The model is wrapped in ``DistributedDataParallel``, so the
inner steps' ``backward`` averages the gradients; ``DataParallel`` makes the hypergradient exact (every
Hessian-vector product of the solve is averaged over the ranks), keeps the hyperparameters bit-identical,
reduces the evaluations and writes the checkpoint from rank 0. Each rank reads its shard of every global
batch (``ShardedLoader``), so the run sees the same data as one process with the global batch size.
Stop it and run it again with the same ``--checkpoint``: it resumes where it stopped.
"""

from __future__ import annotations

import argparse
import functools
import time

import torch

import nestopt
from nestopt import data, distributed, hparams, hypergrad, linalg, tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outer-steps", type=int, default=60)
    parser.add_argument("--global-batch", type=int, default=64, help="examples per batch over all ranks")
    parser.add_argument("--mode", choices=distributed.MODES, default="exact")
    parser.add_argument("--no-ddp", action="store_true", help="leave the model unwrapped (the trainer averages)")
    parser.add_argument("--checkpoint", default=None, help="a file to checkpoint to and resume from")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a collective waits for every rank")
    args = parser.parse_args()
    torch.set_num_threads(1)

    here = distributed.init(timeout=args.timeout)  # the process group torchrun describes; nothing without it
    device = here.device
    d = data.synthetic_classification(n_train=512, n_val=256, n_test=256, dim=20, num_classes=5, separation=1.0,
                                      seed=0)  # fmt: skip
    d = data.Splits(d.train.to(device), d.val.to(device), d.test.to(device), d.num_classes)
    train = distributed.ShardedLoader(data.Loader(d.train, args.global_batch, seed=1))
    val = distributed.ShardedLoader(data.Loader(d.val, args.global_batch, seed=2))
    test = distributed.ShardedLoader(data.Loader(d.test, 100, shuffle=False), even=False)  # only evaluated

    torch.manual_seed(0)  # the same initial weights everywhere (DDP and the trainer broadcast rank 0's anyway)
    net = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.Tanh(), torch.nn.Linear(64, 5)).to(device)
    model = net
    if here.world_size > 1 and not args.no_ddp:
        ids = [device.index] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(net, device_ids=ids)
    trainer = nestopt.BilevelTrainer(
        model, torch.nn.functional.cross_entropy, [hparams.WeightDecay(net, per="parameter", init=1e-3)],
        hypergrad=hypergrad.Implicit(solver=linalg.CG(steps=10, damping=0.1), curvature="gauss-newton"),
        inner_optimizer=functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9), inner_steps_per_outer=5,
        outer_optimizer=functools.partial(torch.optim.Adam, lr=0.03),
        parallel=distributed.DataParallel(args.mode),
    )  # fmt: skip

    def report(t: nestopt.BilevelTrainer, record: dict) -> None:
        if here.is_main and "val_loss" in record:
            print(f"outer step {record['outer_step']:4d}  val loss {record['val_loss']:.4f}  "
                  f"val accuracy {record['val_accuracy']:.3f}  {record['seconds']:.1f} s", flush=True)  # fmt: skip

    start, before = time.perf_counter(), distributed.stats()
    trainer.fit(train, val, test=test, outer_steps=args.outer_steps, eval_every=10, checkpoint=args.checkpoint,
                resume=args.checkpoint is not None, progress=False, callback=report)  # fmt: skip
    seconds, comm = time.perf_counter() - start, distributed.stats() - before
    same = distributed.in_sync({**trainer.params, **tree.detach(trainer.hparams)})
    if here.is_main:
        last = trainer.history.records[-1]
        print(
            f"{here.world_size} process(es), backend {here.backend or 'none'}, mode {args.mode}: {seconds:.1f} s, "
            f"{comm.collectives} collectives of nestopt carrying {comm.bytes / 1e6:.2f} MB (DDP's own not counted)"
        )
        print(f"test loss {last['test_loss']:.4f}, test accuracy {last['test_accuracy']:.3f}; weights and "
              f"hyperparameters identical on every rank: {same}")  # fmt: skip
    if here.world_size > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
