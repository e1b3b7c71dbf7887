"""The diversity experiments (written in the compute / claims / plots format): each quick run passes every
claim except its documented findings and writes its results and figures.

Temporary: when the registry-driven test of every experiment arrives, it covers these and this file goes away.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nestopt import experiments
from nestopt.experiments import _format
from nestopt.experiments.gan_digits import frechet_distance

experiments.names()  # imports every experiment module, which registers them
NAMES = sorted(_format.REGISTERED)


@pytest.mark.parametrize("name", NAMES)
def test_quick_run(name: str, tmp_path: Path) -> None:
    exp = _format.REGISTERED[name]
    result = experiments.run(name, quick=True, out_dir=tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["experiment"] == name and saved["claims"]
    assert not any(k.startswith("_") for k in saved["metrics"])
    assert saved["figures"] == [f"{f}.png" for f in exp.figures]
    assert all((tmp_path / f).stat().st_size > 10_000 for f in saved["figures"])
    failed = [c for c in result["claims"] if not c["passed"]]
    unexpected = [c["detail"] or c["name"] for c in failed if exp.known_failure(c["name"], True) is None]
    assert not unexpected, unexpected
    if failed:
        pytest.xfail(f"known finding: {[(c['name'], c['value']) for c in failed]}")


def test_registrations_are_complete() -> None:
    assert set(NAMES) >= {"ridge-rider-toy", "ridge-rider-lever", "ridge-rider-digits", "lyapunov-small-ipd",
                          "grr-ipd", "grr-matching-pennies", "grr-gan", "gan-digits"}  # fmt: skip
    for name in NAMES:
        exp = _format.REGISTERED[name]
        assert exp.paper and exp.summary and exp.figures and set(exp.full) == set(exp.quick)
        assert exp.full != exp.quick


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
