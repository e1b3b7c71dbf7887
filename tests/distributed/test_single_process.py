"""The data-parallel pieces in one process: sharding, the reduce hook's counts, refusals, and identities."""

from __future__ import annotations

import functools

import pytest
import torch

import nestopt
from nestopt import data, distributed, hparams, hypergrad, linalg, tree
from nestopt.errors import InvalidArgumentError, UnsupportedError
from nestopt.optim import functional
from tests.distributed import problems as P


# -- sharding ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("world", [2, 4])
def test_the_shards_of_every_batch_concatenate_to_the_global_batch(world):
    d = data.synthetic_classification(n_train=24, seed=0)
    full = data.Loader(d.train, batch_size=8, seed=3, with_index=True)
    parts = [distributed.ShardedLoader(full, rank=r, world_size=world) for r in range(world)]
    for epoch in range(2):
        pieces = [list(p.epoch_batches(epoch)) for p in parts]
        for b, batch in enumerate(full.epoch_batches(epoch)):
            for i, t in enumerate(batch):
                assert torch.equal(torch.cat([pieces[r][b][i] for r in range(world)]), t)
            assert len({len(pieces[r][b][0]) for r in range(world)}) == 1  # equal parts
    assert [len(x) for x, y, i in parts[0]] == [8 // world] * 3 and len(parts[0]) == 3


def test_sharding_refuses_unequal_parts_unless_only_evaluated():
    d = data.synthetic_classification(n_train=10, seed=0)
    with pytest.raises(InvalidArgumentError, match="batch_size 5 does not split into 2"):
        distributed.ShardedLoader(data.Loader(d.train, 5), rank=0, world_size=2)
    with pytest.raises(InvalidArgumentError, match="last batch of each epoch has 2 examples"):
        distributed.ShardedLoader(data.Loader(d.train, 4), rank=0, world_size=4)
    distributed.ShardedLoader(data.Loader(d.train, 4, drop_last=True), rank=0, world_size=4)
    uneven = distributed.ShardedLoader(data.Loader(d.train, 3, shuffle=False), rank=1, world_size=2, even=False)
    assert [len(x) for x, y in uneven] == [1, 1, 1, 0]
    with pytest.raises(InvalidArgumentError, match="rank must be below world_size=2"):
        distributed.ShardedLoader(data.Loader(d.train, 4), rank=2, world_size=2)
    with pytest.raises(InvalidArgumentError, match="DistributedSampler"):
        distributed.ShardedLoader(torch.utils.data.DataLoader(list(range(4))), rank=0, world_size=1)  # type: ignore[arg-type]


def test_an_epoch_loader_reshuffles_a_distributed_sampler_by_epoch_and_replays_it():
    ds = torch.utils.data.TensorDataset(torch.arange(12.0))

    def loader(rank: int) -> distributed.EpochLoader:
        sampler = torch.utils.data.DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=4)
        return distributed.EpochLoader(torch.utils.data.DataLoader(ds, batch_size=3, sampler=sampler))

    def epoch(lo: distributed.EpochLoader, e: int) -> list[float]:
        return [v for (b,) in lo.epoch_batches(e) for v in b.tolist()]

    a, b = loader(0), loader(1)
    assert sorted(epoch(a, 0) + epoch(b, 0)) == list(range(12))  # the ranks partition the data
    assert epoch(a, 1) != epoch(a, 0) and epoch(a, 1) == epoch(loader(0), 1)  # reshuffled, and replayable
    stream = nestopt.bilevel.BatchStream(a, "train")
    drawn = [stream.next()[0].tolist() for _ in range(3)]  # two batches per epoch: crosses into epoch 1
    assert drawn[2] == next(iter(a.epoch_batches(1)))[0].tolist()
    with pytest.raises(InvalidArgumentError, match="set_epoch"):
        distributed.EpochLoader(torch.utils.data.DataLoader(ds, batch_size=3))


# -- the reduce hook --------------------------------------------------------------------------------------
class Recording:
    """An identity reduce that records the sizes of the trees it is handed."""

    __name__ = "recording"

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def __call__(self, value: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.sizes.append(tree.numel(value))
        return {k: v.clone() for k, v in value.items()}


@pytest.mark.parametrize("solver", [linalg.CG(steps=40, tol=1e-13), linalg.Neumann(steps=7, alpha=0.1),
                                    linalg.Exact()])  # fmt: skip
def test_the_reduce_hook_sees_the_outer_gradient_every_product_and_the_result(solver):
    obj, h = P.family_objective("weight_decay")
    inner, outer = P.full_batches()
    w = tree.detach(obj.params())
    plain = hypergrad.implicit(obj.inner_loss, obj.outer_loss, w, h, inner, outer, solver=solver)
    rec = Recording()
    got = hypergrad.implicit(obj.inner_loss, obj.outer_loss, w, h, inner, outer, solver=solver, reduce=rec)
    assert all(torch.equal(got.grads[k], plain.grads[k]) for k in h)
    n_w, n_h = tree.numel(w), tree.numel(h)
    products = got.info.hvp_calls
    # the outer gradient, then the products (one batch of n_w for Exact), then one reduction of the result
    batched = isinstance(solver, linalg.Exact)
    assert rec.sizes == [n_w, *([n_w * n_w] if batched else [n_w] * products), n_h]
    assert got.info.extra["reduce_calls"] == len(rec.sizes)
    assert got.info.extra["reduce_bytes"] == 8 * sum(rec.sizes) and got.info.extra["reduce"] == "recording"


def test_implicit_vjp_and_implicit_solution_reduce_the_products_and_the_result():
    obj, h = P.family_objective("weight_decay")
    inner, _ = P.full_batches()
    w = tree.detach(obj.params())
    v = tree.ones_like(w)
    rec = Recording()
    res = hypergrad.implicit_vjp(obj.inner_loss, w, h, inner, v, solver=linalg.CG(steps=5), reduce=rec)
    assert rec.sizes == [tree.numel(w)] * res.info.hvp_calls + [tree.numel(h)]
    leaves = {k: t.clone().requires_grad_(True) for k, t in h.items()}
    rec2 = Recording()
    sol = hypergrad.implicit_solution(obj.inner_loss, w, leaves, inner, solver=linalg.CG(steps=5), reduce=rec2)
    sum(s.sum() for s in sol.values()).backward()
    assert rec2.sizes == rec.sizes
    assert all(torch.allclose(leaves[k].grad, res.hparams[k]) for k in h)


def test_a_reduce_that_is_not_callable_is_refused():
    with pytest.raises(InvalidArgumentError, match="reduce must be a function"):
        hypergrad.Implicit(reduce=3)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="sets reduce itself"):
        distributed.implicit(None, None, {}, {}, None, None, reduce=distributed.all_reduce_mean)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="mode must be one of"):
        distributed.DataParallel("global")  # type: ignore[arg-type]


# -- one process ------------------------------------------------------------------------------------------
def test_in_one_process_the_collectives_are_identities_and_check_their_input():
    x = {"w": torch.arange(3.0)}
    assert distributed.all_reduce_mean(x) is x and distributed.broadcast_(x)["w"].tolist() == [0, 1, 2]
    assert distributed.in_sync(x) and distributed.world().world_size == 1
    with pytest.raises(InvalidArgumentError, match=r"\['n'\] has dtype torch.int64"):
        distributed.all_reduce_mean({"n": torch.ones(2, dtype=torch.long)})
    with pytest.raises(InvalidArgumentError, match="timeout must be a finite positive"):
        distributed.init(timeout=0)


def test_a_trainer_with_data_parallel_in_one_process_is_the_plain_trainer():
    train, val, evaluation = P.loaders(None)
    runs = []
    for parallel in (None, distributed.DataParallel()):
        t = P.trainer(parallel=parallel)
        t.fit(train, val, test=evaluation, outer_steps=4, eval_every=2, progress=False)
        runs.append(P.state(t))
    for part in ("params", "hparams"):
        assert all(torch.equal(runs[0][part][k], runs[1][part][k]) for k in runs[0][part])
    assert runs[0]["val_loss"] == runs[1]["val_loss"]


def test_data_parallel_refuses_strategies_that_take_the_inner_steps_themselves():
    net = P.mlp()
    for strategy in (hypergrad.Unrolled(optimizer=functional.sgd(lr=0.1), steps=3),
                     hypergrad.Forward(optimizer=functional.sgd(lr=0.1), steps=3)):  # fmt: skip
        with pytest.raises(UnsupportedError, match="all-reduced inside the differentiated graph"):
            nestopt.BilevelTrainer(net, torch.nn.functional.cross_entropy, [hparams.WeightDecay(net)],
                                   hypergrad=strategy, parallel=distributed.DataParallel("local"))  # fmt: skip


class Greedy(hypergrad.Strategy):
    """A user strategy that does not apply the loop's reduction."""

    name = "greedy"

    def hypergradient(self, problem):
        return hypergrad.implicit(problem.inner_loss, problem.outer_loss, tree.detach(problem.params),
                                  problem.hparams, problem.next_train(), problem.next_val(),
                                  solver=linalg.Identity(alpha=0.1))  # fmt: skip


def test_exact_mode_needs_a_strategy_that_declares_it_local_mode_takes_any():
    net = P.mlp()
    build = functools.partial(nestopt.BilevelTrainer, net, torch.nn.functional.cross_entropy,
                              [hparams.WeightDecay(net)], hypergrad=Greedy())  # fmt: skip
    with pytest.raises(UnsupportedError, match="does not declare exact_data_parallel"):
        build(parallel=distributed.DataParallel())
    t = build(parallel=distributed.DataParallel("local"))
    train, val, _ = P.loaders(None)
    t.fit(train, val, outer_steps=1, progress=False)
    assert t.history.records[-1]["outer_step"] == 1
    with pytest.raises(InvalidArgumentError, match="parallel must be a nestopt.bilevel.Parallel"):
        build(parallel="ddp")


def test_the_guard_reraises_this_ranks_own_error_unchanged():
    with pytest.raises(KeyError, match="mine"), distributed.guard():
        raise KeyError("mine")
