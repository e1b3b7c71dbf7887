"""The diversity experiments beyond the registry-driven test: all are registered, and gan-digits' Frechet
distance against closed forms."""

from __future__ import annotations

import pytest
import torch

from nestopt import experiments
from nestopt.experiments.gan_digits import frechet_distance


def test_every_diversity_experiment_is_registered() -> None:
    assert set(experiments.names()) >= {"ridge-rider-toy", "ridge-rider-lever", "ridge-rider-digits",
                                        "lyapunov-small-ipd", "grr-ipd", "grr-matching-pennies", "grr-gan",
                                        "gan-digits"}  # fmt: skip


def test_frechet_distance_against_closed_forms() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 3, generator=g, dtype=torch.float64)
    a = a - a.mean(0)
    a = a @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(a.T))).T  # sample mean 0, sample covariance I exactly
    shift = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    scale = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift @ shift), abs=1e-9)
    # Gaussians N(0, I) and N(shift, diag(scale^2)): ||shift||^2 + sum (1 - scale)^2
    expected = float(shift @ shift + ((1 - scale) ** 2).sum())
    assert frechet_distance(a, a * scale + shift) == pytest.approx(expected, abs=1e-9)
