"""The quick run of the `gan-mixture` experiment passes all its claims and writes its results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nestopt import experiments


def test_gan_mixture_quick(tmp_path: Path) -> None:
    result = experiments.run("gan-mixture", quick=True, out_dir=tmp_path)
    failed = [c["detail"] or c["name"] for c in result["claims"] if not c["passed"]]
    assert not failed, failed
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["experiment"] == "gan-mixture"
    assert (tmp_path / "report.md").exists()
    assert all((tmp_path / f).exists() for f in saved["figures"])


@pytest.mark.slow
def test_gan_mixture_full(tmp_path: Path) -> None:
    result = experiments.run("gan-mixture", quick=False, out_dir=tmp_path)
    failed = [c["detail"] or c["name"] for c in result["claims"] if not c["passed"]]
    assert not failed, failed
