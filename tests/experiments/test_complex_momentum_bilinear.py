"""The quick run of the `complex-momentum-bilinear` experiment passes all its claims and writes its results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nestopt import experiments


def test_complex_momentum_bilinear_quick(tmp_path: Path) -> None:
    result = experiments.run("complex-momentum-bilinear", quick=True, out_dir=tmp_path)
    failed = [c["detail"] or c["name"] for c in result["claims"] if not c["passed"]]
    assert not failed, failed
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["experiment"] == "complex-momentum-bilinear"
    assert (tmp_path / "report.md").exists()
    assert all((tmp_path / f).exists() for f in saved["figures"])


@pytest.mark.slow
def test_complex_momentum_bilinear_full(tmp_path: Path) -> None:
    result = experiments.run("complex-momentum-bilinear", quick=False, out_dir=tmp_path)
    failed = [c["detail"] or c["name"] for c in result["claims"] if not c["passed"]]
    assert not failed, failed
