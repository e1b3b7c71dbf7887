"""Run by ``test_distributed.py`` on 2 gloo ranks under ``torchrun``; saves what each rank computed to
``OUT/rank<r>.pt`` for the tests to compare with single-process references and across ranks."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from nestopt import distributed, tree
from tests.distributed import problems as P


def hypergradients(rank: int) -> dict[str, Any]:
    inner_full, outer_full = P.full_batches()
    out: dict[str, Any] = {}
    for name in P.FAMILIES:
        obj, h = P.family_objective(name)
        w = distributed.broadcast_(P.inner_solution(obj, name, h, inner_full))  # rank 0's, to the bit
        inner, outer = P.shards(inner_full)[rank], P.shards(outer_full)[rank]
        for solver_name, solver in P.SOLVERS.items():
            got: dict[str, Any] = {"params": w, "hparams": h}
            for mode in ("exact", "local"):
                res = distributed.implicit(obj.inner_loss, obj.outer_loss, w, h, inner, outer, mode=mode,
                                           solver=solver())  # fmt: skip
                got[mode] = {"grads": res.grads, "iterations": res.info.iterations, "hvp_calls": res.info.hvp_calls,
                             "extra": res.info.extra, "in_sync": distributed.in_sync(res.grads)}  # fmt: skip
            out[f"{name}/{solver_name}"] = got
    return out


def trainers(out_dir: Path) -> dict[str, Any]:
    train, val, evaluation = P.loaders(P.WORLD)
    out: dict[str, Any] = {}
    for kind, wrap, mode in (("ddp", True, "exact"), ("plain", False, "exact"), ("local", True, "local")):
        t = P.trainer(wrap=wrap, parallel=distributed.DataParallel(mode))
        start = time.perf_counter()
        t.fit(train, val, test=evaluation, outer_steps=50, eval_every=10, progress=False)
        out[kind] = {**P.state(t), "seconds": time.perf_counter() - start,
                     "in_sync": distributed.in_sync({**t.params, **tree.detach(t.hparams)}),
                     "test_loss": [r["test_loss"] for r in t.history.records if "test_loss" in r]}  # fmt: skip
    ckpt = out_dir / "run.pt"
    first = P.trainer(wrap=True, parallel=distributed.DataParallel())
    first.fit(train, val, outer_steps=25, checkpoint=ckpt, checkpoint_every=25, progress=False, eval_every=10)
    resumed = P.trainer(wrap=True, parallel=distributed.DataParallel())  # a fresh model, trainer and optimizers
    resumed.fit(train, val, outer_steps=50, checkpoint=ckpt, resume=True, progress=False, eval_every=10)
    out["resumed"] = P.state(resumed)
    t = P.trainer(wrap=True, parallel=distributed.DataParallel(), batch_norm=True)
    t.fit(train, val, outer_steps=10, progress=False)
    out["batch_norm"] = {
        **P.state(t),
        "in_sync": distributed.in_sync({**t.params, **t.buffers, **tree.detach(t.hparams)}),
    }
    return out


def optimizers(rank: int) -> dict[str, Any]:
    batches = [P.shards(b)[rank] for b in P.optimizer_batches()]
    out: dict[str, Any] = {}
    for name in P.OPTIMIZERS:
        model = torch.nn.parallel.DistributedDataParallel(P.linear_model(seed=2))
        got = P.optimizer_run(name, model, batches)
        got["in_sync"] = distributed.in_sync({**got["params"], **{str(i): m for i, m in enumerate(got["state"])}})
        out[name] = got
    return out


def main() -> None:
    torch.set_num_threads(1)
    out_dir = Path(sys.argv[1])
    here = distributed.init(timeout=60)
    assert here.world_size == P.WORLD, here
    result = {"hypergrad": hypergradients(here.rank), "trainer": trainers(out_dir), "optim": optimizers(here.rank)}
    torch.save(result, out_dir / f"rank{here.rank}.pt")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
