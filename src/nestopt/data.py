"""Embedded data sets, made in code or shipped in a package: nothing is ever downloaded.

* :func:`mnist1d`: the MNIST-1D benchmark (40-sample 1-D signals, 10 classes), generated with the
  ``mnist1d`` package's ``make_dataset`` (extra ``data``).
* :func:`digits`: scikit-learn's 8x8 handwritten digits (1797 images, 64 features, 10 classes).
* :func:`synthetic_regression`, :func:`synthetic_classification`: Gaussian problems with known structure.

Every function returns a :class:`Splits` of train / validation / test tensors, split deterministically by
``seed``.

Example:
    >>> from nestopt import data
    >>> d = data.synthetic_regression(n_train=50, n_val=20, n_test=20, dim=5, seed=0)
    >>> d.train.x.shape, d.val.y.shape
    (torch.Size([50, 5]), torch.Size([20]))
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from nestopt.errors import InvalidArgumentError, UnsupportedError

__all__ = [
    "Loader",
    "Split",
    "Splits",
    "batches",
    "digits",
    "mnist1d",
    "split",
    "synthetic_classification",
    "synthetic_regression",
]


@dataclass(frozen=True)
class Split:
    """One part of a data set: inputs ``x`` and targets ``y``."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def as_tuple(self) -> tuple[Tensor, Tensor]:
        """``(x, y)``: the batch form that losses take."""
        return self.x, self.y

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))


@dataclass(frozen=True)
class Splits:
    """Train, validation and test parts of one data set, with its number of classes (0 for regression)."""

    train: Split
    val: Split
    test: Split
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


def _check_sizes(n_train: int, n_val: int, n_test: int, available: int | None = None) -> None:
    for name, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if not isinstance(n, int) or n < 1:
            raise InvalidArgumentError(f"{name} must be a positive integer, got {n!r}")
    if available is not None and n_train + n_val + n_test > available:
        raise InvalidArgumentError(
            f"n_train + n_val + n_test = {n_train + n_val + n_test} exceeds the {available} examples available"
        )


def split(x: Tensor, y: Tensor, n_train: int, n_val: int, n_test: int, seed: int, num_classes: int) -> Splits:
    """Shuffle ``(x, y)`` with ``seed`` and cut it into train / validation / test parts of the given sizes."""
    _check_sizes(n_train, n_val, n_test, x.shape[0])
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    a, b, c = n_train, n_train + n_val, n_train + n_val + n_test
    parts = [perm[:a], perm[a:b], perm[b:c]]
    train, val, test = (Split(x[p], y[p]) for p in parts)
    return Splits(train, val, test, num_classes)


@lru_cache(maxsize=4)
def _mnist1d_arrays(num_samples: int, data_seed: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise UnsupportedError("mnist1d needs the `mnist1d` package: pip install 'nestopt[data]'") from err
    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = data_seed
    # make_dataset seeds the global `random` and numpy generators; leave the caller's state untouched.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        raw = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    x = np.concatenate([raw["x"], raw["x_test"]]).astype(np.float32)
    y = np.concatenate([raw["y"], raw["y_test"]]).astype(np.int64)
    return x, y


def mnist1d(
    n_train: int = 4000,
    n_val: int = 500,
    n_test: int = 500,
    *,
    seed: int = 0,
    data_seed: int = 42,
    dtype: torch.dtype = torch.float32,
) -> Splits:
    """MNIST-1D, generated procedurally (``data_seed`` 42 gives the reference data set).

    Inputs are standardized signals of length 40; targets are class indices in ``0..9``.
    """
    _check_sizes(n_train, n_val, n_test)
    total = n_train + n_val + n_test
    num_samples = 10 * -(-total // 10)  # make_dataset makes the same number of examples per class
    x, y = _mnist1d_arrays(num_samples, data_seed)
    return split(torch.from_numpy(x).to(dtype), torch.from_numpy(y), n_train, n_val, n_test, seed, 10)


def digits(
    n_train: int = 1000, n_val: int = 397, n_test: int = 400, *, seed: int = 0, dtype: torch.dtype = torch.float32
) -> Splits:
    """scikit-learn's handwritten digits: 1797 images of 8x8 pixels, flattened to 64 features in ``[0, 1]``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise UnsupportedError("digits needs scikit-learn: pip install 'nestopt[data]'") from err
    raw = load_digits()
    x = torch.from_numpy(raw.data / 16.0).to(dtype)
    y = torch.from_numpy(raw.target).long()
    return split(x, y, n_train, n_val, n_test, seed, 10)


def synthetic_regression(
    n_train: int = 200,
    n_val: int = 100,
    n_test: int = 100,
    *,
    dim: int = 10,
    noise: float = 0.1,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> Splits:
    """Linear regression ``y = x @ w_true + noise * eps`` with Gaussian ``x``, ``w_true`` and ``eps``."""
    _check_sizes(n_train, n_val, n_test)
    if dim < 1:
        raise InvalidArgumentError(f"dim must be a positive integer, got {dim!r}")
    gen = torch.Generator().manual_seed(seed)
    n = n_train + n_val + n_test
    x = torch.randn(n, dim, generator=gen, dtype=dtype)
    w_true = torch.randn(dim, generator=gen, dtype=dtype)
    y = x @ w_true + noise * torch.randn(n, generator=gen, dtype=dtype)
    return split(x, y, n_train, n_val, n_test, seed, 0)


def synthetic_classification(
    n_train: int = 200,
    n_val: int = 100,
    n_test: int = 100,
    *,
    dim: int = 10,
    num_classes: int = 3,
    separation: float = 2.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Splits:
    """Gaussian blobs: one unit-variance cluster per class, centres ``separation`` apart on average."""
    _check_sizes(n_train, n_val, n_test)
    if num_classes < 2:
        raise InvalidArgumentError(f"num_classes must be at least 2, got {num_classes!r}")
    gen = torch.Generator().manual_seed(seed)
    n = n_train + n_val + n_test
    centres = separation * torch.randn(num_classes, dim, generator=gen, dtype=dtype) / 2**0.5
    y = torch.randint(num_classes, (n,), generator=gen)
    x = centres[y] + torch.randn(n, dim, generator=gen, dtype=dtype)
    return split(x, y, n_train, n_val, n_test, seed, num_classes)


def batches(part: Split, batch_size: int, *, seed: int = 0, shuffle: bool = True) -> Iterator[tuple[Tensor, Tensor]]:
    """An endless stream of minibatches ``(x, y)`` from ``part``, reshuffled every epoch with ``seed``.

    Example:
        >>> from nestopt import data
        >>> d = data.synthetic_classification(seed=0)
        >>> x, y = next(data.batches(d.train, 32))
        >>> x.shape
        torch.Size([32, 10])
    """
    if batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
    n = len(part)
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
        for start in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            idx = order[start : start + batch_size]
            yield part.x[idx], part.y[idx]


class Loader:
    """Minibatches of a :class:`Split`, reshuffled every epoch from ``(seed, epoch)`` alone.

    Because an epoch's order depends on nothing else, a training loop can resume exactly where it stopped:
    :meth:`epoch_batches` regenerates any epoch. Iterating the loader gives the next epoch.

    Args:
        part: the data.
        batch_size: examples per batch.
        shuffle: shuffle every epoch (otherwise the stored order).
        seed: seed of the shuffling.
        drop_last: drop the last, smaller batch of an epoch.
        with_index: yield ``(x, y, index)`` with each example's index in ``part`` (for per-example
            hyperparameters such as :class:`nestopt.hparams.LossReweighting`).

    Example:
        >>> from nestopt import data
        >>> d = data.synthetic_classification(n_train=10, seed=0)
        >>> loader = data.Loader(d.train, batch_size=4, seed=1)
        >>> [len(x) for x, y in loader]
        [4, 4, 2]
    """

    def __init__(
        self,
        part: Split,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        with_index: bool = False,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
        if len(part) == 0:
            raise InvalidArgumentError("the split is empty: a Loader needs at least one example")
        self.part, self.batch_size, self.shuffle, self.seed = part, batch_size, shuffle, seed
        self.drop_last, self.with_index = drop_last, with_index
        self._epoch = 0

    def __len__(self) -> int:
        n = len(self.part)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch_batches(self, epoch: int) -> Iterator[tuple[Tensor, ...]]:
        """The batches of epoch ``epoch`` (the same every time)."""
        n = len(self.part)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
        else:
            order = torch.arange(n)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            if self.drop_last and len(idx) < self.batch_size:
                break
            idx_dev = idx.to(self.part.x.device)
            batch = (self.part.x[idx_dev], self.part.y[idx_dev])
            yield (*batch, idx_dev) if self.with_index else batch

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        epoch = self._epoch
        self._epoch += 1
        return self.epoch_batches(epoch)
