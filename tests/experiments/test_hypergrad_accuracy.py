import json

import pytest

from nestopt import experiments


def test_quick_run_passes_every_claim(tmp_path):
    result = experiments.run("hypergrad-accuracy", quick=True, out_dir=tmp_path)
    failed = [c for c in result["claims"] if not c["passed"]]
    assert not failed, failed
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved) >= {"experiment", "paper", "config", "metrics", "claims", "seconds", "versions"}
    assert (tmp_path / "error_vs_hvps.png").stat().st_size > 10_000
    assert "| claim | passed |" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_full_run_passes_every_claim(tmp_path):
    result = experiments.run("hypergrad-accuracy", out_dir=tmp_path)
    assert all(c["passed"] for c in result["claims"])
