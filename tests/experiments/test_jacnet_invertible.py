"""The ``jacnet-invertible`` experiment: its quick run passes every claim (the full run is marked slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nestopt import experiments


def _check(result: dict, out: Path) -> None:
    failed = [c["detail"] or c["name"] for c in result["claims"] if not c["passed"]]
    assert not failed, failed
    assert (out / "results.json").exists() and (out / "report.md").exists()
    assert json.loads((out / "results.json").read_text())["experiment"] == "jacnet-invertible"
    assert result["figures"] and all((out / f).exists() for f in result["figures"])


def test_quick_run_passes_its_claims(tmp_path: Path) -> None:
    _check(experiments.run("jacnet-invertible", quick=True, out_dir=tmp_path), tmp_path)


@pytest.mark.slow
def test_full_run_passes_its_claims(tmp_path: Path) -> None:
    _check(experiments.run("jacnet-invertible", quick=False, out_dir=tmp_path), tmp_path)


def test_plane_map_is_invertible_on_the_box() -> None:
    import torch

    from nestopt.experiments._jacobian_common import box_grid
    from nestopt.experiments.jacnet_invertible import plane_map

    jac = torch.func.vmap(torch.func.jacrev(plane_map))(box_grid(-2.0, 2.0, 41, 2))
    assert float(torch.linalg.eigvalsh(0.5 * (jac + jac.mT)).min()) >= 0.3  # strongly monotone: a bijection
    assert float((jac - jac.mT).abs().max()) > 0.1  # and not a gradient field
