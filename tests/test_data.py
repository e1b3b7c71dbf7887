import numpy as np
import pytest
import torch

from nestopt import data
from nestopt.errors import InvalidArgumentError


def test_mnist1d_is_made_in_code_and_deterministic():
    np_state = np.random.get_state()[1].copy()
    a = data.mnist1d(n_train=300, n_val=100, n_test=100, seed=3)
    b = data.mnist1d(n_train=300, n_val=100, n_test=100, seed=3)
    c = data.mnist1d(n_train=300, n_val=100, n_test=100, seed=4)
    assert np.array_equal(np.random.get_state()[1], np_state)  # global numpy state untouched
    assert a.train.x.shape == (300, 40) and a.num_classes == 10
    assert torch.equal(a.train.x, b.train.x) and not torch.equal(a.train.x, c.train.x)
    assert set(a.train.y.tolist()) == set(range(10))


def test_splits_are_disjoint():
    d = data.digits(n_train=1000, n_val=397, n_test=400, seed=0)
    rows = torch.cat([d.train.x, d.val.x, d.test.x])
    assert torch.unique(rows, dim=0).shape[0] > 1700  # the digits set has a few duplicate images
    assert d.input_shape == (64,) and float(d.train.x.max()) <= 1.0


def test_synthetic_sets():
    reg = data.synthetic_regression(n_train=50, n_val=10, n_test=10, dim=4, seed=0)
    assert reg.train.x.dtype == torch.float64 and reg.num_classes == 0
    cls = data.synthetic_classification(n_train=60, n_val=20, n_test=20, num_classes=4, seed=0)
    assert cls.train.y.max() < 4


def test_batches_cycle_deterministically():
    d = data.synthetic_classification(n_train=50, seed=0)
    a = [y for _, (_, y) in zip(range(4), data.batches(d.train, 20, seed=1))]
    b = [y for _, (_, y) in zip(range(4), data.batches(d.train, 20, seed=1))]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_bad_sizes():
    with pytest.raises(InvalidArgumentError, match="exceeds the 1797"):
        data.digits(n_train=1700, n_val=100, n_test=100)
    with pytest.raises(InvalidArgumentError, match="n_val must be a positive integer"):
        data.synthetic_regression(n_val=0)
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        next(data.batches(data.synthetic_regression().train, 0))
