"""Families tuned through sampling (Dropout, Cutout, RandomShift) and continuous augmentation strengths:
ranges and projections (every discrete value is reachable), what each transform does, and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from nestopt import hparams
from nestopt.errors import InvalidArgumentError, ShapeMismatchError
from nestopt.hparams import Interval


@pytest.mark.parametrize("low, high", [(0, 24), (0, 4), (3, 3), (-2, 2)])
def test_discrete_projections_hit_every_allowed_value_and_nothing_else(low, high):
    interval = Interval(low, high, discrete=True)
    values = interval.project(torch.linspace(-30, 30, 20001, dtype=torch.float64))
    assert (
        sorted(set(values.tolist()))
        == [float(v) for v in range(low, high + 1)]
        == [float(c) for c in interval.choices()]
    )
    for c in interval.choices():  # the centre of each value's interval projects onto it
        assert float(interval.project(torch.tensor(interval.unproject(c), dtype=torch.float64))) == c
    assert float(interval.project(torch.tensor(1e4))) == high and float(interval.project(torch.tensor(-1e4))) == low


def test_continuous_projections_invert():
    for interval, v in ((Interval(0.0, 0.9), 0.05), (Interval(0, math.inf, transform="exp"), 1e-4),
                        (Interval(-math.inf, math.inf, transform="identity"), -3.0)):  # fmt: skip
        assert float(interval.project(torch.tensor(interval.unproject(v), dtype=torch.float64))) == pytest.approx(
            v, rel=1e-12
        )


def test_bad_ranges_raise_named_errors():
    with pytest.raises(InvalidArgumentError, match="discrete range 5..2 is empty"):
        Interval(5, 2, discrete=True)
    with pytest.raises(InvalidArgumentError, match="integer ends"):
        Interval(0, 2.5, discrete=True)
    with pytest.raises(InvalidArgumentError, match="empty"):
        Interval(1.0, 1.0)
    with pytest.raises(InvalidArgumentError, match="must be one of"):
        Interval(0, 3, discrete=True).unproject(4)
    with pytest.raises(InvalidArgumentError, match="strictly inside"):
        Interval(0.0, 0.9).unproject(0.9)
    with pytest.raises(InvalidArgumentError, match="discrete range 4..1 is empty"):
        hparams.Cutout(length=(4, 1))
    with pytest.raises(InvalidArgumentError, match="init_length must be one of"):
        hparams.Cutout(length=(0, 3), init_length=5)
    with pytest.raises(InvalidArgumentError, match="nothing to tune"):
        hparams.Cutout(length=3, holes=1)
    with pytest.raises(InvalidArgumentError, match="nothing to tune"):
        hparams.AugmentationStrength()


def test_which_families_a_best_response_can_condition_on():
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout())
    conditionable = [hparams.WeightDecay(net), hparams.Dropout(net), hparams.Cutout(), hparams.RandomShift(),
                     hparams.AugmentationStrength(noise=0.1)]  # fmt: skip
    assert all(f.conditionable for f in conditionable)
    assert not any(
        f.conditionable
        for f in (
            hparams.LearningRate(),
            hparams.DistilledData(1, (3,), 2),
            hparams.AugmentationNet(torch.nn.Linear(3, 3)),
        )
    )
    assert [f.enters for f in conditionable[1:4]] == [frozenset({"sampling"})] * 3
    assert all(f.per_example for f in conditionable[1:]) and not conditionable[0].per_example


def test_dropout_family_finds_the_layers_and_keeps_its_rates_in_range():
    net = torch.nn.Sequential(torch.nn.Dropout(), torch.nn.Linear(3, 3), torch.nn.Dropout())
    fam = hparams.Dropout(net, init={"0": 0.2, "2": 0.05}, max_rate=0.5)
    assert fam.layers == ["0", "2"]
    rates = fam.project(fam.initial())
    assert rates["0"] == pytest.approx(0.2) and rates["2"] == pytest.approx(0.05)
    assert float(fam.rate({"dropout/0": torch.tensor(50.0)}, "0")) <= 0.5
    with pytest.raises(InvalidArgumentError, match="no torch.nn.Dropout layer"):
        hparams.Dropout(torch.nn.Linear(2, 2))
    with pytest.raises(InvalidArgumentError, match="must be in"):
        hparams.Dropout(net, init=0.7, max_rate=0.5)
    with pytest.raises(InvalidArgumentError, match="max_rate"):
        hparams.Dropout(net, max_rate=1.0)
    with pytest.raises(ShapeMismatchError, match="no dropout rate"):
        fam.rate({}, "0")
    with pytest.raises(ShapeMismatchError, match="dropout rates for a batch"):
        hparams.Dropout.drop(torch.ones(4, 3), torch.full((3,), 0.5))


def _tree(fam, **values):
    return {fam.key(k): torch.tensor([fam.intervals()[k].unproject(v) for v in vs]) for k, vs in values.items()}


def test_cutout_zeroes_length_times_holes_entries_of_signals_and_images():
    cut = hparams.Cutout(length=(0, 6), holes=(0, 2))
    x = torch.ones(4, 1, 100)
    h = _tree(cut, length=[0, 3, 6, 6], holes=[2, 1, 1, 0])
    zeros = (cut.transform_batch(h, (x, torch.zeros(4)))[0] == 0).sum((1, 2)).tolist()
    assert zeros[0] == 0 and zeros[3] == 0 and 2 <= zeros[1] <= 3 and 4 <= zeros[2] <= 6  # clipped at the borders
    many = (
        cut.transform_batch(_tree(cut, length=[6] * 200, holes=[1] * 200), (torch.ones(200, 100), None))[0] == 0
    ).sum(1)
    assert int(many.max()) == 6 and float((many == 6).double().mean()) > 0.85
    images = torch.ones(50, 3, 16, 16)
    out = cut.transform_batch(_tree(cut, length=[4] * 50, holes=[1] * 50), (images, None))[0]
    area = (out == 0).all(1).sum((1, 2))  # the same square in every channel
    assert int(area.max()) == 16 and bool(((out == 0).any(1) == (out == 0).all(1)).all())


def test_random_shift_rotates_each_example_by_at_most_its_range():
    shift = hparams.RandomShift((0, 3))
    x = torch.arange(20.0).repeat(300, 1)
    h = _tree(shift, max_shift=[0] * 100 + [3] * 200)
    y = shift.transform_batch(h, (x, None))[0]
    offsets = ((y[:, 0:1] - x[:, 0:1]) % 20).squeeze(1)
    offsets = torch.where(offsets > 10, offsets - 20, offsets)
    assert torch.equal(y[:100], x[:100]) and set(offsets[100:].tolist()) == {-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0}
    assert bool(((y - y[:, :1]) % 20 == (x - x[:, :1])).all())  # rotations


def test_augmentation_strength_is_reparameterized_and_differentiable(f64):
    aug = hparams.AugmentationStrength(noise=0.3, scale=0.2)
    x = torch.ones(4000, 10)
    h = {k: v.double().requires_grad_(True) for k, v in aug.initial().items()}
    torch.manual_seed(0)
    out = aug.transform_batch(h, (x, None))[0]
    spread = (1.2 - 1 / 1.2) ** 2 / 12  # the variance of a factor uniform in [1/(1+s), 1+s], s = 0.2
    assert float(out.detach().std()) == pytest.approx(math.sqrt(0.3**2 + spread), rel=0.03)
    g = torch.autograd.grad((out**2).mean(), h["strength/noise"])[0]

    @torch.no_grad()
    def loss(u: float) -> float:
        torch.manual_seed(0)
        return float((aug.transform_batch({**h, "strength/noise": torch.tensor(u)}, (x, None))[0] ** 2).mean())

    u, eps = float(h["strength/noise"].detach()), 1e-6
    assert float(g) == pytest.approx((loss(u + eps) - loss(u - eps)) / (2 * eps), rel=1e-6)
