"""The ``jacnet-lipschitz`` experiment: its quick run passes every claim (the full run is marked slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nestopt import experiments


def _check(result: dict, out: Path) -> None:
    failed = [c["detail"] or c["name"] for c in result["claims"] if not c["passed"]]
    assert not failed, failed
    assert (out / "results.json").exists() and (out / "report.md").exists()
    assert json.loads((out / "results.json").read_text())["experiment"] == "jacnet-lipschitz"
    assert result["figures"] and all((out / f).exists() for f in result["figures"])


def test_quick_run_passes_its_claims(tmp_path: Path) -> None:
    _check(experiments.run("jacnet-lipschitz", quick=True, out_dir=tmp_path), tmp_path)


@pytest.mark.slow
def test_full_run_passes_its_claims(tmp_path: Path) -> None:
    _check(experiments.run("jacnet-lipschitz", quick=False, out_dir=tmp_path), tmp_path)


def test_grid_lipschitz_of_known_functions() -> None:
    import torch

    from nestopt.experiments.jacnet_lipschitz import grid_lipschitz

    grid = torch.linspace(-2, 2, 401, dtype=torch.float64)
    assert grid_lipschitz(grid.abs(), grid) == pytest.approx(1.0)
    assert grid_lipschitz(torch.sin(3 * grid), grid) == pytest.approx(3.0, rel=1e-3)
